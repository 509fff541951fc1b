"""OpenID Connect relying party: discovery, the authorization-code flow with PKCE, ID token checks.

The only module that imports Authlib (and joserfc, the JOSE library Authlib builds on). It knows
no Flask: the web layer (``kirby.web.oidc_views``) keeps an :class:`AuthRequest` in the user's
session between :meth:`OidcClient.begin` and :meth:`OidcClient.finish`.

Contract:
- :meth:`OidcClient.discover` reads ``<issuer>/.well-known/openid-configuration`` and the JWKS and
  checks them (the document's ``issuer`` equals ``KIRBY_OIDC_ISSUER``, the code flow and ``S256``
  are offered, the configured scopes are offered) and the client id and secret (a made-up code is
  redeemed: ``invalid_client`` means they are wrong); a failure is a :class:`ConfigError` naming
  the setting, so ``kirby web`` stops at start.
- :meth:`OidcClient.begin` makes a fresh ``state``, ``nonce`` and PKCE ``code_verifier`` (S256) and
  the provider's authorization URL; it re-reads the discovery document (one request), so a
  provider that does not answer is :class:`ProviderUnavailable` before the browser is sent there.
- :meth:`OidcClient.finish` refuses (:class:`SignInRefused`) a callback whose ``state`` differs, a
  provider error, and an ID token whose signature (a key of the JWKS; the JWKS is cached and
  fetched again once when the token names an unknown ``kid``), ``iss``, ``aud``/``azp``, ``exp``,
  ``iat`` or ``nonce`` is wrong, at ``now`` (seconds; 60 s of clock skew allowed). It returns the
  token's claims and the token.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from kirby.config import Settings
from kirby.errors import ConfigError

log = logging.getLogger(__name__)
TIMEOUT = 10  # seconds for each request to the provider
LEEWAY = 60  # seconds of clock skew allowed on exp and iat
# Asymmetric signatures only: "none" and HS* (keyed with the client secret) are never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ProviderUnavailable(Exception):
    """The provider did not answer (or answered nonsense); the message says what happened."""


class SignInRefused(Exception):
    """The callback or its ID token failed a check; the message says which."""


@dataclass(frozen=True)
class AuthRequest:
    """What the callback is checked against; kept in the user's (signed) session meanwhile."""

    state: str
    nonce: str
    code_verifier: str

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "nonce": self.nonce, "code_verifier": self.code_verifier}

    @classmethod
    def from_dict(cls, data: Any) -> AuthRequest | None:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("state", "nonce")):
            return None
        return cls(data["state"], data["nonce"], str(data.get("code_verifier", "")))


def _unpadded_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class OidcClient:
    """One configured provider. Thread-safe: the metadata and the JWKS are swapped whole."""

    def __init__(self, settings: Settings, metadata: dict[str, Any], keys: KeySet):
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self.metadata = metadata
        self._keys = keys
        self._lock = threading.Lock()

    # -- discovery -----------------------------------------------------------------------------
    @classmethod
    def discover(cls, settings: Settings) -> OidcClient:
        """The client of ``KIRBY_OIDC_ISSUER``; ConfigError (naming the setting) when it fails."""
        if not settings.oidc_client_id:
            raise ConfigError("KIRBY_OIDC_CLIENT_ID is missing: set it to Kirby's client id at the provider")
        try:
            metadata = cls._read_metadata(settings)
            keys = cls._read_keys(metadata["jwks_uri"])
        except ProviderUnavailable as exc:
            raise ConfigError(f"KIRBY_OIDC_ISSUER={settings.oidc_issuer!r}: {exc}") from None
        missing = [scope for scope in settings.oidc_scopes if scope not in metadata.get("scopes_supported", [scope])]
        if missing:
            raise ConfigError(
                f"KIRBY_OIDC_SCOPES={' '.join(settings.oidc_scopes)!r}: the provider does not offer"
                f" {' '.join(missing)} (it offers {' '.join(metadata['scopes_supported'])}); remove them"
            )
        client = cls(settings, metadata, keys)
        client._check_credentials()
        return client

    def _check_credentials(self) -> None:
        """Redeem a made-up code: a provider checks the client before the code (RFC 6749 5.2), so
        ``invalid_client`` means a wrong client id or secret, and any other refusal means they are right."""
        try:
            with self._session() as oauth:
                oauth.fetch_token(
                    self.metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code="kirby-start-check",
                    code_verifier=generate_token(64),
                    timeout=TIMEOUT,
                )
        except OAuthError as exc:
            if exc.error in ("invalid_client", "unauthorized_client"):
                raise ConfigError(
                    f"KIRBY_OIDC_CLIENT_ID={self.settings.oidc_client_id!r} / KIRBY_OIDC_CLIENT_SECRET: the provider"
                    f" refuses them ({exc.error}); copy both from the provider's application page"
                ) from None
        except requests.RequestException as exc:
            raise ConfigError(
                f"KIRBY_OIDC_ISSUER={self.issuer!r}: the token endpoint {self.metadata['token_endpoint']}"
                f" does not answer ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _get_json(url: str, what: str) -> Any:
        try:
            response = requests.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
        except requests.ConnectionError:
            raise ProviderUnavailable(f"{what} {url}: connection refused or host unknown") from None
        except requests.Timeout:
            raise ProviderUnavailable(f"{what} {url}: no answer within {TIMEOUT} s") from None
        if response.status_code != 200:
            raise ProviderUnavailable(f"{what} {url} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ProviderUnavailable(f"{what} {url} is not JSON") from None

    @classmethod
    def _read_metadata(cls, settings: Settings) -> dict[str, Any]:
        url = settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        metadata = cls._get_json(url, "the discovery document")
        if not isinstance(metadata, dict):
            raise ProviderUnavailable(f"the discovery document {url} is not a JSON object")
        if metadata.get("issuer") != settings.oidc_issuer:
            raise ProviderUnavailable(
                f"the discovery document names the issuer {metadata.get('issuer')!r}; set exactly that"
            )
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(metadata.get(name), str):
                raise ProviderUnavailable(f"the discovery document {url} has no {name}")
        if "code" not in metadata.get("response_types_supported", ["code"]):
            raise ProviderUnavailable("the provider does not offer the authorization-code flow")
        if "S256" not in metadata.get("code_challenge_methods_supported", ["S256"]):
            raise ProviderUnavailable("the provider does not offer PKCE with S256")
        return metadata

    @classmethod
    def _read_keys(cls, jwks_uri: str) -> KeySet:
        document = cls._get_json(jwks_uri, "the JWKS")
        try:
            return KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError):
            raise ProviderUnavailable(f"the JWKS {jwks_uri} holds no usable key set") from None

    def refresh_metadata(self) -> None:
        """Read the discovery document again (ProviderUnavailable when it fails)."""
        self.metadata = self._read_metadata(self.settings)

    # -- the flow ------------------------------------------------------------------------------
    @property
    def redirect_uri(self) -> str:
        return f"{self.settings.public_url}/login/oidc/callback"

    def _session(self) -> OAuth2Session:
        methods = self.metadata.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        if not self.settings.oidc_client_secret:
            method = "none"
        elif "client_secret_basic" in methods:
            method = "client_secret_basic"
        else:
            method = "client_secret_post"
        return OAuth2Session(
            client_id=self.settings.oidc_client_id,
            client_secret=self.settings.oidc_client_secret,
            token_endpoint_auth_method=method,
            scope=" ".join(self.settings.oidc_scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
        )

    def begin(self) -> tuple[str, AuthRequest]:
        """The provider's authorization URL and what its callback must match."""
        self.refresh_metadata()
        request = AuthRequest(state=generate_token(32), nonce=generate_token(32), code_verifier=generate_token(64))
        with self._session() as oauth:
            url, _ = oauth.create_authorization_url(
                self.metadata["authorization_endpoint"],
                state=request.state,
                nonce=request.nonce,
                code_verifier=request.code_verifier,
            )
        return url, request

    def finish(self, request: AuthRequest | None, params: Mapping[str, str], now: float) -> tuple[dict[str, Any], str]:
        """Check the callback's ``params`` against ``request``, redeem the code, check the ID token:
        its claims and the token itself (for the logout's ``id_token_hint``)."""
        if request is None:
            raise SignInRefused("no sign-in was started in this browser (or it was already used)")
        if not hmac.compare_digest(params.get("state", ""), request.state):
            raise SignInRefused("the answer's state does not match this browser's sign-in")
        if params.get("error"):
            raise SignInRefused(f"the provider answered {params['error']}: {params.get('error_description', '')}")
        if "iss" in params and params["iss"] != self.issuer:  # RFC 9207: a mix-up with another provider
            raise SignInRefused(f"the answer comes from another issuer ({params['iss']})")
        if not params.get("code"):
            raise SignInRefused("the answer holds no authorization code")
        try:
            with self._session() as oauth:
                token = oauth.fetch_token(
                    self.metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=params["code"],
                    code_verifier=request.code_verifier,
                    timeout=TIMEOUT,
                )
        except OAuthError as exc:
            raise SignInRefused(f"the token endpoint refused the code: {exc.error}") from None
        except requests.RequestException as exc:
            raise ProviderUnavailable(
                f"the token endpoint {self.metadata['token_endpoint']}: {type(exc).__name__}"
            ) from None
        if not isinstance(token.get("id_token"), str):
            raise SignInRefused("the token endpoint sent no ID token (is the scope openid missing?)")
        return self.verify_id_token(token["id_token"], request.nonce, now), token["id_token"]

    # -- the ID token --------------------------------------------------------------------------
    def _key_for(self, kid: str | None):
        """The JWKS key named ``kid``; the JWKS is fetched again once when it is unknown."""
        for attempt in (0, 1):
            try:
                return self._keys.get_by_kid(kid)
            except (JoseError, ValueError):
                if attempt:
                    raise SignInRefused(f"the ID token is signed with a key the provider does not publish ({kid})")
            with self._lock:
                self._keys = self._read_keys(self.metadata["jwks_uri"])
                log.info("OpenID Connect: fetched the JWKS again for the unknown key %s", kid)
        raise AssertionError("unreachable")

    def verify_id_token(self, id_token: str, nonce: str, now: float) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature and claims are checked (SignInRefused)."""
        try:
            header = _unpadded_json(id_token.split(".")[0])
            if not isinstance(header, dict):
                raise ValueError
        except (ValueError, IndexError):
            raise SignInRefused("the ID token is not a signed JWT") from None
        allowed = [
            a for a in self.metadata.get("id_token_signing_alg_values_supported", ["RS256"]) if a in SIGNING_ALGORITHMS
        ]
        if header.get("alg") not in allowed:
            raise SignInRefused(f"the ID token's algorithm {header.get('alg')!r} is not accepted")
        key = self._key_for(header.get("kid"))
        try:
            claims = jwt.decode(id_token, key, algorithms=allowed).claims
        except (JoseError, ValueError):
            raise SignInRefused("the ID token's signature is wrong (tampered with, or not from the provider)") from None
        self._check_claims(claims, nonce, now)
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str, now: float) -> None:
        client_id = self.settings.oidc_client_id
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != self.issuer:
            raise SignInRefused(f"the ID token's issuer {claims.get('iss')!r} is not {self.issuer!r}")
        if client_id not in audiences:
            raise SignInRefused("the ID token is meant for another client (aud)")
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise SignInRefused("the ID token is meant for another client (azp)")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
            raise SignInRefused("the ID token lacks exp or iat")
        if exp + LEEWAY <= now:
            raise SignInRefused(f"the ID token expired {int(now - exp)} s ago")
        if iat - LEEWAY > now:
            raise SignInRefused("the ID token is issued in the future (check the clocks)")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(claims["nonce"], nonce):
            raise SignInRefused("the ID token's nonce does not match this browser's sign-in")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise SignInRefused("the ID token has no subject (sub)")

    # -- logout --------------------------------------------------------------------------------
    @property
    def logout_origin(self) -> str | None:
        """The origin (scheme://host:port) of the provider's end_session_endpoint, if it has one."""
        endpoint = self.metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        parts = requests.utils.urlparse(endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def logout_url(self, id_token_hint: str | None) -> str | None:
        """The provider's end_session_endpoint URL for RP-initiated logout, or None if it has none."""
        endpoint = self.metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        params = {
            "client_id": self.settings.oidc_client_id,
            "post_logout_redirect_uri": f"{self.settings.public_url}/login",
        }
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return requests.Request("GET", endpoint, params=params).prepare().url
