"""The job dashboard (the home page): one row per job and environment, read in a bounded number of
indexed queries whatever the number of jobs (a page of contexts; the last runs of the page's
contexts in one UNION ALL of LIMIT queries on ``ix_runs_job_scheduled``; one 7-day count).

``dashboard(session, now, filters, page)`` -> ``DashboardPage``. Rows carry: the job's kind, its
state (``enabled``, ``paused`` — the job or its context is disabled —, ``suspended`` — a
suspension window covers ``now``), the next fire time (zone and UTC) over its enabled schedules,
the last run, a strip of the last ``STRIP`` runs (oldest first), the success rate over 7 days
(finished runs only) and the p50/p95 duration of the strip's finished runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.orm import Session, selectinload

from kirby import cron
from kirby.errors import CronError
from kirby.models import Context, Environment, Job, JobType, Run, RunState, Suspension

STRIP = 30
PAGE_SIZE = 50
STATES = ("enabled", "paused", "suspended")
_GOOD = (RunState.SUCCEEDED,)
# revoked, expired: a Celery task revoked, or not received by any worker before its expires.
_BAD = (RunState.FAILED, RunState.TIMED_OUT, RunState.LOST, RunState.REVOKED, RunState.EXPIRED)


@dataclass(frozen=True)
class Filters:
    state: str = ""  # one of STATES, or "" for all
    environment: str = ""
    failing: bool = False  # only rows whose last finished run failed, timed out or was lost


@dataclass
class DashboardRow:
    job: str
    environment: str
    kind: str
    state: str
    next_fire: datetime | None = None
    next_fire_zone: str = ""
    runs: list[Run] = field(default_factory=list)  # oldest first
    success_rate: float | None = None  # over 7 days, None without finished runs
    p50: float | None = None
    p95: float | None = None

    @property
    def last_run(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def failing(self) -> bool:
        finished = [run for run in self.runs if run.state in _GOOD + _BAD]
        return bool(finished) and finished[-1].state in _BAD


@dataclass(frozen=True)
class DashboardPage:
    rows: list[DashboardRow]
    page: int
    pages: int
    total: int


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def _next_fire(context: Context, now: datetime) -> tuple[datetime | None, str]:
    best: tuple[datetime | None, str] = (None, "")
    for schedule in context.schedules:
        if not schedule.enabled:
            continue
        try:
            fire = cron.next_fire(schedule.cron, schedule.timezone, now, schedule.dst)
        except CronError:
            continue
        if best[0] is None or fire < best[0]:
            best = (fire, schedule.timezone)
    return best


def _contexts_query(filters: Filters, now: datetime, suspended_jobs):
    query = select(Context).join(Job).join(Environment)
    active = (Job.enabled.is_(True)) & (Context.enabled.is_(True))
    if filters.environment:
        query = query.where(Environment.name == filters.environment)
    if filters.state == "paused":
        query = query.where(~active)
    elif filters.state == "suspended":
        query = query.where(active, suspended_jobs)
    elif filters.state == "enabled":
        query = query.where(active, ~suspended_jobs)
    if filters.failing:
        latest = (
            select(Run.state)
            .where(Run.job_name == Job.name, Run.environment == Environment.name)
            .where(Run.state.in_([s.value for s in _GOOD + _BAD]))
            .order_by(Run.scheduled_at.desc())
            .limit(1)
            .correlate(Job, Environment)
            .scalar_subquery()
        )
        query = query.where(latest.in_([s.value for s in _BAD]))
    return query


def dashboard(session: Session, now: datetime, filters: Filters = Filters(), page: int = 1) -> DashboardPage:
    """One page of the dashboard (see module doc)."""
    everyone = select(Suspension.id).where(
        Suspension.job_id.is_(None), Suspension.starts_at <= now, Suspension.ends_at > now
    )
    own = select(Suspension.id).where(
        Suspension.job_id == Job.id, Suspension.starts_at <= now, Suspension.ends_at > now
    )
    suspended_jobs = or_(everyone.exists(), own.correlate(Job).exists())
    query = _contexts_query(filters, now, suspended_jobs)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    contexts = session.execute(
        query.add_columns(suspended_jobs.label("suspended"))
        .options(selectinload(Context.schedules), selectinload(Context.job), selectinload(Context.environment))
        .order_by(Job.name, Environment.name)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    )
    rows = [_row(context, suspended, now) for context, suspended in contexts]
    _fill_runs(session, rows, now)
    return DashboardPage(rows, page, pages, total)


def _row(context: Context, suspended: bool, now: datetime) -> DashboardRow:
    active = context.job.enabled and context.enabled
    state = "paused" if not active else ("suspended" if suspended else "enabled")
    row = DashboardRow(context.job.name, context.environment.name, context.job.type.value, state)
    if active and context.job.type == JobType.SCHEDULED:
        row.next_fire, row.next_fire_zone = _next_fire(context, now)
    return row


def _fill_runs(session: Session, rows: list[DashboardRow], now: datetime) -> None:
    """The last STRIP runs of each row (one statement) and the 7-day counts (one statement)."""
    if not rows:
        return
    keys = {(row.job, row.environment): row for row in rows}
    strips = [
        select(Run)
        .where(Run.job_name == job, Run.environment == environment)
        .order_by(Run.scheduled_at.desc())
        .limit(STRIP)
        .subquery()
        .select()
        for job, environment in keys
    ]
    for run in session.scalars(select(Run).from_statement(union_all(*strips))):
        keys[(run.job_name, run.environment)].runs.append(run)
    for row in rows:
        row.runs.sort(key=lambda run: (run.scheduled_at, run.attempt))
        durations = [run.duration_seconds for run in row.runs if run.duration_seconds is not None]
        row.p50, row.p95 = _percentile(durations, 0.5), _percentile(durations, 0.95)
    week = session.execute(
        select(Run.job_name, Run.environment, Run.state, func.count())
        .where(Run.job_name.in_({job for job, _ in keys}), Run.scheduled_at >= now - timedelta(days=7))
        .where(Run.state.in_([s.value for s in _GOOD + _BAD]))
        .group_by(Run.job_name, Run.environment, Run.state)
    )
    counts: dict[tuple[str, str], list[int]] = {}
    for job, environment, state, count in week:
        good_bad = counts.setdefault((job, environment), [0, 0])
        good_bad[0 if state == RunState.SUCCEEDED else 1] += count
    for key, (good, bad) in counts.items():
        if key in keys and good + bad:
            keys[key].success_rate = good / (good + bad)
