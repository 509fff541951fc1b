"""Celery runs in the runs table: Celery task events become ``task`` run events (masked, only for
Kirby's run ids), the recorder moves the run through sent/received/running/retried to its outcome,
an expired run counts as missed; the sender's one-line error; Celery stays in its own modules."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from kirby.celery.events import MAX_TEXT, run_event
from kirby.celery.sender import CelerySender
from kirby.errors import KirbyError
from kirby.events import Offer, RunEvent
from kirby.models import LogLine, Run, RunState
from kirby.recorder import offer_event, record
from kirby.run_ids import slot_run_id
from kirby.tasks.masking import Masker

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)
RUN = slot_run_id("nightly", "prod", T0)
TASK = {"name": "reports.tasks.nightly", "args": [], "kwargs": {}, "queue": None, "routing_key": None, "priority": None}


def offer(**changes) -> Offer:
    base = Offer(RUN, RUN, "nightly", "prod", "", "", T0, epoch=3, celery=TASK, not_after=T0 + timedelta(seconds=30))
    return replace(base, **changes)


def celery_event(kind: str, seconds: float, **fields) -> dict:
    return {"type": kind, "uuid": RUN, "timestamp": (T0 + timedelta(seconds=seconds)).timestamp(), **fields}


def task(state: str, seconds: float, text: str = "") -> RunEvent:
    return RunEvent("task", RUN, T0 + timedelta(seconds=seconds), data={"state": state, "text": text})


def test_celery_events_become_masked_task_events_for_kirby_runs_only():
    masker = Masker(["hunter2-secret"])
    failed = run_event(
        celery_event("task-failed", 2, exception="ValueError('hunter2-secret')", traceback="Traceback ...\n  x"), masker
    )
    assert failed.kind == "task" and failed.run_id == RUN and failed.time == T0 + timedelta(seconds=2)
    assert failed.data == {"state": "failed", "text": "Traceback ...\n  x\nValueError('***')"}
    assert run_event(celery_event("task-revoked", 3, expired=True)).data["state"] == "expired"
    assert run_event(celery_event("task-revoked", 3, terminated=True, signum=15)).data["text"] == (
        "revoked (terminated by signal 15)"
    )
    long = run_event(celery_event("task-succeeded", 1, result="x" * 5000, runtime=0.5))
    assert len(long.data["text"]) < MAX_TEXT + 100 and long.data["text"].endswith("characters cut]")
    assert run_event({**celery_event("task-started", 1), "uuid": "8c8e-not-kirby"}) is None
    assert run_event(celery_event("worker-heartbeat", 1)) is None


def test_a_celery_run_moves_through_its_task_states_and_keeps_its_texts(db):
    with db.session() as s:
        record(s, [offer_event("claimed", offer(), T0, "s1")])
        record(s, [RunEvent("sent", RUN, T0, "s1", {"task": TASK["name"], "expires_at": T0 + timedelta(seconds=30)})])
        record(s, [task("received", 0.1, "received by worker w1@h")])
        record(s, [task("succeeded", 0.5, "succeeded in 0.2 s; result: 42")])  # before its started: Celery may
        record(s, [task("started", 0.3, "started on worker w1@h (pid 7)")])
        record(s, [task("succeeded", 0.5, "succeeded in 0.2 s; result: 42")])  # the same event again
    with db.session() as s:
        run = s.get(Run, RUN)
        assert run.state == RunState.SUCCEEDED and run.celery_task == TASK["name"]
        assert run.expires_at == T0 + timedelta(seconds=30) and run.package_name == TASK["name"]
        assert run.started_at == T0 + timedelta(seconds=0.3) and run.finished_at == T0 + timedelta(seconds=0.5)
        lines = list(s.scalars(select(LogLine.text).where(LogLine.run_id == RUN).order_by(LogLine.seq)))
    assert lines == [
        "[celery received] received by worker w1@h",
        "[celery started] started on worker w1@h (pid 7)",
        "[celery succeeded] succeeded in 0.2 s; result: 42",
    ]


def test_retries_go_back_and_forth_and_the_failure_names_the_exception(db):
    with db.session() as s:
        record(s, [offer_event("claimed", offer(), T0, "s1"), RunEvent("sent", RUN, T0, "s1", {"task": "t"})])
        record(s, [task("started", 1), task("retried", 2, "Traceback\nRetry('again')")])
        assert s.get(Run, RUN).state == RunState.RETRIED
        record(s, [task("received", 3), task("started", 4)])
        assert s.get(Run, RUN).state == RunState.RUNNING
        record(s, [task("failed", 5, "Traceback (most recent call last):\n  ...\nValueError('boom')")])
        run = s.get(Run, RUN)
        assert run.state == RunState.FAILED and run.error == "ValueError('boom')"
        record(s, [task("started", 6)])  # late: a finished run is not reopened
        assert s.get(Run, RUN).state == RunState.FAILED


def test_expired_is_a_presumption_a_real_outcome_replaces(db):
    with db.session() as s:
        record(s, [offer_event("claimed", offer(), T0, "s1"), RunEvent("sent", RUN, T0, "s1", {"task": "t"})])
        record(s, [task("expired", 40, "expired: no Celery worker received the task before its expires")])
        assert s.get(Run, RUN).state == RunState.EXPIRED
        record(s, [task("succeeded", 41, "result: 1")])  # a worker did take it in time after all
        assert s.get(Run, RUN).state == RunState.SUCCEEDED


def test_a_broker_that_cannot_be_reached_fails_the_send_in_one_line(make_settings):
    settings = make_settings(EXT_RETRIES="1", EXT_WAIT_BETWEEN_RETRIES="0.05")
    sender = CelerySender(settings)
    with pytest.raises(KirbyError, match="no Celery broker: set KIRBY_CELERY_BROKER_URL"):
        sender.send(offer())
    dead = offer(config={"KIRBY_CELERY_BROKER_URL": "redis://:hunter2@127.0.0.1:1/0"})
    with pytest.raises(KirbyError) as error:
        sender.send(dead)
    message = str(error.value)
    assert message.startswith(
        f"could not send Celery task reports.tasks.nightly of run {RUN} to redis://:***@127.0.0.1:1/0"
    )
    assert "after 1 retries" in message and "hunter2" not in message and "\n" not in message
    sender.close()


def test_celery_is_imported_only_by_its_modules_and_not_by_importing_kirby_celery():
    code = (
        "import sys, kirby.celery, kirby.celery.task, kirby.celery.events, kirby.celery.sender, kirby.supervisor.service,"
        " kirby.web.celery_tracking\nprint('celery' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
