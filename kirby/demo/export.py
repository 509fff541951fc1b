"""``kirby export``: the script database as :class:`DemoData` (then ``document``), read in one session.

What the import format cannot hold is reported as notes, never silently guessed: a job without any
context (the format needs a ``package_version``; the job is left out), a context with several
schedules or contexts with different ones (the first schedule of the first context is written),
contexts of one job with different package names, a job notifying several groups (the first is
written). A context's or a schedule's own ``enabled`` switch is operational state, not part of
the format (``kirby apply`` leaves it as it is).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kirby.celery.task import CeleryTask
from kirby.demo.document import POLICIES, schedule
from kirby.demo.source import child
from kirby.demo.spec import (
    NOTIFY_FLAGS,
    ConfigValue,
    ContextSpec,
    DemoData,
    JobSpec,
    ScheduleSpec,
    SuspensionSpec,
    WebhookSpec,
)
from kirby.models import (
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Ext,
    Job,
    JobNotification,
    NotificationGroup,
    Schedule,
    Suspension,
)
from kirby.vocabulary import JobType


def _config(rows) -> tuple[ConfigValue, ...]:
    return tuple(ConfigValue(r.key, r.value, r.secret) for r in sorted(rows, key=lambda r: r.key))


def _schedule(row: Schedule, job_type: JobType) -> ScheduleSpec:
    return ScheduleSpec(
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        enabled=job_type is JobType.SCHEDULED,
        policies={key: getattr(row, key) for key in POLICIES},
    )


def job_spec(job: Job, notes: list[str]) -> JobSpec | None:
    """``job`` as the import format holds it (None, with a note, when it cannot be written)."""
    path = child("JOBS", job.name)
    contexts = sorted(job.contexts, key=lambda c: c.environment.name)
    if not contexts:
        notes.append(f"note: {path} has no context (no package_version): left out of the export")
        return None
    schedules = [sorted(c.schedules, key=lambda s: s.id) for c in contexts]
    shapes = {json.dumps([schedule(_schedule(s, job.type)) for s in group]) for group in schedules}
    if len(shapes) > 1 or any(len(group) > 1 for group in schedules):
        notes.append(f"note: {path}: the format holds one schedule per job; wrote the first of its contexts'")
    first = next((group[0] for group in schedules if group), None)
    packages = sorted({c.package_name for c in contexts})
    if len(packages) > 1:
        notes.append(
            f"note: {path}: its contexts run different packages ({', '.join(packages)}); wrote {contexts[0].package_name}"
        )
    links = sorted(job.notifications, key=lambda n: n.group.name)
    if len(links) > 1:
        notes.append(f"note: {path} notifies {len(links)} groups; the format holds one: wrote {links[0].group.name}")
    link = links[0] if links else None
    return JobSpec(
        path=path,
        name=job.name,
        description=job.description,
        type=job.type,
        enabled=job.enabled,
        package_name=contexts[0].package_name,
        module=job.module,
        contexts=tuple(ContextSpec(c.environment.name, c.package_version, _config(c.config)) for c in contexts),
        schedule=_schedule(first, job.type) if first is not None else None,
        config=_config(job.config),
        notification_group=link.group.name if link else None,
        **({attribute: getattr(link, column) for _, attribute, column in NOTIFY_FLAGS} if link else {}),
        celery=CeleryTask.of_job(job),
    )


def load_jobs(session: Session, names: list[str] | None = None):
    """Jobs (all, or those named) with everything the format holds, in a few queries."""
    query = (
        select(Job)
        .order_by(Job.name)
        .options(
            selectinload(Job.contexts).selectinload(Context.environment),
            selectinload(Job.contexts).selectinload(Context.schedules),
            selectinload(Job.contexts).selectinload(Context.config),
            selectinload(Job.config),
            selectinload(Job.notifications).selectinload(JobNotification.group),
        )
    )
    if names is not None:
        query = query.where(Job.name.in_(names))
    return list(session.scalars(query))


def export_data(session: Session) -> DemoData:
    """The whole script database (but users) as validated data; ``notes`` says what was left out."""
    notes: list[str] = []
    jobs = [spec for job in load_jobs(session) if (spec := job_spec(job, notes)) is not None]
    groups = list(
        session.scalars(
            select(NotificationGroup).options(
                selectinload(NotificationGroup.emails), selectinload(NotificationGroup.webhooks)
            )
        )
    )
    suspensions = session.scalars(select(Suspension).options(selectinload(Suspension.job)).order_by(Suspension.id))
    globals_ = session.scalars(select(ConfigKey).where(ConfigKey.scope == ConfigScope.GLOBAL))
    return DemoData(
        environments={e.name: e.description for e in session.scalars(select(Environment).order_by(Environment.name))},
        global_config=_config(globals_),
        jobs=tuple(jobs),
        exts=tuple(sorted(session.scalars(select(Ext.name)))),
        users=(),
        groups={g.name: tuple(sorted(e.email for e in g.emails)) for g in groups},
        webhooks={
            g.name: tuple(WebhookSpec(w.url, w.format, w.secret) for w in sorted(g.webhooks, key=lambda w: w.url))
            for g in groups
            if g.webhooks
        },
        suspensions=tuple(
            SuspensionSpec(
                path=child("SUSPENSIONS", i),
                job=s.job.name if s.job else None,
                starts_at=s.starts_at,
                ends_at=s.ends_at,
                reason=s.reason,
            )
            for i, s in enumerate(suspensions)
        ),
        notes=notes,
    )
