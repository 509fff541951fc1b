"""The schedule document: what the web's ``/schedule`` endpoint serves and the leader reads.

``build_schedule(session, now)`` turns the script database into one JSON-ready dict::

    {"generated_at": "<ISO UTC>",
     "contexts": [{"context_id", "job", "job_type" ("scheduled"|"daemon"), "environment",
                   "package", "version", "module", "config": {KEY: value}, "secrets": [KEY...],
                   "schedules": [{"id", "name", "cron", "timezone", "misfire_grace_seconds",
                                  "catchup", "overlap", "timeout_seconds", "retries", "enabled",
                                  "dst_fall_back", "dst_spring_forward"}],
                   "suspensions": [{"id", "all_jobs" (true: a pause of every job), "starts_at",
                                    "ends_at", "reason"}]}]}

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

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from kirby.db import Database
from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.models import ConfigKey, ConfigScope, Context, Job, JobType, Suspension
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


def schedule_document(schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name or "",
        "cron": schedule.cron,
        "timezone": schedule.timezone or "UTC",
        "misfire_grace_seconds": schedule.misfire_grace_seconds,
        "catchup": schedule.catchup.value,
        "overlap": schedule.overlap.value,
        "timeout_seconds": schedule.timeout_seconds,
        "retries": schedule.retries,
        "enabled": bool(schedule.enabled),
        "dst_fall_back": schedule.dst_fall_back.value,
        "dst_spring_forward": schedule.dst_spring_forward.value,
    }


def suspension_document(suspension: Suspension) -> dict[str, Any]:
    return {
        "id": suspension.id,
        "all_jobs": suspension.job_id is None,
        "starts_at": _iso(suspension.starts_at),
        "ends_at": _iso(suspension.ends_at),
        "reason": suspension.reason or "",
    }


def context_document(
    context: Context, config: tuple[dict[str, str], tuple[str, ...]], suspensions: list[Suspension]
) -> dict[str, Any]:
    """One entry of the document (``context`` with its job, environment and schedules loaded)."""
    values, secrets = config
    job = context.job
    return {
        "context_id": context.id,
        "job": job.name,
        "job_type": job.type.value,
        "environment": context.environment.name,
        "package": context.package_name,
        "version": context.package_version,
        "module": job.module or "",
        "run_as": job.run_as or None,
        "config": values,
        "secrets": list(secrets),
        "schedules": [schedule_document(s) for s in sorted(context.schedules, key=lambda s: s.id)],
        "suspensions": [suspension_document(s) for s in suspensions],
    }


def live_suspensions(session: Session, now: datetime) -> list[Suspension]:
    """Suspension windows not ended at ``now``, oldest start first."""
    return list(
        session.scalars(
            select(Suspension).where(Suspension.ends_at > now).order_by(Suspension.starts_at, Suspension.id)
        )
    )


def build_schedule(session: Session, now: datetime) -> dict[str, Any]:
    """The schedule document at ``now`` (aware UTC). A constant number of queries, whatever the size."""
    contexts = session.scalars(
        select(Context)
        .join(Context.job)
        .where(Context.enabled.is_(True), Job.enabled.is_(True))
        .options(selectinload(Context.job), selectinload(Context.environment), selectinload(Context.schedules))
        .order_by(Context.id)
    ).all()
    layers: dict[tuple, list[ConfigKey]] = defaultdict(list)
    for key in session.scalars(select(ConfigKey).order_by(ConfigKey.id)):
        owner = (
            key.job_id if key.scope == ConfigScope.JOB else key.context_id if key.scope == ConfigScope.CONTEXT else None
        )
        layers[(key.scope, owner)].append(key)
    suspensions = live_suspensions(session, now)
    entries = []
    for context in contexts:
        config = merge_config(
            layers[(ConfigScope.GLOBAL, None)],
            layers[(ConfigScope.JOB, context.job_id)],
            layers[(ConfigScope.CONTEXT, context.id)],
        )
        relevant = [s for s in suspensions if s.job_id is None or s.job_id == context.job_id]
        entries.append(context_document(context, config, relevant))
    return {"generated_at": _iso(now), "contexts": entries}


def manual_offer(session: Session, context_id: int, now: datetime) -> Offer:
    """A "run now" offer for context ``context_id``: run id ``job:env:manual-<uuid4 hex>``, unfenced.

    Policies (timeout, overlap, retries) come from the context's first enabled schedule, else
    the defaults. A disabled job or context may still be run by hand; a daemon may not.
    """
    context = session.get(Context, context_id)
    if context is None:
        raise KirbyError(f"no context with id {context_id}: pick an existing job and environment")
    if context.job.type == JobType.DAEMON:
        raise KirbyError(f"{context} is a daemon: it runs continuously; enable or disable it instead of running it now")
    entry = parse_entry(context_document(context, resolve_config(session, context), []), "context")
    rules = [r for r in entry.schedules if r.enabled] or list(entry.schedules)
    run_id = manual_run_id(entry.job, entry.environment)
    return entry_offer(entry, run_id, now, now, rules[0] if rules else None, epoch=None, trigger="manual")


class DatabaseScheduleSource(ScheduleSource):
    """Reads the schedule from the script database (no web server in between)."""

    def __init__(self, database: Database):
        self.database = database

    def fetch(self, now: datetime) -> ScheduleSnapshot:
        try:
            with self.database.session() as session:
                return parse_schedule(build_schedule(session, now))
        except SQLAlchemyError as exc:
            url = self.database.engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise KirbyError(f"cannot read the schedule from {url}: {reason}; check SQLALCHEMY_DATABASE_URI") from None
