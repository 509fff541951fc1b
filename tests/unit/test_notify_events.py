"""Which run changes become notifications (kirby.notify.events/outbox), written by the recorder in the
same transaction as the state change, once per run, event and group (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from kirby.events import RunEvent
from kirby.models import Notification, Run
from kirby.notify.events import CRASH_LOOP_RESTARTS
from kirby.recorder import mark_lost, record
from tests.notify_scripts import T0, add_job, finished_run, offer, outbox, skipped

CATCH_UP = "missed by more than its misfire grace (300s); catch-up policy skip"
OVERLAP = "overlap policy forbid: run x of nightly in prod is still running"
SUSPENDED = "suspended until 2026-03-05T00:00:00+00:00: holidays"


def test_a_failed_run_notifies_once_however_often_it_is_recorded(db):
    with db.session() as s:
        add_job(s)
    events = finished_run(offer())
    for _ in range(3):  # a redelivered batch, and the same events one by one
        with db.session() as s:
            record(s, events)
    with db.session() as s:
        for event in events:
            record(s, [event])
    with db.session() as s:
        assert outbox(s) == [("failed", "nightly", offer().run_id)]
        row = s.scalar(select(Notification))
        assert row.state == "pending" and row.key == f"{offer().run_id}:failed:{row.group_id}"


def test_the_outbox_row_is_part_of_the_state_change_transaction(db):
    with db.session() as s:
        add_job(s)
    with pytest.raises(RuntimeError):
        with db.session() as s:
            record(s, finished_run(offer()))
            raise RuntimeError("the recording transaction fails after record()")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert outbox(s) == []


def test_an_attempt_with_retries_left_is_not_a_failure_notification(db):
    with db.session() as s:
        context_id = add_job(s, retries=1).contexts[0].id
    with db.session() as s:
        record(s, finished_run(offer(context_id=context_id), "timed_out", None))
    with db.session() as s:
        assert outbox(s) == []
    last = offer(attempt=2, trigger="retry", context_id=context_id)
    with db.session() as s:
        record(s, finished_run(last, "timed_out", None))
    with db.session() as s:
        assert outbox(s) == [("timed_out", "nightly", last.run_id)]


def test_lost_missed_and_overlap_skips_notify_suspensions_only_when_asked(db):
    with db.session() as s:
        add_job(s, name="nightly")
        add_job(s, name="holiday", notify_on=("missed", "suspended"), group="other")
    lost, missed, overlapped = offer(at=T0), offer(at=T0 + timedelta(days=1)), offer(at=T0 + timedelta(days=2))
    with db.session() as s:
        record(s, finished_run(lost)[:3])  # running
        mark_lost(s, s.get(Run, lost.run_id), T0 + timedelta(minutes=5), "supervisor sup-a stopped heartbeating")
        record(s, skipped(missed, CATCH_UP) + skipped(overlapped, OVERLAP))
        record(s, skipped(offer(at=T0 + timedelta(days=3)), SUSPENDED))
        record(s, skipped(offer("holiday", at=T0 + timedelta(days=3)), SUSPENDED))
    with db.session() as s:
        assert sorted(outbox(s)) == sorted(
            [
                ("lost", "nightly", lost.run_id),
                ("missed", "nightly", missed.run_id),
                ("missed", "nightly", overlapped.run_id),
                ("suspended", "holiday", offer("holiday", at=T0 + timedelta(days=3)).run_id),
            ]
        )
        details = dict(s.execute(select(Notification.run_id, Notification.detail)).all())
        assert details[missed.run_id] == CATCH_UP


def test_recovery_is_the_first_success_after_a_failure(db):
    with db.session() as s:
        add_job(s)
    days = [offer(at=T0 + timedelta(days=d)) for d in range(4)]
    with db.session() as s:
        record(s, finished_run(days[0], "succeeded", 0))  # success after nothing: no recovery
        record(s, finished_run(days[1], "failed"))
        record(s, finished_run(days[2], "succeeded", 0))  # recovery
        record(s, finished_run(days[3], "succeeded", 0))  # a second success: nothing
    with db.session() as s:
        assert outbox(s) == [("failed", "nightly", days[1].run_id), ("recovered", "nightly", days[2].run_id)]


def test_a_crash_looping_daemon_notifies_from_the_nth_exit_within_the_window(db):
    with db.session() as s:
        add_job(s, name="feeder", daemon=True)
    # daemon restarts: one exit every minute, then a long healthy stretch, then one more exit
    exits = [T0 + timedelta(minutes=m) for m in range(CRASH_LOOP_RESTARTS)] + [T0 + timedelta(hours=2)]
    runs = [offer("feeder", at=at, trigger="daemon") for at in exits]
    with db.session() as s:
        for run in runs:
            record(s, finished_run(run, "failed"))
    with db.session() as s:
        # the earlier exits are below the threshold, the lone late one is alone in its window;
        # a daemon's single exit is never a "failed" notification (it restarts)
        assert outbox(s) == [("crash_loop", "feeder", runs[CRASH_LOOP_RESTARTS - 1].run_id)]


def test_notify_on_selects_the_events_and_jobs_without_groups_write_nothing(db):
    with db.session() as s:
        add_job(s, name="quiet", notify_on=("recovery",))
    with db.session() as s:
        record(s, finished_run(offer("quiet"), "failed"))
        record(s, finished_run(offer("other-job-without-group"), "failed"))
        record(s, finished_run(offer("quiet", at=T0 + timedelta(days=1)), "succeeded", 0))
    with db.session() as s:
        assert outbox(s) == [("recovered", "quiet", offer("quiet", at=T0 + timedelta(days=1)).run_id)]


def test_a_real_finish_after_lost_notifies_the_failure_too(db):
    """lost is the web's presumption; when the supervisor's own ``finished`` arrives, it says more."""
    with db.session() as s:
        add_job(s)
    run = offer()
    with db.session() as s:
        record(s, finished_run(run)[:3])
        mark_lost(s, s.get(Run, run.run_id), T0 + timedelta(minutes=1), "gone")
    with db.session() as s:
        record(s, [finished_run(run)[-1], RunEvent("lost", run.run_id, T0 + timedelta(minutes=2))])
    with db.session() as s:
        assert [e for e, _, _ in outbox(s)] == ["lost", "failed"]


def test_the_leaders_own_skip_reasons_are_told_apart(db):
    """The reasons come from kirby.supervisor.planning itself, so a change of wording there shows here."""
    from kirby.schedule.snapshot import ScheduleEntry, ScheduleRule, SuspensionWindow
    from kirby.supervisor.planning import plan_slots

    rule = ScheduleRule(id=1, cron="0 * * * *", catchup="skip")
    window = SuspensionWindow(id=1, starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=1), reason="x")
    entry = ScheduleEntry(1, "nightly", "scheduled", "prod", "p", "1.0.0", schedules=(rule,), suspensions=(window,))
    slots = plan_slots(entry, rule, T0 - timedelta(hours=3), None, T0).slots
    reasons = {slot.instant: slot.skip_reason for slot in slots}
    assert reasons[T0 - timedelta(hours=2)].startswith("missed by more than its misfire grace")
    assert reasons[T0].startswith("suspended until")
    with db.session() as s:
        add_job(s)
    with db.session() as s:
        for instant, reason in reasons.items():
            record(s, skipped(offer(at=instant), reason))
    # slots beyond the grace are catch-up skips even inside the window; the due one is suspended,
    # which notifies nothing unless asked
    with db.session() as s:
        assert outbox(s) == [("missed", "nightly", offer(at=T0 - timedelta(hours=h)).run_id) for h in (2, 1)]
