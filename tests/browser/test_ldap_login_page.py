"""LDAP login in a real browser against a real `kirby web` (search-then-bind with StartTLS and the
test CA, service account) and the real slapd of ``deploy/services up slapd``."""

from __future__ import annotations

import pytest
from conftest import log_in, screenshot, start_kirby_web, stop

SETTINGS = {
    "KIRBY_LDAP_SEARCH_BASE": "ou=people,dc=kirby,dc=test",
    "KIRBY_LDAP_BIND_DN": "cn=kirby-service,ou=services,dc=kirby,dc=test",
    "KIRBY_LDAP_BIND_PASSWORD": "kirby-service-password",
    "KIRBY_LDAP_START_TLS": "true",
    "KIRBY_ADMIN_GROUPS": "kirby-admins",
    "KIRBY_VIEWER_GROUPS": "kirby-viewers",
}


@pytest.fixture(scope="module")
def ldap_web(tmp_path_factory, slapd):
    web = start_kirby_web(
        tmp_path_factory.mktemp("kirby-web-ldap"),
        KIRBY_LDAP_URL=slapd.url,
        KIRBY_LDAP_CA_FILE=slapd.ca_file,
        **SETTINGS,
    )
    yield web
    stop(web.process)


def sign_in(page, web, username: str, password: str) -> None:
    page.goto(f"{web.url}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login")


def test_a_directory_admin_logs_in_and_sees_the_provider_on_the_users_page(page, ldap_web):
    sign_in(page, ldap_web, "ada", "ada-password")
    page.wait_for_url(f"{ldap_web.url}/admin/")
    page.goto(f"{ldap_web.url}/admin/user/")
    rows = {row.split()[0]: row.split() for row in page.locator("table tbody tr").all_inner_texts() if row.strip()}
    assert "ldap" in rows["ada"] and "admin" in rows["ada"], rows
    assert "local" in rows["alice"], rows  # the local users are still there, and still local


def test_a_directory_user_outside_the_groups_gets_the_refusal_page(page, ldap_web):
    sign_in(page, ldap_web, "otto", "otto-password")
    alert = page.locator(".alert-danger")
    alert.wait_for()
    assert "otto is in none of Kirby's groups" in alert.inner_text()
    assert page.url.startswith(f"{ldap_web.url}/login")
    screenshot(page, "login-ldap-refused")


def test_local_users_still_log_in_beside_the_directory(page, ldap_web):
    log_in(page, ldap_web, "victor")
    assert page.url == f"{ldap_web.url}/admin/"
