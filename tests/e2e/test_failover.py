"""Never twice, never missed: every-second schedules while the leader is killed, paused, and
supervisors die mid-run, audited against the cron math, the runs table and the scripts' own ledger."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from kirby.cron import slots_between
from kirby.models import Overlap, RunState
from kirby.run_ids import slot_run_id
from tests.helpers import wait_for

EVERY_SECOND = "* * * * * *"
SOAK_SECONDS = 90  # how long leaders keep being killed, per backend


def ledger_ids(path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def audit(
    cluster,
    job: str,
    ledger,
    start: datetime,
    end: datetime,
    killed: set[str] = frozenset(),
    deaths: dict[str, float] | None = None,
) -> list[str]:
    """Assert every slot in (start, end] ran exactly once, or was lost with a supervisor we killed.

    "Ran" is read from the script's own ledger, independently of what Kirby records; then the runs
    table must show every slot succeeded, or lost on one of the ``killed`` supervisors. With
    ``deaths`` (name -> kill time), each lost run is judged: its supervisor was killed while it held
    it (the run began, or its slot fell due, before the kill). How many that is depends on what each
    victim held (a new leader's catch-up burst after a Kafka rebalance can put several slots on it
    at once), so it is not counted; without ``deaths``, a count bound stands in.
    """
    expected = [slot_run_id(job, "e2e", slot) for slot in slots_between(EVERY_SECOND, "UTC", start, end)]

    def unsettled():
        ran = set(ledger_ids(ledger))  # read again: a late run may still be writing it
        runs = {run.id: run for run in cluster.runs(job)}
        return [
            (
                run_id,
                run_id in ran,
                runs[run_id].state.value if run_id in runs else None,
                runs[run_id].supervisor if run_id in runs else None,
            )
            for run_id in expected
            if not (
                run_id in runs
                and (
                    (run_id in ran and runs[run_id].state == RunState.SUCCEEDED)
                    or (runs[run_id].state == RunState.LOST and runs[run_id].supervisor in killed)
                )
            )
        ]

    try:
        wait_for(lambda: not unsettled(), 120, "")
    except AssertionError:
        left = unsettled()
        raise AssertionError(
            f"{len(left)} of {len(expected)} slots neither succeeded nor lost with a killed "
            f"supervisor (id, in ledger, state, supervisor): {left[:10]}; logs in {cluster.workdir}"
        ) from None
    twice = [run_id for run_id, count in Counter(ledger_ids(ledger)).items() if count > 1]
    assert not twice, f"ran more than once: {twice}"
    lost = [run for run in cluster.runs(job) if run.id in expected and run.state == RunState.LOST]
    if deaths is None:  # a sanity bound: what a killed supervisor had claimed and not finished
        assert len(lost) <= 5 * len(killed), f"too many runs lost: {[run.id for run in lost]}"
    else:
        began = lambda run: (run.started_at or run.scheduled_at).replace(tzinfo=timezone.utc).timestamp()  # noqa: E731
        wrong = [run.id for run in lost if began(run) > deaths[run.supervisor] + 0.5]
        assert not wrong, f"runs lost although they began after their supervisor was killed: {wrong}"
    return expected


@pytest.mark.slow
def test_leader_killed_repeatedly_every_slot_runs_exactly_once(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.add_job(
        "tick",
        "kirby-example-hello",
        cron=EVERY_SECOND,
        overlap=Overlap.ALLOW,
        config={"KIRBY_RUN_LEDGER": str(ledger)},
    )
    cluster.start_web()
    names = ["s1", "s2", "s3"]
    for name in names:
        cluster.start_supervisor(name)
    leader, _ = cluster.wait_leader()
    wait_for(lambda: ledger_ids(ledger), 120, "no run reached its script")
    start = datetime.now(timezone.utc)
    killed, deaths = set(), {}
    soak_until = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < soak_until or len(killed) < 4:  # a leader killed every few seconds
        seen = len(ledger_ids(ledger))
        wait_for(lambda: len(ledger_ids(ledger)) >= seen + 5, 60, "runs stopped arriving")
        deaths[leader] = time.time()
        cluster.signal(leader, signal.SIGKILL)
        killed.add(leader)
        names.remove(leader)
        replacement = f"s{3 + len(killed)}"
        cluster.start_supervisor(replacement)
        names.append(replacement)
        leader, _ = cluster.wait_leader(other_than=leader)
    end = datetime.now(timezone.utc)
    wait_for(
        lambda: slot_run_id("tick", "e2e", end.replace(microsecond=0) + timedelta(seconds=3)) in ledger_ids(ledger),
        60,
        "runs stopped after the last failover",
    )
    expected = audit(cluster, "tick", ledger, start, end, killed, deaths)
    assert len(expected) >= 10


@pytest.mark.slow
def test_a_paused_leader_publishes_nothing_that_runs(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.add_job(
        "tick",
        "kirby-example-hello",
        cron=EVERY_SECOND,
        overlap=Overlap.ALLOW,
        config={"KIRBY_RUN_LEDGER": str(ledger)},
    )
    cluster.start_web()
    for name in ("s1", "s2", "s3"):
        cluster.start_supervisor(name)
    paused, old_epoch = cluster.wait_leader()
    wait_for(lambda: ledger_ids(ledger), 120, "no run reached its script")
    start = datetime.now(timezone.utc)
    cluster.signal(paused, signal.SIGSTOP)
    _, new_epoch = cluster.wait_leader(other_than=paused)
    assert new_epoch > old_epoch
    takeover = datetime.now(timezone.utc)
    cluster.signal(paused, signal.SIGCONT)
    seen = len(ledger_ids(ledger))
    wait_for(lambda: len(ledger_ids(ledger)) >= seen + 5, 60, "runs stopped after the resume")
    end = datetime.now(timezone.utc) - timedelta(seconds=1)
    audit(cluster, "tick", ledger, start, end)
    late = [
        run.id
        for run in cluster.runs("tick")
        if run.epoch == old_epoch and run.claimed_at and run.claimed_at > takeover + timedelta(seconds=1)
    ]
    assert not late, f"runs offered under the deposed epoch {old_epoch} ran after the takeover: {late}"


@pytest.mark.slow
def test_a_supervisor_killed_mid_run_leaves_its_run_lost_and_others_undisturbed(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.add_job("long", "kirby-example-sleep", cron="* * * * * */5", config={"SLEEP_SECONDS": "600"})
    cluster.add_job(
        "tick",
        "kirby-example-hello",
        cron=EVERY_SECOND,
        overlap=Overlap.ALLOW,
        config={"KIRBY_RUN_LEDGER": str(ledger)},
    )
    cluster.start_web()
    for name in ("s1", "s2", "s3"):
        cluster.start_supervisor(name)
    running = wait_for(
        lambda: [r for r in cluster.runs("long") if r.state == RunState.RUNNING], 120, "the long run did not start"
    )[0]
    start = datetime.now(timezone.utc)
    cluster.signal(running.supervisor, signal.SIGKILL)
    lost = wait_for(
        lambda: [r for r in cluster.runs("long") if r.id == running.id and r.state == RunState.LOST],
        150,
        f"run {running.id} was not marked lost",
    )
    assert lost[0].finished_at is not None
    end = datetime.now(timezone.utc) - timedelta(seconds=2)
    audit(cluster, "tick", ledger, start, end, killed={running.supervisor})
