"""The runner's overlap leases across lease-store amnesia (issue 10), on the embedded bus and lease
store with real runs: a ``forbid`` run that started before the store lost its data still fences
the next slots once the store is rebuilt, and no run takes the overlap lease while it is closed."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace

from kirby.run_ids import slot_run_id
from kirby.supervisor.amnesia import GenerationWatch
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.runner import Runner
from kirby.tasks.executor import LocalExecutor
from tests.integration.test_supervisor_runner import SLOT, cluster, slot_sleeper  # noqa: F401 (fixture)


def forget_the_leases(settings) -> None:
    """What deleting the embedded file's lease data does (the bus is left alone)."""
    with sqlite3.connect(settings.embedded_path) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'lease_%'"):
            db.execute(f"DELETE FROM {table}")


def test_a_forbid_run_running_across_amnesia_keeps_fencing_the_next_slots(cluster):  # noqa: F811
    leases, made = cluster.leases, []

    def supervisor(name: str) -> tuple[Runner, GenerationWatch]:
        watch = GenerationWatch(leases, name)
        watch.check()
        executor, reporter = LocalExecutor(cluster.settings, name, timeout_grace=1.0), RunReporter(cluster.bus, name)
        made.append((executor, reporter))
        leases.register_supervisor(name, f"instance-{name}", 600)
        runner = Runner(
            name,
            cluster.bus.offer_consumer(name),
            cluster.bus,
            leases,
            executor,
            reporter,
            instance=f"instance-{name}",
            generation=lambda: watch.marker,
        )
        watch.on_loss(runner.reassert_overlaps)
        return runner, watch

    try:
        (a, watch_a), (b, watch_b) = supervisor("alpha"), supervisor("beta")
        first = slot_sleeper(1, "forbid", seconds="60")
        cluster.bus.publish_offer(first)
        cluster.pump([a, b], lambda: cluster.events.of(first.run_id, "started"), "the first run did not start")
        runs_first = a if first.run_id in a.executor.running() else b
        forget_the_leases(cluster.settings)
        for name in ("alpha", "beta"):  # their next heartbeats
            leases.register_supervisor(name, f"instance-{name}", 600)
        for watch in (watch_a, watch_b):  # each notices the loss; the first run's supervisor writes back its lease
            watch.check()
        assert not watch_a.open and watch_a.detected == watch_b.detected == 1
        holder = leases.lease_holder("overlap:sleep:dev")
        assert holder is not None and holder.owner == f"{first.run_id}@{runs_first.instance}"

        # A run of another job (its lease free) reaching its overlap policy while closed waits.
        waiting = replace(slot_sleeper(2, "forbid"), job="other", run_id=slot_run_id("other", "dev", SLOT))
        other = b if runs_first is a else a
        decided: list[bool] = []
        thread = threading.Thread(target=lambda: decided.append(other.overlap.take(waiting) is None), daemon=True)
        thread.start()
        thread.join(1.5)
        assert thread.is_alive() and not decided, "an overlap lease was given while the store was closed"

        epoch = leases.acquire_leader("leader", 30)
        assert leases.open_generation(watch_a.marker, epoch, "leader")  # the rebuild is done
        for watch in (watch_a, watch_b):
            watch.check()
        thread.join(30)
        assert decided == [True], "the waiting run did not take its free lease once the store reopened"
        other.overlap.release(waiting.run_id)

        third = slot_sleeper(3, "forbid", seconds="0.5")
        cluster.bus.publish_offer(third)
        skipped = cluster.pump([a, b], lambda: cluster.events.of(third.run_id, "skipped"), "the third slot ran")
        assert first.run_id in skipped[0].data["error"]
        assert not cluster.events.of(third.run_id, "started")
        assert not cluster.events.finished(first.run_id), "the running run was disturbed"
    finally:
        for executor, reporter in made:
            executor.shutdown(grace=1.0)
            reporter.close()
