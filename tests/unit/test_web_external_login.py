"""The login form over the external-identity seam: a password provider's identity becomes a user
with its groups' role, refusals are a clear 403 page, KIRBY_LOCAL_LOGIN=false, and the role
refresh while a session lasts (the clock is a FixedClock). The provider here is a table that
implements the seam's contract; the real directory is tested in tests/integration/test_ldap_login.py."""

from __future__ import annotations

import pytest
from test_web_support import PASSWORD, T0, add_users

from kirby.bus import open_bus
from kirby.clock import FixedClock
from kirby.external_users import ExternalIdentity, ProviderUnavailable
from kirby.lease import open_lease_store
from kirby.models import Provider, Role, User
from kirby.web.app import create_app


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kirby.db'}"


class TableProvider:
    """username -> (password, groups); ``down`` makes it unreachable."""

    def __init__(self, people: dict[str, tuple[str, set[str]]]):
        self.people, self.down = people, False

    def identity(self, username: str) -> ExternalIdentity:
        return ExternalIdentity(Provider.LDAP, f"uuid-{username}", username, groups=frozenset(self.people[username][1]))

    def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        if self.down:
            raise ProviderUnavailable("The directory cannot be reached.", "KIRBY_LDAP_URL", "connection refused")
        known = self.people.get(username)
        return self.identity(username) if known and known[0] == password else None


def make_app(make_settings, db, users=True, **variables):
    settings = make_settings(
        TESTING="true",
        SECRET_KEY="test-secret-key-abcdef",
        KIRBY_ADMIN_GROUPS="admins",
        KIRBY_VIEWER_GROUPS="viewers",
        **variables,
    )
    app = create_app(settings, database=db, bus=open_bus(settings), lease_store=open_lease_store(settings))
    if users:
        add_users(app)
    state = app.extensions["kirby"]
    state.clock = FixedClock(T0)
    state.password_provider = TableProvider(
        {"carol": ("carol-pw", {"Viewers"}), "olga": ("olga-pw", {"staff"}), "alice": (PASSWORD, {"admins"})}
    )
    return app, state


def post_login(app, username, password):
    client = app.test_client()
    return client, client.post("/login", data={"username": username, "password": password})


def test_an_external_user_logs_in_with_its_groups_role_and_an_outsider_gets_a_clear_page(make_settings, db):
    app, state = make_app(make_settings, db)
    client, response = post_login(app, "carol", "carol-pw")
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/user/").status_code == 403  # a viewer: no Users page
    with state.database.session() as s:
        carol = s.query(User).filter_by(username="carol").one()
        assert (carol.provider, carol.subject, carol.role) == (Provider.LDAP, "uuid-carol", Role.VIEWER)

    _, response = post_login(app, "olga", "olga-pw")
    assert response.status_code == 403
    assert "olga is in none of Kirby&#39;s groups" in response.get_data(as_text=True)
    _, response = post_login(app, "carol", "wrong")
    assert response.status_code == 401 and "Wrong username or password." in response.get_data(as_text=True)


def test_local_users_keep_working_unless_local_login_is_off(make_settings, db):
    app, _ = make_app(make_settings, db)
    assert post_login(app, "victor", PASSWORD)[1].status_code == 302  # local; the provider is not asked
    app, _ = make_app(make_settings, db, users=False, KIRBY_LOCAL_LOGIN="false")
    assert post_login(app, "victor", PASSWORD)[1].status_code == 401
    response = post_login(app, "alice", PASSWORD)[1]  # the directory knows an "alice" too: never merged
    assert response.status_code == 403
    assert "The name alice belongs to a local Kirby user" in response.get_data(as_text=True)


def test_an_unreachable_provider_is_one_message_and_one_log_line(make_settings, db, caplog):
    app, state = make_app(make_settings, db)
    state.password_provider.down = True
    response = post_login(app, "carol", "carol-pw")[1]
    assert response.status_code == 503 and "The directory cannot be reached." in response.get_data(as_text=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "kirby.web.auth"]
    assert lines == ["login of 'carol' failed: connection refused (KIRBY_LDAP_URL)"]


def test_the_role_follows_the_groups_at_the_refresh_and_the_session_ends_when_unknown(make_settings, db):
    app, state = make_app(make_settings, db, KIRBY_ROLE_REFRESH="900")
    provider = state.password_provider
    client, _ = post_login(app, "carol", "carol-pw")
    state.role_refreshers[Provider.LDAP] = lambda user: provider.identity(user.username)
    provider.people["carol"] = ("carol-pw", {"admins"})
    state.clock.advance(899)
    assert client.get("/admin/user/").status_code == 403  # not due yet: still a viewer
    state.clock.advance(1)
    assert client.get("/admin/user/").status_code == 200  # re-checked: an admin now

    state.role_refreshers[Provider.LDAP] = lambda user: None  # the provider cannot tell any more
    state.clock.advance(900)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/admin/").status_code == 302  # the session is over for good (generation bumped)
    assert post_login(app, "carol", "carol-pw")[1].status_code == 302  # a new login checks the groups


def test_the_users_page_shows_the_provider_and_refuses_a_password_for_an_external_user(make_settings, db):
    app, state = make_app(make_settings, db)
    post_login(app, "carol", "carol-pw")
    admin, _ = post_login(app, "alice", PASSWORD)
    page = admin.get("/admin/user/").get_data(as_text=True)
    assert "Provider" in page and "ldap" in page and "local" in page
    with state.database.session() as s:
        carol_id = s.query(User).filter_by(username="carol").one().id
    response = admin.post(
        f"/admin/user/edit/?id={carol_id}",
        data={"username": "carol", "role": "viewer", "active": "y", "new_password": "a-long-new-password"},
    )
    assert "carol is an ldap user: its password is its provider" in response.get_data(as_text=True)
    with state.database.session() as s:
        assert s.query(User).filter_by(username="carol").one().password_hash == "!external"
