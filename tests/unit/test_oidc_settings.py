"""OpenID Connect settings and claim reading, without a provider: the issuer must be https (http
only on loopback) without query or fragment, the scopes must hold openid; the groups claim is a
list or one string; the user's name falls back from preferred_username to email to sub."""

from __future__ import annotations

import pytest

from kirby.config import load_settings
from kirby.errors import ConfigError
from kirby.web.oidc_views import _groups, _username


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"KIRBY_OIDC_ISSUER": "http://login.example.com"}, "is not an https URL (http only on 127.0.0.1)"),
        ({"KIRBY_OIDC_ISSUER": "ftp://127.0.0.1"}, "is not an https URL"),
        ({"KIRBY_OIDC_ISSUER": "https://login.example.com/?tenant=1"}, "an issuer has no query or fragment"),
        ({"KIRBY_OIDC_SCOPES": "profile email"}, "KIRBY_OIDC_SCOPES='profile email' lacks openid"),
        ({"KIRBY_OIDC_LOGOUT": "maybe"}, "KIRBY_OIDC_LOGOUT='maybe' is not a boolean"),
    ],
)
def test_bad_oidc_settings_are_refused_naming_the_variable(tmp_path, variables, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_settings(environ=variables, cwd=tmp_path)


def test_http_is_accepted_on_loopback_only_and_the_secret_stays_out_of_repr(tmp_path):
    settings = load_settings(
        environ={"KIRBY_OIDC_ISSUER": "http://127.0.0.1:9400", "KIRBY_OIDC_CLIENT_SECRET": "s3cret-value"}, cwd=tmp_path
    )
    assert settings.oidc_issuer == "http://127.0.0.1:9400"
    assert "s3cret-value" not in repr(settings)


@pytest.mark.parametrize(
    "claims, groups",
    [
        ({"groups": ["kirby-admins", "staff"]}, ("kirby-admins", "staff")),
        ({"groups": "kirby-admins"}, ("kirby-admins",)),
        ({"groups": ["ok", 7, None, {"x": 1}]}, ("ok",)),
        ({"groups": 7}, ()),
        ({}, ()),
    ],
)
def test_the_groups_claim_is_a_list_or_one_string(claims, groups):
    assert _groups(claims, "groups") == groups


def test_the_user_name_falls_back_from_preferred_username_to_email_to_sub():
    assert _username({"sub": "s1", "preferred_username": " ada ", "email": "a@x"}) == "ada"
    assert _username({"sub": "s1", "preferred_username": "", "email": "a@x"}) == "a@x"
    assert _username({"sub": "s1", "email": 5}) == "s1"
