"""A daemon runs as exactly one instance in the cluster, and moves when its supervisor dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from kirby.lease import open_lease_store
from tests.helpers import wait_for


def lifetimes(pidfile) -> dict[int, list[float | None]]:
    """pid -> [start, stop or None], from the daemon's own records."""
    spans: dict[int, list[float | None]] = {}
    if pidfile.exists():
        for line in pidfile.read_text().splitlines():
            event, pid, when = line.split()
            if event == "start":
                spans[int(pid)] = [float(when), None]
            else:
                spans[int(pid)][1] = float(when)
    return spans


def assert_never_two_at_once(pidfile, seen_gone: dict[int, float]) -> None:
    """No two lifetimes overlap; a pid without a stop record ended by ``seen_gone[pid]`` (or runs)."""
    spans = sorted(
        (start, stop if stop is not None else seen_gone.get(pid, float("inf")), pid)
        for pid, (start, stop) in lifetimes(pidfile).items()
    )
    for (_, stop, pid), (start, _, other) in zip(spans, spans[1:]):
        assert start >= stop, f"daemon instances {pid} and {other} ran at the same time"


@pytest.mark.slow
def test_a_daemon_runs_once_and_moves_when_its_supervisor_is_killed(cluster):
    pidfile = cluster.workdir / "daemon-pids"
    cluster.add_job("sensor", "kirby-example-daemon", daemon=True, config={"KIRBY_DAEMON_PIDFILE": str(pidfile)})
    cluster.start_web()
    for name in ("s1", "s2", "s3"):
        cluster.start_supervisor(name)
    first = wait_for(
        lambda: [pid for pid, (_, stop) in lifetimes(pidfile).items() if stop is None], 120, "the daemon did not start"
    )
    assert len(first) == 1
    with open_lease_store(cluster.settings) as store:
        holder = store.lease_holder("daemon:sensor:e2e").owner.partition("@")[0]
    killed_at = time.time()
    cluster.signal(holder, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{first[0]}").exists(), 30, "the daemon outlived its killed supervisor")
    gone_at = time.time()  # it may have been SIGKILLed after the grace, too late to record its stop
    moved = wait_for(
        lambda: [pid for pid, (_, stop) in lifetimes(pidfile).items() if stop is None and pid != first[0]],
        60,
        "the daemon did not move to another supervisor",
    )
    took = lifetimes(pidfile)[moved[0]][0] - killed_at
    ttl = 3 * 2.0  # the daemon lease: 3 x the supervisors' --window
    assert took < ttl + 20, f"the daemon moved {took:.1f} s after the kill (lease TTL {ttl:g} s)"
    with open_lease_store(cluster.settings) as store:
        assert store.lease_holder("daemon:sensor:e2e").owner.partition("@")[0] != holder
    assert_never_two_at_once(pidfile, {first[0]: gone_at})
    assert [
        pid for pid, (_, stop) in lifetimes(pidfile).items() if stop is None and Path(f"/proc/{pid}").exists()
    ] == moved[:1]
