"""Celery tasks scheduled by Kirby, end to end: real `kirby web`, `kirby supervisor` and prefork
`celery worker` processes on the Redis (and Kafka) of deploy/services, audited from the task's
own ledger (one line per body run)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
from celery import Celery
from sqlalchemy import select

from kirby.cron import slots_between
from kirby.models import Notification, RunState
from kirby.run_ids import slot_run_id
from tests.e2e.celery_support import TASK, celery_cluster
from tests.e2e.conftest import new_cluster
from tests.helpers import wait_for

EVERY_SECOND = "* * * * * *"
SOAK_SECONDS = 40  # how long leaders keep being killed


def notifications(celery, run_id: str) -> list[str]:
    with celery.cluster.database.session() as session:
        return list(session.scalars(select(Notification.event).where(Notification.run_id == run_id)))


@pytest.fixture
def celery(tmp_path, example_index, shared_venvs, kafka_servers, redis_url):  # noqa: F811 (fixtures)
    cluster = new_cluster(tmp_path, example_index, shared_venvs, kafka_servers, redis_url)
    yield celery_cluster(cluster, redis_url)
    cluster.close()


@pytest.mark.slow
def test_a_scheduled_task_runs_on_the_worker_and_its_states_are_recorded(celery):
    celery.add_job("tick", EVERY_SECOND, kwargs={"label": "hello"}, misfire_grace_seconds=30)
    celery.cluster.start_web()
    celery.cluster.start_supervisor("s1")
    celery.start_worker("w1")
    wait_for(lambda: len(celery.ledger_ids()) >= 3, 120, "no task body ran; see the logs")
    run_id = celery.ledger_ids()[0]
    run = wait_for(
        lambda: (r := celery.runs("tick").get(run_id)) is not None and r.state == RunState.SUCCEEDED and r,
        60,
        f"run {run_id} was not recorded succeeded",
    )
    assert run.celery_task == "kirby_test.ledger" and run.started_at and run.finished_at and run.expires_at
    lines = celery.log_lines(run_id)
    assert any("result: {'label': 'hello', 'retries': 0}" in line for line in lines), lines
    assert any(line.startswith("[celery received] received by worker w1@") for line in lines), lines


@pytest.mark.slow
def test_a_forced_redelivery_of_the_same_task_id_runs_once(celery):
    """The same message twice (same task id, same retry count, Kirby's headers): one body run; the
    second delivery is dropped by kirby.celery and recorded in the run's log."""
    celery.add_job("tick", EVERY_SECOND, misfire_grace_seconds=60)
    celery.cluster.start_web()
    celery.cluster.start_supervisor("s1")
    celery.start_worker("w1")
    run_id = wait_for(lambda: celery.ledger_ids() and celery.ledger_ids()[0], 120, "no task body ran")
    wait_for(lambda: celery.runs("tick")[run_id].state == RunState.SUCCEEDED, 60, f"{run_id} did not succeed")
    sender = Celery("redeliver", broker=celery.broker, set_as_current=False)
    scheduled = celery.runs("tick")[run_id].scheduled_at.isoformat()
    for _ in range(2):
        sender.send_task(
            TASK, task_id=run_id, queue=celery.queue, headers={"kirby_epoch": 1, "kirby_scheduled": scheduled}
        )
    wait_for(
        lambda: sum("a second delivery was dropped" in line for line in celery.log_lines(run_id)) >= 1,
        60,
        f"the dropped deliveries of {run_id} were not recorded; see w1.log",
    )
    wait_for(
        lambda: celery.cluster.log_of("w1").count(f"dropped a second delivery of task {TASK} (run {run_id}") == 2,
        60,
        "the worker did not log both drops",
    )
    assert celery.ledger_ids().count(run_id) == 1
    assert celery.runs("tick")[run_id].state == RunState.SUCCEEDED
    sender.close()


@pytest.mark.slow
def test_a_worker_stopped_past_expires_leaves_its_runs_expired_notified_and_unrun(celery):
    """The only worker is frozen (SIGSTOP, its pool too): slots sent meanwhile are recorded
    ``expired`` once their expires (the end of the misfire grace) is past, counted as missed and
    notified; thawed, the worker revokes them unrun and takes the new slots."""
    celery.add_job("tick", "* * * * * */2", misfire_grace_seconds=10, notify="ops@example.com")
    celery.cluster.start_web()
    celery.cluster.start_supervisor("s1")
    worker = celery.start_worker("w1", concurrency=1)
    wait_for(lambda: celery.ledger_ids(), 120, "no task body ran")
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        expired = wait_for(
            lambda: [r for r in celery.runs("tick").values() if r.state == RunState.EXPIRED],
            90,
            "no run was recorded expired while the worker was frozen",
        )
        assert all(run.id not in celery.ledger_ids() for run in expired)
        assert "no Celery worker received the task before its expires" in expired[0].error
        wait_for(lambda: notifications(celery, expired[0].id) == ["missed"], 30, "the expired run was not notified")
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    seen = len(celery.ledger_ids())
    wait_for(lambda: len(celery.ledger_ids()) >= seen + 2, 90, "the thawed worker ran no new slot")
    ran = set(celery.ledger_ids())
    still_expired = [r.id for r in celery.runs("tick").values() if r.state == RunState.EXPIRED]
    assert still_expired and not (set(still_expired) & ran), "an expired run's body ran"


@pytest.mark.slow
def test_the_broker_down_fails_the_run_with_one_line_and_it_is_retried(celery, start_private_redis):
    broker = start_private_redis()
    celery.cluster.env["KIRBY_CELERY_BROKER_URL"] = celery.broker = broker.url
    celery.add_job("tick", "* * * * * */5", misfire_grace_seconds=30, retries=1)
    broker.kill()
    celery.cluster.start_web()
    celery.cluster.start_supervisor("s1")

    def failed_twice():
        runs = celery.runs("tick")
        return next(
            (
                (runs[slot], runs[f"{slot}#2"])
                for slot in runs
                if "#" not in slot
                and runs[slot].state == RunState.FAILED
                and runs.get(f"{slot}#2") is not None
                and runs[f"{slot}#2"].state == RunState.FAILED
            ),
            None,
        )

    first, retry = wait_for(failed_twice, 120, "no run failed and was retried while the broker was down")
    for run in (first, retry):
        assert run.error.startswith(
            f"could not send Celery task {TASK} of run {run.id} to {broker.url} after 2 retries:"
        )
        assert "check that the broker is up" in run.error and "\n" not in run.error
    assert retry.attempt == 2 and retry.trigger == "retry"


@pytest.mark.slow
def test_leader_killed_repeatedly_every_slot_s_task_body_runs_exactly_once(celery):
    """An every-second Celery task while the Kirby leader is SIGKILLed every few seconds: every slot
    of the soak ran its body exactly once (the task's own ledger) and is recorded succeeded, or lost
    with a supervisor we killed mid-send (then it ran at most once)."""
    celery.add_job("tick", EVERY_SECOND, misfire_grace_seconds=60)
    celery.cluster.start_web()
    names = ["s1", "s2", "s3"]
    for name in names:
        celery.cluster.start_supervisor(name)
    celery.start_worker("w1", concurrency=4)
    leader, _ = celery.cluster.wait_leader()
    wait_for(celery.ledger_ids, 120, "no task body ran")
    start = datetime.now(timezone.utc)
    killed: set[str] = set()
    soak_until = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < soak_until or len(killed) < 3:
        seen = len(celery.ledger_ids())
        wait_for(lambda: len(celery.ledger_ids()) >= seen + 4, 60, "task bodies stopped running")
        celery.cluster.signal(leader, signal.SIGKILL)
        killed.add(leader)
        names.remove(leader)
        names.append(replacement := f"s{3 + len(killed)}")
        celery.cluster.start_supervisor(replacement)
        leader, _ = celery.cluster.wait_leader(other_than=leader)
    end = datetime.now(timezone.utc)
    expected = [slot_run_id("tick", "e2e", s) for s in slots_between(EVERY_SECOND, "UTC", start, end)]

    def unsettled():
        ran, runs = set(celery.ledger_ids()), celery.runs("tick")
        return [
            (run_id, run_id in ran, runs[run_id].state.value if run_id in runs else None)
            for run_id in expected
            if not (
                run_id in runs
                and (
                    (run_id in ran and runs[run_id].state == RunState.SUCCEEDED)
                    or (runs[run_id].state == RunState.LOST and runs[run_id].supervisor in killed)
                )
            )
        ]

    wait_for(lambda: not unsettled(), 120, f"slots neither succeeded nor lost with a killed supervisor: {unsettled}")
    twice = [run_id for run_id, count in Counter(celery.ledger_ids()).items() if count > 1]
    assert not twice, f"task bodies ran more than once: {twice}"
    runs = celery.runs("tick")
    lost = [run_id for run_id in expected if runs[run_id].state == RunState.LOST]
    assert len(lost) <= 2 * len(killed), f"too many runs lost: {lost}"
    assert len(expected) >= 20
    assert all(runs[run_id].started_at for run_id in expected if runs[run_id].state == RunState.SUCCEEDED)
