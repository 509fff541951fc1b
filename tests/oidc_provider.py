"""The test OpenID Connect provider of ``deploy/services up oidc`` (``deploy/oidc``): its client and
users, OIDC settings for a ``kirby web`` on a given port, and a sign-in driven over plain HTTP
(its real login form, without a browser) up to the redirect back to Kirby."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

ACCOUNTS = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "oidc" / "accounts.json").read_text())
CLIENT = ACCOUNTS["clients"][0]
USERS = {user["username"]: user for user in ACCOUNTS["users"]}
ADMIN_GROUP, VIEWER_GROUP = "kirby-admins", "kirby-viewers"  # ada is in the first, vic in the second, olga in neither


def oidc_variables(issuer: str, public_url: str, **extra: str) -> dict[str, str]:
    """Kirby's settings for the test provider and its test client."""
    return {
        "KIRBY_OIDC_ISSUER": issuer,
        "KIRBY_OIDC_CLIENT_ID": CLIENT["client_id"],
        "KIRBY_OIDC_CLIENT_SECRET": CLIENT["client_secret"],
        "KIRBY_OIDC_PROVIDER_NAME": "Test IdP",
        "KIRBY_PUBLIC_URL": public_url,
        "KIRBY_ADMIN_GROUPS": ADMIN_GROUP,
        "KIRBY_VIEWER_GROUPS": VIEWER_GROUP,
        **extra,
    }


def sign_in_at_provider(authorization_url: str, username: str, password: str | None = None) -> dict[str, str]:
    """Follow ``authorization_url`` through the provider's login form as ``username``; return the
    query parameters of the redirect back to Kirby's callback (code, state, iss)."""
    password = USERS[username]["password"] if password is None else password
    browser = requests.Session()
    page = browser.get(authorization_url, timeout=30)
    assert page.status_code == 200 and 'id="sign-in"' in page.text, page.text[:500]
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)[1]
    response = browser.post(
        urljoin(page.url, action), data={"username": username, "password": password}, allow_redirects=False, timeout=30
    )
    for _ in range(10):
        assert response.status_code in (302, 303), (response.status_code, response.text[:500])
        location = urljoin(response.url, response.headers["Location"])
        if "/login/oidc/callback" in location:
            return dict(parse_qsl(urlsplit(location).query))
        response = browser.get(location, allow_redirects=False, timeout=30)
    raise AssertionError("the provider did not redirect back to the callback")
