"""Expected versus actual: every slot the cron math expects of a job in a period, beside what
happened to it. This is how a user checks the promise "never twice, never missed".

``audit(session, job, environment, since, until, now)`` lists, per expected slot of the context's
enabled schedules (today's schedules: an audit of a period before an edit judges the old slots by
the new rule), in time order, one ``SlotOutcome``:

=============  ==================================================================================
outcome        when
=============  ==================================================================================
``ran``        the last attempt finished (succeeded, failed or timed out) and the first attempt
               started within ``late_after`` seconds of the slot
``late``       the same, started later than that
``running``    it started and has not finished yet
``skipped``    recorded skipped (the reason says why: overlap, catch-up, suspension, expired)
``suspended``  no run, but the slot is inside a suspension window
``lost``       its supervisor died while it ran
``twice``      it was started more than once (``Run.duplicate_starts``)
``missed``     nothing ran and the slot is past its misfire grace
``pending``    nothing ran yet, still within its grace (or in the future)
=============  ==================================================================================

Scheduled runs of the period that no schedule expects (a rule since edited, a phantom) are listed
too, as ``unexpected``. ``Audit.ok`` is False when a slot is missed or ran twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kirby import cron
from kirby.errors import KirbyError
from kirby.models import Context, Environment, Job, Run, RunState, Schedule, Suspension
from kirby.run_ids import slot_run_id
from kirby.vocabulary import Trigger

FAILURES = ("missed", "twice")
_FINISHED = (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT)
MAX_SLOTS = 100_000  # an audit of an every-second job over more than a day is refused


@dataclass(frozen=True)
class SlotOutcome:
    instant: datetime
    run_id: str
    outcome: str
    state: str = ""  # the last attempt's state, "" without a run
    attempts: int = 0
    delay_seconds: float | None = None  # first start - slot instant
    supervisor: str = ""
    reason: str = ""

    def as_dict(self) -> dict:
        return {**self.__dict__, "instant": self.instant.isoformat()}


@dataclass(frozen=True)
class Audit:
    job: str
    environment: str
    since: datetime
    until: datetime
    slots: tuple[SlotOutcome, ...]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(slot.outcome for slot in self.slots))

    @property
    def ok(self) -> bool:
        """No slot missed, none run twice."""
        return not any(slot.outcome in FAILURES for slot in self.slots)


def find_context(session: Session, job: str, environment: str | None) -> Context:
    """The context of ``job`` in ``environment`` (optional when the job has one); KirbyError naming
    what exists otherwise."""
    query = select(Context).join(Job).join(Environment).where(Job.name == job)
    contexts = list(session.scalars(query.options(selectinload(Context.schedules), selectinload(Context.environment))))
    if not contexts:
        raise KirbyError(f"no job named {job!r}: see the Jobs page or `kirby export` for the names")
    names = sorted(c.environment.name for c in contexts)
    if environment is None:
        if len(contexts) > 1:
            raise KirbyError(f"job {job!r} runs in {', '.join(names)}: choose one with --environment")
        return contexts[0]
    for context in contexts:
        if context.environment.name == environment:
            return context
    raise KirbyError(f"job {job!r} has no environment {environment!r} (it has: {', '.join(names)})")


def _expected(context: Context, since: datetime, until: datetime) -> dict[str, tuple[datetime, Schedule]]:
    slots: dict[str, tuple[datetime, Schedule]] = {}
    for schedule in context.schedules:
        if not schedule.enabled:
            continue
        for instant in cron.slots_between(schedule.cron, schedule.timezone, since, until, schedule.dst):
            slots.setdefault(slot_run_id(context.job.name, context.environment.name, instant), (instant, schedule))
            if len(slots) > MAX_SLOTS:
                raise KirbyError(f"more than {MAX_SLOTS} slots between {since} and {until}: audit a shorter period")
    return slots


def _outcome(runs: list[Run], instant: datetime, grace: int, now: datetime, late_after: float, suspended: bool):
    if not runs:
        if suspended:
            return "suspended", None
        return ("pending" if instant + timedelta(seconds=grace) > now else "missed"), None
    first, last = runs[0], runs[-1]
    delay = (first.started_at - instant).total_seconds() if first.started_at else None
    if any(run.duplicate_starts for run in runs):
        return "twice", delay
    if last.state == RunState.SKIPPED:
        return "skipped", delay
    if last.state == RunState.LOST:
        return "lost", delay
    if last.state == RunState.EXPIRED:  # a Celery task nobody received before its expires
        return "missed", delay
    if last.state in _FINISHED:
        return ("late" if delay is not None and delay > late_after else "ran"), delay
    if last.started_at is not None:
        return "running", delay
    return ("pending" if instant + timedelta(seconds=grace) > now else "missed"), delay


def audit(
    session: Session,
    job: str,
    environment: str | None,
    since: datetime,
    until: datetime,
    now: datetime,
    late_after: float = 60.0,
) -> Audit:
    """The audit of ``job`` in ``environment`` for slots in ``(since, until]`` (see module doc)."""
    if until <= since:
        raise KirbyError(f"the period ends ({until.isoformat()}) before it starts ({since.isoformat()})")
    context = find_context(session, job, environment)
    expected = _expected(context, since, until)
    rows = session.scalars(
        select(Run)
        .where(Run.job_name == context.job.name, Run.environment == context.environment.name)
        .where(
            Run.scheduled_at > since,
            Run.scheduled_at <= until,
            Run.trigger.in_((Trigger.SCHEDULE.value, Trigger.RETRY.value)),
        )
        .order_by(Run.scheduled_at, Run.attempt)
    )
    by_slot: dict[str, list[Run]] = defaultdict(list)
    for run in rows:
        by_slot[run.slot_id].append(run)
    windows = list(
        session.scalars(
            select(Suspension).where(
                (Suspension.job_id == context.job_id) | Suspension.job_id.is_(None),
                Suspension.ends_at > since,
                Suspension.starts_at <= until,
            )
        )
    )
    slots = []
    for slot_id, (instant, schedule) in expected.items():
        runs = by_slot.pop(slot_id, [])
        suspended = any(w.starts_at <= instant < w.ends_at for w in windows)
        outcome, delay = _outcome(runs, instant, schedule.misfire_grace_seconds, now, late_after, suspended)
        slots.append(_slot(slot_id, instant, outcome, delay, runs))
    for slot_id, runs in by_slot.items():
        first = runs[0]
        delay = (first.started_at - first.scheduled_at).total_seconds() if first.started_at else None
        slots.append(_slot(slot_id, first.scheduled_at, "unexpected", delay, runs))
    slots.sort(key=lambda slot: (slot.instant, slot.run_id))
    return Audit(context.job.name, context.environment.name, since, until, tuple(slots))


def _slot(slot_id: str, instant: datetime, outcome: str, delay: float | None, runs: list[Run]) -> SlotOutcome:
    last = runs[-1] if runs else None
    return SlotOutcome(
        instant=instant,
        run_id=last.id if last else slot_id,
        outcome=outcome,
        state=last.state.value if last else "",
        attempts=len(runs),
        delay_seconds=delay,
        supervisor=(last.supervisor or "") if last else "",
        reason=(last.error or "") if last else "",
    )
