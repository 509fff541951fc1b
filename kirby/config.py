"""Settings: one frozen object built once from the environment (after loading ``.env``).

Every ``kirby`` command calls :func:`load_settings` first and passes the result down; no module
reads ``os.environ`` on its own. A bad value raises :class:`ConfigError` naming the variable.
The README's table documents every variable; keep it in step with ``VARIABLES`` below.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dotenv import dotenv_values

from kirby.errors import ConfigError

DEFAULT_LOG_FORMAT = "[%(asctime)s] %(levelname)s:%(name)s:%(message)s"
INSECURE_SECRET_KEY = "kirby-insecure-development-key"

# name -> (default, one-line meaning). The README's table is written from this.
VARIABLES: dict[str, tuple[str | None, str]] = {
    "SQLALCHEMY_DATABASE_URI": ("sqlite:///kirby.db", "Script database URL; `///kirby.db` is short for a SQLite file."),
    "SQLALCHEMY_TRACK_MODIFICATIONS": ("false", "Kept for compatibility with the original Kirby; no effect."),
    "SECRET_KEY": (None, "Signs web sessions and CSRF tokens. Set it in production."),
    "SECURITY_PASSWORD_SALT": ("", "Extra salt mixed into password hashes."),
    "TESTING": ("false", "Test mode for the web app."),
    "KAFKA_BOOTSTRAP_SERVERS": (None, "Kafka brokers (host:port,...). Unset: embedded bus."),
    "KAFKA_USE_SSL": ("false", "Connect to Kafka over TLS (`KAFKA_USE_TLS` is accepted too)."),
    "KAFKA_SSL_CAFILE": (None, "CA bundle for Kafka TLS."),
    "KAFKA_SSL_CERTFILE": (None, "Client certificate for Kafka TLS."),
    "KAFKA_SSL_KEYFILE": (None, "Client key for Kafka TLS."),
    "KIRBY_TOPIC_JOB_OFFERS": (".kirby.job-offers", "Topic of job offers."),
    "KIRBY_TOPIC_RUN_EVENTS": (".kirby.run-events", "Topic of run events and log lines."),
    "KIRBY_SUPERVISOR_GROUP_ID": ("kirby-supervisors", "Consumer group shared by all supervisors."),
    "KIRBY_SCHEDULE_ENDPOINT": ("http://127.0.0.1:8080/schedule", "Where the leader reads the schedule."),
    "EXT_WAIT_BETWEEN_RETRIES": ("0.4", "Seconds between retries of an outside call."),
    "EXT_RETRIES": ("3", "Retries of an outside call (Kafka, Redis, web) before giving up."),
    "LOG_FORMAT": (DEFAULT_LOG_FORMAT, "Python logging format of every process."),
    "REDIS_URL": (None, "Redis URL (redis:// or rediss://, password allowed). Unset: embedded lease store."),
    "KIRBY_REDIS_PREFIX": ("kirby:", "Prefix of Kirby's Redis keys (several clusters can share one Redis)."),
    "KIRBY_EMBEDDED_PATH": ("kirby-embedded.db", "SQLite file of the embedded bus and lease store."),
    "KIRBY_PACKAGE_INDEX": ("http://127.0.0.1:8081/simple/", "Package index URL, or a folder of wheels."),
    "KIRBY_VENV_DIRECTORY": ("~/.kirby/venvs", "Where virtualenvs are cached, one per package version."),
    "KIRBY_RUN_DIRECTORY": ("~/.kirby/runs", "Where each run gets its own working directory."),
    "KIRBY_API_TOKEN": (
        None,
        "Token for the JSON API (the leader's /schedule calls). Unset: `kirby web` warns and /schedule answers 503.",
    ),
    "KIRBY_RUN_USER": (
        None,
        "Unprivileged user every script runs as (the supervisor must start as root to switch). Unset: the supervisor's user.",
    ),
    "KIRBY_ALLOW_ROOT_RUNS": (
        "false",
        "Let a supervisor started as root without `KIRBY_RUN_USER` run scripts as root (never in production).",
    ),
    "KIRBY_RUN_PYTHON": (
        None,
        "Interpreter the script venvs are built with (same Python version as Kirby's; with `KIRBY_RUN_USER`, "
        "one that user can run). Unset: Kirby's own.",
    ),
    "KIRBY_RUN_MEMORY_LIMIT": (
        None,
        "Address-space limit of each script process (RLIMIT_AS): bytes, or e.g. `512M`, `2G`.",
    ),
    "KIRBY_RUN_CPU_LIMIT": (None, "CPU seconds each script process may use (RLIMIT_CPU); then SIGXCPU."),
    "KIRBY_RUN_OPEN_FILES_LIMIT": (None, "Open files each script process may hold (RLIMIT_NOFILE)."),
}


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def _parse_int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number: use e.g. {name}=3") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _parse_float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a number: use e.g. {name}=0.4")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _parse_size(name: str, raw: str) -> int:
    """Bytes, or a number with K/M/G/T (powers of 1024; ``512M``, ``512MiB`` and ``512mb`` alike)."""
    found = re.fullmatch(r"(\d+)\s*([KMGT]?)(?:I?B)?", raw.strip().upper())
    if not found or int(found[1]) == 0:
        raise ConfigError(f"{name}={raw!r} is not a size: use bytes or e.g. {name}=512M (K, M, G: powers of 1024)")
    return int(found[1]) * _SIZE_UNITS[found[2]]


def _parse_user(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?", raw):
        raise ConfigError(
            f"{name}={raw!r} is not a user name: use the name of an unprivileged system user, e.g. kirby-run"
        )
    return raw


def _mask(raw: str) -> str:
    """``raw`` with the password of a URL replaced by ***, for error messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", raw)


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
        raise ConfigError(f"{name}={_mask(raw)!r} is not a database URL: {example}") from None
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
        raise ConfigError(f"{name}={_mask(raw)!r}: Kirby stores scripts in SQLite or PostgreSQL; {example}")
    return url.render_as_string(hide_password=False)


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    try:
        parsed = urlparse(raw)
        parsed.port  # noqa: B018 -- raises ValueError on a bad port
        valid = parsed.scheme in schemes and bool(parsed.hostname)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{name}={_mask(raw)!r} is not a valid URL: use e.g. {schemes[0]}://127.0.0.1:port/...")
    return raw


def _parse_servers(name: str, raw: str) -> str:
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}={raw!r}: {server.strip()!r} is not host:port, e.g. 127.0.0.1:9092")
    return raw


def _existing_file(name: str, raw: str | None, cwd: Path) -> str | None:
    """An existing file (relative to ``cwd``), as an absolute path; None when unset."""
    if not raw:
        return None
    path = cwd / Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r}: no such file; point it at an existing file or unset it")
    return str(path.resolve())


def _parse_topic(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", raw) or raw in (".", ".."):
        raise ConfigError(f"{name}={raw!r} is not a Kafka topic name: use letters, digits, '.', '_' and '-'")
    return raw


def _parse_log_format(raw: str) -> str:
    record = logging.LogRecord("kirby", logging.INFO, __file__, 1, "message", None, None)
    try:
        logging.Formatter(raw, validate=True).format(record)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"LOG_FORMAT={raw!r} is not a logging format: use e.g. LOG_FORMAT={DEFAULT_LOG_FORMAT!r}"
        ) from None
    return raw


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
    embedded_path: Path = Path("kirby-embedded.db")
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
        index = _parse_url("KIRBY_PACKAGE_INDEX", index, ("http", "https"))
    else:
        index = str((cwd / Path(index).expanduser()).resolve())

    def directory(name: str) -> Path:
        return (cwd / Path(get(name)).expanduser()).resolve()

    return Settings(
        database_uri=_parse_database_uri(get("SQLALCHEMY_DATABASE_URI"), cwd),
        track_modifications=_parse_bool("SQLALCHEMY_TRACK_MODIFICATIONS", get("SQLALCHEMY_TRACK_MODIFICATIONS")),
        secret_key=get("SECRET_KEY") or INSECURE_SECRET_KEY,
        security_password_salt=get("SECURITY_PASSWORD_SALT"),
        testing=_parse_bool("TESTING", get("TESTING")),
        kafka_bootstrap_servers=_parse_servers("KAFKA_BOOTSTRAP_SERVERS", servers) if servers else None,
        kafka_use_ssl=_parse_bool(use_ssl_name, use_ssl_raw),
        kafka_ssl_cafile=_existing_file("KAFKA_SSL_CAFILE", get("KAFKA_SSL_CAFILE"), cwd),
        kafka_ssl_certfile=_existing_file("KAFKA_SSL_CERTFILE", get("KAFKA_SSL_CERTFILE"), cwd),
        kafka_ssl_keyfile=_existing_file("KAFKA_SSL_KEYFILE", get("KAFKA_SSL_KEYFILE"), cwd),
        topic_job_offers=_parse_topic("KIRBY_TOPIC_JOB_OFFERS", get("KIRBY_TOPIC_JOB_OFFERS")),
        topic_run_events=_parse_topic("KIRBY_TOPIC_RUN_EVENTS", get("KIRBY_TOPIC_RUN_EVENTS")),
        supervisor_group_id=get("KIRBY_SUPERVISOR_GROUP_ID"),
        schedule_endpoint=_parse_url("KIRBY_SCHEDULE_ENDPOINT", get("KIRBY_SCHEDULE_ENDPOINT"), ("http", "https")),
        ext_wait_between_retries=_parse_float("EXT_WAIT_BETWEEN_RETRIES", get("EXT_WAIT_BETWEEN_RETRIES")),
        ext_retries=_parse_int("EXT_RETRIES", get("EXT_RETRIES")),
        log_format=_parse_log_format(get("LOG_FORMAT")),
        redis_url=_parse_url("REDIS_URL", redis_url, ("redis", "rediss")) if redis_url else None,
        redis_prefix=get("KIRBY_REDIS_PREFIX"),
        embedded_path=directory("KIRBY_EMBEDDED_PATH"),
        package_index=index,
        venv_directory=directory("KIRBY_VENV_DIRECTORY"),
        run_directory=directory("KIRBY_RUN_DIRECTORY"),
        api_token=get("KIRBY_API_TOKEN"),
        run_user=_parse_user("KIRBY_RUN_USER", get("KIRBY_RUN_USER")) if get("KIRBY_RUN_USER") else None,
        allow_root_runs=_parse_bool("KIRBY_ALLOW_ROOT_RUNS", get("KIRBY_ALLOW_ROOT_RUNS")),
        run_python=_executable("KIRBY_RUN_PYTHON", get("KIRBY_RUN_PYTHON"), cwd),
        run_memory_limit=_optional(_parse_size, "KIRBY_RUN_MEMORY_LIMIT", get("KIRBY_RUN_MEMORY_LIMIT")),
        run_cpu_limit=_optional(_parse_int, "KIRBY_RUN_CPU_LIMIT", get("KIRBY_RUN_CPU_LIMIT"), 1),
        run_open_files_limit=_optional(_parse_int, "KIRBY_RUN_OPEN_FILES_LIMIT", get("KIRBY_RUN_OPEN_FILES_LIMIT"), 16),
    )


def _optional(parse, name: str, raw: str | None, *args):
    """``parse(name, raw, *args)``, or None when ``raw`` is unset."""
    return parse(name, raw, *args) if raw else None


def _executable(name: str, raw: str | None, cwd: Path) -> str | None:
    """An existing executable file (relative to ``cwd``), as an absolute path; None when unset."""
    if not raw:
        return None
    path = cwd / Path(raw).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ConfigError(
            f"{name}={raw!r}: no such executable; point it at a Python interpreter, e.g. /usr/bin/python3"
        )
    return str(path.absolute())
