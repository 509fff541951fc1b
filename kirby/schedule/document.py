"""The schedule document: what the web's ``/schedule`` endpoint serves and the leader reads.

``build_schedule(session, now)`` turns the script database into one JSON-ready dict::

    {"generated_at": "<ISO UTC>",
     "contexts": [{"context_id", "job", "job_type" ("scheduled"|"daemon"), "environment",
                   "package", "version", "module", "celery" (null, or a Celery job's task:
                   {"name", "args", "kwargs", "queue", "routing_key", "priority"}),
                   "config": {KEY: value}, "secrets": [KEY...],
                   "schedules": [{"id", "name", "cron", "timezone", "misfire_grace_seconds",
                                  "catchup", "overlap", "timeout_seconds", "retries", "on_lost", "enabled",
                                  "dst_fall_back", "dst_spring_forward"}],
                   "suspensions": [{"id", "all_jobs" (true: a pause of every job), "starts_at",
                                    "ends_at", "reason"}]}]}

It is built from plain SQL rows (a constant number of queries, no ORM object per job).
``schedule_version`` is a cheap tag of its content: the ``/schedule`` endpoint's ETag.

Only enabled contexts of enabled jobs are listed; daemons too (no schedules). Suspensions are
those of the context's job or of every job whose window has not ended at ``now``. Config values
are resolved with precedence context > job > global (``resolve_config``); secrets are named so
runs can mask them (the document itself carries their values: serve it behind the API token).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Enum, String, func, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from kirby.celery.task import CeleryTask
from kirby.db import Database
from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, Schedule, ScheduleVersion, Suspension
from kirby.run_ids import manual_run_id
from kirby.schedule.snapshot import ScheduleSnapshot, entry_offer, parse_entry, parse_schedule
from kirby.schedule.source import ScheduleSource


def _iso(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat()


def merge_config(*layers: Iterable[ConfigKey]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Merge config keys, later layers overriding earlier ones; returns (values, secret names)."""
    values: dict[str, str] = {}
    secret: dict[str, bool] = {}
    for layer in layers:
        for key in layer:
            values[key.key] = key.value
            secret[key.key] = key.secret
    return values, tuple(sorted(name for name, is_secret in secret.items() if is_secret))


def resolve_config(session: Session, context: Context) -> tuple[dict[str, str], tuple[str, ...]]:
    """The run environment of ``context``: context keys over job keys over global keys.

    Returns the values and the sorted names of the keys whose winning definition is secret.
    """
    keys = session.scalars(
        select(ConfigKey).where(
            (ConfigKey.scope == ConfigScope.GLOBAL)
            | ((ConfigKey.scope == ConfigScope.JOB) & (ConfigKey.job_id == context.job_id))
            | ((ConfigKey.scope == ConfigScope.CONTEXT) & (ConfigKey.context_id == context.id))
        )
    ).all()
    by_scope = defaultdict(list)
    for key in keys:
        by_scope[key.scope].append(key)
    return merge_config(by_scope[ConfigScope.GLOBAL], by_scope[ConfigScope.JOB], by_scope[ConfigScope.CONTEXT])


def _schedule_dict(row) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name or "",
        "cron": row.cron,
        "timezone": row.timezone or "UTC",
        "misfire_grace_seconds": row.misfire_grace_seconds,
        "catchup": row.catchup,
        "overlap": row.overlap,
        "timeout_seconds": row.timeout_seconds,
        "retries": row.retries,
        "on_lost": row.on_lost or "skip",
        "enabled": bool(row.enabled),
        "dst_fall_back": row.dst_fall_back,
        "dst_spring_forward": row.dst_spring_forward,
    }


def _suspension_dict(row) -> dict[str, Any]:
    return {
        "id": row.id,
        "all_jobs": row.job_id is None,
        "starts_at": _iso(row.starts_at),
        "ends_at": _iso(row.ends_at),
        "reason": row.reason or "",
    }


_C, _J, _E = Context.__table__, Job.__table__, Environment.__table__
_S, _K, _P = Schedule.__table__, ConfigKey.__table__, Suspension.__table__
_V = ScheduleVersion.__table__


def _raw(table) -> list:
    """The columns of ``table``, enums as their stored strings (the document's values), unconverted."""
    return [type_coerce(c, String).label(c.name) if isinstance(c.type, Enum) else c for c in table.c]


def _entries(session: Session, now: datetime, context_id: int | None = None, among=None) -> list[dict[str, Any]]:
    """The document's contexts from plain rows (no ORM object per job): five queries whatever the size.

    ``context_id`` None: every enabled context of an enabled job (``among``, a select of context
    ids: only those), with the live suspensions; else that one context, enabled or not, without
    suspensions (a "run now").
    """
    joined = _C.join(_J, _C.c.job_id == _J.c.id)
    where = (_C.c.id == context_id) if context_id is not None else (_C.c.enabled.is_(True) & _J.c.enabled.is_(True))
    if among is not None:
        where = where & _C.c.id.in_(among)
    contexts = session.execute(
        select(
            _C.c.id,
            _C.c.job_id,
            _C.c.package_name,
            _C.c.package_version,
            _J.c.name.label("job"),
            type_coerce(_J.c.type, String).label("type"),
            _J.c.module,
            _J.c.run_as,
            _J.c.celery_task,
            _J.c.celery_args,
            _J.c.celery_kwargs,
            _J.c.celery_queue,
            _J.c.celery_routing_key,
            _J.c.celery_priority,
            _E.c.name.label("environment"),
        )
        .select_from(joined.join(_E, _C.c.environment_id == _E.c.id))
        .where(where)
        .order_by(_C.c.id)
    ).all()
    schedules = defaultdict(list)
    for row in session.execute(select(*_raw(_S)).select_from(_S.join(joined)).where(where).order_by(_S.c.id)):
        schedules[row.context_id].append(_schedule_dict(row))
    keys = select(_K.c.scope, _K.c.job_id, _K.c.context_id, _K.c.key, _K.c.value, _K.c.secret).order_by(_K.c.id)
    if context_id is not None:
        job_ids = [row.job_id for row in contexts]
        keys = keys.where(
            (_K.c.scope == ConfigScope.GLOBAL) | _K.c.job_id.in_(job_ids) | (_K.c.context_id == context_id)
        )
    elif among is not None:
        jobs = select(_C.c.job_id).where(_C.c.id.in_(among))
        keys = keys.where((_K.c.scope == ConfigScope.GLOBAL) | _K.c.job_id.in_(jobs) | _K.c.context_id.in_(among))
    layers: dict[tuple, list] = defaultdict(list)
    for key in session.execute(keys):
        owner = (
            key.job_id if key.scope == ConfigScope.JOB else key.context_id if key.scope == ConfigScope.CONTEXT else None
        )
        layers[(key.scope, owner)].append(key)
    suspensions = []
    if context_id is None:
        live = select(_P).where(_P.c.ends_at > now).order_by(_P.c.starts_at, _P.c.id)
        suspensions = [(row.job_id, _suspension_dict(row)) for row in session.execute(live)]
    entries = []
    common = merge_config(layers[(ConfigScope.GLOBAL, None)])
    for row in contexts:
        job_keys, context_keys = layers.get((ConfigScope.JOB, row.job_id)), layers.get((ConfigScope.CONTEXT, row.id))
        values, secrets = (
            merge_config(layers[(ConfigScope.GLOBAL, None)], job_keys or (), context_keys or ())
            if job_keys or context_keys
            else (dict(common[0]), common[1])
        )
        entries.append(
            {
                "context_id": row.id,
                "job": row.job,
                "job_type": row.type,
                "environment": row.environment,
                "package": row.package_name,
                "version": row.package_version,
                "module": row.module or "",
                "run_as": row.run_as or None,
                "celery": task.to_dict() if (task := CeleryTask.of_job(row)) is not None else None,
                "config": values,
                "secrets": list(secrets),
                "schedules": schedules[row.id],
                "suspensions": [doc for job_id, doc in suspensions if job_id is None or job_id == row.job_id],
            }
        )
    return entries


def build_entries(session: Session, now: datetime, context_ids: list[int]) -> list[dict[str, Any]]:
    """The document's entries of those of ``context_ids`` it lists at ``now`` (a delta's ``changed``)."""
    return _entries(session, now, among=context_ids)


def iso_utc(instant: datetime) -> str:
    """``instant`` as the document writes its instants (ISO 8601, UTC offset)."""
    return _iso(instant)


def build_schedule(session: Session, now: datetime) -> dict[str, Any]:
    """The schedule document at ``now`` (aware UTC), from plain SQL rows: five queries, whatever the size."""
    return {"generated_at": _iso(now), "contexts": _entries(session, now)}


def schedule_version(session: Session, now: datetime) -> str | None:
    """A tag that changes whenever ``build_schedule(session, now)`` would (None: no version row).

    ``<generation>-<version>-<stamp>-<live suspensions>``: the version row moves with every write
    to the tables the document reads (database triggers, in the writer's transaction; ``stamp``
    is drawn at random at each move, so a restored database reaching the same version number
    again does not repeat the tag); the count of suspensions not ended at ``now`` moves when one
    ends (they leave the document with time alone). Two small queries: read it *before*
    building, so a document never carries an older tag than its content (a write between the
    two is seen again at the next request; ``kirby.web.schedule_changes`` relies on this too).
    """
    row = session.execute(select(_V.c.generation, _V.c.version, _V.c.stamp).where(_V.c.id == 1)).first()
    if row is None:
        return None
    live = session.scalar(select(func.count()).select_from(_P).where(_P.c.ends_at > now))
    return f"{row.generation}-{row.version}-{row.stamp}-{live}"


def manual_offer(session: Session, context_id: int, now: datetime) -> Offer:
    """A "run now" offer for context ``context_id``: run id ``job:env:manual-<uuid4 hex>``, unfenced.

    Policies (timeout, overlap, retries) come from the context's first enabled schedule, else
    the defaults. A disabled job or context may still be run by hand; a daemon may not.
    """
    found = _entries(session, now, context_id)
    if not found:
        raise KirbyError(f"no context with id {context_id}: pick an existing job and environment")
    entry = parse_entry(found[0], "context")
    if entry.is_daemon:
        raise KirbyError(
            f"{entry.job}:{entry.environment} is a daemon: it runs continuously; enable or disable it instead of "
            "running it now"
        )
    rules = [r for r in entry.schedules if r.enabled] or list(entry.schedules)
    run_id = manual_run_id(entry.job, entry.environment)
    return entry_offer(entry, run_id, now, now, rules[0] if rules else None, epoch=None, trigger="manual")


class DatabaseScheduleSource(ScheduleSource):
    """Reads the schedule from the script database (no web server in between)."""

    def __init__(self, database: Database):
        self.database = database
        self._version: str | None = None
        self._snapshot: ScheduleSnapshot | None = None

    def fetch(self, now: datetime) -> ScheduleSnapshot:
        """The schedule at ``now``: the same snapshot object again while ``schedule_version`` holds."""
        try:
            with self.database.session() as session:
                version = schedule_version(session, now)
                if version is None or version != self._version or self._snapshot is None:
                    self._snapshot, self._version = parse_schedule(build_schedule(session, now)), version
                return self._snapshot
        except SQLAlchemyError as exc:
            url = self.database.engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise KirbyError(f"cannot read the schedule from {url}: {reason}; check SQLALCHEMY_DATABASE_URI") from None
