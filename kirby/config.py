"""Settings: one frozen object built once from the environment (after loading ``.env``).

Every ``kirby`` command calls :func:`load_settings` first and passes the result down; no module
reads ``os.environ`` on its own. A bad value raises :class:`ConfigError` naming the variable.
The variables, their defaults and meanings are listed in ``kirby.config_catalog``; the value
parsers live in ``kirby.config_values``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from kirby.config_catalog import DEFAULT_LOG_FORMAT, VARIABLES  # noqa: F401 (re-exported)
from kirby.config_values import (
    executable,
    existing_file,
    mask_url,
    optional,
    optional_int,
    parse_bool,
    parse_float,
    parse_groups,
    parse_int,
    parse_log_format,
    parse_networks,
    parse_servers,
    parse_size,
    parse_topic,
    parse_url,
    parse_user,
    placeholder,
)
from kirby.errors import ConfigError

INSECURE_SECRET_KEY = "kirby-insecure-development-key"
CELERY_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel")
CONCURRENCY_PER_CORE = 4  # default scheduled runs per CPU core: most scripts wait on I/O part of the time


def default_concurrency() -> int:
    """The default ``--concurrency``: CONCURRENCY_PER_CORE x the host's CPU cores."""
    return CONCURRENCY_PER_CORE * (os.cpu_count() or 1)


def _parse_database_uri(raw: str, cwd: Path) -> str:
    """Accept SQLite and PostgreSQL URLs and the user guide's short form ``///kirby.db``.

    A relative SQLite path is relative to ``cwd``; PostgreSQL always uses the psycopg 3 driver.
    """
    # SQLAlchemy's URL parser, imported here so that importing Settings (as every supervisor
    # module does) does not load SQLAlchemy: only the processes that read a database need it.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    name = "SQLALCHEMY_DATABASE_URI"
    example = "use e.g. ///kirby.db, sqlite:///kirby.db or postgresql://user:password@host:5432/database"
    if raw.startswith("///"):
        raw = "sqlite:" + raw
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{name}={mask_url(raw)!r} is not a database URL: {example}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            database = str(cwd / Path(database).expanduser())
        query = raw.partition("?")[2]
        return f"sqlite:///{database}" + (f"?{query}" if query else "")
    elif backend in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    else:
        raise ConfigError(f"{name}={mask_url(raw)!r}: Kirby stores scripts in SQLite or PostgreSQL; {example}")
    return url.render_as_string(hide_password=False)


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        values = dotenv_values(path, encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file; save the .env file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the .env file: {exc.strerror}") from None
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Settings:
    """Everything Kirby is configured with. Built by :func:`load_settings`; never mutated."""

    database_uri: str = field(default="sqlite:///kirby.db", repr=False)  # may hold a password
    track_modifications: bool = False
    secret_key: str = field(default=INSECURE_SECRET_KEY, repr=False)
    security_password_salt: str = field(default="", repr=False)
    testing: bool = False
    kafka_bootstrap_servers: str | None = None
    kafka_use_ssl: bool = False
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    topic_job_offers: str = ".kirby.job-offers"
    topic_run_events: str = ".kirby.run-events"
    supervisor_group_id: str = "kirby-supervisors"
    schedule_endpoint: str = "http://127.0.0.1:8080/schedule"
    ext_wait_between_retries: float = 0.4
    ext_retries: int = 3
    log_format: str = DEFAULT_LOG_FORMAT
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_prefix: str = "kirby:"
    embedded_path: Path = Path("kirby-embedded.db")  # absolute once built by load_settings
    single_host: bool = False
    kafka_replication_factor: int | None = None  # None: min(3, brokers)
    kafka_min_insync_replicas: int | None = None  # None: replication factor - 1, at least 1
    celery_broker_url: str | None = field(default=None, repr=False)  # may hold a password
    package_index: str = field(default="http://127.0.0.1:8081/simple/", repr=False)  # may hold a password
    venv_directory: Path = Path("~/.kirby/venvs").expanduser()
    run_directory: Path = Path("~/.kirby/runs").expanduser()
    api_token: str | None = field(default=None, repr=False)
    run_user: str | None = None
    allow_root_runs: bool = False
    run_python: str | None = None
    run_memory_limit: int | None = None
    run_cpu_limit: int | None = None
    run_open_files_limit: int | None = None
    public_url: str = "http://127.0.0.1:8080"
    smtp_url: str | None = field(default=None, repr=False)  # may hold a password
    mail_from: str = "kirby@localhost"
    notify_cooldown: int = 600
    # Web hardening (issue 12; see docs/security.md).
    trusted_proxies: tuple[str, ...] = ()
    max_log_streams: int = 24
    max_log_streams_per_user: int = 4
    max_log_lines_per_run: int = 100_000
    run_retention_days: int = 90
    # External identity (issue 17; ``kirby.external_users``, ``kirby.ldap_auth``).
    admin_groups: tuple[str, ...] = ()
    viewer_groups: tuple[str, ...] = ()
    role_refresh: int = 900
    local_login: bool = True
    ldap_url: str | None = None
    ldap_user_dn_template: str | None = None
    ldap_search_base: str | None = None
    ldap_user_filter: str = "(uid={username})"
    ldap_bind_dn: str | None = None
    ldap_bind_password: str | None = field(default=None, repr=False)
    ldap_start_tls: bool = False
    ldap_ca_file: str | None = None
    ldap_group_search_base: str | None = None
    ldap_group_filter: str = "(member={dn})"
    ldap_timeout: float = 5.0
    concurrency: int = field(default_factory=default_concurrency)
    publish_ahead: float = 1.0  # seconds before its due instant the leader publishes a slot (issue 14)
    # OpenID Connect login (issue 17).
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = field(default=None, repr=False)
    oidc_scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    oidc_provider_name: str = "single sign-on"
    oidc_groups_claim: str = "groups"
    oidc_logout: bool = False

    @property
    def secret_key_is_default(self) -> bool:
        return self.secret_key == INSECURE_SECRET_KEY

    @property
    def embedded_bus(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_leases(self) -> bool:
        return self.redis_url is None


def load_settings(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``) over ``cwd/.env``.

    Real environment variables win over ``.env`` entries. Raises ConfigError on a bad value.
    """
    cwd = Path(cwd or os.getcwd())
    env: dict[str, str] = {}
    dotenv_file = cwd / ".env"
    if dotenv_file.is_file():
        env.update(_read_dotenv(dotenv_file))
    env.update(os.environ if environ is None else environ)

    def get(name: str) -> str | None:
        value = env.get(name)
        if value is None or value.strip() == "":
            return VARIABLES[name][0]
        return value.strip()

    use_ssl_name = "KAFKA_USE_SSL" if (env.get("KAFKA_USE_SSL") or "").strip() else "KAFKA_USE_TLS"
    use_ssl_raw = (env.get(use_ssl_name) or "").strip() or "false"
    servers = get("KAFKA_BOOTSTRAP_SERVERS")
    redis_url = get("REDIS_URL")
    index = get("KIRBY_PACKAGE_INDEX")
    if "://" in index:
        index = parse_url("KIRBY_PACKAGE_INDEX", index, ("http", "https"))
    else:
        index = str((cwd / Path(index).expanduser()).resolve())

    def directory(name: str) -> Path:
        return (cwd / Path(get(name)).expanduser()).resolve()

    return Settings(
        database_uri=_parse_database_uri(get("SQLALCHEMY_DATABASE_URI"), cwd),
        track_modifications=parse_bool("SQLALCHEMY_TRACK_MODIFICATIONS", get("SQLALCHEMY_TRACK_MODIFICATIONS")),
        secret_key=get("SECRET_KEY") or INSECURE_SECRET_KEY,
        security_password_salt=get("SECURITY_PASSWORD_SALT"),
        testing=parse_bool("TESTING", get("TESTING")),
        kafka_bootstrap_servers=parse_servers("KAFKA_BOOTSTRAP_SERVERS", servers) if servers else None,
        kafka_use_ssl=parse_bool(use_ssl_name, use_ssl_raw),
        kafka_ssl_cafile=existing_file("KAFKA_SSL_CAFILE", get("KAFKA_SSL_CAFILE"), cwd),
        kafka_ssl_certfile=existing_file("KAFKA_SSL_CERTFILE", get("KAFKA_SSL_CERTFILE"), cwd),
        kafka_ssl_keyfile=existing_file("KAFKA_SSL_KEYFILE", get("KAFKA_SSL_KEYFILE"), cwd),
        topic_job_offers=parse_topic("KIRBY_TOPIC_JOB_OFFERS", get("KIRBY_TOPIC_JOB_OFFERS")),
        topic_run_events=parse_topic("KIRBY_TOPIC_RUN_EVENTS", get("KIRBY_TOPIC_RUN_EVENTS")),
        supervisor_group_id=get("KIRBY_SUPERVISOR_GROUP_ID"),
        schedule_endpoint=parse_url("KIRBY_SCHEDULE_ENDPOINT", get("KIRBY_SCHEDULE_ENDPOINT"), ("http", "https")),
        ext_wait_between_retries=parse_float("EXT_WAIT_BETWEEN_RETRIES", get("EXT_WAIT_BETWEEN_RETRIES")),
        ext_retries=parse_int("EXT_RETRIES", get("EXT_RETRIES")),
        log_format=parse_log_format(get("LOG_FORMAT")),
        redis_url=parse_url("REDIS_URL", redis_url, ("redis", "rediss")) if redis_url else None,
        redis_prefix=get("KIRBY_REDIS_PREFIX"),
        embedded_path=directory("KIRBY_EMBEDDED_PATH"),
        single_host=parse_bool("KIRBY_SINGLE_HOST", get("KIRBY_SINGLE_HOST")),
        kafka_replication_factor=optional_int("KIRBY_KAFKA_REPLICATION_FACTOR", get("KIRBY_KAFKA_REPLICATION_FACTOR")),
        kafka_min_insync_replicas=optional_int(
            "KIRBY_KAFKA_MIN_INSYNC_REPLICAS", get("KIRBY_KAFKA_MIN_INSYNC_REPLICAS")
        ),
        celery_broker_url=parse_url("KIRBY_CELERY_BROKER_URL", get("KIRBY_CELERY_BROKER_URL"), CELERY_SCHEMES)
        if get("KIRBY_CELERY_BROKER_URL")
        else None,
        package_index=index,
        venv_directory=directory("KIRBY_VENV_DIRECTORY"),
        run_directory=directory("KIRBY_RUN_DIRECTORY"),
        api_token=get("KIRBY_API_TOKEN"),
        run_user=parse_user("KIRBY_RUN_USER", get("KIRBY_RUN_USER")) if get("KIRBY_RUN_USER") else None,
        allow_root_runs=parse_bool("KIRBY_ALLOW_ROOT_RUNS", get("KIRBY_ALLOW_ROOT_RUNS")),
        run_python=executable("KIRBY_RUN_PYTHON", get("KIRBY_RUN_PYTHON"), cwd),
        run_memory_limit=optional(parse_size, "KIRBY_RUN_MEMORY_LIMIT", get("KIRBY_RUN_MEMORY_LIMIT")),
        run_cpu_limit=optional(parse_int, "KIRBY_RUN_CPU_LIMIT", get("KIRBY_RUN_CPU_LIMIT"), 1),
        run_open_files_limit=optional(parse_int, "KIRBY_RUN_OPEN_FILES_LIMIT", get("KIRBY_RUN_OPEN_FILES_LIMIT"), 16),
        public_url=parse_url("KIRBY_PUBLIC_URL", get("KIRBY_PUBLIC_URL"), ("http", "https")).rstrip("/"),
        smtp_url=parse_url("KIRBY_SMTP_URL", get("KIRBY_SMTP_URL"), ("smtp", "smtps"))
        if get("KIRBY_SMTP_URL")
        else None,
        mail_from=get("KIRBY_MAIL_FROM"),
        notify_cooldown=parse_int("KIRBY_NOTIFY_COOLDOWN", get("KIRBY_NOTIFY_COOLDOWN")),
        # Web hardening (issue 12; see docs/security.md).
        trusted_proxies=parse_networks("KIRBY_TRUSTED_PROXIES", get("KIRBY_TRUSTED_PROXIES")),
        max_log_streams=parse_int("KIRBY_MAX_LOG_STREAMS", get("KIRBY_MAX_LOG_STREAMS"), minimum=1),
        max_log_streams_per_user=parse_int(
            "KIRBY_MAX_LOG_STREAMS_PER_USER", get("KIRBY_MAX_LOG_STREAMS_PER_USER"), minimum=1
        ),
        max_log_lines_per_run=parse_int("KIRBY_MAX_LOG_LINES_PER_RUN", get("KIRBY_MAX_LOG_LINES_PER_RUN"), minimum=10),
        run_retention_days=parse_int("KIRBY_RUN_RETENTION_DAYS", get("KIRBY_RUN_RETENTION_DAYS")),
        **_identity(get, cwd),
        concurrency=parse_int("KIRBY_CONCURRENCY", get("KIRBY_CONCURRENCY"), minimum=1)
        if get("KIRBY_CONCURRENCY")
        else default_concurrency(),
        publish_ahead=parse_float("KIRBY_PUBLISH_AHEAD", get("KIRBY_PUBLISH_AHEAD") or "1"),
        **_parse_oidc(get),
    )


def _identity(get, cwd: Path) -> dict:
    """The settings of external users (groups -> roles, LDAP). How the LDAP ones fit together is
    checked when the directory is opened (``kirby.ldap_auth.check_ldap_settings``)."""
    url = get("KIRBY_LDAP_URL")
    values = dict(
        admin_groups=parse_groups(get("KIRBY_ADMIN_GROUPS")),
        viewer_groups=parse_groups(get("KIRBY_VIEWER_GROUPS")),
        role_refresh=parse_int("KIRBY_ROLE_REFRESH", get("KIRBY_ROLE_REFRESH"), minimum=10),
        local_login=parse_bool("KIRBY_LOCAL_LOGIN", get("KIRBY_LOCAL_LOGIN")),
        ldap_url=parse_url("KIRBY_LDAP_URL", url, ("ldap", "ldaps")) if url else None,
        ldap_user_dn_template=placeholder(
            "KIRBY_LDAP_USER_DN_TEMPLATE",
            get("KIRBY_LDAP_USER_DN_TEMPLATE"),
            "{username}",
            "uid={username},ou=people,dc=example,dc=com",
        ),
        ldap_search_base=get("KIRBY_LDAP_SEARCH_BASE"),
        ldap_user_filter=placeholder(
            "KIRBY_LDAP_USER_FILTER", get("KIRBY_LDAP_USER_FILTER"), "{username}", "(uid={username})"
        ),
        ldap_bind_dn=get("KIRBY_LDAP_BIND_DN"),
        ldap_bind_password=get("KIRBY_LDAP_BIND_PASSWORD"),
        ldap_start_tls=parse_bool("KIRBY_LDAP_START_TLS", get("KIRBY_LDAP_START_TLS")),
        ldap_ca_file=existing_file("KIRBY_LDAP_CA_FILE", get("KIRBY_LDAP_CA_FILE"), cwd),
        ldap_group_search_base=get("KIRBY_LDAP_GROUP_SEARCH_BASE"),
        ldap_group_filter=get("KIRBY_LDAP_GROUP_FILTER"),
        ldap_timeout=parse_float("KIRBY_LDAP_TIMEOUT", get("KIRBY_LDAP_TIMEOUT"), minimum=0.1),
    )
    return values


def _parse_oidc(get) -> dict:
    """The OpenID Connect settings: the issuer is https (http only on loopback). ``kirby web`` checks
    the rest against the provider at start (``kirby.web.oidc_login``), client id included."""
    issuer, client_id = get("KIRBY_OIDC_ISSUER"), get("KIRBY_OIDC_CLIENT_ID")
    scopes = tuple(get("KIRBY_OIDC_SCOPES").split())
    if issuer:
        parsed = urlparse(issuer)
        loopback = parsed.hostname in ("localhost", "127.0.0.1", "::1")
        if parsed.scheme not in ("https", "http") or (parsed.scheme == "http" and not loopback) or not parsed.hostname:
            raise ConfigError(
                f"KIRBY_OIDC_ISSUER={issuer!r} is not an https URL (http only on 127.0.0.1): use e.g. https://login.example.com"
            )
        if parsed.query or parsed.fragment:
            raise ConfigError(f"KIRBY_OIDC_ISSUER={issuer!r}: an issuer has no query or fragment; remove them")
    if "openid" not in scopes:
        raise ConfigError(
            f"KIRBY_OIDC_SCOPES={get('KIRBY_OIDC_SCOPES')!r} lacks openid: add it, e.g. 'openid profile email'"
        )
    return {
        "oidc_issuer": issuer,
        "oidc_client_id": client_id,
        "oidc_client_secret": get("KIRBY_OIDC_CLIENT_SECRET"),
        "oidc_scopes": scopes,
        "oidc_provider_name": get("KIRBY_OIDC_PROVIDER_NAME"),
        "oidc_groups_claim": get("KIRBY_OIDC_GROUPS_CLAIM"),
        "oidc_logout": parse_bool("KIRBY_OIDC_LOGOUT", get("KIRBY_OIDC_LOGOUT")),
    }
