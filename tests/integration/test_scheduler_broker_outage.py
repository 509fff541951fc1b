"""The leader while its Kafka broker is down (issue 10, scenario 3), on a private broker it stops.

A cursor never moves past a slot whose offer was not durably published: after the outage the
slots within their misfire grace are published (late), the older ones follow the catch-up policy
and are recorded ``skipped`` with the reason, none is dropped without a record.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from kirby.bus import open_bus
from kirby.bus.base import OfferBus
from kirby.lease.redis import RedisLeaseStore
from kirby.schedule import ScheduleEntry, ScheduleRule, ScheduleSnapshot, StaticScheduleSource
from kirby.supervisor.election import Election
from kirby.supervisor.scheduler import Scheduler
from tests.helpers import wait_for
from tests.private_services import PrivateKafka

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULE = ScheduleRule(id=1, cron="* * * * * */10", misfire_grace_seconds=30, catchup="skip")
SNAPSHOT = ScheduleSnapshot(
    generated_at=T0,
    entries=(
        ScheduleEntry(
            context_id=1,
            job="report",
            job_type="scheduled",
            environment="prod",
            package="p",
            version="1",
            schedules=(RULE,),
        ),
    ),
)


@dataclass
class Cluster:
    """A private Kafka broker (the tests stop it), the shared Redis under a key prefix of its own."""

    kafka: PrivateKafka
    store: RedisLeaseStore
    bus: OfferBus


@pytest.fixture
def cluster(make_settings, tmp_path, redis_url):
    kafka = PrivateKafka(tmp_path / "services")
    kafka("up")
    name = uuid.uuid4().hex[:12]
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.address,
        REDIS_URL=redis_url,
        EXT_RETRIES="0",
        KIRBY_SUPERVISOR_GROUP_ID=f"supervisors-{name}",
    )
    store = RedisLeaseStore(settings, prefix=f"test-{name}:")
    bus = open_bus(settings)
    yield Cluster(kafka, store, bus)
    bus.close()
    store.close()
    kafka("down")


def drain(consumer, until, timeout: float = 60.0) -> list:
    received, deadline = [], time.monotonic() + timeout
    while not until(received):
        assert time.monotonic() < deadline, f"received only {received}"
        for delivery in consumer.poll(0.5):
            consumer.ack(delivery)
            received.append(delivery.message)
    return received


def test_a_broker_outage_moves_no_cursor_and_every_slot_is_published_late_or_recorded(cluster):
    kafka, store, bus = cluster.kafka, cluster.store, cluster.bus
    offers, events = bus.offer_consumer("reader"), bus.event_consumer("recorder", "reader")
    leader = Scheduler(StaticScheduleSource(SNAPSHOT), store, bus, Election(store, "alpha", window=60), wakeup=60)
    key = "report:prod:1"
    try:
        assert leader.election.tick(datetime.now(UTC)).is_leader
        leader.tick(T0)
        leader.tick(T0 + timedelta(seconds=10))
        assert [o.scheduled_at for o in drain(offers, lambda got: got)] == [T0 + timedelta(seconds=10)]
        kafka("down")
        for seconds in (20, 30):  # the broker is down: nothing is published, no cursor moves
            leader.tick(T0 + timedelta(seconds=seconds))
            assert store.get_cursor(key) == T0 + timedelta(seconds=10)
        kafka("up")
        leader.tick(T0 + timedelta(seconds=70))  # :40 is exactly 30 s late: still within its grace
        late = drain(offers, lambda got: len(got) >= 4)
        assert sorted((o.scheduled_at - T0).seconds for o in late) == [40, 50, 60, 70]
        assert all(o.not_after == o.scheduled_at + timedelta(seconds=30) for o in late)
        assert store.get_cursor(key) == T0 + timedelta(seconds=70)
        leader.close()
        skipped = drain(events, lambda got: len([e for e in got if e.kind == "skipped"]) >= 3)
        skipped = sorted((e.run_id, e.data["error"]) for e in skipped if e.kind == "skipped")
        assert [run_id for run_id, _ in skipped] == [
            "report:prod:20260301T120010Z",  # published before the outage, never claimed (no runner here)
            "report:prod:20260301T120020Z",
            "report:prod:20260301T120030Z",
        ]
        assert skipped[0][1].startswith("expired: ") and "not claimed within its misfire grace" in skipped[0][1]
        assert all("missed by more than its misfire grace (30s); catch-up policy skip" in e for _, e in skipped[1:])
    finally:
        leader.close()
        offers.close()
        events.close()


def test_a_publish_to_a_dead_broker_holds_the_scheduler_at_most_its_timeout(cluster):
    """The broker stops: a tick's publish waits ``publish_timeout`` (1 s here), not Kafka's own
    retries (10 s a send); while that publish goes on, ticks publish nothing and move no cursor;
    once the broker is back and it ended, the slots are published (late, within their grace)."""
    kafka, store, bus = cluster.kafka, cluster.store, cluster.bus
    offers = bus.offer_consumer("reader")
    leader = Scheduler(
        StaticScheduleSource(SNAPSHOT), store, bus, Election(store, "alpha", window=60), wakeup=60, publish_timeout=1.0
    )
    key = "report:prod:1"
    try:
        assert leader.election.tick(datetime.now(UTC)).is_leader
        leader.tick(T0)
        kafka("down")
        started = time.monotonic()
        leader.tick(T0 + timedelta(seconds=10))  # its publish outlives the timeout
        held = time.monotonic() - started
        assert held < 5, f"the publish held the scheduler {held:.1f} s (timeout 1 s)"
        assert leader.publisher.busy  # still waiting for the broker
        started = time.monotonic()
        assert leader.tick(T0 + timedelta(seconds=20)) > 0  # still publishing: nothing more, at once
        assert time.monotonic() - started < 1 and store.get_cursor(key) == T0
        kafka("up")

        def published_after_the_outage() -> bool:  # the broker may take a while to serve again
            leader.tick(T0 + timedelta(seconds=30))
            return store.get_cursor(key) == T0 + timedelta(seconds=30)

        wait_for(published_after_the_outage, 90, "the slots were not published after the broker came back")
        got = drain(
            offers, lambda got: {o.scheduled_at for o in got} >= {T0 + timedelta(seconds=s) for s in (10, 20, 30)}
        )
        assert {(o.scheduled_at - T0).seconds for o in got} <= {10, 20, 30}  # :10 may come twice: claims dedupe
    finally:
        leader.close()
        offers.close()
