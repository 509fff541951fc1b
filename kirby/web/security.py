"""Security plumbing: response headers (CSP and friends), cookies, and the API's auth checks.

API auth (``kirby.web.api_tokens``): ``Authorization: Bearer <KIRBY_API_TOKEN>`` acts with admin
rights, a named token (``kirby token create``) with its role; otherwise the logged-in session user,
with their role. Without either the API answers 401 (JSON), never a
redirect. HTML pages redirect anonymous users to the login page (Flask-Login).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from functools import wraps

from flask import Flask, Response, current_app, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface

from kirby.web.api_tokens import Refused, request_caller
from kirby.web.state import web_state

# Scripts run only from our own origin or with this response's nonce (Flask-Admin marks its inline
# <script> blocks with it). Flask-Admin's templates also use a few fixed inline event handlers
# (onclick="return modelActions.execute('delete');"...): admin pages allow exactly those, by hash
# ('unsafe-hashes'), computed from the mounted views (``kirby.admin.inline_handlers``).
_CSP = (
    "default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action {form_action}; frame-ancestors 'none'"
)
ADMIN_PREFIX = "/admin"


class SessionInterface(SecureCookieSessionInterface):
    """Session cookies are HttpOnly and SameSite=Lax, and Secure whenever served over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def handler_hashes(handlers) -> str:
    """CSP sources allowing exactly these inline event handler strings."""
    digests = (base64.b64encode(hashlib.sha256(h.encode()).digest()).decode() for h in sorted(set(handlers)))
    return " ".join(f"'sha256-{d}'" for d in digests)


def add_security_headers(response: Response) -> Response:
    script = f"'self' 'nonce-{csp_nonce()}'"
    hashes = current_app.config.get("KIRBY_ADMIN_HANDLER_HASHES")
    if request.path.startswith(ADMIN_PREFIX) and hashes:
        script += f" 'unsafe-hashes' {hashes}"
    # the logout form's redirect to the OpenID Connect provider (KIRBY_OIDC_LOGOUT) is a form action too
    form_action = " ".join(("'self'", *current_app.config.get("KIRBY_FORM_ACTION_ORIGINS", ())))
    response.headers.setdefault("Content-Security-Policy", _CSP.format(script=script, form_action=form_action))
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def bearer_token_ok(expected: str | None) -> bool:
    """True iff the request carries ``Authorization: Bearer <expected>`` (constant-time compare)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def api_error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


def api_auth(admin: bool = False) -> Callable:
    """Decorator for JSON endpoints: token, or a session user (an admin when ``admin``)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            try:
                caller = request_caller(web_state())
            except Refused as exc:
                return api_error(exc.status, exc.message)
            if admin and not caller.is_admin:
                return api_error(403, "this action needs the admin role")
            return view(*args, **kwargs)

        wrapper.kirby_auth = "admin" if admin else "user"
        return wrapper

    return decorate
