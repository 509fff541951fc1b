"""The external-identity seam (kirby.external_users): roles from groups, first login, no silent
merge, role re-evaluation at login and at the role refresh. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from kirby.external_users import (
    ExternalIdentity,
    LoginRefused,
    refresh_external,
    role_for_groups,
    role_refresh_due,
    sign_in_external,
)
from kirby.models import Provider, Role, User
from kirby.users import add_user, authenticate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def settings(make_settings):
    return make_settings(
        KIRBY_ADMIN_GROUPS="Kirby-Admins, ops", KIRBY_VIEWER_GROUPS="kirby-viewers", KIRBY_ROLE_REFRESH="900"
    )


def identity(groups=("kirby-viewers",), username="carol", subject="uuid-carol", provider=Provider.LDAP):
    return ExternalIdentity(provider=provider, subject=subject, username=username, groups=frozenset(groups))


def test_role_for_groups_is_case_insensitive_and_admin_wins(settings):
    assert role_for_groups({"KIRBY-ADMINS"}, settings) == Role.ADMIN
    assert role_for_groups({"kirby-viewers", "Ops"}, settings) == Role.ADMIN  # in both lists: admin
    assert role_for_groups({"Kirby-Viewers "}, settings) == Role.VIEWER
    assert role_for_groups({"staff", ""}, settings) is None
    assert role_for_groups(set(), settings) is None


def test_groups_may_be_dns_separated_by_semicolons(make_settings):
    settings = make_settings(KIRBY_ADMIN_GROUPS="cn=admins,ou=groups,dc=x; cn=root,dc=x")
    assert settings.admin_groups == ("cn=admins,ou=groups,dc=x", "cn=root,dc=x")
    assert role_for_groups({"CN=Admins,OU=Groups,DC=x"}, settings) == Role.ADMIN


def test_first_login_creates_the_user_and_later_logins_find_it_by_subject(db, settings):
    with db.session() as s:
        user = sign_in_external(s, settings, identity(), NOW)
        assert (user.provider, user.subject, user.role, user.roles_checked_at) == (
            Provider.LDAP,
            "uuid-carol",
            Role.VIEWER,
            NOW,
        )
        first_id = user.id
    later = NOW + timedelta(hours=1)
    with db.session() as s:  # promoted at the provider, and renamed: same user, new name, new role
        user = sign_in_external(s, settings, identity(groups={"Kirby-Admins"}, username="carol.d"), later)
        assert (user.id, user.username, user.role, user.roles_checked_at) == (first_id, "carol.d", Role.ADMIN, later)
    with db.session() as s:
        assert len(s.scalars(select(User)).all()) == 1
        assert authenticate(s, settings, "carol.d", "!external") is None  # no Kirby password works


def test_someone_in_no_group_is_refused_and_a_known_user_loses_its_sessions(db, settings):
    with db.session() as s, pytest.raises(LoginRefused, match="carol is in none of Kirby's groups"):
        sign_in_external(s, settings, identity(groups={"staff"}), NOW)
    with db.session() as s:
        assert s.scalars(select(User)).all() == []  # nothing created
        generation = sign_in_external(s, settings, identity(), NOW).session_generation
    with db.session() as s:
        with pytest.raises(LoginRefused):
            sign_in_external(s, settings, identity(groups=()), NOW)
        s.commit()  # what the login page does: the refusal's session bump is kept
    with db.session() as s:
        assert s.scalars(select(User)).one().session_generation == generation + 1


def test_a_local_name_or_another_providers_name_is_never_merged(db, settings):
    with db.session() as s:
        add_user(s, settings, "Alice", "s3cret-passphrase", admin=True)
        sign_in_external(s, settings, identity(username="bob", subject="oidc-bob", provider=Provider.OIDC), NOW)
    with db.session() as s, pytest.raises(LoginRefused, match="The name alice belongs to a local Kirby user"):
        sign_in_external(s, settings, identity(groups={"ops"}, username="alice", subject="uuid-alice"), NOW)
    with db.session() as s, pytest.raises(LoginRefused, match="belongs to another oidc account"):
        sign_in_external(s, settings, identity(username="bob", subject="uuid-bob"), NOW)
    with db.session() as s:  # an LDAP user whose entry was recreated (new subject) is not the old one either
        sign_in_external(s, settings, identity(username="dave", subject="uuid-dave-1"), NOW)
    with db.session() as s, pytest.raises(LoginRefused, match="belongs to another ldap account"):
        sign_in_external(s, settings, identity(username="dave", subject="uuid-dave-2"), NOW)
    with db.session() as s:
        alice = s.scalars(select(User).where(User.username == "Alice")).one()
        assert (alice.provider, alice.subject, alice.role) == (Provider.LOCAL, None, Role.ADMIN)


def test_a_deactivated_external_user_or_a_bad_name_is_refused(db, settings):
    with db.session() as s:
        sign_in_external(s, settings, identity(), NOW).active = False
    with db.session() as s, pytest.raises(LoginRefused, match="deactivated"):
        sign_in_external(s, settings, identity(), NOW)
    with db.session() as s, pytest.raises(LoginRefused, match="not a name Kirby accepts"):
        sign_in_external(s, settings, identity(username="*)(uid=*", subject="x"), NOW)
    with db.session() as s, pytest.raises(LoginRefused, match="no stable id"):
        sign_in_external(s, settings, identity(subject=""), NOW)


def test_the_role_is_refreshed_when_due_and_the_session_ends_when_it_cannot_be(db, settings):
    with db.session() as s:
        user = sign_in_external(s, settings, identity(groups={"ops"}), NOW)
        local = add_user(s, settings, "root", "s3cret-passphrase", admin=True)
        assert not role_refresh_due(local, settings, NOW + timedelta(days=9))  # local users: never
        assert not role_refresh_due(user, settings, NOW + timedelta(seconds=899))
        assert role_refresh_due(user, settings, NOW + timedelta(seconds=900))

        calls = []

        def demoted(looked_up: User) -> ExternalIdentity:
            calls.append(looked_up.username)
            return identity(groups={"kirby-viewers"})

        assert refresh_external(s, settings, user, demoted, NOW + timedelta(seconds=10))  # not due: not asked
        assert calls == []
        later = NOW + timedelta(seconds=901)
        assert refresh_external(s, settings, user, demoted, later)
        assert (calls, user.role, user.roles_checked_at) == (["carol"], Role.VIEWER, later)

        generation = user.session_generation
        even_later = later + timedelta(seconds=900)
        assert not refresh_external(s, settings, user, lambda u: identity(groups={"staff"}), even_later)
        assert user.session_generation == generation + 1  # no group left: every session ends
        assert not refresh_external(s, settings, user, lambda u: None, even_later)  # cannot tell: ends
        assert not refresh_external(s, settings, user, None, even_later)  # no refresher: ends
        assert not refresh_external(s, settings, user, lambda u: identity(subject="other"), even_later)
        assert user.session_generation == generation + 4
        assert user.role == Role.VIEWER and user.roles_checked_at == later  # unchanged by the refusals
