"""Local users: password hashing, creation and authentication.

Passwords are hashed with werkzeug's scrypt (a random salt per hash). ``SECURITY_PASSWORD_SALT``
is a pepper: the password is first HMAC-SHA256'd with it, so a stolen database alone is not enough
to test guesses. Changing the pepper therefore invalidates every existing password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from kirby.config import Settings
from kirby.errors import UserError
from kirby.models import Role, User

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
HASH_METHOD = "scrypt"
MIN_PASSWORD_LENGTH = 12  # `kirby adduser` and the admin form; only a demo file's users may have less


def _peppered(password: str, settings: Settings) -> str:
    pepper = (settings.security_password_salt or "").encode()
    return hmac.new(pepper, password.encode(), hashlib.sha256).hexdigest()


def hash_password(password: str, settings: Settings) -> str:
    """A salted scrypt hash of ``password`` peppered with SECURITY_PASSWORD_SALT."""
    return generate_password_hash(_peppered(password, settings), method=HASH_METHOD)


def verify_password(password_hash: str, password: str, settings: Settings) -> bool:
    """True if ``password`` matches ``password_hash`` (False for a malformed hash)."""
    try:
        return check_password_hash(password_hash, _peppered(password, settings))
    except (ValueError, TypeError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return generate_password_hash("kirby-no-such-user", method=HASH_METHOD)


def check_username(username: str) -> str:
    """Return ``username`` if it is a valid user name, else raise UserError."""
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise UserError(
            f"{username!r} is not a valid user name: use 1 to 64 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    return username


def check_password(username: str, password: str, min_length: int = MIN_PASSWORD_LENGTH) -> str:
    """Return ``password`` if it is acceptable for ``username``, else raise UserError."""
    if not password:
        raise UserError(f"refusing an empty password for user {username!r}; choose a password")
    if len(password) < min_length:
        raise UserError(
            f"refusing a password of {len(password)} characters for user {username!r}: "
            f"use at least {min_length} characters"
        )
    return password


def set_password(user: User, password: str, settings: Settings) -> None:
    """Store a new password for ``user`` (checked, hashed) and end every session it has open."""
    check_password(user.username, password)
    user.password_hash = hash_password(password, settings)
    user.session_generation = (user.session_generation or 0) + 1


def find_user(session: Session, username: str) -> User | None:
    """The user called ``username``, compared without regard to case."""
    return session.scalars(select(User).where(func.lower(User.username) == username.lower())).first()


def add_user(
    session: Session,
    settings: Settings,
    username: str,
    password: str,
    admin: bool,
    min_length: int = MIN_PASSWORD_LENGTH,
) -> User:
    """Create an active user (admin or viewer) in ``session``; never overwrites an existing one.

    Raises UserError for a bad name, an empty or short password (under ``min_length``; only the
    demo import passes a lower one) or a name already taken (case-insensitive).
    """
    check_username(username)
    check_password(username, password, min_length)
    if find_user(session, username) is not None:
        raise UserError(f"user {username!r} already exists; choose another name")
    user = User(
        username=username,
        password_hash=hash_password(password, settings),
        role=Role.ADMIN if admin else Role.VIEWER,
        active=True,
    )
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:  # created concurrently by someone else
        raise UserError(f"user {username!r} already exists; choose another name") from None
    return user


def verify_or_dummy(password_hash: str | None, password: str, settings: Settings) -> bool:
    """``verify_password``; for an unknown user (``None``) one verification of a dummy hash, so
    timing does not reveal which names exist. Needs no database session: the web's login calls it
    after returning its connection to the pool (a hash costs ~110 ms of CPU)."""
    if password_hash is None:
        verify_password(_dummy_hash(), password or "", settings)
        return False
    return verify_password(password_hash, password or "", settings)


def authenticate(session: Session, settings: Settings, username: str, password: str) -> User | None:
    """The active user ``username`` if ``password`` is right, else None (see ``verify_or_dummy``)."""
    user = session.scalars(select(User).where(User.username == username)).first() if username else None
    if not verify_or_dummy(user.password_hash if user else None, password, settings) or not user.active:
        return None
    return user
