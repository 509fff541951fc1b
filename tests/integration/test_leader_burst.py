"""500 offers due at one instant at ``--window 1`` (lease TTL 1.5 s): the leader keeps its lease.

The leader (``Scheduler.run``, the election in its own thread) and a follower that would take
over the moment the lease lapsed run for two slots of 500 schedules due together, on both
backends (embedded; Kafka + Redis). Functional, not timed: the epoch never changes (elected once,
never deposed, the follower never wins), two instants' 500 offers all arrive, and none twice.
Before the election had a thread of its own, the renewal waited behind the 500 offers' publish
and the lease ran out under load (issue 14, bench/fanout.py: "500 offer(s) not published"). Before
the supervisor froze its startup heap (``freeze_startup_heap``), a full garbage collection of a
large heap held the GIL, and so the election thread, for over a second on a loaded host (CI).
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest

from kirby.bus import open_bus
from kirby.lease import open_lease_store
from kirby.schedule import ScheduleEntry, ScheduleRule, ScheduleSnapshot, StaticScheduleSource
from kirby.supervisor.election import Election, freeze_startup_heap
from kirby.supervisor.scheduler import Scheduler

pytestmark = pytest.mark.slow

SCRIPTS = 500
EVERY_5S = ScheduleRule(id=1, cron="* * * * * */5", misfire_grace_seconds=60, overlap="allow")


def burst() -> ScheduleSnapshot:
    entries = tuple(
        ScheduleEntry(
            context_id=1,
            job=f"job{n:03d}",
            job_type="scheduled",
            environment="prod",
            package="p",
            version="1",
            schedules=(EVERY_5S,),
        )
        for n in range(SCRIPTS)
    )
    return ScheduleSnapshot(generated_at=datetime.now(timezone.utc), entries=entries)


@pytest.fixture(params=["embedded", pytest.param("kafka-redis", marks=[pytest.mark.kafka, pytest.mark.redis])])
def backends(request, make_settings):
    if request.param == "embedded":
        settings = make_settings()
    else:
        name = uuid.uuid4().hex[:12]
        settings = make_settings(
            KAFKA_BOOTSTRAP_SERVERS=request.getfixturevalue("kafka_servers"),
            REDIS_URL=request.getfixturevalue("redis_url"),
            KIRBY_REDIS_PREFIX=f"test-{name}:",
            KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
            KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
            KIRBY_SUPERVISOR_GROUP_ID=f"supervisors-{name}",
        )
    store, bus = open_lease_store(settings), open_bus(settings)
    yield store, bus
    bus.close()
    store.close()
    if request.param != "embedded":
        from kirby.bus.kafka_topics import delete_topics

        delete_topics(settings)


def test_500_offers_due_at_once_at_window_1_cost_the_leader_no_lease(backends):
    store, bus = backends
    consumer = bus.offer_consumer("reader")  # joined before anything is published
    freeze_startup_heap()  # as `kirby supervisor` does once started (this test's heap is pytest's)
    elected, deposed, follower_won = [], [], []
    election = Election(store, "alpha", window=1.0, on_elected=elected.append, on_deposed=deposed.append)
    leader = Scheduler(StaticScheduleSource(burst()), store, bus, election, wakeup=30)
    follower = Election(store, "beta", window=1.0, on_elected=follower_won.append)
    stop = threading.Event()
    threads = [
        threading.Thread(target=leader.run, args=(stop,), name="leader"),
        threading.Thread(target=follower.run, args=(stop, lambda: datetime.now(timezone.utc)), name="follower"),
    ]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not elected:  # alpha first, so that beta is the follower
        assert time.monotonic() < deadline, "alpha was not elected"
        time.sleep(0.01)
    threads[1].start()
    received = []
    try:
        deadline = time.monotonic() + 120
        while sum(n >= SCRIPTS for n in Counter(o.scheduled_at for o in received).values()) < 2:
            assert time.monotonic() < deadline, (
                f"received {len(received)} offers: {Counter(o.scheduled_at for o in received)}; "
                f"elected {elected}, deposed {deposed}, the follower won {follower_won}"
            )
            for delivery in consumer.poll(0.5, 1000):
                consumer.ack(delivery)
                received.append(delivery.message)
        assert (elected, deposed, follower_won) == ([1], [], []), "the leadership changed during the bursts"
        assert store.current_epoch() == 1
    finally:
        stop.set()
        follower.wake()
        for thread in threads:
            thread.join(60)
        consumer.close()
        leader.close()
        gc.unfreeze()
    per_slot = Counter(o.scheduled_at for o in received)
    twice = [run_id for run_id, n in Counter(o.run_id for o in received).items() if n > 1]
    assert not twice, f"offered more than once: {twice[:5]}"
    assert max(per_slot.values()) == SCRIPTS, f"offers per instant: {per_slot}"
    assert all(o.epoch == 1 for o in received)
