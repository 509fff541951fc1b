"""The arbiter on the embedded lease store, with the real example daemon.

One instance per daemon across supervisors, spreading, takeover after the holder stops renewing,
self-fencing, restarts on a new version, and stopping a daemon that is no longer wanted.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from kirby.bus import open_bus
from kirby.events import Offer
from kirby.lease import open_lease_store
from kirby.supervisor.arbiter import Arbiter, DaemonSpec
from kirby.supervisor.reporting import RunReporter
from kirby.tasks.executor import LocalExecutor
from tests.helpers import wait_for

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


def daemon(name: str, pidfile: Path, version: str = "1.0.0") -> DaemonSpec:
    offer = Offer(
        run_id="",
        slot_id="",
        job=name,
        environment="dev",
        package="kirby-example-daemon",
        version=version,
        scheduled_at=NOW,
        config={"KIRBY_DAEMON_PIDFILE": str(pidfile)},
    )
    return DaemonSpec(name, "dev", offer)


def instances(pidfile: Path) -> list[int]:
    """PIDs started and not stopped, from the daemon's own start/stop records."""
    alive: list[int] = []
    if pidfile.exists():
        for line in pidfile.read_text().splitlines():
            event, pid, _ = line.split()
            if event == "start":
                alive.append(int(pid))
            else:
                alive.remove(int(pid))
    return alive


@pytest.fixture
def arbiters(make_settings, example_wheels, shared_venvs, tmp_path):
    settings = make_settings(KIRBY_PACKAGE_INDEX=str(example_wheels), KIRBY_VENV_DIRECTORY=str(shared_venvs))
    leases, bus = open_lease_store(settings), open_bus(settings)
    made = []

    def make(name: str, ttl: float = 3.0) -> Arbiter:
        executor = LocalExecutor(settings, name, timeout_grace=1.0)
        reporter = RunReporter(bus, name)
        arbiter = Arbiter(
            name, leases, executor, reporter, ttl=ttl, max_backoff=1.0, fence_directory=tmp_path / "fences" / name
        )
        made.append((arbiter, executor, reporter))
        return arbiter

    yield SimpleNamespace(make=make, leases=leases)
    for arbiter, executor, reporter in made:
        arbiter.stop_all()
        executor.shutdown(grace=1.0)
        reporter.close()
    bus.close()
    leases.close()


def step(arbiter: Arbiter, daemons: list[DaemonSpec], live_supervisors: int) -> None:
    """What a supervisor does every few seconds: renew (heartbeat thread), then converge (housekeeping)."""
    arbiter.renew()
    arbiter.tick(daemons, live_supervisors)


def test_one_instance_and_takeover_when_the_holder_stops_renewing(arbiters, tmp_path):
    pidfile = tmp_path / "pids"
    spec = [daemon("sensor", pidfile)]
    a, b = arbiters.make("alpha"), arbiters.make("beta")
    step(a, spec, live_supervisors=2)
    step(b, spec, live_supervisors=2)
    assert (a.held(), b.held()) == (["daemon:sensor:dev"], [])
    first = wait_for(lambda: instances(pidfile), 60, "the daemon did not start")
    assert len(first) == 1
    # alpha cannot renew (here: it stops ticking until its lease has expired); on its next tick it
    # fences itself (kills its process) and beta takes over.
    wait_for(lambda: not arbiters.leases.lease_holders("daemon"), 10, "alpha's lease did not expire")
    step(a, spec, live_supervisors=2)
    assert a.held() == []
    wait_for(lambda: instances(pidfile) == [], 10, "alpha did not stop its process")
    step(b, spec, live_supervisors=2)
    assert b.held() == ["daemon:sensor:dev"]
    second = wait_for(lambda: instances(pidfile), 60, "beta's instance did not start")
    assert len(second) == 1 and second != first


def test_a_frozen_holder_s_daemon_stops_itself_before_its_lease_expires(arbiters, tmp_path):
    """The holder stops ticking (frozen, or cut off from the store): its daemon's reaper sees the
    fence file go stale and stops it before the lease expires, so the next holder never overlaps."""
    pidfile = tmp_path / "pids"
    spec = [daemon("sensor", pidfile)]
    a, b = arbiters.make("alpha"), arbiters.make("beta")
    step(a, spec, live_supervisors=2)
    (first,) = wait_for(lambda: instances(pidfile), 60, "the daemon did not start")
    renewed = time.time()
    step(a, spec, live_supervisors=2)  # a last renewal, then alpha freezes
    wait_for(lambda: not instances(pidfile), 10, "the frozen holder's daemon kept running")
    stopped = [float(line.split()[2]) for line in pidfile.read_text().splitlines() if line.startswith("stop")][0]
    assert stopped < renewed + 3.0, "the daemon stopped only after its lease could have expired"
    wait_for(lambda: step(b, spec, 2) or b.held(), 15, "beta never took over")
    wait_for(lambda: instances(pidfile), 60, "beta's instance did not start")
    assert len(instances(pidfile)) == 1


def test_daemons_spread_among_supervisors(arbiters, tmp_path):
    specs = [daemon(f"d{i}", tmp_path / f"p{i}") for i in range(4)]
    a, b = arbiters.make("alpha"), arbiters.make("beta")
    step(a, specs, live_supervisors=2)
    step(b, specs, live_supervisors=2)
    assert len(a.held()) == 2 and len(b.held()) == 2
    assert set(a.held()) | set(b.held()) == {s.key for s in specs}


def test_a_changed_daemon_restarts_and_a_removed_daemon_stops(arbiters, tmp_path):
    pidfile = tmp_path / "pids"
    a = arbiters.make("alpha")
    spec = daemon("sensor", pidfile)
    step(a, [spec], live_supervisors=1)
    first = wait_for(lambda: instances(pidfile), 60, "the daemon did not start")
    changed = DaemonSpec("sensor", "dev", replace(spec.offer, config={**spec.offer.config, "MODE": "fast"}))
    step(a, [changed], live_supervisors=1)
    assert instances(pidfile) == [], "the old instance still runs"
    step(a, [changed], live_supervisors=1)
    second = wait_for(lambda: instances(pidfile), 60, "the changed daemon did not start")
    assert second != first
    step(a, [], live_supervisors=1)
    assert instances(pidfile) == [] and a.held() == []
    assert arbiters.leases.lease_holders("daemon") == {}


def test_a_crashed_daemon_is_restarted(arbiters, tmp_path):
    import os
    import signal

    pidfile = tmp_path / "pids"
    a = arbiters.make("alpha")
    spec = [daemon("sensor", pidfile)]
    step(a, spec, live_supervisors=1)
    (pid,) = wait_for(lambda: instances(pidfile), 60, "the daemon did not start")
    os.kill(pid, signal.SIGKILL)  # it cannot record its stop: it stays in the file
    restarted = wait_for(
        lambda: step(a, spec, 1) or [p for p in instances(pidfile) if p != pid],
        30,
        "the crashed daemon was not restarted",
    )
    assert len(restarted) == 1
