"""Kirby's OpenID Connect relying party (``kirby.web.oidc_login``) against the real provider of
``deploy/services up oidc``: discovery checks at start, and every check of the answer: state,
the ID token's signature (tampered), expiry (``now`` injected), nonce, audience, and the JWKS
fetched again, once, for an unknown key id."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time

import pytest
import requests

from kirby.errors import ConfigError
from kirby.web.oidc_login import AuthRequest, OidcClient, ProviderUnavailable, SignInRefused
from tests.oidc_provider import CLIENT, oidc_variables, sign_in_at_provider

PUBLIC_URL = "http://127.0.0.1:18080"  # any loopback port: the test client is a loopback client


@pytest.fixture
def client(oidc_issuer, make_settings) -> OidcClient:
    return OidcClient.discover(make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL)))


def signed_in(client: OidcClient, username: str = "ada") -> tuple[dict, str, AuthRequest]:
    """A real sign-in: the claims, the ID token and the request it answered."""
    url, request = client.begin()
    params = sign_in_at_provider(url, username)
    claims, id_token = client.finish(request, params, time.time())
    return claims, id_token, request


def _segment(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _payload(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_a_real_sign_in_gives_the_checked_claims(client, oidc_issuer):
    url, request = client.begin()
    assert "code_challenge_method=S256" in url and f"state={request.state}" in url and f"nonce={request.nonce}" in url
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A18080%2Flogin%2Foidc%2Fcallback" in url
    params = sign_in_at_provider(url, "ada")
    claims, _ = client.finish(request, params, time.time())
    assert claims["iss"] == oidc_issuer and claims["aud"] == CLIENT["client_id"] and claims["nonce"] == request.nonce
    assert claims["sub"] == "u-1001" and claims["preferred_username"] == "ada"
    assert claims["groups"] == ["kirby-admins", "staff"]


def test_a_wrong_state_is_refused_before_the_code_is_redeemed(client):
    url, request = client.begin()
    params = sign_in_at_provider(url, "ada")
    with pytest.raises(SignInRefused, match="state does not match"):
        client.finish(request, {**params, "state": "forged-state"}, time.time())
    with pytest.raises(SignInRefused, match="no sign-in was started"):
        client.finish(None, params, time.time())
    with pytest.raises(SignInRefused, match="comes from another issuer"):  # RFC 9207 mix-up defence
        client.finish(request, {**params, "iss": "https://evil.example.com"}, time.time())
    # the code was not spent: the right state still signs in
    claims, _ = client.finish(request, params, time.time())
    assert claims["sub"] == "u-1001"


def test_a_code_is_redeemed_once(client):
    url, request = client.begin()
    params = sign_in_at_provider(url, "vic")
    client.finish(request, params, time.time())
    with pytest.raises(SignInRefused, match="token endpoint refused the code: invalid_grant"):
        client.finish(request, params, time.time())


def test_a_tampered_id_token_is_refused(client):
    claims, id_token, request = signed_in(client, "vic")
    header, _, signature = id_token.split(".")
    promoted = _segment({**_payload(id_token), "groups": ["kirby-admins"]})
    with pytest.raises(SignInRefused, match="signature is wrong"):
        client.verify_id_token(f"{header}.{promoted}.{signature}", request.nonce, time.time())
    unsigned = _segment({"alg": "none", "typ": "JWT"})
    with pytest.raises(SignInRefused, match="algorithm 'none' is not accepted"):
        client.verify_id_token(f"{unsigned}.{promoted}.", request.nonce, time.time())
    with pytest.raises(SignInRefused, match="not a signed JWT"):
        client.verify_id_token("garbage", request.nonce, time.time())
    assert client.verify_id_token(id_token, request.nonce, time.time())["sub"] == claims["sub"]  # the real one passes


def test_an_expired_id_token_is_refused(client):
    claims, id_token, request = signed_in(client)
    assert client.verify_id_token(id_token, request.nonce, claims["exp"] + 59)  # within the 60 s of clock skew
    with pytest.raises(SignInRefused, match="expired 61 s ago"):
        client.verify_id_token(id_token, request.nonce, claims["exp"] + 61)
    with pytest.raises(SignInRefused, match="issued in the future"):
        client.verify_id_token(id_token, request.nonce, claims["iat"] - 120)


def test_another_nonce_or_client_is_refused(client, oidc_issuer, make_settings):
    _, id_token, request = signed_in(client)
    with pytest.raises(SignInRefused, match="nonce does not match"):
        client.verify_id_token(id_token, "another-nonce", time.time())
    other = OidcClient(
        make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL, KIRBY_OIDC_CLIENT_ID="another-client")),
        client.metadata,
        client._keys,
    )
    with pytest.raises(SignInRefused, match="meant for another client"):
        other.verify_id_token(id_token, request.nonce, time.time())


def test_the_jwks_is_fetched_again_once_for_an_unknown_key(client, caplog):
    from joserfc.jwk import KeySet

    caplog.set_level(logging.INFO, "kirby.web.oidc_login")
    _, id_token, request = signed_in(client)
    stale = OidcClient(client.settings, client.metadata, KeySet.generate_key_set("RSA", 2048, count=1))
    assert stale.verify_id_token(id_token, request.nonce, time.time())["sub"] == "u-1001"  # after one refetch
    assert "fetched the JWKS again" in caplog.text
    header = json.loads(base64.urlsafe_b64decode(id_token.split(".")[0] + "=="))
    rotated_away = _segment({**header, "kid": "a-key-the-provider-never-had"})
    caplog.clear()
    with pytest.raises(SignInRefused, match="key the provider does not publish"):
        stale.verify_id_token(rotated_away + id_token[id_token.index(".") :], request.nonce, time.time())
    assert caplog.text.count("fetched the JWKS again") == 1  # once, not in a loop


def test_a_bad_issuer_secret_or_scope_stops_at_start_naming_the_setting(oidc_issuer, make_settings):
    with pytest.raises(ConfigError, match=r"KIRBY_OIDC_ISSUER='http://127.0.0.1:9/'.*connection refused"):
        OidcClient.discover(make_settings(**oidc_variables("http://127.0.0.1:9/", PUBLIC_URL)))
    with pytest.raises(ConfigError, match="KIRBY_OIDC_ISSUER=.*names the issuer 'http://127.0.0.1:"):
        OidcClient.discover(make_settings(**oidc_variables(oidc_issuer + "/", PUBLIC_URL)))
    with pytest.raises(ConfigError, match=r"KIRBY_OIDC_SCOPES='openid offline_access'.*does not offer offline_access"):
        OidcClient.discover(
            make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL, KIRBY_OIDC_SCOPES="openid offline_access"))
        )
    with pytest.raises(ConfigError, match="KIRBY_OIDC_CLIENT_SECRET: the provider refuses them .invalid_client."):
        OidcClient.discover(make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL, KIRBY_OIDC_CLIENT_SECRET="wrong")))
    with pytest.raises(
        ConfigError, match="KIRBY_OIDC_CLIENT_ID='nobody' / KIRBY_OIDC_CLIENT_SECRET: the provider refuses"
    ):
        OidcClient.discover(make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL, KIRBY_OIDC_CLIENT_ID="nobody")))
    with pytest.raises(ConfigError, match="KIRBY_OIDC_CLIENT_ID is missing"):
        OidcClient.discover(make_settings(**oidc_variables(oidc_issuer, PUBLIC_URL, KIRBY_OIDC_CLIENT_ID="")))


def test_a_provider_gone_after_start_is_unavailable_not_refused(client, oidc_issuer):
    gone = OidcClient(
        dataclasses.replace(client.settings, oidc_issuer="http://127.0.0.1:9"), client.metadata, client._keys
    )
    with pytest.raises(ProviderUnavailable, match="connection refused"):
        gone.begin()
    assert requests.get(f"{oidc_issuer}/.well-known/openid-configuration", timeout=10).ok  # the real one still runs
