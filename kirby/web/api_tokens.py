"""Who is calling the API, and with which role: the supervisors' token, a named token, or a session.

``Authorization: Bearer <KIRBY_API_TOKEN>`` acts as admin (the supervisors' token). Any other
bearer token must be a live named token (``kirby.tokens``): unknown, expired or revoked ones are
refused (401), never treated as anonymous. Without a bearer token, the logged-in session user
acts with their role. ``Caller.token`` tells whether CSRF applies (sessions only).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import request
from flask_login import current_user

from kirby.tokens import check_token
from kirby.vocabulary import Role
from kirby.web.state import WebState


@dataclass(frozen=True)
class Caller:
    role: Role
    name: str
    token: bool

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def bearer() -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() or None if scheme.lower() == "bearer" else None


def request_caller(state: WebState) -> Caller:
    """The caller of this request; raises Refused(401, why) when there is none."""
    given = bearer()
    if given is not None:
        expected = state.settings.api_token
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return Caller(Role.ADMIN, "KIRBY_API_TOKEN", token=True)
        with state.database.session() as session:
            found = check_token(session, given, state.clock.now())
        if found.role is None:
            raise Refused(401, found.problem)
        return Caller(found.role, f"token {found.name}", token=True)
    if current_user.is_authenticated:
        return Caller(current_user.role, current_user.username, token=False)
    raise Refused(401, "authentication required: log in, or send Authorization: Bearer <token> (kirby token create)")
