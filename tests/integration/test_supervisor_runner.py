"""The runner on the embedded bus and lease store, with real runs of the example packages.

Every offer is claimed exactly once, stale epochs are fenced, failed runs are retried as new
attempts, and the overlap policies hold.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from kirby.bus import open_bus
from kirby.events import Offer, log_texts
from kirby.lease import open_lease_store
from kirby.run_ids import slot_run_id
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.runner import Runner
from kirby.tasks.executor import LocalExecutor
from tests.helpers import wait_for

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def make_offer(package: str = "kirby-example-hello", run_id: str = "hello:dev:20260301T120000Z", **fields) -> Offer:
    return Offer(
        run_id=run_id,
        slot_id=fields.pop("slot_id", run_id),
        job=fields.pop("job", "hello"),
        environment="dev",
        package=package,
        version="1.0.0",
        scheduled_at=SLOT,
        **fields,
    )


class Events:
    """Collects run events from the bus in a background thread."""

    def __init__(self, bus):
        self.items = []
        self._consumer = bus.event_consumer("test-events", "collector")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            for delivery in self._consumer.poll(0.2):
                self.items.append(delivery.message)
                self._consumer.ack(delivery)

    def of(self, run_id: str, kind: str | None = None):
        return [e for e in list(self.items) if e.run_id == run_id and (kind is None or e.kind == kind)]

    def finished(self, run_id: str):
        found = self.of(run_id, "finished")
        return found[0] if found else None

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


@pytest.fixture
def cluster(make_settings, example_wheels, shared_venvs):
    settings = make_settings(KIRBY_PACKAGE_INDEX=str(example_wheels), KIRBY_VENV_DIRECTORY=str(shared_venvs))
    leases, bus = open_lease_store(settings), open_bus(settings)
    events = Events(bus)
    made = []

    def runner(name: str) -> Runner:
        executor = LocalExecutor(settings, name, timeout_grace=1.0)
        reporter = RunReporter(bus, name)
        made.append((executor, reporter))
        leases.register_supervisor(name, f"instance-{name}", 600)  # a live instance: its leases count
        return Runner(name, bus.offer_consumer(name), bus, leases, executor, reporter, instance=f"instance-{name}")

    def pump(runners, until, message, timeout=60.0):
        """Let ``runners`` consume until ``until()`` is true."""

        def step():
            for r in runners:
                r.poll_once(timeout=0.05)
                r.renew_overlaps()
                r.check_cancels()
            return until()

        return wait_for(step, timeout, message, interval=0.0)

    yield SimpleNamespace(settings=settings, leases=leases, bus=bus, events=events, runner=runner, pump=pump)
    for executor, reporter in made:
        executor.shutdown(grace=1.0)
        reporter.close()
    events.close()
    bus.close()
    leases.close()


def test_an_offer_published_twice_runs_once(cluster):
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    offer = make_offer()
    cluster.bus.publish_offer(offer)
    cluster.bus.publish_offer(offer)
    cluster.pump([a, b], lambda: a.counters.duplicates + b.counters.duplicates == 1, "the second copy was not dropped")
    finished = cluster.pump([a, b], lambda: cluster.events.finished(offer.run_id), "the run did not finish")
    assert a.counters.claimed + b.counters.claimed == 1
    assert finished.data["state"] == "succeeded"
    assert len(cluster.events.of(offer.run_id, "started")) == 1
    claim = cluster.leases.get_claim(offer.run_id)
    assert claim.supervisor == finished.supervisor
    lines = [text for e in cluster.events.of(offer.run_id, "log") for text in log_texts(e)]
    assert any(offer.run_id in line for line in lines), lines


def test_an_offer_of_a_stale_epoch_is_dropped(cluster):
    old = cluster.leases.acquire_leader("old-leader", ttl=30)
    cluster.leases.release_leader("old-leader", old)
    assert cluster.leases.acquire_leader("new-leader", ttl=30) == old + 1
    runner = cluster.runner("alpha")
    stale = make_offer(epoch=old)
    cluster.bus.publish_offer(stale)
    cluster.pump([runner], lambda: runner.counters.stale == 1, "the stale offer was not fenced")
    assert runner.counters.claimed == 0
    assert cluster.leases.get_claim(stale.run_id) is None


def test_a_failed_run_is_retried_as_its_own_attempt(cluster):
    runner = cluster.runner("alpha")
    offer = make_offer("kirby-example-fail", run_id="fail:dev:20260301T120000Z", job="fail", retries=1)
    cluster.bus.publish_offer(offer)
    second = f"{offer.run_id}#2"
    cluster.pump([runner], lambda: cluster.events.finished(second), "the second attempt did not finish")
    assert cluster.events.finished(offer.run_id).data["exit_code"] == 1
    assert cluster.events.finished(second).data["state"] == "failed"
    assert cluster.leases.get_claim(second).attempt == 2
    cluster.pump([runner], lambda: runner.counters.finished == 2, "attempts were not counted")
    assert runner.poll_once(timeout=0.5) == 0, "a third attempt was published beyond the retries"


def sleeper(run_id: str, overlap: str, seconds: str = "60") -> Offer:
    return make_offer(
        "kirby-example-sleep", run_id=run_id, job="sleep", overlap=overlap, config={"SLEEP_SECONDS": seconds}
    )


def test_overlap_forbid_skips_a_run_while_the_previous_one_runs(cluster):
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    first, second = sleeper("sleep:dev:1", "forbid"), sleeper("sleep:dev:2", "forbid")
    cluster.bus.publish_offer(first)
    cluster.pump([a, b], lambda: cluster.events.of(first.run_id, "started"), "the first run did not start")
    cluster.bus.publish_offer(second)
    skipped = cluster.pump([a, b], lambda: cluster.events.of(second.run_id, "skipped"), "the overlap was not refused")
    assert "sleep:dev:1" in skipped[0].data["error"]
    assert not cluster.events.of(second.run_id, "started")
    assert not cluster.events.finished(first.run_id), "the running run was disturbed"


def test_overlap_replace_stops_the_previous_run(cluster):
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    first, second = sleeper("sleep:dev:1", "replace"), sleeper("sleep:dev:2", "replace", seconds="0.5")
    cluster.bus.publish_offer(first)
    cluster.pump([a, b], lambda: cluster.events.of(first.run_id, "started"), "the first run did not start")
    cluster.bus.publish_offer(second)
    cluster.pump([a, b], lambda: cluster.events.finished(second.run_id), "the replacing run did not finish")
    ended = cluster.events.finished(first.run_id)
    assert ended is not None and ended.data["error"] == "stopped by its supervisor"
    assert ended.time <= cluster.events.of(second.run_id, "started")[0].time


def test_overlap_allow_runs_side_by_side(cluster):
    runner = cluster.runner("alpha")
    offers = [replace(sleeper(f"sleep:dev:{i}", "allow", seconds="1"), slot_id=f"s{i}") for i in range(2)]
    for offer in offers:
        cluster.bus.publish_offer(offer)
    cluster.pump([runner], lambda: all(cluster.events.finished(o.run_id) for o in offers), "the runs did not finish")
    starts = [cluster.events.of(o.run_id, "started")[0].time for o in offers]
    ends = [cluster.events.finished(o.run_id).time for o in offers]
    assert max(starts) < min(ends), "the runs did not overlap"


def test_an_offer_received_after_its_not_after_is_recorded_skipped_not_run(cluster):
    """Whatever the bus redelivers, no slot starts after the end of its misfire grace (issue 10)."""
    runner = cluster.runner("alpha")
    expired = make_offer(not_after=datetime.now(timezone.utc) - timedelta(seconds=1))
    in_time = make_offer(run_id="hello:dev:20260301T120001Z", not_after=datetime.now(timezone.utc) + timedelta(hours=1))
    cluster.bus.publish_offers([expired, in_time])
    skipped = cluster.pump([runner], lambda: cluster.events.of(expired.run_id, "skipped"), "the expired offer ran")
    assert skipped[0].data["error"].startswith("expired: received at ")
    cluster.pump([runner], lambda: cluster.events.finished(in_time.run_id), "the offer in time did not run")
    assert runner.counters.expired == 1 and runner.counters.started == 1
    assert not cluster.events.of(expired.run_id, "started")
    assert cluster.leases.get_claim(expired.run_id).supervisor == "alpha"  # decided once, by its claim


def slot_sleeper(second: int, overlap: str, seconds: str = "60") -> Offer:
    """A sleeper of the slot ``second`` seconds after SLOT, with its real slot run id."""
    instant = SLOT + timedelta(seconds=second)
    run_id = slot_run_id("sleep", "dev", instant)
    offer = make_offer("kirby-example-sleep", run_id=run_id, job="sleep", overlap=overlap)
    return replace(offer, scheduled_at=instant, config={"SLEEP_SECONDS": seconds})


def test_forbid_never_skips_an_earlier_slot_because_a_later_one_runs(cluster):
    """A re-published slot of a failover gap arrives after the next punctual slot started: it runs."""
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    later, earlier = slot_sleeper(2, "forbid"), slot_sleeper(1, "forbid", seconds="0.5")
    cluster.bus.publish_offer(later)
    cluster.pump([a, b], lambda: cluster.events.of(later.run_id, "started"), "the later run did not start")
    cluster.bus.publish_offer(earlier)
    cluster.pump([a, b], lambda: cluster.events.finished(earlier.run_id), "the earlier slot did not run")
    assert cluster.events.finished(earlier.run_id).data["state"] == "succeeded"
    assert not cluster.events.of(earlier.run_id, "skipped")


def test_forbid_takes_over_the_overlap_lease_of_a_dead_supervisor_instance(cluster):
    """The run that held the lease died with its supervisor (its instance is not registered)."""
    first = slot_sleeper(1, "forbid")
    assert cluster.leases.acquire_lease("overlap:sleep:dev", f"{first.run_id}@dead-instance", 600)
    runner = cluster.runner("alpha")
    second = slot_sleeper(2, "forbid", seconds="0.5")
    cluster.bus.publish_offer(second)
    cluster.pump([runner], lambda: cluster.events.finished(second.run_id), "the run did not run")
    assert not cluster.events.of(second.run_id, "skipped")


def test_buffer_one_lets_one_slot_wait_and_skips_the_others_while_it_waits(cluster):
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    first = slot_sleeper(1, "buffer_one", seconds="3")
    waiting, third = slot_sleeper(2, "buffer_one", seconds="0.5"), slot_sleeper(3, "buffer_one", seconds="0.5")
    cluster.bus.publish_offer(first)
    cluster.pump([a, b], lambda: cluster.events.of(first.run_id, "started"), "the first run did not start")
    cluster.bus.publish_offer(waiting)
    cluster.pump([a, b], lambda: cluster.leases.lease_holder("overlap-wait:sleep:dev"), "the second run did not wait")
    cluster.bus.publish_offer(third)
    skipped = cluster.pump([a, b], lambda: cluster.events.of(third.run_id, "skipped"), "the third was not skipped")
    assert "another run already waits" in skipped[0].data["error"]
    cluster.pump([a, b], lambda: cluster.events.finished(waiting.run_id), "the waiting run did not run")
    assert cluster.events.of(waiting.run_id, "started")[0].time >= cluster.events.finished(first.run_id).time
    wait_for(lambda: cluster.leases.active_claims() == [], 10, "claims were left unsettled")


def test_offers_published_ahead_are_claimed_at_once_and_their_scripts_start_at_the_instant(cluster, tmp_path):
    """Issue 14: the leader publishes slots ahead of their instant; the runner claims them, spawns
    their processes held, and releases each script at its instant (never before), marking the runs
    of the instant started together."""
    a, b = cluster.runner("alpha"), cluster.runner("beta")
    ledger = tmp_path / "ledger"
    instant = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    offers = [
        replace(make_offer(run_id=slot_run_id(f"hello{n}", "dev", instant), job=f"hello{n}"), scheduled_at=instant)
        for n in range(6)
    ]
    offers = [replace(o, slot_id=o.run_id, config={"KIRBY_RUN_LEDGER": str(ledger)}) for o in offers]
    cluster.bus.publish_offers(offers)
    cluster.pump(
        [a, b],
        lambda: a.counters.claimed + b.counters.claimed == 6,
        "the offers published ahead were not claimed",
        timeout=30,
    )
    assert datetime.now(timezone.utc) < instant, "claimed before the instant (the machine is very slow)"
    assert a.counters.started + b.counters.started == 0, "a script was started before its instant"
    cluster.pump(
        [a, b],
        lambda: all(cluster.events.finished(o.run_id) for o in offers),
        "the runs did not finish after their instant",
    )
    starts = {line.split()[0]: float(line.split()[2]) for line in ledger.read_text().splitlines()}
    assert set(starts) == {o.run_id for o in offers}
    assert min(starts.values()) >= instant.timestamp(), "a script ran before its instant"
    for offer in offers:
        assert cluster.events.finished(offer.run_id).data["state"] == "succeeded"
        [started] = cluster.events.of(offer.run_id, "started")
        assert started.time >= instant
        assert cluster.leases.get_claim(offer.run_id).claimed_at < instant
