"""How the LDAP settings must fit together: refused when the directory is built (``kirby web``'s
start and every app), each with one line naming the variables. No directory is contacted."""

from __future__ import annotations

import uuid

import pytest

from kirby.errors import ConfigError
from kirby.ldap_auth import LdapDirectory

GROUPS = {"KIRBY_ADMIN_GROUPS": "kirby-admins"}
TEMPLATE = {"KIRBY_LDAP_USER_DN_TEMPLATE": "uid={username},ou=people,dc=x"}


@pytest.mark.parametrize(
    "variables, message",
    [
        (GROUPS, "neither KIRBY_LDAP_USER_DN_TEMPLATE nor KIRBY_LDAP_SEARCH_BASE"),
        ({**GROUPS, **TEMPLATE, "KIRBY_LDAP_START_TLS": "true", "KIRBY_LDAP_URL": "ldaps://h:636"}, "use one or"),
        (
            {**GROUPS, "KIRBY_LDAP_SEARCH_BASE": "dc=x", "KIRBY_LDAP_BIND_DN": "cn=k,dc=x"},
            "without KIRBY_LDAP_BIND_PASSWORD",
        ),
        (TEMPLATE, "KIRBY_ADMIN_GROUPS and KIRBY_VIEWER_GROUPS are empty: nobody could log in"),
    ],
)
def test_ldap_settings_that_do_not_fit_are_refused(make_settings, variables, message):
    settings = make_settings(**{"KIRBY_LDAP_URL": "ldap://127.0.0.1:1", **variables})
    with pytest.raises(ConfigError, match=message):
        LdapDirectory(settings)


def test_a_complete_configuration_builds_without_contacting_the_directory(make_settings):
    directory = LdapDirectory(make_settings(KIRBY_LDAP_URL="ldap://127.0.0.1:1", **GROUPS, **TEMPLATE))
    assert not directory.can_refresh  # a DN template and no service account: sessions end at the refresh
    assert directory.authenticate("ada", "") is None  # and no connection for an empty password


def test_an_active_directory_entry_gives_its_guid_account_name_and_groups(make_settings):
    """AD has no entryUUID: the subject is objectGUID (16 bytes, little-endian UUID fields), the name
    sAMAccountName; each memberOf group counts by DN and by its CN. (No AD here: the entry is the
    shape ldap3 returns for one.)"""
    directory = LdapDirectory(
        make_settings(KIRBY_LDAP_URL="ldaps://127.0.0.1:1", KIRBY_LDAP_SEARCH_BASE="DC=corp", **GROUPS)
    )
    guid = uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff")
    entry = {
        "dn": "CN=Jo Doe,OU=Staff,DC=corp",
        "objectGUID": guid.bytes_le,
        "sAMAccountName": "jdoe",
        "displayName": "Jo Doe",
        "memberOf": ["CN=Kirby Admins,OU=Groups,DC=corp"],
    }
    identity = directory._identity(None, entry, "JDoe")
    assert (identity.subject, identity.username, identity.display_name) == (str(guid), "jdoe", "Jo Doe")
    assert identity.groups == {"CN=Kirby Admins,OU=Groups,DC=corp", "Kirby Admins"}
    bare = directory._identity(None, {"dn": "uid=x,DC=corp"}, "x")  # neither id: the DN, lowercased
    assert (bare.subject, bare.username, bare.groups) == ("uid=x,dc=corp", "x", frozenset())
