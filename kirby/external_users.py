"""External users (LDAP, OpenID Connect): the one seam between an identity provider and Kirby's users.

A provider module (``kirby.ldap_auth``, the OIDC login) proves who someone is and hands an
:class:`ExternalIdentity` to :func:`sign_in_external`, which finds or creates the Kirby user and
gives it the role its groups earn (:func:`role_for_groups`). No Flask and no vendor library here.

Contracts:

- An external user is found by ``(provider, subject)``, the provider's stable id, never by its
  name. It is created on its first login (``kirby adduser`` is for local users only).
- A name that already belongs to another user (a local one, or one of another provider or
  subject) is refused with :class:`LoginRefused`: accounts are never merged silently.
- The role is evaluated again at each login and, while a session lasts, whenever the last check is
  older than ``KIRBY_ROLE_REFRESH`` (:func:`refresh_external`). Someone in neither
  ``KIRBY_ADMIN_GROUPS`` nor ``KIRBY_VIEWER_GROUPS`` is refused, and a known user refused so has
  every open session ended (its session generation is bumped in the caller's session: catch
  ``LoginRefused`` inside the transaction so the bump is committed).
- Group names compare case-insensitively (``str.casefold``), as LDAP and Azure AD compare them.
  Admin wins when someone is in both lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kirby.config import Settings
from kirby.errors import KirbyError
from kirby.models import Provider, Role, User
from kirby.users import USERNAME

UNUSABLE_PASSWORD = "!external"  # not a werkzeug hash: no password ever matches it


class LoginRefused(KirbyError):
    """A proven identity that Kirby does not let in; the message is shown on the login page."""


class ProviderUnavailable(KirbyError):
    """The provider cannot be asked now (unreachable, timed out). The message is for the login
    page; ``setting`` names the variable the log line points at (e.g. KIRBY_LDAP_URL)."""

    def __init__(self, message: str, setting: str, detail: str = ""):
        super().__init__(message)
        self.setting, self.detail = setting, detail


@dataclass(frozen=True)
class ExternalIdentity:
    """Someone a provider vouches for. ``subject`` is the provider's stable id (LDAP entryUUID or
    objectGUID, OIDC ``sub``); ``groups`` are the names the role is derived from."""

    provider: Provider
    subject: str
    username: str
    display_name: str | None = None
    email: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)


RoleRefresher = Callable[[User], "ExternalIdentity | None"]
"""Looks a user up again at its provider: its current identity, or None when that cannot be told
(no service account, directory unreachable, user gone); None ends the session."""


def _folded(groups: Iterable[str]) -> set[str]:
    return {group.strip().casefold() for group in groups if group and group.strip()}


def role_for_groups(groups: Iterable[str], settings: Settings) -> Role | None:
    """ADMIN if a group is in KIRBY_ADMIN_GROUPS, else VIEWER if one is in KIRBY_VIEWER_GROUPS,
    else None (case-insensitive)."""
    held = _folded(groups)
    if held & _folded(settings.admin_groups):
        return Role.ADMIN
    if held & _folded(settings.viewer_groups):
        return Role.VIEWER
    return None


def _refusal_for_groups(identity: ExternalIdentity) -> LoginRefused:
    return LoginRefused(
        f"{identity.username} is in none of Kirby's groups (KIRBY_ADMIN_GROUPS, KIRBY_VIEWER_GROUPS): "
        "ask an administrator to add you to one of them."
    )


def _end_sessions(user: User) -> None:
    user.session_generation = (user.session_generation or 0) + 1


def _name_taken(session: Session, username: str, user: User | None) -> User | None:
    other = session.scalars(select(User).where(func.lower(User.username) == username.lower())).first()
    return other if other is not None and other is not user else None


def _name_refusal(username: str, other: User) -> LoginRefused:
    owner = "a local Kirby user" if other.provider == Provider.LOCAL else f"another {other.provider} account"
    return LoginRefused(
        f"The name {username} belongs to {owner}; Kirby does not merge accounts. "
        "An administrator must rename or delete one of them on the Users page."
    )


def sign_in_external(session: Session, settings: Settings, identity: ExternalIdentity, now: datetime) -> User:
    """The active Kirby user for ``identity``, created on first login, its role set from its
    groups and ``roles_checked_at`` set to ``now``. Raises LoginRefused (see the module's contracts)."""
    if not identity.subject:
        raise LoginRefused(f"The {identity.provider} provider gave no stable id for {identity.username}.")
    if not isinstance(identity.username, str) or not USERNAME.fullmatch(identity.username):
        raise LoginRefused(
            f"{identity.username!r} is not a name Kirby accepts (1 to 64 letters, digits, '.', '_', '-' or '@')."
        )
    user = session.scalars(
        select(User).where(User.provider == identity.provider, User.subject == identity.subject)
    ).first()
    role = role_for_groups(identity.groups, settings)
    if role is None:
        if user is not None:
            _end_sessions(user)
        raise _refusal_for_groups(identity)
    if user is not None and not user.active:
        raise LoginRefused(f"The account {user.username} is deactivated in Kirby: ask an administrator.")
    other = _name_taken(session, identity.username, user)
    if other is not None:
        raise _name_refusal(identity.username, other)
    if user is None:
        user = User(
            username=identity.username,
            password_hash=UNUSABLE_PASSWORD,
            provider=identity.provider,
            subject=identity.subject,
            role=role,
            roles_checked_at=now,
            active=True,
        )
        try:
            with session.begin_nested():
                session.add(user)
        except IntegrityError:  # the same name or subject created concurrently
            raise LoginRefused(
                f"The account {identity.username} was being created by another login: try again."
            ) from None
    user.username, user.role, user.roles_checked_at = identity.username, role, now
    session.flush()
    return user


def role_refresh_due(user: User, settings: Settings, now: datetime) -> bool:
    """True for an external user whose groups were last checked KIRBY_ROLE_REFRESH ago or more."""
    if user.provider == Provider.LOCAL:
        return False
    checked = user.roles_checked_at
    return checked is None or now - checked >= timedelta(seconds=settings.role_refresh)


def refresh_external(
    session: Session, settings: Settings, user: User, refresher: RoleRefresher | None, now: datetime
) -> bool:
    """Re-check a due external user's role (see ``role_refresh_due``): True when its sessions may go
    on (the role updated from its current groups), False when they are ended (generation bumped):
    no refresher for its provider, the provider cannot tell, another subject, or no group left."""
    if not role_refresh_due(user, settings, now):
        return True
    identity = refresher(user) if refresher is not None else None
    role = role_for_groups(identity.groups, settings) if identity is not None else None
    if identity is None or identity.subject != user.subject or role is None:
        _end_sessions(user)
        return False
    user.role, user.roles_checked_at = role, now
    return True
