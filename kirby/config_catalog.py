"""Every environment variable Kirby reads, with its default and meaning (``kirby.config`` parses
them). The README's Settings table is written from ``VARIABLES``; a test keeps the two in step."""

from __future__ import annotations

DEFAULT_LOG_FORMAT = "[%(asctime)s] %(levelname)s:%(name)s:%(message)s"

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
    "KIRBY_KAFKA_REPLICATION_FACTOR": (
        None,
        "Replicas of each Kirby topic Kirby creates. Unset: min(3, brokers), so 1 on a development broker.",
    ),
    "KIRBY_KAFKA_MIN_INSYNC_REPLICAS": (
        None,
        "`min.insync.replicas` of each topic Kirby creates (the producer uses acks=all: a publish is stored on at"
        " least this many replicas, or fails and is retried). Unset: replication factor - 1, at least 1.",
    ),
    "KIRBY_SCHEDULE_ENDPOINT": ("http://127.0.0.1:8080/schedule", "Where the leader reads the schedule."),
    "EXT_WAIT_BETWEEN_RETRIES": ("0.4", "Seconds between retries of an outside call."),
    "EXT_RETRIES": ("3", "Retries of an outside call (Kafka, Redis, web) before giving up."),
    "LOG_FORMAT": (DEFAULT_LOG_FORMAT, "Python logging format of every process."),
    "REDIS_URL": (None, "Redis URL (redis:// or rediss://, password allowed). Unset: embedded lease store."),
    "KIRBY_REDIS_PREFIX": ("kirby:", "Prefix of Kirby's Redis keys (several clusters can share one Redis)."),
    "KIRBY_EMBEDDED_PATH": ("kirby-embedded.db", "SQLite file of the embedded bus and lease store."),
    "KIRBY_SINGLE_HOST": (
        "false",
        "`true`: every Kirby process runs on this one host, so Kafka may be used with the embedded lease store"
        " (without it, `KAFKA_BOOTSTRAP_SERVERS` without `REDIS_URL` is an error).",
    ),
    "KIRBY_CELERY_BROKER_URL": (
        None,
        "Broker of Celery jobs (`redis://`, `rediss://`, `amqp://`, `amqps://`, as Celery takes it; TLS options in"
        " its query). A run's config key of the same name overrides it (per environment: on the context).",
    ),
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
    "KIRBY_PUBLIC_URL": ("http://127.0.0.1:8080", "The web UI's address as users reach it; links in notifications."),
    "KIRBY_SMTP_URL": (
        None,
        "SMTP server of notification emails, e.g. `smtp://user:pass@host:587?starttls=true` (`smtps://` for TLS). Unset: no emails.",
    ),
    "KIRBY_MAIL_FROM": ("kirby@localhost", "Sender address of notification emails."),
    "KIRBY_NOTIFY_COOLDOWN": (
        "600",
        "Seconds: at most one notification per group, job and event in this time; the rest come as one digest.",
    ),
    # Web hardening (issue 12; see docs/security.md).
    "KIRBY_TRUSTED_PROXIES": (
        "",
        "Reverse proxies (addresses or networks, comma-separated, e.g. 127.0.0.1) whose X-Forwarded-For "
        "and X-Forwarded-Proto `kirby web` believes. Unset: none (the client address is the TCP peer).",
    ),
    "KIRBY_MAX_LOG_STREAMS": ("24", "Live-log streams open at once in `kirby web`; beyond it 503 + Retry-After."),
    "KIRBY_MAX_LOG_STREAMS_PER_USER": ("4", "Live-log streams one user (or the API token) may hold open."),
    "KIRBY_MAX_LOG_LINES_PER_RUN": (
        "100000",
        "Log lines stored per run; later lines are dropped after a final truncated line.",
    ),
    "KIRBY_CONCURRENCY": (
        None,
        "Scheduled runs one supervisor runs at once (`kirby supervisor --concurrency` wins); offers beyond it"
        " stay on the bus for supervisors with room. Unset: 4 x the host's CPU cores.",
    ),
    "KIRBY_PUBLISH_AHEAD": (
        "1",
        "Seconds before a slot's due instant the leader publishes its offer; the claiming supervisor waits for the"
        " instant, so publish and claim are not on the path to the script running. 0: publish at the instant.",
    ),
    "KIRBY_RUN_RETENTION_DAYS": (
        "90",
        "Finished runs (and their logs) older than this are deleted by `kirby web` (daily) and `kirby gc`; 0 keeps them.",
    ),
    # External identity (issue 17; README "Users and login").
    "KIRBY_ADMIN_GROUPS": (
        "",
        "Groups (comma-separated, or `;`-separated when a name holds commas, as DNs do; case-insensitive) whose "
        "LDAP or OIDC members are admins.",
    ),
    "KIRBY_VIEWER_GROUPS": ("", "Groups (same form) whose members are viewers; someone in neither is refused."),
    "KIRBY_ROLE_REFRESH": ("900", "Seconds: an external user's groups are checked again when its last check is older."),
    "KIRBY_LOCAL_LOGIN": ("true", "`false`: only external users may log in (the password form checks no local user)."),
    "KIRBY_LDAP_URL": (None, "LDAP server, `ldap://host:389` or `ldaps://host:636`. Unset: no LDAP login."),
    "KIRBY_LDAP_USER_DN_TEMPLATE": (
        None,
        "Bind as `uid={username},ou=people,dc=example,dc=com` (the name is escaped).",
    ),
    "KIRBY_LDAP_SEARCH_BASE": (None, "Instead of a DN template: search the user under this base, then bind as it."),
    "KIRBY_LDAP_USER_FILTER": ("(uid={username})", "Filter of that search (AD: `(sAMAccountName={username})`)."),
    "KIRBY_LDAP_BIND_DN": (None, "Service account of the search (and of the group refresh). Unset: anonymous search."),
    "KIRBY_LDAP_BIND_PASSWORD": (None, "Its password."),
    "KIRBY_LDAP_START_TLS": ("false", "`true`: StartTLS on an `ldap://` URL before any bind."),
    "KIRBY_LDAP_CA_FILE": (None, "CA bundle that signs the LDAP server's certificate. Unset: the system's."),
    "KIRBY_LDAP_GROUP_SEARCH_BASE": (None, "Search groups under this base. Unset: read the user's `memberOf`."),
    "KIRBY_LDAP_GROUP_FILTER": ("(member={dn})", "Filter of the group search (`{dn}`: the user's DN, `{username}`)."),
    "KIRBY_LDAP_TIMEOUT": ("5", "Seconds to connect to and wait for the LDAP server."),
    # OpenID Connect login (issue 17; README "Users and login").
    "KIRBY_OIDC_ISSUER": (
        None,
        "OpenID Connect issuer URL (https, or http on 127.0.0.1), e.g. `https://example.okta.com`. Unset: no OIDC login.",
    ),
    "KIRBY_OIDC_CLIENT_ID": (None, "Kirby's client id at the OpenID Connect provider (required with the issuer)."),
    "KIRBY_OIDC_CLIENT_SECRET": (None, "Kirby's client secret at the provider. Unset: a public client (PKCE only)."),
    "KIRBY_OIDC_SCOPES": ("openid profile email groups", "Scopes Kirby asks for (space-separated; must hold openid)."),
    "KIRBY_OIDC_PROVIDER_NAME": ("single sign-on", 'Name on the login page\'s button: "Sign in with <name>".'),
    "KIRBY_OIDC_GROUPS_CLAIM": ("groups", "ID token claim holding the user's groups (a list, or one string)."),
    "KIRBY_OIDC_LOGOUT": ("false", "`true`: logout also ends the session at the provider (RP-initiated logout)."),
}
