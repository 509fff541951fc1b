"""The notifications outbox: rows written in the transaction that records a run's state change.

``enqueue(session, runs)`` is called by ``kirby.recorder.record`` with the runs whose state just
changed. For each notification event of a run (``kirby.notify.events``) it adds one row per
notification group of the job that subscribes to the event (``JobNotification.on_<name>``). The
row's ``key`` is ``<run id>:<event>:<group id>`` and unique: an event recorded again (a bus
redelivery, a second web process) adds nothing, so a run notifies each group once per event.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kirby.models import FINISHED_STATES, Job, JobNotification, Notification, NotificationGroup, Run
from kirby.notify.events import FLAGS, SUBSCRIPTION, run_events


def notification_key(run_id: str, event: str, group_id: int) -> str:
    return f"{run_id}:{event}:{group_id}"


def enqueue(session: Session, runs: list[Run], now: datetime | None = None) -> int:
    """Add the outbox rows of ``runs``' new states (the caller commits); returns how many were due
    (including those already stored, which are left as they are)."""
    finished = [run for run in runs if run.state in FINISHED_STATES]
    if not finished:
        return 0
    names = sorted({run.job_name for run in finished})
    subscriptions: dict[str, list[JobNotification]] = {}
    for name, subscription in session.execute(
        select(Job.name, JobNotification)
        .join(JobNotification, JobNotification.job_id == Job.id)
        .where(Job.name.in_(names))
    ):
        subscriptions.setdefault(name, []).append(subscription)
    found = [
        (run, event, detail)
        for run in finished
        if run.job_name in subscriptions  # the runs table is read only for jobs that notify someone
        for event, detail in run_events(session, run)
    ]
    rows = []
    for run, event, detail in found:
        flag = FLAGS[SUBSCRIPTION[event]]
        for subscription in subscriptions.get(run.job_name, []):
            if getattr(subscription, flag):
                when = now or run.finished_at or run.started_at or run.scheduled_at
                rows.append(
                    {
                        "key": notification_key(run.id, event, subscription.group_id),
                        "event": event,
                        "run_id": run.id,
                        "group_id": subscription.group_id,
                        "job_name": run.job_name,
                        "environment": run.environment,
                        "detail": detail or "",
                        "state": "pending",
                        "attempts": 0,
                        "created_at": when,
                        "next_attempt_at": when,
                        "digest_count": 0,
                        "last_error": "",
                    }
                )
    return insert_new(session, rows)


def enqueue_test(session: Session, group: NotificationGroup, now: datetime) -> None:
    """A test notification to ``group`` ("Send test"), delivered like the others."""
    insert_new(
        session,
        [
            {
                "key": f"test:{group.id}:{uuid.uuid4().hex}",
                "event": "test",
                "run_id": None,
                "group_id": group.id,
                "job_name": "",
                "environment": "",
                "detail": f"A test notification to the group {group.name}.",
                "state": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "digest_count": 0,
                "last_error": "",
            }
        ],
    )


def insert_new(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, ignoring those whose key is stored already; returns how many were offered."""
    if not rows:
        return 0
    rows = list({row["key"]: row for row in rows}.values())
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(insert(Notification).on_conflict_do_nothing(index_elements=["key"]), rows)
        return len(rows)
    existing = set(session.scalars(select(Notification.key).where(Notification.key.in_([r["key"] for r in rows]))))
    session.add_all(Notification(**row) for row in rows if row["key"] not in existing)
    session.flush()
    return len(rows)
