"""LDAP and Active Directory logins (ldap3, imported nowhere else).

:class:`LdapDirectory` is the login form's password provider (``authenticate``) and the role
refresher of ``ldap`` users (``refresh``); ``kirby.external_users`` turns what they return into a
Kirby user. Contracts:

- An empty password is refused before any connection: a simple bind with an empty password is an
  *anonymous* bind, which servers accept, and is not a login.
- The user is found by binding as ``KIRBY_LDAP_USER_DN_TEMPLATE`` (the name escaped as an RDN
  value, ``escape_rdn``) or by searching ``KIRBY_LDAP_SEARCH_BASE`` with ``KIRBY_LDAP_USER_FILTER``
  (the name escaped for filters, ``escape_filter_chars``; exactly one entry must match) as the
  service account (``KIRBY_LDAP_BIND_DN``) or anonymously, then binding as the entry found.
- Groups come from the user's ``memberOf`` or, with ``KIRBY_LDAP_GROUP_SEARCH_BASE``, from a
  search with ``KIRBY_LDAP_GROUP_FILTER``; each group counts by its DN and by its first RDN's
  value (``cn=kirby-admins,ou=groups,...`` is also ``kirby-admins``).
- The subject is the entry's ``entryUUID`` (OpenLDAP) or ``objectGUID`` (AD), else its DN.
- ``ldaps://`` or StartTLS (``KIRBY_LDAP_START_TLS``) verify the server's certificate against
  ``KIRBY_LDAP_CA_FILE`` (or the system's CAs) and its name.
- An unreachable directory raises ``ProviderUnavailable`` naming ``KIRBY_LDAP_URL``.
- Role refresh: with a service account (or a search base that anonymous searches may read) the
  user's groups are read again without its password; without one ``refresh`` returns None and the
  session ends at the refresh (``KIRBY_ROLE_REFRESH``), asking the user to log in again.
"""

from __future__ import annotations

import logging
import math
import ssl
import uuid

from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPException, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from kirby.config import Settings
from kirby.errors import ConfigError
from kirby.external_users import ExternalIdentity, ProviderUnavailable
from kirby.models import Provider, User

log = logging.getLogger(__name__)
ATTRIBUTES = ["entryUUID", "objectGUID", "uid", "sAMAccountName", "cn", "displayName", "mail", "memberOf"]
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49
UNAVAILABLE = "The directory (LDAP) cannot be reached right now: try again in a moment, or ask an administrator."


def check_ldap_settings(settings: Settings) -> None:
    """Raise ConfigError when the LDAP settings do not fit together (needs KIRBY_LDAP_URL)."""
    if not settings.ldap_user_dn_template and not settings.ldap_search_base:
        raise ConfigError(
            "KIRBY_LDAP_URL is set but neither KIRBY_LDAP_USER_DN_TEMPLATE nor KIRBY_LDAP_SEARCH_BASE: set one, "
            "e.g. KIRBY_LDAP_USER_DN_TEMPLATE='uid={username},ou=people,dc=example,dc=com'"
        )
    if settings.ldap_start_tls and settings.ldap_url.startswith("ldaps:"):
        raise ConfigError("KIRBY_LDAP_START_TLS=true with an ldaps:// KIRBY_LDAP_URL: use one or the other")
    if settings.ldap_bind_dn and not settings.ldap_bind_password:
        raise ConfigError("KIRBY_LDAP_BIND_DN is set without KIRBY_LDAP_BIND_PASSWORD: set the service password")
    if not settings.admin_groups and not settings.viewer_groups:
        raise ConfigError(
            "KIRBY_LDAP_URL is set but KIRBY_ADMIN_GROUPS and KIRBY_VIEWER_GROUPS are empty: nobody could log in; "
            "set them, e.g. KIRBY_ADMIN_GROUPS=kirby-admins KIRBY_VIEWER_GROUPS=kirby-viewers"
        )


def _group_names(dns) -> set[str]:
    names = set()
    for dn in dns:
        names.add(dn)
        try:
            names.add(parse_dn(dn)[0][1])
        except (LDAPException, IndexError, ValueError):
            pass
    return names


def _first(entry: dict, name: str):
    value = entry.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value or None


class LdapDirectory:
    """The directory of ``KIRBY_LDAP_URL`` (see the module's contracts)."""

    def __init__(self, settings: Settings):
        check_ldap_settings(settings)
        self.settings = settings
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ldap_ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
        self.server = Server(settings.ldap_url, tls=tls, connect_timeout=settings.ldap_timeout, get_info=NONE)

    @property
    def can_refresh(self) -> bool:
        return bool(self.settings.ldap_bind_dn or self.settings.ldap_search_base)

    # -- connections ----------------------------------------------------------------------------
    def _connect(self, dn: str | None, password: str | None) -> tuple[Connection, bool]:
        """An open connection (StartTLS done) and whether the bind as ``dn`` succeeded
        (``dn`` None: anonymous). Raises ProviderUnavailable or LDAPStartTLSError."""
        connection = Connection(
            self.server,
            user=dn,
            password=password,
            receive_timeout=max(1, math.ceil(self.settings.ldap_timeout)),  # ldap3 packs it as an integer
            raise_exceptions=False,
            read_only=True,
        )
        try:
            connection.open()
            if self.settings.ldap_start_tls and not connection.start_tls():
                raise LDAPStartTLSError(f"StartTLS refused: {connection.result.get('description')}")
            bound = connection.bind()
        except LDAPCommunicationError as exc:
            connection.unbind()
            if "ssl" in str(exc).lower():  # ldaps:// whose certificate is refused: not an outage
                raise LDAPStartTLSError(str(exc)) from None
            raise ProviderUnavailable(
                UNAVAILABLE, "KIRBY_LDAP_URL", f"KIRBY_LDAP_URL={self.settings.ldap_url}: {exc}"
            ) from None
        except LDAPException:
            connection.unbind()
            raise
        return connection, bound

    def _service(self) -> Connection:
        """A connection bound as the service account (anonymous without one)."""
        connection, bound = self._connect(self.settings.ldap_bind_dn, self.settings.ldap_bind_password)
        if not bound:
            connection.unbind()
            raise ConfigError(
                f"KIRBY_LDAP_BIND_DN={self.settings.ldap_bind_dn!r}: the service account's bind failed "
                f"({connection.result.get('description')}); check it and KIRBY_LDAP_BIND_PASSWORD"
            )
        return connection

    # -- lookups --------------------------------------------------------------------------------
    def _read(self, connection: Connection, dn: str) -> dict | None:
        if not connection.search(dn, "(objectClass=*)", BASE, attributes=ATTRIBUTES):
            return None
        return dict(connection.response[0]["attributes"], dn=connection.response[0]["dn"])

    def _find(self, connection: Connection, username: str) -> dict | None:
        """The one entry of the user filter under the search base (None for none, or several)."""
        query = self.settings.ldap_user_filter.replace("{username}", escape_filter_chars(username))
        connection.search(self.settings.ldap_search_base, query, SUBTREE, attributes=ATTRIBUTES, size_limit=2)
        entries = [item for item in connection.response or [] if item.get("type") == "searchResEntry"]
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning("KIRBY_LDAP_USER_FILTER matches more than one entry for %r: refused", username)
            return None
        return dict(entries[0]["attributes"], dn=entries[0]["dn"])

    def _groups(self, connection: Connection, entry: dict, username: str) -> frozenset[str]:
        base = self.settings.ldap_group_search_base
        if not base:
            return frozenset(_group_names(entry.get("memberOf") or []))
        query = self.settings.ldap_group_filter.replace("{dn}", escape_filter_chars(entry["dn"])).replace(
            "{username}", escape_filter_chars(username)
        )
        connection.search(base, query, SUBTREE, attributes=["cn"])
        return frozenset(_group_names(item["dn"] for item in connection.response or [] if item.get("dn")))

    def _identity(self, connection: Connection, entry: dict, username: str) -> ExternalIdentity:
        guid = _first(entry, "objectGUID")
        subject = _first(entry, "entryUUID") or (
            str(uuid.UUID(bytes_le=guid)) if isinstance(guid, bytes) and len(guid) == 16 else guid
        )
        return ExternalIdentity(
            provider=Provider.LDAP,
            subject=str(subject or entry["dn"].lower()),
            username=_first(entry, "uid") or _first(entry, "sAMAccountName") or username,
            display_name=_first(entry, "displayName") or _first(entry, "cn"),
            email=_first(entry, "mail"),
            groups=self._groups(connection, entry, username),
        )

    def _user_dn(self, username: str) -> str:
        return self.settings.ldap_user_dn_template.replace("{username}", escape_rdn(username))

    # -- the seam -------------------------------------------------------------------------------
    def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The identity of ``username`` if ``password`` binds as it, else None."""
        if not username or not password or "\x00" in username + password:
            return None  # never an (anonymous) bind with an empty password
        try:
            if self.settings.ldap_search_base:
                service = self._service()
                try:
                    entry = self._find(service, username)
                finally:
                    service.unbind()
                if entry is None:
                    return None
                dn = entry["dn"]
            else:
                dn = self._user_dn(username)
            connection, bound = self._connect(dn, password)
            try:
                if not bound:
                    return None
                entry = self._read(connection, dn) or {"dn": dn}
                return self._identity(connection, entry, username)
            finally:
                connection.unbind()
        except (ConfigError, LDAPException) as exc:  # a directory that changed under a running web
            raise ProviderUnavailable(UNAVAILABLE, "KIRBY_LDAP_URL", f"LDAP error: {exc}") from None

    def refresh(self, user: User) -> ExternalIdentity | None:
        """``user``'s current identity read with the service account, or None (see the module)."""
        if not self.can_refresh:
            return None
        try:
            service = self._service()
            try:
                if self.settings.ldap_search_base:
                    entry = self._find(service, user.username)
                else:
                    entry = self._read(service, self._user_dn(user.username))
                return self._identity(service, entry, user.username) if entry else None
            finally:
                service.unbind()
        except (ProviderUnavailable, ConfigError, LDAPException) as exc:
            log.warning("the groups of %r could not be checked again (KIRBY_LDAP_URL): %s", user.username, exc)
            return None

    def check(self) -> None:
        """At start: ConfigError naming the variable when TLS, the service account's bind, the
        search base or the DN template's parent is wrong; an unreachable directory is only logged
        (local users can still log in; LDAP logins get the login page's message)."""
        settings = self.settings
        try:
            service = self._service()
        except ProviderUnavailable as exc:
            log.warning("LDAP directory unreachable at start (%s); LDAP logins fail until it answers", exc.detail)
            return
        except LDAPException as exc:
            raise ConfigError(
                f"KIRBY_LDAP_URL={settings.ldap_url}: TLS failed ({exc}); check KIRBY_LDAP_CA_FILE and "
                "KIRBY_LDAP_START_TLS"
            ) from None
        try:
            if settings.ldap_search_base and self._read(service, settings.ldap_search_base) is None:
                raise ConfigError(
                    f"KIRBY_LDAP_SEARCH_BASE={settings.ldap_search_base!r}: no such entry "
                    f"({service.result.get('description')}); use the DN under which the users are"
                )
            if settings.ldap_user_dn_template and settings.ldap_bind_dn:
                parent = self._user_dn("x").partition(",")[2]
                if parent and self._read(service, parent) is None:
                    raise ConfigError(
                        f"KIRBY_LDAP_USER_DN_TEMPLATE={settings.ldap_user_dn_template!r}: {parent!r} does not exist "
                        "in the directory; use the DN of a user with {username} in place of its name"
                    )
        finally:
            service.unbind()
