"""The leader loop on the real services: Redis leases (epoch fencing) and Kafka offers."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from kirby.bus import open_bus
from kirby.lease.redis import RedisLeaseStore
from kirby.run_ids import slot_run_id
from kirby.schedule import ScheduleEntry, ScheduleRule, ScheduleSnapshot, StaticScheduleSource
from kirby.supervisor.election import Election
from kirby.supervisor.scheduler import Scheduler

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULE = ScheduleRule(id=1, cron="* * * * * */10", misfire_grace_seconds=30)
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


@pytest.fixture
def services(make_settings, kafka_servers, redis_url):
    name = uuid.uuid4().hex[:12]
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_servers,
        REDIS_URL=redis_url,
        KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
        KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
        KIRBY_SUPERVISOR_GROUP_ID=f"supervisors-{name}",
    )
    store = RedisLeaseStore(settings, prefix=f"test-{name}:")
    bus = open_bus(settings)
    yield settings, store, bus
    bus.close()
    store.close()
    from kirby.bus.kafka_topics import delete_topics

    delete_topics(settings)


def receive(consumer, count: int, timeout: float = 30.0):
    """At least ``count`` offers (in any order: Kafka orders per partition only)."""
    received, deadline = [], time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        for delivery in consumer.poll(0.5):
            consumer.ack(delivery)
            received.append(delivery.message)
    assert len(received) >= count, f"received {len(received)} of {count} offers within {timeout}s"
    return received


def test_failover_on_redis_and_kafka(services):
    settings, store, bus = services
    consumer = bus.offer_consumer("reader")
    alpha = Scheduler(StaticScheduleSource(SNAPSHOT), store, bus, Election(store, "alpha", window=1.5), wakeup=60)
    beta = Scheduler(StaticScheduleSource(SNAPSHOT), store, bus, Election(store, "beta", window=1.5), wakeup=60)
    try:
        assert alpha.election.tick(datetime.now(UTC)).epoch == 1
        for seconds in (0, 10, 20, 30, 40):
            alpha.election.tick(datetime.now(UTC))  # renews when due: a busy broker does not cost the lease
            alpha.tick(T0 + timedelta(seconds=seconds))
        first = receive(consumer, 4)
        assert sorted((o.scheduled_at.second, o.epoch) for o in first) == [(10, 1), (20, 1), (30, 1), (40, 1)]
        store.claim_run(slot_run_id("report", "prod", T0 + timedelta(seconds=10)), "runner")
        # alpha freezes; beta takes over after the lease's TTL and re-publishes what is unclaimed within grace.
        deadline = time.monotonic() + 10
        while not beta.election.tick(datetime.now(UTC)).is_leader:
            assert time.monotonic() < deadline, "beta did not take over"
            time.sleep(0.05)
        assert beta.election.epoch == 2
        beta.tick(T0 + timedelta(seconds=55))
        # alpha wakes: its cursor write is refused and it publishes nothing.
        alpha.tick(T0 + timedelta(seconds=60))
        assert not alpha.election.is_leader
        second = receive(consumer, 3)
        assert sorted((o.scheduled_at.second, o.epoch) for o in second) == [(30, 2), (40, 2), (50, 2)]
        assert consumer.poll(1.0) == []
        assert store.get_cursor("report:prod:1") == T0 + timedelta(seconds=50)
    finally:
        alpha.close()
        beta.close()
        consumer.close()
