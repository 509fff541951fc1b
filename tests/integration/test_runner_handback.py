"""A full member hands back offers routed to it (issue 14), on the real Kafka broker and Redis.

The leader routes offers by the members' advertised room, which is up to a heartbeat old: an offer
can land in the partition of a member that has just filled up. That member does not leave it there
until it has room: it re-publishes it, unclaimed, to a partition of a member with room, then
acknowledges it; with nobody else having room, the offer waits for it (nothing is lost).
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from kirby.bus import open_bus
from kirby.bus.kafka_topics import delete_topics
from kirby.clock import utcnow
from kirby.lease import open_lease_store
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.routing import handback_routes
from kirby.supervisor.runner import Runner
from kirby.tasks.executor import LocalExecutor
from tests.helpers import wait_for
from tests.integration.test_supervisor_runner import Events, make_offer

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def kafka_cluster(make_settings, kafka_servers, redis_url, example_wheels, shared_venvs):
    name = uuid.uuid4().hex[:10]
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_servers,
        REDIS_URL=redis_url,
        KIRBY_REDIS_PREFIX=f"kirby-test-{name}:",
        KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
        KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
        KIRBY_SUPERVISOR_GROUP_ID=f"supervisors-{name}",
        KIRBY_PACKAGE_INDEX=str(example_wheels),
        KIRBY_VENV_DIRECTORY=str(shared_venvs),
    )
    leases, bus = open_lease_store(settings), open_bus(settings)
    events = Events(bus)
    runners: dict[str, Runner] = {}
    made = []

    def runner(member: str, capacity: int) -> Runner:
        executor, reporter = LocalExecutor(settings, member, timeout_grace=1.0), RunReporter(bus, member)
        made.append((executor, reporter))
        runners[member] = Runner(
            member,
            bus.offer_consumer(member),
            bus,
            leases,
            executor,
            reporter,
            capacity=capacity,
            instance=f"instance-{member}",
            handback=lambda n: handback_routes(leases.supervisors(), member, utcnow(), 30.0, n),
        )
        return runners[member]

    def advertise() -> None:
        """What each supervisor's heartbeat does: its partitions, capacity and busy count."""
        for member, r in runners.items():
            info = {"offer_partition_ids": r.consumer.assigned(), "capacity": r.capacity, "busy": r.busy}
            leases.register_supervisor(member, f"instance-{member}", 600, info)

    def pump(until, message, timeout=90.0):
        def step():
            for r in runners.values():
                r.poll_once(timeout=0.05)
            return until()

        return wait_for(step, timeout, message, interval=0.0)

    yield SimpleNamespace(leases=leases, bus=bus, events=events, runner=runner, advertise=advertise, pump=pump)
    for executor, reporter in made:
        executor.shutdown(grace=1.0)
        reporter.close()
    events.close()
    for r in runners.values():
        r.consumer.close()
    bus.close()
    leases.close()
    delete_topics(settings)
    keys = subprocess.run(
        ["redis-cli", "-u", redis_url, "--scan", "--pattern", f"kirby-test-{name}:*"], capture_output=True, text=True
    ).stdout.split()
    if keys:
        subprocess.run(["redis-cli", "-u", redis_url, "del", *keys], capture_output=True, check=True)


def test_an_offer_routed_to_a_member_that_just_filled_up_runs_at_once_on_a_member_with_room(kafka_cluster):
    c = kafka_cluster
    full, free = c.runner("full", capacity=1), c.runner("free", capacity=4)
    c.pump(lambda: full.consumer.assigned() and free.consumer.assigned(), "both members hold partitions")
    [mine, *_] = full.consumer.assigned()
    sleeper = make_offer("kirby-example-sleep", run_id="sleep:dev:20260301T120000Z", job="sleep", overlap="allow")
    sleeper = replace(sleeper, config={"SLEEP_SECONDS": "60"})
    c.bus.publish_offers([sleeper], partitions=[mine])
    c.pump(lambda: c.events.of(sleeper.run_id, "started"), "the full member did not start its long run")
    assert full.busy == 1 and full.room == 0
    c.advertise()  # full: room 0; free: room 4

    # The leader's picture was a heartbeat old: the next offer goes to the full member's partition.
    hello = make_offer(run_id="hello:dev:20260301T120001Z", job="hello")
    c.bus.publish_offers([hello], partitions=[mine])
    handed = datetime.now(timezone.utc)
    finished = c.pump(lambda: c.events.finished(hello.run_id), "the offer in the full member's partition waited")
    assert finished.supervisor == "free" and finished.data["state"] == "succeeded"
    assert c.leases.get_claim(hello.run_id).supervisor == "free"  # never claimed by the full member
    assert full.handed_back == 1 and full.counters.claimed == 1
    assert datetime.now(timezone.utc) - handed < timedelta(seconds=50), "it waited for the full member's room"
    assert "sleep:dev:20260301T120000Z" in full.executor.running()  # the full member's run is still going

    # Nobody else has room: the offer stays with the full member (not lost, not bounced around).
    for n in range(4):
        c.bus.publish_offers([replace(sleeper, run_id=f"sleep:dev:20260301T12000{n + 2}Z")], partitions=[mine])
    c.pump(lambda: free.busy == 4 or free.counters.claimed >= 5, "the free member did not fill up", timeout=60)
    c.advertise()  # free: room 0 now
    waiting = make_offer(run_id="hello:dev:20260301T120009Z", job="hello")
    c.bus.publish_offers([waiting], partitions=[mine])
    for _ in range(20):
        full.poll_once(timeout=0.05)
    assert c.leases.get_claim(waiting.run_id) is None and not c.events.of(waiting.run_id)
    assert full.handed_back == 1 + (free.counters.claimed - 1)  # the sleepers handed over, not this one
