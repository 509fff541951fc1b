"""recorder.record: run events become runs and log lines, once, never backwards (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from kirby.events import Offer, RunEvent
from kirby.models import LogLine, Run, RunState
from kirby.recorder import mark_lost, offer_data, offer_event, record
from kirby.run_ids import slot_run_id

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def make_offer(job: str = "backup", attempt: int = 1) -> Offer:
    slot = slot_run_id(job, "prod", T0)
    return Offer(
        run_id=slot if attempt == 1 else f"{slot}#{attempt}",
        slot_id=slot,
        job=job,
        environment="prod",
        package="backup-pkg",
        version="1.2.3",
        scheduled_at=T0,
        epoch=7,
        config={"TOKEN": "s3cret"},
        secrets=("TOKEN",),
        attempt=attempt,
        offered_at=T0,
    )


def log(run_id: str, seq: int, text: str) -> RunEvent:
    return RunEvent("log", run_id, T0 + timedelta(seconds=seq), "sup-a", {"seq": seq, "stream": "stdout", "text": text})


def lifecycle(offer: Offer) -> list[RunEvent]:
    return [
        offer_event("offered", offer, T0),
        offer_event("claimed", offer, T0 + timedelta(milliseconds=5), "sup-a"),
        RunEvent("started", offer.run_id, T0 + timedelta(seconds=1), "sup-a"),
        log(offer.run_id, 1, "hello"),
        log(offer.run_id, 2, "<script>alert(1)</script>"),
        RunEvent(
            "finished",
            offer.run_id,
            T0 + timedelta(seconds=3),
            "sup-a",
            {"state": "succeeded", "exit_code": 0, "signal": None, "error": ""},
        ),
    ]


def test_offer_data_never_carries_config_or_secrets():
    data = offer_data(make_offer())
    assert "config" not in data and "secrets" not in data
    assert data["job"] == "backup" and data["epoch"] == 7


def test_a_lifecycle_is_recorded_and_redelivery_changes_nothing(db):
    offer = make_offer()
    events = lifecycle(offer)
    with db.session() as s:
        record(s, events)
    with db.session() as s:  # the whole batch redelivered, and each event again in its own batch
        record(s, events)
        for event in events:
            record(s, [event])
    with db.session() as s:
        run = s.get(Run, offer.run_id)
        assert run.state == RunState.SUCCEEDED
        assert (run.supervisor, run.exit_code, run.epoch, run.package_version) == ("sup-a", 0, 7, "1.2.3")
        assert run.claimed_at == T0 + timedelta(milliseconds=5)
        assert run.duration_seconds == 2.0
        texts = s.scalars(select(LogLine.text).where(LogLine.run_id == offer.run_id).order_by(LogLine.seq)).all()
        assert texts == ["hello", "<script>alert(1)</script>"]


def test_states_never_go_backwards(db):
    offer = make_offer()
    events = lifecycle(offer)
    with db.session() as s:
        record(s, [events[0], events[1], events[5]])  # offered, claimed, finished
        record(s, [events[2], events[1]])  # a late started and claimed
        record(
            s,
            [
                RunEvent(
                    "finished",
                    offer.run_id,
                    T0 + timedelta(hours=1),
                    "sup-b",
                    {"state": "failed", "exit_code": 1, "signal": None, "error": "x"},
                )
            ],
        )
    with db.session() as s:
        run = s.get(Run, offer.run_id)
        assert run.state == RunState.SUCCEEDED
        assert run.finished_at == T0 + timedelta(seconds=3)
        assert run.started_at == T0 + timedelta(seconds=1)  # the timestamp is filled, the state kept


def test_a_re_offered_run_belongs_to_the_supervisor_that_claims_and_starts_it(db):
    """A claim released (its supervisor presumed dead) and re-offered: the run's supervisor is the
    one that claimed it last before it started, then the one that started it, never changed after."""
    offer = make_offer()
    later = lambda seconds: T0 + timedelta(seconds=seconds)  # noqa: E731
    with db.session() as s:
        record(s, [offer_event("offered", offer, T0), offer_event("claimed", offer, later(0.1), "sup-a")])
        assert s.get(Run, offer.run_id).supervisor == "sup-a"
        record(s, [offer_event("claimed", offer, later(5), "sup-b")])
        assert s.get(Run, offer.run_id).supervisor == "sup-b"
        record(s, [RunEvent("started", offer.run_id, later(5.1), "sup-b")])
        record(s, [offer_event("claimed", offer, later(0.1), "sup-a")])  # a late redelivery of the first claim
    with db.session() as s:
        assert s.get(Run, offer.run_id).supervisor == "sup-b"


def test_a_real_finish_replaces_a_presumed_loss(db):
    offer = make_offer()
    with db.session() as s:
        record(s, lifecycle(offer)[:4])
        run = s.get(Run, offer.run_id)
        mark_lost(s, run, T0 + timedelta(minutes=1), "supervisor sup-a stopped heartbeating")
    with db.session() as s:
        run = s.get(Run, offer.run_id)
        assert run.state == RunState.LOST and "heartbeat" in run.error
        system = s.scalars(select(LogLine).where(LogLine.stream == "system")).all()
        assert [(line.seq, line.text) for line in system] == [(2, "supervisor sup-a stopped heartbeating")]
        record(s, [lifecycle(offer)[5]])
    with db.session() as s:
        assert s.get(Run, offer.run_id).state == RunState.SUCCEEDED


def test_events_of_an_unknown_run_create_a_placeholder(db):
    offer = make_offer(attempt=2)
    with db.session() as s:
        record(s, [RunEvent("started", offer.run_id, T0, "sup-c"), log(offer.run_id, 1, "x")])
    with db.session() as s:
        run = s.get(Run, offer.run_id)
        assert (run.job_name, run.environment, run.scheduled_at, run.attempt) == ("backup", "prod", T0, 2)
        assert run.slot_id == offer.slot_id and run.state == RunState.RUNNING
        record(s, [offer_event("claimed", offer, T0, "sup-c")])  # the claim arrives late: fills the gaps
    with db.session() as s:
        run = s.get(Run, offer.run_id)
        assert run.state == RunState.RUNNING and run.package_name == "backup-pkg"


def test_duplicate_log_lines_in_one_batch_are_stored_once(db):
    offer = make_offer()
    with db.session() as s:
        record(s, [offer_event("claimed", offer, T0, "a"), log(offer.run_id, 1, "one"), log(offer.run_id, 1, "one")])
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LogLine)) == 1
