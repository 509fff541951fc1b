"""LDAP login latency against the slapd of ``deploy/services up slapd``, next to raw baselines.

Run: eval "$(deploy/services env)"; .venv/bin/python bench/ldap_login.py [--count N]   (not a test)

* ``LdapDirectory.authenticate`` (connect, bind as the user, read its entry with entryUUID and
  memberOf) in direct-bind mode, against a bare ldap3 connect + bind + unbind as the same user;
* the same in search-then-bind mode with StartTLS (service bind, search, user bind: two TLS
  handshakes), against a bare ldap3 StartTLS + bind;
* a whole login POST through the Flask test client (form, throttle, LDAP, first-login or refresh
  of the user row, session) for an LDAP user, against the same POST for a local user (its scrypt
  hash, ~100 ms of CPU on purpose, is the baseline users already accept).

Rounds alternate Kirby and baseline; each figure is p50/p99 over all rounds.
"""

from __future__ import annotations

import argparse
import os
import ssl
import tempfile
import time
from pathlib import Path

from ldap3 import NONE, Connection, Server, Tls

from kirby.bus import open_bus
from kirby.config import load_settings
from kirby.ldap_auth import LdapDirectory
from kirby.lease import open_lease_store
from kirby.users import add_user
from kirby.web.app import create_app

PEOPLE = "ou=people,dc=kirby,dc=test"
ADA = f"uid=ada,{PEOPLE}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999) - 1))]


def line(name: str, values: list[float]) -> str:
    return (
        f"{name:<44} p50 {pct(values, 0.5) * 1000:7.1f} ms  p99 {pct(values, 0.99) * 1000:7.1f} ms  (n={len(values)})"
    )


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=60)
    count = parser.parse_args().count
    url, ca = os.environ.get("KIRBY_TEST_LDAP_URL"), os.environ.get("KIRBY_TEST_LDAP_CA_FILE")
    if not url:
        raise SystemExit('KIRBY_TEST_LDAP_URL is unset: deploy/services up slapd; eval "$(deploy/services env)"')
    folder = Path(tempfile.mkdtemp(prefix="kirby-bench-ldap-"))
    groups = {"KIRBY_ADMIN_GROUPS": "kirby-admins", "KIRBY_VIEWER_GROUPS": "kirby-viewers"}
    direct = load_settings(
        {"KIRBY_LDAP_URL": url, "KIRBY_LDAP_USER_DN_TEMPLATE": "uid={username}," + PEOPLE, **groups}, folder
    )
    search = load_settings(
        {
            "KIRBY_LDAP_URL": url,
            "KIRBY_LDAP_SEARCH_BASE": PEOPLE,
            "KIRBY_LDAP_BIND_DN": "cn=kirby-service,ou=services,dc=kirby,dc=test",
            "KIRBY_LDAP_BIND_PASSWORD": "kirby-service-password",
            "KIRBY_LDAP_START_TLS": "true",
            "KIRBY_LDAP_CA_FILE": ca,
            **groups,
        },
        folder,
    )
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)

    def bare_bind(start_tls: bool) -> None:
        connection = Connection(Server(url, tls=tls, get_info=NONE), user=ADA, password="ada-password")
        connection.open()
        if start_tls:
            connection.start_tls()
        assert connection.bind()
        connection.unbind()

    results: dict[str, list[float]] = {}

    def measure(name: str, call) -> None:
        results.setdefault(name, []).append(timed(call))

    directories = {"direct": LdapDirectory(direct), "search": LdapDirectory(search)}
    web_settings = load_settings(
        {
            "TESTING": "true",
            "SECRET_KEY": "bench-secret-key",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'kirby.db'}",
            "KIRBY_EMBEDDED_PATH": str(folder / "embedded.db"),
            "KIRBY_LDAP_URL": url,
            "KIRBY_LDAP_USER_DN_TEMPLATE": "uid={username}," + PEOPLE,
            **groups,
        },
        folder,
    )
    app = create_app(web_settings, bus=open_bus(web_settings), lease_store=open_lease_store(web_settings))
    state = app.extensions["kirby"]
    with state.database.session() as s:
        add_user(s, web_settings, "local-lou", "local-lou-password", admin=False)

    def post(username: str, password: str) -> None:
        response = app.test_client().post("/login", data={"username": username, "password": password})
        assert response.status_code == 302, response.status_code
        state.throttle.succeeded(username, "127.0.0.1")

    for _ in range(3):  # warm-up
        directories["direct"].authenticate("ada", "ada-password")
        post("ada", "ada-password")
        post("local-lou", "local-lou-password")
    for _ in range(count):
        measure("kirby direct bind (authenticate)", lambda: directories["direct"].authenticate("ada", "ada-password"))
        measure("bare ldap3 bind", lambda: bare_bind(False))
        measure(
            "kirby search+bind, StartTLS (authenticate)",
            lambda: directories["search"].authenticate("ada", "ada-password"),
        )
        measure("bare ldap3 StartTLS + bind", lambda: bare_bind(True))
        measure("login POST, LDAP user (direct bind)", lambda: post("ada", "ada-password"))
        measure("login POST, local user (scrypt)", lambda: post("local-lou", "local-lou-password"))
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for name, values in results.items():
        print(line(name, values))


if __name__ == "__main__":
    main()
