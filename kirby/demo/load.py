"""Writing validated :class:`DemoData` into the script database, inside the caller's session.

Nothing here commits: the caller's session is the one transaction, so any error rolls back all.
The few environments, groups, global keys and users go through the ORM; jobs and everything under
them are bulk INSERTs (one statement per table and batch), which keeps a file with thousands of
jobs fast.
"""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from kirby.celery.task import NO_TASK_COLUMNS
from kirby.config import Settings
from kirby.demo.source import child
from kirby.demo.spec import ConfigValue, DemoData
from kirby.errors import DemoImportError, UserError
from kirby.models import (
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Ext,
    Job,
    JobNotification,
    NotificationEmail,
    NotificationGroup,
    NotificationWebhook,
    Schedule,
    Suspension,
)
from kirby.users import add_user, find_user

CHUNK = 500  # names per IN (...) query


def _by_name(session: Session, model, names: list[str]) -> dict:
    found = {}
    for start in range(0, len(names), CHUNK):
        rows = session.scalars(select(model).where(model.name.in_(names[start : start + CHUNK])))
        found.update((row.name, row) for row in rows)
    return found


def _environments(session: Session, data: DemoData, notes: list[str]) -> tuple[dict[str, Environment], set[str]]:
    """Environments by name (existing ones are reused as they are), and the ones ENVS does not list.

    A job's contexts in an environment missing from ENVS are created disabled, even if the
    environment exists already: a re-import must not start what an earlier import kept disabled.
    """
    wanted = list(dict.fromkeys([*data.environments, *data.used_environments()]))
    environments = _by_name(session, Environment, wanted)
    undeclared = {name for name in wanted if name not in data.environments}
    for name in wanted:
        if name in environments:
            if name in undeclared:
                notes.append(
                    f"note: environment {name!r} is not in ENVS; it exists already, the new contexts "
                    "in it are disabled (enable them in the web UI)"
                )
            continue
        environments[name] = Environment(name=name, description=data.environments.get(name, name))
        session.add(environments[name])
        if name in undeclared:
            notes.append(
                f"note: environment {name!r} is not in ENVS; created it, its contexts are disabled "
                "(enable them in the web UI)"
            )
    return environments, undeclared


def _global_config(session: Session, values: tuple[ConfigValue, ...]) -> None:
    """File values replace existing global keys of the same name; other global keys stay."""
    existing = {row.key: row for row in session.scalars(select(ConfigKey).where(ConfigKey.scope == ConfigScope.GLOBAL))}
    for item in values:
        row = existing.get(item.key) or ConfigKey(scope=ConfigScope.GLOBAL, key=item.key)
        row.value, row.secret = item.value, item.secret
        session.add(row)


def _groups(session: Session, data: DemoData) -> dict[str, NotificationGroup]:
    """Groups are merged: an existing group keeps its emails and webhooks and gains the file's new ones."""
    wanted = list(dict.fromkeys([*data.groups, *(j.notification_group for j in data.jobs if j.notification_group)]))
    groups = _by_name(session, NotificationGroup, wanted)
    for name, emails in data.groups.items():
        group = groups.get(name) or NotificationGroup(name=name)
        groups[name] = group
        known = {e.email for e in group.emails}
        group.emails.extend(NotificationEmail(email=email) for email in emails if email not in known)
        session.add(group)
    for name, webhooks in data.webhooks.items():  # by URL: a known one takes the file's format and secret
        stored = {w.url: w for w in groups[name].webhooks}
        for spec in webhooks:
            webhook = stored.get(spec.url) or NotificationWebhook(url=spec.url)
            webhook.format, webhook.secret = spec.format, spec.secret
            if spec.url not in stored:
                groups[name].webhooks.append(webhook)
    return groups


def _exts(session: Session, names: tuple[str, ...]) -> None:
    existing = _by_name(session, Ext, list(names))
    session.add_all(Ext(name=name) for name in names if name not in existing)


def _check_groups(data: DemoData, groups: dict[str, NotificationGroup]) -> None:
    for spec in data.jobs:
        if spec.notification_group is not None and spec.notification_group not in groups:
            raise DemoImportError(
                child(spec.path, "notification_group"),
                f"{spec.notification_group!r} is not defined in NOTIFICATION_GROUPS",
            )


def _insert(session: Session, model, rows: list[dict]) -> None:
    """Bulk INSERT of ``rows`` (all with the same keys).

    RETURNING lets SQLAlchemy batch rows into multi-row VALUES ("insertmanyvalues") on SQLite and
    PostgreSQL alike; without it psycopg sends one statement per row. (Ids are looked up by their
    unique keys afterwards: asking RETURNING for them in order falls back to row-at-a-time.)
    """
    if rows:
        table = model.__table__  # Core: no per-row ORM bookkeeping
        session.execute(insert(table).returning(table.c.id), rows).all()


def _ids(session: Session, columns, column, values: list) -> dict:
    """``{key: id}`` for the rows whose ``column`` is in ``values``; ``columns`` are (id, key...)."""
    found = {}
    for start in range(0, len(values), CHUNK):
        for row in session.execute(select(*columns).where(column.in_(values[start : start + CHUNK]))):
            found[row[1] if len(row) == 2 else tuple(row[1:])] = row[0]
    return found


def _config_rows(scope: ConfigScope, owner: str, owner_id: int, values) -> list[dict]:
    other = "context_id" if owner == "job_id" else "job_id"
    return [
        {"scope": scope, owner: owner_id, other: None, "key": v.key, "value": v.value, "secret": v.secret}
        for v in values
    ]


def _insert_jobs(
    session: Session,
    data: DemoData,
    environments: dict[str, Environment],
    undeclared: set[str],
    groups: dict[str, NotificationGroup],
) -> dict[str, int]:
    """Insert every job with its contexts, schedules, config and notifications; returns job ids by name."""
    _insert(
        session,
        Job,
        [
            {
                "name": s.name,
                "description": s.description,
                "type": s.type,
                "enabled": s.enabled,
                "module": s.module,
                **(s.celery.columns() if s.celery is not None else NO_TASK_COLUMNS),
            }
            for s in data.jobs
        ],
    )
    by_name = _ids(session, (Job.id, Job.name), Job.name, [spec.name for spec in data.jobs])
    job_ids = [by_name[spec.name] for spec in data.jobs]
    contexts = [(spec, job_id, item) for spec, job_id in zip(data.jobs, job_ids) for item in spec.contexts]
    _insert(
        session,
        Context,
        [
            {
                "job_id": job_id,
                "environment_id": environments[item.environment].id,
                "package_name": spec.package_name,
                "package_version": item.package_version,
                "enabled": item.environment not in undeclared,
            }
            for spec, job_id, item in contexts
        ],
    )
    by_pair = _ids(session, (Context.id, Context.job_id, Context.environment_id), Context.job_id, job_ids)
    context_ids = [by_pair[(job_id, environments[item.environment].id)] for _, job_id, item in contexts]
    _insert(
        session,
        Schedule,
        [
            {
                "context_id": context_id,
                "name": spec.schedule.name,
                "cron": spec.schedule.cron,
                "timezone": spec.schedule.timezone,
                "enabled": spec.schedule.enabled,
                **_policies(spec.schedule.policies),
            }
            for (spec, _, _), context_id in zip(contexts, context_ids)
            if spec.schedule is not None
        ],
    )
    config = [
        row
        for spec, job_id in zip(data.jobs, job_ids)
        for row in _config_rows(ConfigScope.JOB, "job_id", job_id, spec.config)
    ]
    config += [
        row
        for (_, _, item), context_id in zip(contexts, context_ids)
        for row in _config_rows(ConfigScope.CONTEXT, "context_id", context_id, item.config)
    ]
    _insert(session, ConfigKey, config)
    _insert(
        session,
        JobNotification,
        [
            {
                "job_id": job_id,
                "group_id": groups[spec.notification_group].id,
                "on_failure": spec.notify_on_failure,
                "on_missed": spec.notify_on_missed,
                "on_lost": spec.notify_on_lost,
                "on_recovery": spec.notify_on_recovery,
                "on_daemon": spec.notify_on_daemon,
                "on_suspended": spec.notify_on_suspended,
            }
            for spec, job_id in zip(data.jobs, job_ids)
            if spec.notification_group is not None
        ],
    )
    return dict(zip((spec.name for spec in data.jobs), job_ids))


def _policies(given: dict) -> dict:
    """Every policy column of a schedule: the given values, else the model's defaults (same keys in every row)."""
    columns = Schedule.__table__.c
    return {
        key: given.get(key, columns[key].default.arg if columns[key].default is not None else None)
        for key in POLICY_COLUMNS
    }


POLICY_COLUMNS = (
    "misfire_grace_seconds",
    "catchup",
    "overlap",
    "timeout_seconds",
    "retries",
    "dst_fall_back",
    "dst_spring_forward",
)


def _replace_jobs(session: Session, data: DemoData, force: bool) -> None:
    """Refuse a database with jobs unless ``force``; then delete the jobs the file redefines.

    The database's ON DELETE CASCADE removes their contexts, schedules, config, notifications and
    suspensions (runs keep their history, their context_id set to NULL).
    """
    count = session.scalar(select(func.count()).select_from(Job))
    if count and not force:
        raise DemoImportError(
            "", f"the database already holds {count} job{'s' if count != 1 else ''}; use --force to import anyway"
        )
    if count:
        names = [spec.name for spec in data.jobs]
        for start in range(0, len(names), CHUNK):
            session.execute(
                delete(Job).where(Job.name.in_(names[start : start + CHUNK])),
                execution_options={"synchronize_session": False},
            )


def _suspensions(session: Session, data: DemoData, job_ids: dict[str, int]) -> None:
    rows = []
    for spec in data.suspensions:
        job_id = None
        if spec.job is not None:
            job_id = job_ids.get(spec.job) or session.scalar(select(Job.id).where(Job.name == spec.job))
            if job_id is None:
                raise DemoImportError(
                    child(spec.path, "job"), f"{spec.job!r} is not a job of this file or of the database"
                )
        rows.append({"job_id": job_id, "starts_at": spec.starts_at, "ends_at": spec.ends_at, "reason": spec.reason})
    _insert(session, Suspension, rows)


def _users(session: Session, settings: Settings, data: DemoData, notes: list[str]) -> None:
    """Add the file's users; an existing user (names compare without case) is kept unchanged, with a note."""
    for spec in data.users:
        existing = find_user(session, spec.username)
        if existing is not None:
            notes.append(
                f"note: user {existing.username!r} already exists; kept unchanged (password and role not changed)"
            )
            continue
        # A demo file's passwords are kept as written (demo/demo, guest/guest), under the minimum of
        # `kirby adduser`: they are demo-only (the quickstart banner, README and docs/security.md say so).
        try:
            add_user(session, settings, spec.username, spec.password, spec.admin, min_length=1)
        except UserError as exc:
            raise DemoImportError(child(spec.path, "username"), str(exc)) from None


def require_values(data: DemoData) -> None:
    """Every value is there: ``{"secret": true}`` without one keeps a stored value (``kirby apply``), never invents one."""
    values = [
        *data.global_config,
        *(v for j in data.jobs for v in (*j.config, *(x for c in j.contexts for x in c.config))),
    ]
    for item in values:
        if item.value is None:
            raise DemoImportError(
                item.path, "a secret without its value; give the value (kirby apply keeps stored secrets instead)"
            )


def load(session: Session, settings: Settings, data: DemoData, force: bool) -> list[str]:
    """Write ``data`` in ``session`` (not committed). Returns the notes to show before success.

    Refuses a database that holds jobs unless ``force``; with ``force``, jobs of the same name are
    replaced (with their contexts, schedules, config, notifications and suspensions) and the rest added.
    """
    notes = list(data.notes)
    require_values(data)
    try:
        _replace_jobs(session, data, force)
        environments, undeclared = _environments(session, data, notes)
        _global_config(session, data.global_config)
        groups = _groups(session, data)
        _check_groups(data, groups)
        _exts(session, data.exts)
        session.flush()  # the few environments and groups get their ids
        job_ids = _insert_jobs(session, data, environments, undeclared, groups)
        _suspensions(session, data, job_ids)
        _users(session, settings, data, notes)
        session.flush()
    except DBAPIError as exc:
        raise DemoImportError("", f"the database refused the import: {exc.orig}") from None
    return notes
