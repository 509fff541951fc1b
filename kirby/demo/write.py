"""Writing validated specs over what the database holds, in place (``kirby apply`` and the REST API).

Unlike the import (bulk INSERTs into a database without those jobs), these functions update rows
where they are, so ids, and the runs that point at contexts, survive. Nothing commits: the caller's
session is the transaction. A job ends up exactly as its spec says: its contexts (by environment),
the package of each, one schedule per context (the first is updated, extra ones deleted), config
keys at job and context scope, and its notification group. Two switches the format does not hold
are kept on existing rows: a context's and a schedule's ``enabled`` (a new context is enabled
unless its environment was created undeclared; a daemon's schedule is always disabled).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kirby.celery.task import NO_TASK_COLUMNS
from kirby.demo.document import POLICIES, policy_defaults
from kirby.demo.spec import NOTIFY_FLAGS, ConfigValue, JobSpec, SuspensionSpec
from kirby.errors import DemoImportError
from kirby.models import (
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Job,
    JobNotification,
    NotificationEmail,
    NotificationGroup,
    NotificationWebhook,
    Schedule,
    Suspension,
)
from kirby.vocabulary import JobType


def set_config(rows: list[ConfigKey], values: tuple[ConfigValue, ...], scope: ConfigScope, **owner) -> None:
    """Make ``rows`` (a relationship list, or the global keys) hold exactly ``values``.

    A value of None keeps the stored value of that key (a secret the file did not repeat).
    """
    existing = {row.key: row for row in rows}
    wanted = {item.key for item in values}
    for row in [r for r in rows if r.key not in wanted]:
        rows.remove(row)
    for item in values:
        row = existing.get(item.key)
        if item.value is None and row is None:
            raise DemoImportError(item.path, "a secret without its value, and none is stored; give its value")
        if row is None:
            row = ConfigKey(scope=scope, key=item.key, **owner)
            rows.append(row)
        if item.value is not None:
            row.value = item.value
        row.secret = item.secret


def _schedule(context: Context, spec: JobSpec) -> None:
    rows = sorted(context.schedules, key=lambda s: s.id or 0)
    if spec.schedule is None:
        context.schedules.clear()
        return
    for extra in rows[1:]:
        context.schedules.remove(extra)
    row = rows[0] if rows else None
    if row is None:
        row = Schedule(enabled=spec.schedule.enabled)
        context.schedules.append(row)
    if spec.type is JobType.DAEMON:
        row.enabled = False
    row.name, row.cron, row.timezone = spec.schedule.name, spec.schedule.cron, spec.schedule.timezone
    policies = {**policy_defaults(), **spec.schedule.policies}
    for key in POLICIES:
        setattr(row, key, policies[key])


def write_job(
    session: Session,
    spec: JobSpec,
    environments: dict[str, Environment],
    groups: dict[str, NotificationGroup],
    disabled_environments: frozenset[str] = frozenset(),
) -> Job:
    """Create or update job ``spec.name`` so it matches ``spec``; ``environments`` and ``groups``
    must hold every one it names (the caller reports the missing ones)."""
    job = session.scalar(select(Job).where(Job.name == spec.name))
    if job is None:
        job = Job(name=spec.name)
        session.add(job)
    job.description, job.type, job.enabled, job.module = spec.description, spec.type, spec.enabled, spec.module
    for column, value in (spec.celery.columns() if spec.celery is not None else NO_TASK_COLUMNS).items():
        setattr(job, column, value)
    by_environment = {c.environment.name: c for c in job.contexts}
    wanted = {c.environment for c in spec.contexts}
    for name, context in by_environment.items():
        if name not in wanted:
            job.contexts.remove(context)
    for item in spec.contexts:
        context = by_environment.get(item.environment)
        if context is None:
            context = Context(
                environment=environments[item.environment], enabled=item.environment not in disabled_environments
            )
            job.contexts.append(context)
        context.package_name, context.package_version = spec.package_name, item.package_version
        _schedule(context, spec)
        set_config(context.config, item.config, ConfigScope.CONTEXT)
    set_config(job.config, spec.config, ConfigScope.JOB)
    _notification(job, spec, groups)
    return job


def _notification(job: Job, spec: JobSpec, groups: dict[str, NotificationGroup]) -> None:
    keep = None
    for link in list(job.notifications):
        if link.group.name == spec.notification_group and keep is None:
            keep = link
        else:
            job.notifications.remove(link)
    if spec.notification_group is None:
        return
    if keep is None:
        keep = JobNotification(group=groups[spec.notification_group])
        job.notifications.append(keep)
    for _, attribute, column in NOTIFY_FLAGS:
        setattr(keep, column, getattr(spec, attribute))


def write_group(
    session: Session, name: str, emails: tuple[str, ...], webhooks: list[dict] | None = None
) -> NotificationGroup:
    """Create or update group ``name`` so it holds exactly ``emails`` and ``webhooks`` (by URL; a
    webhook given without a secret keeps the one stored for its URL)."""
    group = session.scalar(select(NotificationGroup).where(NotificationGroup.name == name))
    if group is None:
        group = NotificationGroup(name=name)
        session.add(group)
    for row in [e for e in group.emails if e.email not in emails]:
        group.emails.remove(row)
    known = {e.email for e in group.emails}
    group.emails.extend(NotificationEmail(email=email) for email in emails if email not in known)
    wanted = {hook["url"]: hook for hook in webhooks or ()}
    for row in [w for w in group.webhooks if w.url not in wanted]:
        group.webhooks.remove(row)
    stored = {w.url: w for w in group.webhooks}
    for url, hook in wanted.items():
        row = stored.get(url) or NotificationWebhook(url=url)
        row.format = hook.get("format", "json")
        row.secret = hook.get("secret") or row.secret or ""
        if url not in stored:
            group.webhooks.append(row)
    return group


def write_environment(session: Session, name: str, description: str) -> Environment:
    environment = session.scalar(select(Environment).where(Environment.name == name))
    if environment is None:
        environment = Environment(name=name)
        session.add(environment)
    environment.description = description
    return environment


def write_suspension(session: Session, spec: SuspensionSpec, row: Suspension | None = None) -> Suspension:
    """Create (or update ``row``) from ``spec``; its job must exist."""
    job = None
    if spec.job is not None:
        job = session.scalar(select(Job).where(Job.name == spec.job))
        if job is None:
            raise DemoImportError(f"{spec.path}.job", f"{spec.job!r} is not a job of this file or of the database")
    if row is None:
        row = Suspension()
        session.add(row)
    row.job, row.starts_at, row.ends_at, row.reason = job, spec.starts_at, spec.ends_at, spec.reason
    return row


def global_keys(session: Session) -> list[ConfigKey]:
    return list(session.scalars(select(ConfigKey).where(ConfigKey.scope == ConfigScope.GLOBAL)))
