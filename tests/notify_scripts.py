"""Script-database fixtures for notification tests: a job with a context, a schedule and a group."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from kirby.events import Offer, RunEvent
from kirby.models import (
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Job,
    JobNotification,
    JobType,
    Notification,
    NotificationEmail,
    NotificationGroup,
    NotificationWebhook,
    Schedule,
)
from kirby.notify.events import DEFAULT_NOTIFY_ON, NOTIFY_ON
from kirby.recorder import offer_event
from kirby.run_ids import slot_run_id

T0 = datetime(2026, 3, 4, 5, 0, tzinfo=timezone.utc)


def add_job(
    session,
    name: str = "nightly",
    emails: tuple[str, ...] = ("ops@example.com",),
    webhooks: tuple[tuple[str, str, str], ...] = (),
    notify_on: tuple[str, ...] = DEFAULT_NOTIFY_ON,
    retries: int = 0,
    daemon: bool = False,
    group: str = "ops",
    secrets: dict[str, str] | None = None,
) -> Job:
    notification_group = session.scalar(select(NotificationGroup).where(NotificationGroup.name == group))
    environment = session.scalar(select(Environment).where(Environment.name == "prod")) or Environment(name="prod")
    job = Job(name=name, type=JobType.DAEMON if daemon else JobType.SCHEDULED)
    context = Context(job=job, environment=environment, package_name="kirby-example-fail", package_version="1.0.0")
    if not daemon:
        context.schedules.append(Schedule(cron="0 5 * * *", retries=retries))
    if notification_group is None:
        notification_group = NotificationGroup(name=group)
        notification_group.emails = [NotificationEmail(email=e) for e in emails]
        notification_group.webhooks = [NotificationWebhook(url=u, format=f, secret=s) for u, f, s in webhooks]
    flags = {f"on_{n}": n in notify_on for n in NOTIFY_ON}
    job.notifications.append(JobNotification(group=notification_group, **flags))
    for key, value in (secrets or {}).items():
        session.add(ConfigKey(scope=ConfigScope.JOB, job=job, key=key, value=value, secret=True))
    session.add_all([environment, job, context])
    session.flush()
    return job


def offer(
    job: str = "nightly", at: datetime = T0, attempt: int = 1, trigger: str = "schedule", context_id=None
) -> Offer:
    slot = slot_run_id(job, "prod", at)
    return Offer(
        run_id=slot if attempt == 1 else f"{slot}#{attempt}",
        slot_id=slot,
        job=job,
        environment="prod",
        package="kirby-example-fail",
        version="1.0.0",
        scheduled_at=at,
        context_id=context_id,
        attempt=attempt,
        trigger=trigger,
        offered_at=at,
    )


def finished_run(
    offer: Offer, state: str = "failed", exit_code: int | None = 1, lines=("about to fail",), seconds: float = 2.0
) -> list[RunEvent]:
    """offered, claimed, started, log lines, finished (``seconds`` after the scheduled instant)."""
    at = offer.scheduled_at
    events = [
        offer_event("offered", offer, at),
        offer_event("claimed", offer, at, "sup-a"),
        RunEvent("started", offer.run_id, at + timedelta(seconds=0.1), "sup-a"),
    ]
    events += [
        RunEvent("log", offer.run_id, at, "sup-a", {"seq": i, "stream": "stdout", "text": text})
        for i, text in enumerate(lines)
    ]
    events.append(
        RunEvent(
            "finished",
            offer.run_id,
            at + timedelta(seconds=seconds),
            "sup-a",
            {"state": state, "exit_code": exit_code, "signal": None, "error": "" if state == "succeeded" else "exit 1"},
        )
    )
    return events


def skipped(offer: Offer, reason: str) -> list[RunEvent]:
    return [offer_event("skipped", offer, offer.scheduled_at, None, state="skipped", error=reason)]


def outbox(session) -> list[tuple[str, str, str | None]]:
    """(event, job, run id) of every outbox row, in order."""
    rows = session.scalars(select(Notification).order_by(Notification.id))
    return [(n.event, n.job_name, n.run_id) for n in rows]
