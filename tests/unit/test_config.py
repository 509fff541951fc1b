"""Settings: every variable's default and parsing, bad values, .env loading, and the CLI's one-line error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kirby.cli import cli
from kirby.config import DEFAULT_LOG_FORMAT, VARIABLES, Settings, load_settings
from kirby.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"
HOME = Path("~").expanduser()


def settings(tmp_path: Path, **environ: str) -> Settings:
    return load_settings(environ=environ, cwd=tmp_path)


def refused(tmp_path: Path, message: str, **environ: str) -> str:
    with pytest.raises(ConfigError) as error:
        settings(tmp_path, **environ)
    assert message in str(error.value)
    return str(error.value)


# variable -> (attribute, default as built in tmp_path, a valid value, what it becomes)
CASES = {
    "SQLALCHEMY_DATABASE_URI": ("database_uri", "sqlite:///{tmp}/kirby.db", "///data.db", "sqlite:///{tmp}/data.db"),
    "SQLALCHEMY_TRACK_MODIFICATIONS": ("track_modifications", False, "true", True),
    "SECRET_KEY": ("secret_key", "kirby-insecure-development-key", "s3cret", "s3cret"),
    "SECURITY_PASSWORD_SALT": ("security_password_salt", "", "pepper", "pepper"),
    "TESTING": ("testing", False, "yes", True),
    "KAFKA_BOOTSTRAP_SERVERS": (
        "kafka_bootstrap_servers",
        None,
        "127.0.0.1:9092,kafka-2:9093",
        "127.0.0.1:9092,kafka-2:9093",
    ),
    "KAFKA_USE_SSL": ("kafka_use_ssl", False, "1", True),
    "KAFKA_SSL_CAFILE": ("kafka_ssl_cafile", None, "ca.pem", "{tmp}/ca.pem"),
    "KAFKA_SSL_CERTFILE": ("kafka_ssl_certfile", None, "certs/client.pem", "{tmp}/certs/client.pem"),
    "KAFKA_SSL_KEYFILE": ("kafka_ssl_keyfile", None, "{tmp}/certs/client.key", "{tmp}/certs/client.key"),
    "KIRBY_TOPIC_JOB_OFFERS": ("topic_job_offers", ".kirby.job-offers", "prod.offers", "prod.offers"),
    "KIRBY_TOPIC_RUN_EVENTS": ("topic_run_events", ".kirby.run-events", "prod_events-2", "prod_events-2"),
    "KIRBY_SUPERVISOR_GROUP_ID": ("supervisor_group_id", "kirby-supervisors", "team a", "team a"),
    "KIRBY_SCHEDULE_ENDPOINT": (
        "schedule_endpoint",
        "http://127.0.0.1:8080/schedule",
        "https://web:8443/schedule",
        "https://web:8443/schedule",
    ),
    "EXT_WAIT_BETWEEN_RETRIES": ("ext_wait_between_retries", 0.4, "1.5", 1.5),
    "EXT_RETRIES": ("ext_retries", 3, " 7 ", 7),
    "LOG_FORMAT": ("log_format", DEFAULT_LOG_FORMAT, "%(levelname)s %(message)s", "%(levelname)s %(message)s"),
    "REDIS_URL": ("redis_url", None, "rediss://:p%40ss@127.0.0.1:6390/2", "rediss://:p%40ss@127.0.0.1:6390/2"),
    "KIRBY_CELERY_BROKER_URL": ("celery_broker_url", None, "amqps://u:p@rabbit:5671//", "amqps://u:p@rabbit:5671//"),
    "KIRBY_REDIS_PREFIX": ("redis_prefix", "kirby:", "kirby-staging:", "kirby-staging:"),
    "KIRBY_EMBEDDED_PATH": ("embedded_path", Path("{tmp}/kirby-embedded.db"), "state/e.db", Path("{tmp}/state/e.db")),
    "KIRBY_SINGLE_HOST": ("single_host", False, "true", True),
    "KIRBY_KAFKA_REPLICATION_FACTOR": ("kafka_replication_factor", None, "3", 3),
    "KIRBY_KAFKA_MIN_INSYNC_REPLICAS": ("kafka_min_insync_replicas", None, " 2 ", 2),
    "KIRBY_PACKAGE_INDEX": ("package_index", "http://127.0.0.1:8081/simple/", "wheels", "{tmp}/wheels"),
    "KIRBY_VENV_DIRECTORY": ("venv_directory", HOME / ".kirby/venvs", "venvs", Path("{tmp}/venvs")),
    "KIRBY_RUN_DIRECTORY": ("run_directory", HOME / ".kirby/runs", "~/runs", HOME / "runs"),
    "KIRBY_API_TOKEN": ("api_token", None, "t0ken", "t0ken"),
    "KIRBY_RUN_USER": ("run_user", None, "kirby-run", "kirby-run"),
    "KIRBY_ALLOW_ROOT_RUNS": ("allow_root_runs", False, "true", True),
    "KIRBY_RUN_PYTHON": ("run_python", None, "/bin/sh", "/bin/sh"),
    "KIRBY_RUN_MEMORY_LIMIT": ("run_memory_limit", None, "512MiB", 512 * 1024**2),
    "KIRBY_RUN_CPU_LIMIT": ("run_cpu_limit", None, "60", 60),
    "KIRBY_RUN_OPEN_FILES_LIMIT": ("run_open_files_limit", None, "256", 256),
    "KIRBY_PUBLIC_URL": (
        "public_url",
        "http://127.0.0.1:8080",
        "https://kirby.example.com/",
        "https://kirby.example.com",
    ),
    "KIRBY_SMTP_URL": (
        "smtp_url",
        None,
        "smtp://u:p%40ss@mail.example.com:587?starttls=true",
        "smtp://u:p%40ss@mail.example.com:587?starttls=true",
    ),
    "KIRBY_MAIL_FROM": ("mail_from", "kirby@localhost", "Kirby <kirby@example.com>", "Kirby <kirby@example.com>"),
    "KIRBY_NOTIFY_COOLDOWN": ("notify_cooldown", 600, "0", 0),
    # Web hardening (issue 12).
    "KIRBY_TRUSTED_PROXIES": ("trusted_proxies", (), "127.0.0.1, 10.1.2.0/24", ("127.0.0.1/32", "10.1.2.0/24")),
    "KIRBY_MAX_LOG_STREAMS": ("max_log_streams", 24, "100", 100),
    "KIRBY_MAX_LOG_STREAMS_PER_USER": ("max_log_streams_per_user", 4, "2", 2),
    "KIRBY_MAX_LOG_LINES_PER_RUN": ("max_log_lines_per_run", 100_000, "5000", 5000),
    "KIRBY_RUN_RETENTION_DAYS": ("run_retention_days", 90, "0", 0),
    # External identity (issue 17).
    "KIRBY_ADMIN_GROUPS": ("admin_groups", (), "Kirby-Admins, ops", ("Kirby-Admins", "ops")),
    "KIRBY_VIEWER_GROUPS": (
        "viewer_groups",
        (),
        "cn=viewers,ou=groups,dc=x; cn=ops,dc=x",
        ("cn=viewers,ou=groups,dc=x", "cn=ops,dc=x"),
    ),
    "KIRBY_ROLE_REFRESH": ("role_refresh", 900, "60", 60),
    "KIRBY_LOCAL_LOGIN": ("local_login", True, "false", False),
    "KIRBY_LDAP_URL": ("ldap_url", None, "ldaps://ldap.example.com:636", "ldaps://ldap.example.com:636"),
    "KIRBY_LDAP_USER_DN_TEMPLATE": (
        "ldap_user_dn_template",
        None,
        "uid={username},ou=people,dc=x",
        "uid={username},ou=people,dc=x",
    ),
    "KIRBY_LDAP_SEARCH_BASE": ("ldap_search_base", None, "ou=people,dc=x", "ou=people,dc=x"),
    "KIRBY_LDAP_USER_FILTER": (
        "ldap_user_filter",
        "(uid={username})",
        "(sAMAccountName={username})",
        "(sAMAccountName={username})",
    ),
    "KIRBY_LDAP_BIND_DN": ("ldap_bind_dn", None, "cn=kirby,dc=x", "cn=kirby,dc=x"),
    "KIRBY_LDAP_BIND_PASSWORD": ("ldap_bind_password", None, "s3cret", "s3cret"),
    "KIRBY_LDAP_START_TLS": ("ldap_start_tls", False, "true", True),
    "KIRBY_LDAP_CA_FILE": ("ldap_ca_file", None, "ca.pem", "{tmp}/ca.pem"),
    "KIRBY_LDAP_GROUP_SEARCH_BASE": ("ldap_group_search_base", None, "ou=groups,dc=x", "ou=groups,dc=x"),
    "KIRBY_LDAP_GROUP_FILTER": ("ldap_group_filter", "(member={dn})", "(uniqueMember={dn})", "(uniqueMember={dn})"),
    "KIRBY_LDAP_TIMEOUT": ("ldap_timeout", 5.0, "2.5", 2.5),
    "KIRBY_CONCURRENCY": ("concurrency", 4 * (os.cpu_count() or 1), "3", 3),
    "KIRBY_PUBLISH_AHEAD": ("publish_ahead", 1.0, "0.5", 0.5),
    # OpenID Connect login (issue 17).
    "KIRBY_OIDC_ISSUER": ("oidc_issuer", None, "https://login.example.com/tenant", "https://login.example.com/tenant"),
    "KIRBY_OIDC_CLIENT_ID": ("oidc_client_id", None, "kirby", "kirby"),
    "KIRBY_OIDC_CLIENT_SECRET": ("oidc_client_secret", None, "s3cret", "s3cret"),
    "KIRBY_OIDC_SCOPES": (
        "oidc_scopes",
        ("openid", "profile", "email", "groups"),
        "openid  email",
        ("openid", "email"),
    ),
    "KIRBY_OIDC_PROVIDER_NAME": ("oidc_provider_name", "single sign-on", "Okta", "Okta"),
    "KIRBY_OIDC_GROUPS_CLAIM": ("oidc_groups_claim", "groups", "roles", "roles"),
    "KIRBY_OIDC_LOGOUT": ("oidc_logout", False, "true", True),
}


def _in(tmp_path: Path, value):
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp_path))
    if isinstance(value, Path):
        return Path(str(value).replace("{tmp}", str(tmp_path)))
    return value


@pytest.fixture
def tmp_path(tmp_path: Path) -> Path:
    resolved = tmp_path.resolve()  # settings resolve paths; compare like with like
    for name in ("ca.pem", "certs/client.pem", "certs/client.key"):
        (resolved / name).parent.mkdir(parents=True, exist_ok=True)
        (resolved / name).write_text("-----BEGIN-----\n")
    return resolved


def test_every_variable_is_tested_and_documented():
    assert set(CASES) == set(VARIABLES), "add a row to CASES for each new variable of kirby/config.py"
    readme = README.read_text()
    for name in VARIABLES:
        assert f"| `{name}` |" in readme, f"README's settings table lacks {name}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_and_value(tmp_path, name):
    attribute, default, value, expected = CASES[name]
    assert getattr(settings(tmp_path), attribute) == _in(tmp_path, default)
    assert getattr(settings(tmp_path, **{name: _in(tmp_path, value)}), attribute) == _in(tmp_path, expected)
    assert getattr(settings(tmp_path, **{name: "  "}), attribute) == _in(tmp_path, default)  # blank = unset


def test_secrets_and_derived_flags(tmp_path):
    default = settings(tmp_path)
    assert default.secret_key_is_default and default.embedded_bus and default.embedded_leases
    configured = settings(
        tmp_path,
        SECRET_KEY="s3cret",
        SECURITY_PASSWORD_SALT="pepper",
        KIRBY_API_TOKEN="t0ken",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
        REDIS_URL="redis://127.0.0.1:6390/0",
    )
    assert not configured.secret_key_is_default and not configured.embedded_bus and not configured.embedded_leases
    assert not {"s3cret", "pepper", "t0ken"} & set(re.findall(r"'([^']*)'", repr(configured)))


@pytest.mark.parametrize("name", ["TESTING", "SQLALCHEMY_TRACK_MODIFICATIONS", "KAFKA_USE_SSL"])
def test_booleans(tmp_path, name):
    attribute = CASES[name][0]
    for raw in ("1", "true", "True", "YES", "on"):
        assert getattr(settings(tmp_path, **{name: raw}), attribute) is True
    for raw in ("0", "false", "No", "off"):
        assert getattr(settings(tmp_path, **{name: raw}), attribute) is False
    refused(tmp_path, f"{name}='maybe' is not a boolean: use true or false", **{name: "maybe"})


def test_kafka_use_tls_is_an_alias(tmp_path):
    assert settings(tmp_path, KAFKA_USE_TLS="true").kafka_use_ssl is True
    assert settings(tmp_path, KAFKA_USE_TLS="true", KAFKA_USE_SSL="false").kafka_use_ssl is False  # the new name wins
    refused(tmp_path, "KAFKA_USE_TLS='sure' is not a boolean", KAFKA_USE_TLS="sure")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "EXT_RETRIES='x' is not a whole number: use e.g. EXT_RETRIES=3"),
        ("2.5", "EXT_RETRIES='2.5' is not a whole number"),
        ("-1", "EXT_RETRIES='-1' must be at least 0"),
    ],
)
def test_bad_retries(tmp_path, raw, message):
    refused(tmp_path, message, EXT_RETRIES=raw)


@pytest.mark.parametrize("raw", ["soon", "nan", "inf", "-0.5"])
def test_bad_wait_between_retries(tmp_path, raw):
    refused(tmp_path, f"EXT_WAIT_BETWEEN_RETRIES={raw!r}", EXT_WAIT_BETWEEN_RETRIES=raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("///kirby.db", "sqlite:///{tmp}/kirby.db"),
        ("sqlite:///sub/k.db", "sqlite:///{tmp}/sub/k.db"),
        ("sqlite:////var/lib/kirby/k.db", "sqlite:////var/lib/kirby/k.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgres://kirby:pw@db.example:5432/kirby", "postgresql+psycopg://kirby:pw@db.example:5432/kirby"),
        ("postgresql://kirby:pw@127.0.0.1/kirby", "postgresql+psycopg://kirby:pw@127.0.0.1/kirby"),
        ("postgresql+psycopg2://kirby@127.0.0.1/kirby", "postgresql+psycopg://kirby@127.0.0.1/kirby"),
        ("postgresql+psycopg://k:p%40ss@h/db?sslmode=require", "postgresql+psycopg://k:p%40ss@h/db?sslmode=require"),
    ],
)
def test_database_urls(tmp_path, raw, expected):
    assert settings(tmp_path, SQLALCHEMY_DATABASE_URI=raw).database_uri == _in(tmp_path, expected)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("kirby.db", "SQLALCHEMY_DATABASE_URI='kirby.db' is not a database URL: use e.g. ///kirby.db"),
        (
            "postgresql://kirby:hunter2@db:port/kirby",
            "SQLALCHEMY_DATABASE_URI='postgresql://kirby:***@db:port/kirby' is not a database URL",
        ),
        ("mysql://db/kirby", "Kirby stores scripts in SQLite or PostgreSQL"),
    ],
)
def test_bad_database_urls(tmp_path, raw, message):
    assert "hunter2" not in refused(tmp_path, message, SQLALCHEMY_DATABASE_URI=raw)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("KIRBY_SCHEDULE_ENDPOINT", "127.0.0.1:8080/schedule"),
        ("KIRBY_SCHEDULE_ENDPOINT", "http://[::1/schedule"),
        ("KIRBY_SCHEDULE_ENDPOINT", "http://web:port/schedule"),
        ("KIRBY_SCHEDULE_ENDPOINT", "http:///schedule"),
        ("REDIS_URL", "http://127.0.0.1:6390"),
        ("KIRBY_CELERY_BROKER_URL", "http://127.0.0.1:6390"),
        ("REDIS_URL", "redis://:hunter2@127.0.0.1:99999/0"),
        ("KIRBY_PACKAGE_INDEX", "ftp://index.example/simple/"),
    ],
)
def test_malformed_urls(tmp_path, name, raw):
    message = refused(tmp_path, f"{name}=", **{name: raw})
    assert "is not a valid URL: use e.g." in message and "hunter2" not in message


@pytest.mark.parametrize("raw", ["localhost", "127.0.0.1:9092,kafka", "host:99999", "host:port", "127.0.0.1:9092,"])
def test_bad_kafka_servers(tmp_path, raw):
    refused(tmp_path, f"KAFKA_BOOTSTRAP_SERVERS={raw!r}: ", KAFKA_BOOTSTRAP_SERVERS=raw)


@pytest.mark.parametrize("name", ["KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"])
def test_missing_ssl_files(tmp_path, name):
    refused(
        tmp_path,
        f"{name}='missing.pem': no such file; point it at an existing file or unset it",
        **{name: "missing.pem"},
    )
    refused(tmp_path, f"{name}='certs': no such file", **{name: "certs"})  # a folder is not a file


@pytest.mark.parametrize(("name", "raw"), [("KIRBY_TOPIC_JOB_OFFERS", "my offers"), ("KIRBY_TOPIC_RUN_EVENTS", "é")])
def test_bad_topics(tmp_path, name, raw):
    refused(tmp_path, f"{name}={raw!r} is not a Kafka topic name", **{name: raw})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("KIRBY_TRUSTED_PROXIES", "127.0.0.1,nginx", "'nginx' is not an IP address or network"),
        ("KIRBY_MAX_LOG_STREAMS", "0", "must be at least 1"),
        ("KIRBY_MAX_LOG_LINES_PER_RUN", "many", "is not a whole number"),
        ("KIRBY_RUN_RETENTION_DAYS", "-1", "must be at least 0"),
    ],
)
def test_bad_web_hardening_values(tmp_path, name, value, message):
    assert refused(tmp_path, message, **{name: value}).startswith(f"{name}=")


@pytest.mark.parametrize("raw", ["%(asctime", "%(no_such_field)s"])
def test_bad_log_format(tmp_path, raw):
    refused(tmp_path, f"LOG_FORMAT={raw!r} is not a logging format", LOG_FORMAT=raw)


def test_package_index_url_or_folder(tmp_path):
    assert (
        settings(tmp_path, KIRBY_PACKAGE_INDEX="https://pypi.example/simple/").package_index
        == "https://pypi.example/simple/"
    )
    assert settings(tmp_path, KIRBY_PACKAGE_INDEX="/srv/wheels").package_index == "/srv/wheels"


# --- .env ------------------------------------------------------------------------------------


def test_dotenv_is_loaded_and_real_environment_wins(tmp_path):
    (tmp_path / ".env").write_text(
        "# Kirby\nexport EXT_RETRIES=5\nSECRET_KEY='from dotenv'\nKIRBY_API_TOKEN=dotenv-token\n"
        "SQLALCHEMY_DATABASE_URI=///dot.db\n"
    )
    loaded = settings(tmp_path, KIRBY_API_TOKEN="real-token")
    assert (loaded.ext_retries, loaded.secret_key, loaded.api_token) == (5, "from dotenv", "real-token")
    assert loaded.database_uri == f"sqlite:///{tmp_path}/dot.db"


def test_dotenv_bad_value_names_the_variable(tmp_path):
    (tmp_path / ".env").write_text("EXT_RETRIES=three\n")
    refused(tmp_path, "EXT_RETRIES='three' is not a whole number")
    assert settings(tmp_path, EXT_RETRIES="2").ext_retries == 2  # the real environment fixes it


def test_non_utf8_dotenv(tmp_path):
    (tmp_path / ".env").write_bytes(b"SECRET_KEY=caf\xe9\n")
    refused(tmp_path, f"{tmp_path / '.env'}: not a UTF-8 text file")


def test_defaults_read_the_process_environment_and_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EXT_RETRIES", "9")
    (tmp_path / ".env").write_text("KIRBY_API_TOKEN=from-dotenv\n")
    loaded = load_settings()
    assert (loaded.ext_retries, loaded.api_token) == (9, "from-dotenv")
    assert loaded.database_uri == f"sqlite:///{tmp_path}/kirby.db"


# --- every command stops on a bad setting with one line --------------------------------------


@pytest.mark.parametrize("command", cli.list_commands(None))
def test_every_command_reports_a_bad_setting_in_one_line(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [command], env={"EXT_RETRIES": "x"})
    assert result.exit_code == 1
    assert result.output == "Error: EXT_RETRIES='x' is not a whole number: use e.g. EXT_RETRIES=3\n"
    assert not (tmp_path / "kirby.db").exists()  # nothing was touched


@pytest.mark.slow
def test_real_command_reports_a_bad_setting_in_one_line(tmp_path):
    kirby = Path(sys.executable).parent / "kirby"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRBY_", "KAFKA_", "EXT_", "SQLALCHEMY_"))}
    with_dotenv = tmp_path / "with-dotenv"
    with_dotenv.mkdir()
    (with_dotenv / ".env").write_text("KAFKA_SSL_CAFILE=/no/such/ca.pem\n")
    for argv, extra, cwd, message in (
        (
            ["demo"],
            {"EXT_RETRIES": "x"},
            tmp_path,
            "Error: EXT_RETRIES='x' is not a whole number: use e.g. EXT_RETRIES=3\n",
        ),
        (
            ["adduser", "alice"],
            {},
            with_dotenv,
            "Error: KAFKA_SSL_CAFILE='/no/such/ca.pem': no such file; point it at an existing file or unset it\n",
        ),
    ):
        done = subprocess.run(
            [str(kirby), *argv],
            env={**env, **extra},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode, done.stdout, done.stderr) == (1, "", message)
        assert not (cwd / "kirby.db").exists()


def test_passwords_in_urls_stay_out_of_repr(tmp_path):
    configured = settings(
        tmp_path,
        REDIS_URL="redis://:hunter2@127.0.0.1:6390/0",
        SQLALCHEMY_DATABASE_URI="postgresql://kirby:s3cret@127.0.0.1:5439/kirby",
    )
    assert "hunter2" not in repr(configured) and "s3cret" not in repr(configured)


@pytest.mark.parametrize(
    "raw, expected", [("1048576", 1024**2), ("64K", 64 * 1024), ("2G", 2 * 1024**3), ("300 mb", 300 * 1024**2)]
)
def test_memory_limit_sizes(tmp_path, raw, expected):
    assert settings(tmp_path, KIRBY_RUN_MEMORY_LIMIT=raw).run_memory_limit == expected


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("KIRBY_RUN_MEMORY_LIMIT", "lots", "KIRBY_RUN_MEMORY_LIMIT='lots' is not a size"),
        ("KIRBY_RUN_MEMORY_LIMIT", "0", "is not a size"),
        ("KIRBY_RUN_CPU_LIMIT", "0", "KIRBY_RUN_CPU_LIMIT='0' must be at least 1"),
        ("KIRBY_RUN_OPEN_FILES_LIMIT", "3", "must be at least 16"),
        ("KIRBY_RUN_USER", "bad user;", "is not a user name"),
        ("KIRBY_RUN_PYTHON", "no/such/python", "KIRBY_RUN_PYTHON='no/such/python': no such executable"),
        ("KIRBY_ALLOW_ROOT_RUNS", "maybe", "KIRBY_ALLOW_ROOT_RUNS='maybe' is not a boolean"),
    ],
)
def test_bad_isolation_values_are_refused(tmp_path, name, raw, message):
    refused(tmp_path, message, **{name: raw})


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("KIRBY_SMTP_URL", "mail.example.com:25", "KIRBY_SMTP_URL='mail.example.com:25' is not a valid URL"),
        ("KIRBY_SMTP_URL", "http://u:secret@mail/", "KIRBY_SMTP_URL='http://u:***@mail/' is not a valid URL"),
        ("KIRBY_PUBLIC_URL", "kirby.example.com", "KIRBY_PUBLIC_URL='kirby.example.com' is not a valid URL"),
        ("KIRBY_NOTIFY_COOLDOWN", "10m", "KIRBY_NOTIFY_COOLDOWN='10m' is not a whole number"),
    ],
)
def test_bad_notification_settings(tmp_path, name, raw, message):
    assert "secret" not in refused(tmp_path, message, **{name: raw})


def test_kafka_with_the_embedded_lease_store_is_an_error_unless_single_host_is_said(tmp_path, caplog):
    """Issue 10, scenario 6: one leader per host, silently, is not a configuration Kirby accepts."""
    from kirby.lease import open_lease_store

    with pytest.raises(ConfigError) as error:
        open_lease_store(settings(tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092"))
    message = str(error.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message and "REDIS_URL" in message and "KIRBY_SINGLE_HOST=true" in message
    assert "\n" not in message and not (tmp_path / "kirby-embedded.db").exists()  # nothing changed
    caplog.set_level("INFO", logger="kirby.lease")
    chdir_elsewhere = settings(
        tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092", KIRBY_SINGLE_HOST="yes", KIRBY_EMBEDDED_PATH="state/e.db"
    )
    open_lease_store(chdir_elsewhere).close()
    assert f"embedded lease store: {tmp_path}/state/e.db (KIRBY_EMBEDDED_PATH)" in caplog.messages


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("KIRBY_LDAP_URL", "http://ldap:389", "KIRBY_LDAP_URL='http://ldap:389' is not a valid URL"),
        ("KIRBY_LDAP_USER_DN_TEMPLATE", "uid=bob,dc=x", "KIRBY_LDAP_USER_DN_TEMPLATE='uid=bob,dc=x' lacks {username}"),
        ("KIRBY_LDAP_USER_FILTER", "(uid=*)", "KIRBY_LDAP_USER_FILTER='(uid=*)' lacks {username}"),
        ("KIRBY_ROLE_REFRESH", "5", "KIRBY_ROLE_REFRESH='5' must be at least 10"),
        ("KIRBY_LOCAL_LOGIN", "nope", "KIRBY_LOCAL_LOGIN='nope' is not a boolean"),
    ],
)
def test_bad_identity_settings_are_refused(tmp_path, name, raw, message):
    refused(tmp_path, message, **{name: raw})
