"""The expected-versus-actual audit (kirby.audit, `kirby audit`): every slot's fate, from real
run events recorded by the recorder, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from kirby.audit import audit
from kirby.errors import KirbyError
from kirby.events import Offer, RunEvent
from kirby.models import Context, Environment, Job, JobType, Run, Schedule, Suspension
from kirby.recorder import offer_event, record
from kirby.run_ids import slot_run_id

UTC = timezone.utc
SINCE = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # slots every 10 minutes: 00:10 ... 01:30
NOW = datetime(2026, 3, 1, 1, 24, tzinfo=UTC)
UNTIL = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)


def _slot(minutes: int) -> datetime:
    return SINCE + timedelta(minutes=minutes)


def _offer(instant: datetime) -> Offer:
    run_id = slot_run_id("report", "prod", instant)
    return Offer(run_id, run_id, "report", "prod", "pkg", "1.0", instant, epoch=1, offered_at=instant)


def _ran(instant: datetime, delay: float, state: str = "succeeded", supervisor: str = "sup-a") -> list[RunEvent]:
    offer = _offer(instant)
    started = instant + timedelta(seconds=delay)
    return [
        offer_event("offered", offer, instant),
        offer_event("claimed", offer, started, supervisor),
        RunEvent("started", offer.run_id, started, supervisor),
        RunEvent(
            "finished", offer.run_id, started + timedelta(seconds=2), supervisor, {"state": state, "exit_code": 0}
        ),
    ]


@pytest.fixture
def audited(db):
    with db.session() as s:
        job = Job(name="report", type=JobType.SCHEDULED)
        context = Context(job=job, environment=Environment(name="prod"), package_name="pkg", package_version="1.0")
        s.add(Schedule(context=context, cron="*/10 * * * *", timezone="Europe/Paris", misfire_grace_seconds=300))
        s.add(Suspension(job=job, starts_at=_slot(55), ends_at=_slot(65), reason="maintenance"))
        s.add(context)
        s.flush()
        lost = _offer(_slot(40))
        twice = _ran(_slot(50), 1.0)
        record(
            s,
            _ran(_slot(10), 0.4)
            + _ran(_slot(20), 95.0)
            + [offer_event("skipped", _offer(_slot(30)), _slot(30), "sup-a", error="overlap policy forbid: ...")]
            + [offer_event("claimed", lost, _slot(40), "sup-b"), RunEvent("started", lost.run_id, _slot(40), "sup-b")]
            + [RunEvent("lost", lost.run_id, _slot(41), None, {"error": "supervisor sup-b died"})]
            + twice
            + [RunEvent("started", twice[0].run_id, _slot(50) + timedelta(seconds=3), "sup-c")]
            + _ran(_slot(73), 0.2)  # no schedule expects 00:73 = 01:13: a phantom slot
            + [offer_event("offered", _offer(_slot(80)), _slot(80))],  # offered, never started
        )
        s.commit()
        return audit(s, "report", None, SINCE, UNTIL, NOW)


def test_every_expected_slot_has_its_outcome(audited):
    outcomes = [(f"{slot.instant:%H:%M}", slot.outcome) for slot in audited.slots]
    assert outcomes == [
        ("00:10", "ran"),
        ("00:20", "late"),
        ("00:30", "skipped"),
        ("00:40", "lost"),
        ("00:50", "twice"),
        ("01:00", "suspended"),  # in the suspension window, no run recorded
        ("01:10", "missed"),  # nothing, and past its 300 s grace at 01:24
        ("01:13", "unexpected"),
        ("01:20", "pending"),  # offered at 01:20, still within its grace
        ("01:30", "pending"),  # in the future
    ]
    assert audited.slots[1].delay_seconds == pytest.approx(95.0)
    assert audited.slots[2].reason.startswith("overlap policy forbid")
    assert not audited.ok and audited.counts["missed"] == 1 and audited.counts["twice"] == 1


def test_an_offered_slot_that_never_started_is_missed_once_its_grace_is_over(db, audited):
    with db.session() as s:
        later = audit(s, "report", "prod", SINCE, UNTIL, NOW + timedelta(minutes=10))
    assert [slot.outcome for slot in later.slots if slot.instant == _slot(80)] == ["missed"]


def test_a_redelivered_start_is_not_a_second_run(db):
    with db.session() as s:
        events = _ran(_slot(10), 0.4)
        record(s, events + [events[2]])  # the same started event again (a bus redelivery)
        s.commit()
        (run,) = s.scalars(select(Run))
    assert run.duplicate_starts == 0


def test_bad_requests_name_what_exists(db, audited):
    with db.session() as s:
        with pytest.raises(KirbyError, match="no job named 'nope'"):
            audit(s, "nope", None, SINCE, UNTIL, NOW)
        with pytest.raises(KirbyError, match="has no environment 'dev' \\(it has: prod\\)"):
            audit(s, "report", "dev", SINCE, UNTIL, NOW)
        with pytest.raises(KirbyError, match="ends .* before it starts"):
            audit(s, "report", None, UNTIL, SINCE, NOW)


def test_kirby_audit_prints_json_and_exits_1_on_a_missed_slot(db, audited, tmp_path):
    env = {"SQLALCHEMY_DATABASE_URI": db.engine.url.render_as_string(hide_password=False), "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-m", "kirby", "audit", "report", "--since", SINCE.isoformat(), "--until"]
    done = subprocess.run([*args, UNTIL.isoformat(), "--json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is False and document["counts"]["missed"] >= 1
    done = subprocess.run([*args, _slot(15).isoformat()], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "report in prod: 1 ran" in done.stdout, done.stdout + done.stderr
