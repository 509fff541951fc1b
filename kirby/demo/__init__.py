"""``kirby demo``: import a JSON script database (the original Kirby's format, extended).

Contract: :func:`import_file` reads, validates and writes all-or-nothing. The whole file is
validated first (``source`` -> ``parse``/``jobs`` -> plain dataclasses in ``spec``), then written
in one transaction (``load``). Any problem raises ``DemoImportError(path, message)`` where
``path`` is the JSON path of the offending value (or the file name for file-level problems), and
the database is left exactly as it was.

Format (the README's "Importing scripts: kirby demo" section is the user-facing version):
``ENVS`` {name: description}; ``ENV_VARS`` {"GLOBAL": {KEY: value}}; ``JOBS`` {name: {description,
type scheduled|daemon, package_version {env: version}, notification_group, scheduled_param {name,
minute, hour, day, month, weekday}, config {JOB: {...}, CONTEXT: {env: {...}}}}}; ``EXTS`` [names];
``USERS`` [{username, password, role}]; ``NOTIFICATION_GROUPS`` {name: [emails]}. Only ``ENVS`` and
``JOBS`` are required. Unknown keys are errors (a typo must not silently lose data).

Extensions: on a job ``package_name`` (default: the job name, as the original installed the package
named like the job), ``module`` (default: derived from the package name when run), ``enabled``,
``notify_on`` (["failure", "missed"], default both); in ``scheduled_param`` ``cron`` (5 fields, or
6 with trailing seconds) instead of the separate fields (``second`` is accepted too), ``timezone``
(IANA, default UTC), ``misfire_grace_seconds``, ``catchup`` (skip|latest|all), ``overlap``
(forbid|allow|replace), ``timeout_seconds``, ``retries``, ``dst_fall_back`` (auto|first|second|both)
and ``dst_spring_forward`` (auto|shift|skip; see kirby.cron, default auto); a config value may be
``{"value": ..., "secret": true}``; top-level ``SUSPENSIONS`` [{job (optional: all jobs when
absent), starts_at, ends_at (ISO 8601 with a UTC offset), reason}].

Decisions on the original files' quirks:
- A job environment missing from ``ENVS`` is created (unless the database has it) with its name as
  description; the contexts in it are created *disabled* (also when the environment existed, so a
  re-import never starts what an earlier one kept disabled), with one note per environment.
- A daemon with ``scheduled_param`` keeps it as a *disabled* schedule on each context (a daemon runs
  continuously), with a note; the cron is still validated.
- ``config.CONTEXT.<env>`` for an environment the job has no ``package_version`` for: empty objects
  are ignored (short_demo.json has them); non-empty ones are an error (there is no context to hold them).
- Config values that are not strings are stored JSON-encoded, as a shell sees them: false -> "false",
  0.8 -> "0.8", 50 -> "50"; null, lists and other objects are errors.
- ``ENV_VARS`` keys other than ``GLOBAL`` are errors (there is no per-environment global scope; use
  ``config.CONTEXT.<env>``). Precedence when a run starts: context > job > global.
- Versions must be strings valid under PEP 440 ("0.1" is fine); numbers are refused (1.10 would
  become 1.1). Roles are "admin" or "viewer" (default viewer).
- A database that holds jobs is refused unless ``force``: then jobs of the same name are replaced
  (with their contexts, schedules, config, notifications and suspensions) and the others added.
  Environments and users that exist are kept as they are (an existing user gets a note); global
  config keys of the same name are overwritten; groups gain missing emails; EXTS are added.
"""

from __future__ import annotations

from pathlib import Path

from kirby.config import Settings
from kirby.db import Database
from kirby.demo.load import load
from kirby.demo.parse import parse
from kirby.demo.source import read
from kirby.demo.spec import DemoData

DATA = Path(__file__).resolve().parent.parent / "data"
DEMO_FILE = DATA / "demo.json"
SHORT_DEMO_FILE = DATA / "short_demo.json"


def parse_file(path: Path | None = None) -> DemoData:
    """Read and validate ``path`` (default: the project's demo.json) without touching any database."""
    return parse(read(path or DEMO_FILE))


def import_data(database: Database, settings: Settings, data: DemoData, force: bool = False) -> list[str]:
    """Write validated ``data`` in one transaction (all or nothing); return the notes to print."""
    with database.session() as session:
        return load(session, settings, data, force)


def import_file(database: Database, settings: Settings, path: Path | None = None, force: bool = False) -> list[str]:
    """Import ``path`` (default: the project's demo.json) all-or-nothing; return the notes to print."""
    return import_data(database, settings, parse_file(path), force)
