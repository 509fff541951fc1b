"""Shared fixtures: the real services started by ``deploy/services``, settings, and databases.

``scripts/test`` exports the services' addresses (``deploy/services env``). They are captured here
once and removed from ``os.environ``, so no test inherits Kafka or Redis by accident: a test that
wants a service asks for its fixture. A missing service fails the test in CI (``CI=true``) and skips
it elsewhere, with the command that starts it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from kirby.config import Settings, load_settings
from kirby.db import Database, open_database
from tests.private_services import PrivateRedis

SERVICE_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "KIRBY_PACKAGE_INDEX",
    "KIRBY_WHEELHOUSE",
    "KIRBY_TEST_DATABASE_URI",
    "SQLALCHEMY_DATABASE_URI",
    "KIRBY_TEST_LDAP_URL",
    "KIRBY_TEST_LDAPS_URL",
    "KIRBY_TEST_LDAP_CA_FILE",
    "KIRBY_TEST_OIDC_ISSUER",
)


@dataclass(frozen=True)
class Services:
    kafka: str | None
    redis_url: str | None
    package_index: str | None
    wheelhouse: Path | None
    postgres_url: str | None
    ldap_url: str | None = None  # slapd (deploy/services up slapd): ldap:// (StartTLS), ldaps://, its test CA
    ldaps_url: str | None = None
    ldap_ca_file: str | None = None
    oidc_issuer: str | None = None


CAPTURED = "PYTEST_KIRBY_SERVICES"  # the captured addresses, for pytest-xdist workers (they inherit it)


def _capture_services() -> Services:
    env = {name: os.environ.pop(name, None) for name in SERVICE_VARIABLES}
    if CAPTURED in os.environ:  # a pytest-xdist worker: the controller captured them already
        env = json.loads(os.environ[CAPTURED])
    os.environ[CAPTURED] = json.dumps(env)
    for name in list(os.environ):  # nothing of Kirby's own configuration leaks into tests
        if name.startswith("KIRBY_") or name.startswith("KAFKA_") or name.startswith("EXT_"):
            os.environ.pop(name)
    return Services(
        kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=env["REDIS_URL"],
        package_index=env["KIRBY_PACKAGE_INDEX"],
        wheelhouse=Path(env["KIRBY_WHEELHOUSE"]) if env["KIRBY_WHEELHOUSE"] else None,
        postgres_url=env["KIRBY_TEST_DATABASE_URI"],
        ldap_url=env.get("KIRBY_TEST_LDAP_URL"),
        ldaps_url=env.get("KIRBY_TEST_LDAPS_URL"),
        ldap_ca_file=env.get("KIRBY_TEST_LDAP_CA_FILE"),
        oidc_issuer=env.get("KIRBY_TEST_OIDC_ISSUER"),
    )


SERVICES = _capture_services()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(value, what: str, service: str):
    """Return ``value``; if it is missing, fail in CI and skip elsewhere, naming the fix."""
    if value:
        return value
    message = (
        f'{what} is not available: start it with `deploy/services up {service}` and `eval "$(deploy/services env)"`'
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)  # outside CI only


@pytest.fixture(scope="session")
def services() -> Services:
    return SERVICES


@pytest.fixture
def kafka_servers() -> str:
    return require_service(SERVICES.kafka, "Kafka (KAFKA_BOOTSTRAP_SERVERS)", "kafka")


@pytest.fixture
def redis_url() -> str:
    return require_service(SERVICES.redis_url, "Redis (REDIS_URL)", "redis")


@pytest.fixture
def package_index() -> str:
    return require_service(SERVICES.package_index, "pypiserver (KIRBY_PACKAGE_INDEX)", "pypi")


@pytest.fixture
def wheelhouse() -> Path:
    return require_service(SERVICES.wheelhouse, "pypiserver's folder (KIRBY_WHEELHOUSE)", "pypi")


@dataclass(frozen=True)
class Slapd:
    url: str  # ldap:// (StartTLS offered)
    ldaps_url: str
    ca_file: str  # the test CA that signed the server's certificate


@pytest.fixture(scope="session")
def slapd() -> Slapd:
    """The seeded test directory of ``deploy/services up slapd`` (deploy/ldap/seed.ldif)."""
    url = require_service(SERVICES.ldap_url, "slapd (KIRBY_TEST_LDAP_URL)", "slapd")
    return Slapd(url, SERVICES.ldaps_url, SERVICES.ldap_ca_file)


@pytest.fixture(scope="session")
def oidc_issuer() -> str:
    """The issuer URL of the OpenID Connect provider of ``deploy/services up oidc``."""
    return require_service(SERVICES.oidc_issuer, "The OpenID Connect provider (KIRBY_TEST_OIDC_ISSUER)", "oidc")


@pytest.fixture
def postgres_url() -> str:
    """A URL to a fresh, empty PostgreSQL schema of its own, dropped after the test."""
    base = require_service(SERVICES.postgres_url, "PostgreSQL (KIRBY_TEST_DATABASE_URI)", "postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def make_settings(tmp_path: Path):
    """Build Settings from explicit variables only, with every path under ``tmp_path``."""

    def build(**variables: str) -> Settings:
        environ = {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'kirby.db'}",
            "KIRBY_EMBEDDED_PATH": str(tmp_path / "embedded.db"),
            "KIRBY_VENV_DIRECTORY": str(tmp_path / "venvs"),
            "KIRBY_RUN_DIRECTORY": str(tmp_path / "runs"),
            "KIRBY_ALLOW_ROOT_RUNS": "true",  # CI runs as root; tests of isolation set KIRBY_RUN_USER
        }
        environ.update(variables)
        return load_settings(environ=environ, cwd=tmp_path)

    return build


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> str:
    """The script database URL, on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kirby.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(database_url: str, make_settings) -> Database:
    """A migrated, empty script database on each backend."""
    database = open_database(make_settings(SQLALCHEMY_DATABASE_URI=database_url))
    yield database
    database.dispose()


# -- private servers a test may stop, freeze and restart ------------------------------------
@pytest.fixture
def start_private_redis(redis_url, tmp_path: Path):
    """Starts private servers. Needs the redis-server that ``deploy/services up redis`` installs."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: run `deploy/services up redis` (it installs Debian's package)")
    servers: list[PrivateRedis] = []

    def start(*options: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(servers)}", *options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.thaw()
            server.kill()


@pytest.fixture
def private_redis(start_private_redis) -> PrivateRedis:
    return start_private_redis()
