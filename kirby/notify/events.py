"""The notification events of a run's state change, and the ``notify_on`` names that select them.

``run_events(session, run)`` is a function of the run row and the runs table (no clock): it is
called right after the run changed state, in the transaction recording the change.

=============  ==========  ====================================================================
event          notify_on   when
=============  ==========  ====================================================================
failed         failure     a scheduled or manual run failed after its last attempt (an attempt
timed_out      failure     with retries left is retried, not notified)
lost           lost        a run's supervisor died while it ran
missed         missed      a slot was skipped: missed beyond its misfire grace (catch-up
                           policy), or by the overlap policy; a Celery task expired unreceived
suspended      suspended   a slot was skipped by a suspension window (off unless asked)
crash_loop     daemon      a daemon finished (crashed or exited) ``CRASH_LOOP_RESTARTS`` times
                           within ``CRASH_LOOP_MINUTES`` in one environment
recovered      recovery    the first success of a job in an environment after a failed, timed
                           out or lost run (of another slot)
test           (none)      "Send test" on a notification group
=============  ==========  ====================================================================
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kirby.models import Run, RunState, Schedule

NOTIFY_ON = ("failure", "missed", "lost", "recovery", "daemon", "suspended")
DEFAULT_NOTIFY_ON = ("failure", "missed", "lost", "recovery", "daemon")
FLAGS = {name: f"on_{name}" for name in NOTIFY_ON}  # the JobNotification column of each name
SUBSCRIPTION = {
    "failed": "failure",
    "timed_out": "failure",
    "lost": "lost",
    "missed": "missed",
    "suspended": "suspended",
    "crash_loop": "daemon",
    "recovered": "recovery",
}
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_MINUTES = 10
SUSPENDED_PREFIX = "suspended until"  # how the leader words a suspension skip (supervisor.planning)
_OUTCOMES = (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.LOST)
_FAILURES = (RunState.FAILED, RunState.TIMED_OUT, RunState.LOST)


def run_events(session: Session, run: Run) -> list[tuple[str, str]]:
    """The ``(event, detail)`` pairs of ``run``'s current state (empty when it notifies nothing)."""
    state = RunState(run.state)
    if state == RunState.LOST:
        return [("lost", run.error)]
    if state == RunState.SKIPPED:
        return [("suspended" if run.error.startswith(SUSPENDED_PREFIX) else "missed", run.error)]
    if state == RunState.EXPIRED:  # a Celery task nobody received before its expires
        return [("missed", run.error)]
    if run.trigger == "daemon":
        return _crash_loop(session, run) if state in (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT) else []
    if state in (RunState.FAILED, RunState.TIMED_OUT):
        return [(state.value, run.error)] if _last_attempt(session, run) else []
    if state == RunState.SUCCEEDED and _follows_failure(session, run):
        return [("recovered", "")]
    return []


def _last_attempt(session: Session, run: Run) -> bool:
    """Whether no retry follows ``run``: its attempt is beyond its context's retries."""
    if run.context_id is None:
        return True
    retries = session.scalar(select(func.max(Schedule.retries)).where(Schedule.context_id == run.context_id))
    return run.attempt > (retries or 0)


def _follows_failure(session: Session, run: Run) -> bool:
    """Whether the run before ``run`` (same job and environment, another slot) failed."""
    previous = session.scalar(
        select(Run.state)
        .where(
            Run.job_name == run.job_name,
            Run.environment == run.environment,
            Run.slot_id != run.slot_id,
            Run.trigger != "daemon",
            Run.state.in_(_OUTCOMES),
            Run.finished_at <= run.finished_at,
        )
        .order_by(Run.finished_at.desc())
        .limit(1)
    )
    return previous is not None and RunState(previous) in _FAILURES


def _crash_loop(session: Session, run: Run) -> list[tuple[str, str]]:
    if run.finished_at is None:
        return []
    since = run.finished_at - timedelta(minutes=CRASH_LOOP_MINUTES)
    exits = session.scalar(
        select(func.count())
        .select_from(Run)
        .where(
            Run.job_name == run.job_name,
            Run.environment == run.environment,
            Run.trigger == "daemon",
            Run.state.in_((RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT)),
            Run.finished_at > since,
            Run.finished_at <= run.finished_at,
        )
    )
    if exits < CRASH_LOOP_RESTARTS:
        return []
    return [("crash_loop", f"the daemon exited {exits} times in {CRASH_LOOP_MINUTES} minutes")]
