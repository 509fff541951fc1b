"""Sign in with OpenID Connect in a real browser: Chromium goes from Kirby's login page to the real
provider of ``deploy/services up oidc``, signs in on its login page and comes back to a real
``kirby web`` with the role of its group; someone outside Kirby's groups gets the refusal page; a
forged ``state`` on the real callback is refused; with KIRBY_OIDC_LOGOUT, logout ends the
provider's session too."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import free_port, start_kirby_web, stop
from tests.oidc_provider import USERS, oidc_variables

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def oidc_web(tmp_path_factory, oidc_issuer):
    port = free_port()
    variables = oidc_variables(oidc_issuer, f"http://127.0.0.1:{port}", KIRBY_OIDC_LOGOUT="true")
    web = start_kirby_web(tmp_path_factory.mktemp("kirby-oidc"), port=port, **variables)
    web.issuer = oidc_issuer
    yield web
    stop(web.process)


def sign_in_with_provider(page, web, username: str) -> None:
    """From Kirby's login page through the provider's login page, as ``username``."""
    page.goto(f"{web.url}/login")
    page.wait_for_selector("#oidc-login")
    page.click("#oidc-login")
    page.wait_for_url(re.compile(re.escape(web.issuer) + r"/interaction/.*"))
    page.fill("#username", username)
    page.fill("#password", USERS[username]["password"])
    page.click("#sign-in")


def test_the_login_page_offers_the_provider_beside_the_password_form(page, oidc_web):
    page.goto(f"{oidc_web.url}/login")
    assert page.inner_text("#oidc-login") == "Sign in with Test IdP"
    assert page.is_visible("#password")  # KIRBY_LOCAL_LOGIN is on by default


@pytest.mark.parametrize("username, role", [("ada", "admin"), ("vic", "viewer")])
def test_a_provider_user_lands_in_kirby_with_the_role_of_its_group(page, oidc_web, username, role):
    sign_in_with_provider(page, oidc_web, username)
    page.wait_for_url(f"{oidc_web.url}/admin/")
    assert page.inner_text(".kirby-user") == f"{username} ({role})"
    response = page.goto(f"{oidc_web.url}/admin/user/")
    assert (response.status == 200) == (role == "admin")  # the Users page is for admins


def test_a_user_outside_kirbys_groups_gets_the_refusal_page(page, oidc_web):
    sign_in_with_provider(page, oidc_web, "olga")
    page.wait_for_url(re.compile(re.escape(oidc_web.url) + r"/login/oidc/callback.*"))
    assert "olga is in none of Kirby's groups" in page.inner_text(".alert-danger")
    assert page.is_visible("#oidc-login")  # the login page, to try another account
    page.goto(f"{oidc_web.url}/admin/")
    assert "/login" in page.url  # not logged in


def test_a_forged_state_on_the_callback_is_refused(page, oidc_web):
    page.goto(f"{oidc_web.url}/login")
    page.click("#oidc-login")
    page.wait_for_url(re.compile(re.escape(oidc_web.issuer) + r"/interaction/.*"))  # a sign-in is pending
    response = page.goto(f"{oidc_web.url}/login/oidc/callback?code=made-up&state=forged")
    assert response.status == 400
    assert "state does not match" in page.inner_text(".alert-danger")
    page.goto(f"{oidc_web.url}/admin/")
    assert "/login" in page.url


def test_logout_ends_the_kirby_session_and_the_providers(page, oidc_web):
    sign_in_with_provider(page, oidc_web, "ada")
    page.wait_for_url(f"{oidc_web.url}/admin/")
    page.click("#logout")
    page.wait_for_url(re.compile(re.escape(oidc_web.issuer) + r"/session/end.*"))
    page.click("#logout-yes")
    page.wait_for_url(re.compile(re.escape(oidc_web.url) + r"/login.*"))
    page.goto(f"{oidc_web.url}/admin/")
    assert "/login" in page.url
    page.click("#oidc-login")  # the provider asks for the password again: its session ended too
    page.wait_for_url(re.compile(re.escape(oidc_web.issuer) + r"/interaction/.*"))
    assert page.is_visible("#password")


def test_the_password_form_is_gone_with_local_login_off(page, oidc_issuer, tmp_path):
    port = free_port()
    variables = oidc_variables(oidc_issuer, f"http://127.0.0.1:{port}", KIRBY_LOCAL_LOGIN="false")
    web = start_kirby_web(tmp_path, port=port, **variables)
    try:
        page.goto(f"{web.url}/login")
        assert page.is_visible("#oidc-login") and not page.is_visible("#password")
    finally:
        stop(web.process)
