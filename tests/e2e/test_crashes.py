"""Supervisor crashes leave no skipped, stranded or doubled runs (issue 11), on both backends.

Guarantees tested here, with real processes SIGKILLed:

* leaders killed every few seconds (each time once every restarted one is back) and restarted under their own names 2 s later (systemd's
  ``Restart=always``, ``RestartSec=2``), a follower killed too, default policies (overlap
  ``forbid``): every slot of an every-second job and of a 2-second job on a 5-second schedule runs
  exactly once (the script's own ledger) or is ``lost`` with a killed supervisor; none is skipped,
  none missed, none left ``claimed``/``running``; a restart under the same name is never refused;
* a run claimed and then orphaned before its spawn (its supervisor killed during the venv build)
  runs elsewhere, under the same run id;
* a killed supervisor's started run is recorded ``lost`` although its name is back within a second;
* a supervisor killed during a daemon's venv build never leaves two instances, and the holder keeps
  its lease through a build longer than the lease's TTL (renewals never wait behind the build).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from kirby.cron import slots_between
from kirby.lease import open_lease_store
from kirby.models import Overlap, RunState
from kirby.run_ids import parse_run_id, slot_run_id
from tests.e2e.test_daemons import assert_never_two_at_once, lifetimes
from tests.e2e.test_failover import ledger_ids
from tests.helpers import wait_for

EVERY_SECOND = "* * * * * *"
EVERY_FIVE = "* * * * * */5"  # Kirby's cron: the seconds field comes last
WINDOW = float(os.environ.get("CRASH_E2E_WINDOW", "2"))  # 1 to measure the figures at --window 1
SOAK_SECONDS = float(os.environ.get("CRASH_E2E_SOAK", "30"))
RESTART_AFTER = 2.0  # systemd RestartSec=2


def ledger_times(path) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[2]) for line in path.read_text().splitlines()} if path.exists() else {}


def _utc(instant: datetime | None) -> float | None:
    return None if instant is None else instant.replace(tzinfo=timezone.utc).timestamp()


def unjustified_skips(runs, kills: list[tuple[float, str]], tolerance: float = 0.3) -> list[str]:
    """Skipped runs for which no run of an earlier slot was really running at the moment of the skip
    (started, and not yet finished, nor its supervisor killed): forbid may skip only those."""
    bad = []
    for skipped in (r for r in runs if r.state == RunState.SKIPPED):
        at = _utc(skipped.finished_at)  # the skip's time
        justified = False
        for run in runs:
            if run.scheduled_at >= skipped.scheduled_at or run.started_at is None:
                continue
            ended = _utc(run.finished_at) if run.state != RunState.LOST else None
            death = [t for t, name in kills if name == run.supervisor and t >= _utc(run.started_at)]
            ended = min([e for e in [ended, *death[:1]] if e is not None], default=float("inf"))
            if _utc(run.started_at) - tolerance <= at <= ended + tolerance:
                justified = True
                break
        if not justified:
            bad.append(skipped.id)
    return bad


def unjustified_losses(runs, kills: list[tuple[float, str]], tolerance: float = 0.5) -> list[str]:
    """Lost runs whose supervisor was not killed between the run's start (its slot's instant, when
    the start never reached the web) and the moment it was recorded lost: a run may be lost only
    with the supervisor that held it. How many that is depends on what each victim was running
    (a new leader's catch-up burst can put several slots on it at once), so it is not counted."""
    bad = []
    for run in (r for r in runs if r.state == RunState.LOST):
        began = _utc(run.started_at) if run.started_at else _utc(run.scheduled_at)
        recorded = _utc(run.finished_at)
        if not any(name == run.supervisor and began - tolerance <= t <= recorded + tolerance for t, name in kills):
            bad.append(run.id)
    return bad


def settled(cluster, job: str, cron: str, start: datetime, end: datetime, killed: set[str], ledger=None):
    """Wait until every slot of ``job`` in (start, end] succeeded (in the ledger, if any), was lost
    with a killed supervisor, or was skipped (judged by ``unjustified_skips``); return the runs.
    Fails naming the slots that are not."""
    expected = [slot_run_id(job, "e2e", slot) for slot in slots_between(cron, "UTC", start, end)]

    def unsettled():
        ran = set(ledger_ids(ledger)) if ledger else None
        runs = {run.id: run for run in cluster.runs(job)}
        return [
            (
                run_id,
                runs[run_id].state.value if run_id in runs else None,
                runs[run_id].supervisor if run_id in runs else None,
            )
            for run_id in expected
            if not (
                run_id in runs
                and (
                    (runs[run_id].state == RunState.SUCCEEDED and (ran is None or run_id in ran))
                    or (runs[run_id].state == RunState.LOST and runs[run_id].supervisor in killed)
                    or runs[run_id].state == RunState.SKIPPED
                )
            )
        ]

    try:
        wait_for(lambda: not unsettled(), 120, "")
    except AssertionError:
        left = unsettled()
        raise AssertionError(
            f"{len(left)} of {len(expected)} slots of {job} neither succeeded nor lost with a killed "
            f"supervisor (id, state, supervisor): {left[:10]}; logs in {cluster.workdir}"
        ) from None
    runs = {run.id: run for run in cluster.runs(job)}
    return [runs[run_id] for run_id in expected]


def registered(cluster, names: list[str]) -> bool:
    """Whether each of ``names`` is registered by its current process (not a dead predecessor)."""
    with open_lease_store(cluster.settings) as store:
        pids = {s.name: s.info.get("pid") for s in store.supervisors()}
    return all(pids.get(name) == cluster.processes[name].pid for name in names)


@pytest.mark.slow
def test_leaders_killed_and_restarted_under_their_names_skip_and_double_nothing(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.add_job("tick", "kirby-example-hello", cron=EVERY_SECOND, config={"KIRBY_RUN_LEDGER": str(ledger)})
    cluster.add_job("slow", "kirby-example-sleep", cron=EVERY_FIVE, config={"SLEEP_SECONDS": "2"})
    cluster.start_web()
    names = ["s1", "s2", "s3"]
    for name in names:
        cluster.start_supervisor(name, window=WINDOW)
    leader, epoch = cluster.wait_leader()
    wait_for(lambda: ledger_ids(ledger), 120, "no run reached its script")
    start = datetime.now(timezone.utc)
    killed, kills, deaths = set(), [], []
    soak_until = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < soak_until or len(kills) < 3:
        # A failover needs live followers: the restarted supervisors are back (slow under load; the
        # failover figures would otherwise measure a restart, not a failover).
        wait_for(lambda: registered(cluster, names), 120, "a restarted supervisor did not register")
        seen = len(ledger_ids(ledger))
        wait_for(lambda: len(ledger_ids(ledger)) >= seen + 3, 60, "runs stopped arriving")
        victims = [leader] + ([next(n for n in names if n != leader)] if len(kills) == 1 else [])  # a follower too
        kills.append(time.time())
        for victim in victims:
            cluster.signal(victim, signal.SIGKILL)
            killed.add(victim)
            deaths.append((time.time(), victim))
        time.sleep(RESTART_AFTER)  # the restart delay being simulated, not a condition to await
        for victim in victims:
            cluster.start_supervisor(victim, window=WINDOW)  # under its own name
        leader, epoch = wait_for(
            lambda: (lambda held: held if held and held[1] > epoch else None)(cluster.leader()),
            60,
            "no new leader was elected",
        )
    end = datetime.now(timezone.utc)
    after = (end + timedelta(seconds=3)).timestamp()
    wait_for(
        lambda: [r for r in ledger_ids(ledger) if parse_run_id(r).instant.timestamp() >= after],
        60,
        "runs stopped after the last failover",
    )
    for name in names:
        assert cluster.processes[name].poll() is None, f"{name} exited: {cluster.log_of(name)[-2000:]}"
        assert "already running" not in cluster.log_of(name), f"a restart of {name} was refused"
    ticks = settled(cluster, "tick", EVERY_SECOND, start, end, killed, ledger)
    slows = settled(cluster, "slow", EVERY_FIVE, start, end, killed)
    twice = [run_id for run_id, count in Counter(ledger_ids(ledger)).items() if count > 1]
    assert not twice, f"ran more than once: {twice}"
    assert len(ticks) >= 20 and len(slows) >= 4
    # forbid (the default) may skip a slot only while an earlier slot's run really runs: on a loaded
    # machine an every-second run can outlast its second. No skip may come from a dead supervisor's
    # run, from a later slot, or from a lease left behind.
    skipped = [run.id for run in ticks + slows if run.state == RunState.SKIPPED]
    wrong = unjustified_skips(cluster.runs("tick"), deaths) + unjustified_skips(cluster.runs("slow"), deaths)
    assert not wrong, f"slots skipped although no earlier run was running: {wrong}; logs in {cluster.workdir}"
    lost = [run.id for run in ticks + slows if run.state == RunState.LOST]
    wrong = unjustified_losses(cluster.runs("tick"), deaths) + unjustified_losses(cluster.runs("slow"), deaths)
    assert not wrong, f"runs recorded lost although their supervisor was not killed while it held them: {wrong}"
    stranded = lambda: [  # noqa: E731
        run.id
        for run in cluster.runs("tick") + cluster.runs("slow")
        if run.scheduled_at.replace(tzinfo=timezone.utc) <= end
        and run.state in (RunState.OFFERED, RunState.CLAIMED, RunState.RUNNING)
    ]
    wait_for(lambda: not stranded(), 60, f"runs left claimed or running: {stranded()}")
    # The failover figures: leader SIGKILL to the script of the next slot running.
    times = ledger_times(ledger)
    gaps = []
    for killed_at in kills:
        after = [t for run_id, t in times.items() if parse_run_id(run_id).instant.timestamp() > killed_at]
        gaps.append(min(after) - killed_at)
    figures = {
        "backend": "kafka-redis" if "REDIS_URL" in cluster.env else "embedded",
        "window": WINDOW,
        "kills": len(kills),
        "gap_max_s": round(max(gaps), 2),
        "gap_mean_s": round(sum(gaps) / len(gaps), 2),
        "gaps_s": [round(gap, 2) for gap in gaps],
        "slots": len(ticks) + len(slows),
        "skipped": len(skipped),  # all justified: an earlier slot's run was still running
        "run_seconds_max": round(
            max((_utc(r.finished_at) - _utc(r.started_at)) for r in ticks if r.state == RunState.SUCCEEDED), 2
        ),
        "lost": len(lost),
    }
    print("failover figures:", json.dumps(figures))
    (cluster.workdir / "figures.json").write_text(json.dumps(figures))


@pytest.mark.slow
def test_a_run_orphaned_before_its_spawn_runs_elsewhere_under_the_same_id(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.private_venvs()
    cluster.add_job(  # overlap allow: the runs released together by the build must not skip each other
        "once", "kirby-example-hello", cron=EVERY_FIVE, overlap=Overlap.ALLOW, config={"KIRBY_RUN_LEDGER": str(ledger)}
    )
    cluster.start_web()
    with cluster.hold_build("kirby-example-hello"):  # every prepare waits: claimed, never started
        for name in ("s1", "s2"):
            cluster.start_supervisor(name)
        with open_lease_store(cluster.settings) as store:
            first = wait_for(lambda: store.active_claims(), 120, "no run was claimed")[0]
            cluster.signal(first.supervisor, signal.SIGKILL)
            moved = wait_for(
                lambda: (lambda c: c if c and c.supervisor != first.supervisor else None)(
                    store.get_claim(first.run_id)
                ),
                60,
                f"run {first.run_id} of the killed {first.supervisor} was not claimed again",
            )
    assert moved.instance != first.instance and moved.started_at is None
    wait_for(lambda: first.run_id in ledger_ids(ledger), 120, f"run {first.run_id} never ran")
    run = wait_for(
        lambda: [r for r in cluster.runs("once") if r.id == first.run_id and r.state == RunState.SUCCEEDED],
        60,
        f"run {first.run_id} was not recorded succeeded",
    )[0]
    assert ledger_ids(ledger).count(first.run_id) == 1
    assert run.supervisor == moved.supervisor


@pytest.mark.slow
def test_a_killed_supervisor_s_started_run_is_lost_although_its_name_is_back_at_once(cluster):
    """With a 15 s registration TTL (--window 5) the restart is back well within it: the new process
    takes the name over from its dead predecessor and settles its runs at once."""
    cluster.add_job("long", "kirby-example-sleep", cron=EVERY_FIVE, config={"SLEEP_SECONDS": "600"})
    cluster.start_web()
    for name in ("s1", "s2"):
        cluster.start_supervisor(name, window=5.0)
    running = wait_for(
        lambda: [r for r in cluster.runs("long") if r.state == RunState.RUNNING], 120, "the long run did not start"
    )[0]
    name = running.supervisor
    cluster.signal(name, signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.start_supervisor(name, window=5.0)  # back under its name at once
    wait_for(lambda: cluster.log_of(name).count(f"supervisor {name} started") == 2, 60, f"{name} did not start again")
    lost = wait_for(
        lambda: [r for r in cluster.runs("long") if r.id == running.id and r.state == RunState.LOST],
        60,
        f"run {running.id} was not marked lost",
    )[0]
    assert time.monotonic() - killed_at < 15, "lost only after the registration expired, not at the takeover"
    assert "died" in lost.error and "last seen" in lost.error
    log = cluster.log_of(name)
    assert "taking the name over" in log and "already running" not in log
    assert cluster.processes[name].poll() is None


@pytest.mark.slow
def test_a_supervisor_killed_during_a_daemon_s_venv_build_never_leaves_two_instances(cluster):
    pidfile = cluster.workdir / "daemon-pids"
    cluster.private_venvs()
    cluster.add_job("sensor", "kirby-example-daemon", daemon=True, config={"KIRBY_DAEMON_PIDFILE": str(pidfile)})
    cluster.start_web()
    window = 1.0  # daemon lease TTL: 3 s
    with open_lease_store(cluster.settings) as store:
        with cluster.hold_build("kirby-example-daemon"):
            for name in ("s1", "s2", "s3"):
                cluster.start_supervisor(name, window=window)
            holder = wait_for(lambda: store.lease_holder("daemon:sensor:e2e"), 120, "nobody took the daemon")
            deadline = time.monotonic() + 3 * 3 * window  # a build three times as long as the lease
            while time.monotonic() < deadline:
                now = store.lease_holder("daemon:sensor:e2e")
                assert now is not None and now.owner == holder.owner, "the lease moved during the build"
                time.sleep(0.2)
            cluster.signal(holder.owner.partition("@")[0], signal.SIGKILL)
            successor = wait_for(
                lambda: (lambda h: h if h and h.owner != holder.owner else None)(
                    store.lease_holder("daemon:sensor:e2e")
                ),
                60,
                "the daemon did not move",
            )
        assert successor.generation > holder.generation
        wait_for(lambda: lifetimes(pidfile), 120, "the daemon did not start after the build")
        time.sleep(3 * 3 * window)  # a few lease periods of watching: nothing else may start
    running = [pid for pid, (_, stop) in lifetimes(pidfile).items() if stop is None]
    assert len(running) == 1 and len(lifetimes(pidfile)) == 1, f"daemon instances: {lifetimes(pidfile)}"
    assert_never_two_at_once(pidfile, {})
