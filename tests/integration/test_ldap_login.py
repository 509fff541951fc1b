"""LDAP logins through the real login form (Flask test client) against the real slapd of
``deploy/services up slapd``, seeded by deploy/ldap/seed.ldif: ada (kirby-admins), vera
(kirby-viewers), otto (staff only). Tests that change group membership add users of their own
(ldapadd/ldapmodify as the directory's admin) and delete them afterwards.

Guarantees checked here: login by direct bind and by search-then-bind (StartTLS, test CA), role
from groups, the outsider's refusal page, no LDAP injection, no bind with an empty password, the
role follows the groups at the role refresh, an unreachable directory is one message and one log
line, and a misconfigured directory stops `kirby web` naming the variable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from kirby.bus import open_bus
from kirby.clock import FixedClock
from kirby.db import open_database
from kirby.errors import ConfigError
from kirby.external_users import ProviderUnavailable
from kirby.ldap_auth import LdapDirectory
from kirby.lease import open_lease_store
from kirby.models import Provider, Role, User
from kirby.web.app import create_app
from kirby.web.server import serve

ROOT_DN, ROOT_PASSWORD = "cn=admin,dc=kirby,dc=test", "kirby-ldap-admin"
PEOPLE, GROUPS = "ou=people,dc=kirby,dc=test", "ou=groups,dc=kirby,dc=test"
SERVICE = {
    "KIRBY_LDAP_BIND_DN": "cn=kirby-service,ou=services,dc=kirby,dc=test",
    "KIRBY_LDAP_BIND_PASSWORD": "kirby-service-password",
}
GROUP_ROLES = {"KIRBY_ADMIN_GROUPS": "kirby-admins", "KIRBY_VIEWER_GROUPS": "kirby-viewers"}
DIRECT = {"KIRBY_LDAP_USER_DN_TEMPLATE": "uid={username}," + PEOPLE}
SEARCH = {"KIRBY_LDAP_SEARCH_BASE": PEOPLE, **SERVICE}


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'kirby.db'}"


@pytest.fixture
def make_app(make_settings, slapd):
    opened = []

    def build(url=None, **variables):
        settings = make_settings(
            TESTING="true",
            SECRET_KEY="test-secret-key-abcdef",
            KIRBY_LDAP_URL=url or slapd.url,
            **GROUP_ROLES,
            **variables,
        )
        app = create_app(
            settings, database=open_database(settings), bus=open_bus(settings), lease_store=open_lease_store(settings)
        )
        state = app.extensions["kirby"]
        state.clock = FixedClock(state.clock.now())
        opened.append(state)
        return app

    yield build
    for state in opened:
        state.database.dispose()
        state.bus.close()
        state.lease_store.close()


def log_in(app, username, password):
    client = app.test_client()
    return client, client.post("/login", data={"username": username, "password": password})


def user(app, username) -> User:
    with app.extensions["kirby"].database.session() as s:
        found = s.query(User).filter_by(username=username).one()
        s.expunge(found)
        return found


def ldap_tool(slapd, tool: str, ldif: str) -> None:
    subprocess.run(
        [tool, "-x", "-H", slapd.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
        input=ldif,
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def temporary_person(slapd):
    """A new person (password ``<name>-password``) in the given groups; deleted afterwards."""
    made = []

    def make(*groups: str) -> str:
        name = f"t{uuid.uuid4().hex[:10]}"
        dn = f"uid={name},{PEOPLE}"
        ldap_tool(
            slapd,
            "ldapadd",
            f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\nsn: Test\nuserPassword: {name}-password\n",
        )
        made.append(dn)
        for group in groups:
            ldap_tool(slapd, "ldapmodify", f"dn: cn={group},{GROUPS}\nchangetype: modify\nadd: member\nmember: {dn}\n")
        return name

    yield make
    for dn in made:  # memberof-refint removes it from its groups too
        subprocess.run(["ldapdelete", "-x", "-H", slapd.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, dn], timeout=60)


def remove_from_group(slapd, name: str, group: str) -> None:
    ldap_tool(
        slapd,
        "ldapmodify",
        f"dn: cn={group},{GROUPS}\nchangetype: modify\ndelete: member\nmember: uid={name},{PEOPLE}\n",
    )


@pytest.mark.parametrize("mode", ["direct bind", "search then bind with StartTLS"])
def test_login_gives_the_role_of_the_groups_and_refuses_the_outsider(make_app, slapd, mode):
    if mode == "direct bind":
        app = make_app(**DIRECT)
    else:
        app = make_app(**SEARCH, KIRBY_LDAP_START_TLS="true", KIRBY_LDAP_CA_FILE=slapd.ca_file)
    admin, response = log_in(app, "ada", "ada-password")
    assert response.status_code == 302, response.get_data(as_text=True)
    assert admin.get("/admin/user/").status_code == 200
    viewer, response = log_in(app, "vera", "vera-password")
    assert response.status_code == 302 and viewer.get("/admin/user/").status_code == 403
    assert viewer.get("/admin/").status_code == 200
    ada, vera = user(app, "ada"), user(app, "vera")
    assert (ada.provider, ada.role, vera.role) == (Provider.LDAP, Role.ADMIN, Role.VIEWER)
    assert len(ada.subject) == 36  # entryUUID, not the name

    _, response = log_in(app, "otto", "otto-password")
    assert response.status_code == 403
    assert "otto is in none of Kirby&#39;s groups" in response.get_data(as_text=True)
    _, response = log_in(app, "ada", "vera-password")
    assert response.status_code == 401 and "Wrong username or password." in response.get_data(as_text=True)


def test_groups_from_a_group_search_and_ldaps(make_app, slapd):
    app = make_app(slapd.ldaps_url, **SEARCH, KIRBY_LDAP_CA_FILE=slapd.ca_file, KIRBY_LDAP_GROUP_SEARCH_BASE=GROUPS)
    client, response = log_in(app, "ada", "ada-password")
    assert response.status_code == 302 and client.get("/admin/user/").status_code == 200


@pytest.mark.parametrize("settings", [DIRECT, SEARCH], ids=["direct bind", "search then bind"])
@pytest.mark.parametrize("username", ["*)(uid=*", "*", "ada)(|(uid=*", "uid=ada,ou=people,dc=kirby,dc=test"])
def test_an_ldap_injection_username_is_refused(make_app, settings, username):
    app = make_app(**settings)
    for password in ("ada-password", "vera-password"):
        _, response = log_in(app, username, password)
        assert response.status_code == 401, (username, response.get_data(as_text=True))
    with app.extensions["kirby"].database.session() as s:
        assert s.query(User).filter(User.provider == Provider.LDAP).count() == 0


def test_an_empty_password_is_refused_before_any_bind(make_app, make_settings, slapd):
    app = make_app(**DIRECT)
    client = app.test_client()
    response = client.post("/login", data={"username": "ada", "password": ""})
    assert response.status_code == 400  # the form refuses it
    # The directory itself never connects for it: pointed at a closed port, it answers None, not
    # ProviderUnavailable (which any connection attempt would raise).
    closed = make_settings(KIRBY_LDAP_URL=f"ldap://127.0.0.1:{free_port()}", **DIRECT, **GROUP_ROLES)
    directory = LdapDirectory(closed)
    assert directory.authenticate("ada", "") is None
    with pytest.raises(ProviderUnavailable):
        directory.authenticate("ada", "ada-password")


def test_starttls_checks_the_certificate_against_the_ca(make_app, make_settings, slapd, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other"]
        + ["-keyout", str(tmp_path / "k.pem"), "-out", str(other_ca)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    app = make_app(**SEARCH, KIRBY_LDAP_START_TLS="true", KIRBY_LDAP_CA_FILE=str(other_ca))
    _, response = log_in(app, "ada", "ada-password")
    assert response.status_code == 503  # the server's certificate is not trusted: no password is sent
    wrong = make_settings(
        KIRBY_LDAP_URL=slapd.url, **SEARCH, **GROUP_ROLES, KIRBY_LDAP_START_TLS="true", KIRBY_LDAP_CA_FILE=str(other_ca)
    )
    with pytest.raises(ConfigError, match="KIRBY_LDAP_CA_FILE"):
        LdapDirectory(wrong).check()


def test_the_role_is_lost_at_the_refresh_after_removal_from_the_admin_group(make_app, slapd, temporary_person):
    name = temporary_person("kirby-admins", "kirby-viewers")
    app = make_app(**SEARCH)  # a service account: groups are read again without the user's password
    state = app.extensions["kirby"]
    client, response = log_in(app, name, f"{name}-password")
    assert response.status_code == 302 and client.get("/admin/user/").status_code == 200
    remove_from_group(slapd, name, "kirby-admins")
    assert client.get("/admin/user/").status_code == 200  # until the refresh is due
    state.clock.advance(state.settings.role_refresh)
    assert client.get("/admin/user/").status_code == 403  # a viewer now, same session
    assert client.get("/admin/").status_code == 200
    remove_from_group(slapd, name, "kirby-viewers")
    state.clock.advance(state.settings.role_refresh)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]  # no group left
    _, response = log_in(app, name, f"{name}-password")
    assert response.status_code == 403


def test_without_a_service_account_the_session_ends_at_the_refresh_and_the_next_login_decides(
    make_app, slapd, temporary_person
):
    name = temporary_person("kirby-admins", "kirby-viewers")
    app = make_app(**DIRECT)
    state = app.extensions["kirby"]
    client, _ = log_in(app, name, f"{name}-password")
    assert client.get("/admin/user/").status_code == 200
    remove_from_group(slapd, name, "kirby-admins")
    state.clock.advance(state.settings.role_refresh)
    response = client.get("/admin/user/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    client, response = log_in(app, name, f"{name}-password")
    assert response.status_code == 302 and client.get("/admin/user/").status_code == 403
    assert user(app, name).role == Role.VIEWER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_directory_is_one_message_and_one_log_line(make_app, caplog):
    url = f"ldap://127.0.0.1:{free_port()}"
    app = make_app(url, **DIRECT)
    _, response = log_in(app, "ada", "ada-password")
    assert response.status_code == 503
    assert "The directory (LDAP) cannot be reached right now" in response.get_data(as_text=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "kirby.web.auth"]
    assert len(lines) == 1 and f"KIRBY_LDAP_URL={url}" in lines[0], lines
    client, response = log_in(app, "nobody-local", "x")  # still one message, no stack trace
    assert response.status_code == 503


@pytest.mark.parametrize(
    "variables, named",
    [
        ({**SEARCH, "KIRBY_LDAP_BIND_PASSWORD": "wrong"}, "KIRBY_LDAP_BIND_DN="),
        ({**SEARCH, "KIRBY_LDAP_SEARCH_BASE": "ou=nobody,dc=kirby,dc=test"}, "KIRBY_LDAP_SEARCH_BASE="),
        ({**DIRECT, **SERVICE, "KIRBY_LDAP_USER_DN_TEMPLATE": "uid={username},ou=folks,dc=kirby,dc=test"}, "TEMPLATE="),
        ({"KIRBY_LDAP_SEARCH_BASE": PEOPLE, "KIRBY_LDAP_START_TLS": "true"}, "KIRBY_LDAP_CA_FILE"),
    ],
    ids=["service bind", "search base", "DN template", "TLS"],
)
def test_a_misconfigured_directory_stops_kirby_web_naming_the_variable(make_settings, slapd, variables, named):
    settings = make_settings(KIRBY_LDAP_URL=slapd.url, SECRET_KEY="test-secret-key-abcdef", **GROUP_ROLES, **variables)
    with pytest.raises(ConfigError, match=named):
        serve(settings, port=free_port())


@pytest.mark.slow
def test_kirby_web_refuses_to_start_with_a_wrong_service_password(slapd, tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KIRBY_")},
        "SECRET_KEY": "test-secret-key-abcdef",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'k.db'}",
        "KIRBY_EMBEDDED_PATH": str(tmp_path / "e.db"),
        "KIRBY_LDAP_URL": slapd.url,
        **GROUP_ROLES,
        **SEARCH,
        "KIRBY_LDAP_BIND_PASSWORD": "n0t-the-password",
    }
    done = subprocess.run(
        [sys.executable, "-m", "kirby", "web", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "KIRBY_LDAP_BIND_DN='cn=kirby-service,ou=services,dc=kirby,dc=test'" in last and "bind failed" in last
    assert "n0t-the-password" not in done.stderr  # the password is not printed
