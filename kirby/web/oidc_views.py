"""Sign in with OpenID Connect: ``/login/oidc`` starts, ``/login/oidc/callback`` finishes.

The protocol is ``kirby.web.oidc_login`` (``state.oidc``, discovered when the app is built, so a bad
``KIRBY_OIDC_ISSUER`` stops ``kirby web`` at start). Between the two routes the user's signed
session holds the pending request (state, nonce, PKCE verifier), used once. The checked identity
goes to ``kirby.external_users.sign_in_external``, which finds or creates the ``oidc`` user of that
subject and gives it the role of its groups, or refuses it (``LoginRefused``: the login page with
the refusal, 403, as for LDAP). A callback that fails a check gets the login page with the reason
(400); a provider that does not answer, the login page with one message (503) and one log line
naming ``KIRBY_OIDC_ISSUER``. No refresher is registered for ``oidc`` users: when their groups are
due for a check (``KIRBY_ROLE_REFRESH``) their session ends and they sign in again (usually
without a password, while the provider's own session lasts), which reads the groups anew. With ``KIRBY_OIDC_LOGOUT`` the session keeps the ID token, and logout
(``kirby.web.auth``) continues at the provider's ``end_session_endpoint``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import login_user

from kirby.external_users import ExternalIdentity, LoginRefused, sign_in_external
from kirby.models import Provider
from kirby.web.auth import GENERATION_KEY, OIDC_ID_TOKEN_KEY, LoginForm, LoginUser
from kirby.web.oidc_login import AuthRequest, OidcClient, ProviderUnavailable, SignInRefused
from kirby.web.redirects import is_safe_return_url
from kirby.web.state import web_state

log = logging.getLogger(__name__)
blueprint = Blueprint("oidc", __name__)
PENDING_KEY = "kirby_oidc_pending"  # the sign-in under way (state, nonce, code verifier, next)


def _client() -> OidcClient:
    client = web_state().oidc
    if client is None:
        abort(404)
    return client


def _unavailable(client: OidcClient, problem: ProviderUnavailable):
    log.error("OpenID Connect provider KIRBY_OIDC_ISSUER=%s does not answer: %s", client.issuer, problem)
    name = client.settings.oidc_provider_name
    return _login_page(f"Sign-in with {name} is unavailable: the provider does not answer. Try again later.", 503)


def _login_page(message: str, status: int):
    flash(message, "error")
    return render_template("kirby/login.html", form=LoginForm()), status


@blueprint.app_context_processor
def _login_page_values() -> dict:
    state = web_state()
    password_form = state.settings.local_login or state.password_provider is not None  # KIRBY_LOCAL_LOGIN, LDAP
    return {"oidc_provider_name": state.settings.oidc_provider_name, "password_form": password_form}


@blueprint.route("/login/oidc")
def start():
    client = _client()
    try:
        url, pending = client.begin()
    except ProviderUnavailable as problem:
        return _unavailable(client, problem)
    target = request.args.get("next")
    session[PENDING_KEY] = {**pending.as_dict(), "next": target if is_safe_return_url(target) else None}
    return redirect(url)


@blueprint.route("/login/oidc/callback")
def callback():
    client = _client()
    state = web_state()
    pending = session.pop(PENDING_KEY, None)  # used once, whatever happens next
    now = state.clock.now()
    try:
        claims, id_token = client.finish(AuthRequest.from_dict(pending), request.args, now.timestamp())
    except SignInRefused as refusal:
        log.warning("OpenID Connect sign-in refused: %s", refusal)
        return _login_page(f"The sign-in could not be completed: {refusal}.", 400)
    except ProviderUnavailable as problem:
        return _unavailable(client, problem)
    identity = ExternalIdentity(
        provider=Provider.OIDC,
        subject=claims["sub"],
        username=_username(claims),
        display_name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        groups=frozenset(_groups(claims, client.settings.oidc_groups_claim)),
    )
    with state.database.session() as s:
        try:
            user = sign_in_external(s, state.settings, identity, now)
        except LoginRefused as refusal:
            s.commit()  # a known user refused now has its open sessions ended
            log.warning("OpenID Connect user %s (sub %s) refused: %s", identity.username, identity.subject, refusal)
            return _login_page(str(refusal), 403)
        found, generation = LoginUser(user.id, user.username, user.role), user.session_generation
    session.clear()  # a fresh session on login (no fixation)
    login_user(found)
    session[GENERATION_KEY] = generation
    if state.settings.oidc_logout:
        session[OIDC_ID_TOKEN_KEY] = id_token  # the logout's id_token_hint (kirby.web.auth)
    target = pending.get("next") if isinstance(pending, dict) else None
    return redirect(target if is_safe_return_url(target) else url_for("admin.index"))


def _username(claims: dict) -> str:
    """The name shown in Kirby: preferred_username, else email, else the subject."""
    for name in ("preferred_username", "email", "sub"):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return claims["sub"]


def _groups(claims: dict, claim: str) -> tuple[str, ...]:
    """The groups claim as names: a list of strings, or one string (Azure AD and Keycloak send lists)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()
