"""Named API tokens: created with a role and an optional lifetime, shown once, stored hashed, revocable.

A token is ``kirby_`` + 43 random URL-safe characters (256 bits). Only its SHA-256 is stored (a
random 256-bit secret needs no slow hash: there is nothing to guess), so the database alone cannot
be used to call the API. Revoked tokens stay listed, with the time they were revoked.
``KIRBY_API_TOKEN`` (the supervisors' token, from the settings) is not one of these.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from kirby.errors import KirbyError
from kirby.models import ApiToken, Role
from kirby.vocabulary import name_problem

PREFIX = "kirby_"
_DURATION = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TokenError(KirbyError):
    """A token operation was refused (bad name, duplicate, unknown token...)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` or ``2w`` as a timedelta; TokenError otherwise."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or int(match.group(1)) == 0:
        raise TokenError(f"--expires {text!r} is not a duration; use a number and m, h, d or w, e.g. 30d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def create_token(
    session: Session, name: str, role: Role, now: datetime, lifetime: timedelta | None = None
) -> tuple[ApiToken, str]:
    """Add token ``name`` with ``role``; returns the row and the token itself (not stored anywhere)."""
    problem = name_problem(name, "token name")
    if problem:
        raise TokenError(problem)
    if session.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise TokenError(f"a token named {name!r} exists already (see kirby token list); choose another name")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        token_hash=digest(token),
        role=Role(role),
        created_at=now,
        expires_at=now + lifetime if lifetime else None,
    )
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, name: str, now: datetime) -> ApiToken:
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise TokenError(f"no token named {name!r}; see kirby token list")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


@dataclass(frozen=True)
class TokenCheck:
    """What a presented token is: ``role`` when usable, else ``problem`` (unknown, expired, revoked)."""

    role: Role | None
    name: str = ""
    problem: str = ""


def check_token(session: Session, token: str, now: datetime) -> TokenCheck:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(token)))
    if row is None:
        return TokenCheck(None, problem="unknown API token; create one with kirby token create")
    if row.revoked_at is not None:
        return TokenCheck(None, row.name, f"the API token {row.name!r} was revoked; create a new one")
    if row.expires_at is not None and row.expires_at <= now:
        return TokenCheck(None, row.name, f"the API token {row.name!r} expired; create a new one")
    return TokenCheck(row.role, row.name)


def status(row: ApiToken, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"
