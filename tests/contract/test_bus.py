"""The offer bus contract (kirby/bus/base.py), run on the embedded bus and on the real Kafka."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone

from helpers import wait_for

from kirby.bus.base import Consumer
from kirby.events import Offer, RunEvent

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)


def make_offer(run_id: str, **fields) -> Offer:
    return Offer(
        run_id=run_id,
        slot_id=f"slot-{run_id}",
        job="job",
        environment="prod",
        package="pkg",
        version="1.0",
        scheduled_at=T0,
        **fields,
    )


def receive(consumer: Consumer, expected: int, timeout: float, ack: bool = True) -> list:
    """Poll until ``expected`` messages arrived (acknowledging each, unless ``ack`` is false)."""
    got: list = []

    def more() -> bool:
        for delivery in consumer.poll(0.2):
            got.append(delivery.message)
            if ack:
                consumer.ack(delivery)
        return len(got) >= expected

    wait_for(more, timeout, f"received {len(got)} of {expected} messages: {got}")
    return got


def run_ids(messages) -> list[str]:
    return [message.run_id for message in messages]


def test_offer_and_event_round_trip_keep_every_field(bus_factory):
    bus = bus_factory()
    offer = make_offer(
        "r-1",
        epoch=7,
        context_id=3,
        module="pkg.main",
        config={"A": "1", "TOKEN": "s3cret"},
        secrets=("TOKEN",),
        timeout_seconds=60,
        overlap="allow",
        retries=2,
        attempt=2,
        trigger="retry",
        offered_at=T0 + timedelta(seconds=1),
    )
    event = RunEvent("finished", "r-1", T0 + timedelta(minutes=1), "sup-a", {"state": "failed", "exit_code": 3})
    offers = bus.offer_consumer("a")
    events = bus.event_consumer("web", "w1")
    bus.publish_offer(offer)
    bus.publish_event(event)
    bus.flush()
    assert receive(offers, 1, 30) == [offer]
    assert receive(events, 1, 30) == [event]


def test_publish_offers_stores_a_batch(bus_factory):
    bus = bus_factory()
    consumer = bus.offer_consumer("a")
    batch = [make_offer(f"r-{n}", epoch=n) for n in range(25)]
    bus.publish_offers(batch)
    assert sorted(receive(consumer, 25, 30), key=lambda offer: offer.epoch) == batch


def test_each_offer_goes_to_exactly_one_member(bus_factory):
    bus = bus_factory()
    members = [bus.offer_consumer("a"), bus.offer_consumer("b")]
    warmed = {id(consumer): False for consumer in members}

    def warm_up() -> bool:  # until both members have joined the group and received something
        bus.publish_offer(make_offer(f"warmup-{uuid.uuid4().hex[:8]}"))
        for consumer in members:
            for delivery in consumer.poll(0.3):
                warmed[id(consumer)] = True
                consumer.ack(delivery)
        members.reverse()  # take turns polling first
        return all(warmed.values())

    wait_for(warm_up, 60, "both members of the group received a warm-up offer")
    expected = {f"r-{n}" for n in range(30)}
    for run_id in sorted(expected):
        bus.publish_offer(make_offer(run_id))
    received: dict[int, list[str]] = {id(consumer): [] for consumer in members}

    def drained() -> bool:
        for consumer in members:
            for delivery in consumer.poll(0.2, max_messages=5):
                if delivery.message.run_id in expected:
                    received[id(consumer)].append(delivery.message.run_id)
                consumer.ack(delivery)
        return sum(len(ids) for ids in received.values()) >= len(expected)

    wait_for(drained, 60, f"all offers received: {received}")
    first, second = received.values()
    assert set(first) | set(second) == expected
    assert len(first) + len(second) == len(expected), "an offer reached two members"


def test_acknowledged_offers_are_not_redelivered_after_reconnect(bus_factory):
    bus = bus_factory()
    first = bus.offer_consumer("a")
    for n in range(5):
        bus.publish_offer(make_offer(f"r-{n}"))
    assert sorted(run_ids(receive(first, 5, 30))) == [f"r-{n}" for n in range(5)]
    first.close()
    bus.close()

    again = bus_factory()
    consumer = again.offer_consumer("a")
    again.publish_offer(make_offer("sentinel"))
    got = receive(consumer, 1, 30)
    consumer.poll(0.5)  # anything still on its way would show now
    assert run_ids(got) == ["sentinel"]


def test_ack_all_acknowledges_every_delivery_of_a_batch(bus_factory):
    bus = bus_factory()
    first = bus.offer_consumer("a")
    expected = [f"r-{n}" for n in range(12)]  # spread over the partitions
    bus.publish_offers([make_offer(run_id) for run_id in expected])
    deliveries: list = []
    wait_for(lambda: deliveries.extend(first.poll(0.2)) or len(deliveries) >= 12, 30, f"received {deliveries}")
    first.ack_all(deliveries)
    first.close()
    bus.close()

    again = bus_factory()
    consumer = again.offer_consumer("a")
    again.publish_offer(make_offer("sentinel"))
    got = receive(consumer, 1, 30)
    consumer.poll(0.5)  # anything still on its way would show now
    assert run_ids(got) == ["sentinel"]


def test_closing_without_ack_hands_offers_to_another_member(bus_factory):
    bus = bus_factory()
    leaving = bus.offer_consumer("a")
    expected = [f"r-{n}" for n in range(8)]
    for run_id in expected:
        bus.publish_offer(make_offer(run_id))
    assert sorted(run_ids(receive(leaving, 8, 30, ack=False))) == expected
    staying = bus.offer_consumer("b")
    leaving.close()
    assert sorted(run_ids(receive(staying, 8, 30))) == expected


def test_released_offers_are_delivered_again_and_acknowledged_ones_are_not(bus_factory):
    """What the runner does when the lease store fails before a claim is decided (issue 10)."""
    bus = bus_factory()
    consumer = bus.offer_consumer("a")
    expected = [f"r-{n}" for n in range(6)]
    bus.publish_offers([make_offer(run_id) for run_id in expected])
    deliveries: list = []
    wait_for(lambda: deliveries.extend(consumer.poll(0.2)) or len(deliveries) >= 6, 30, "the offers did not arrive")
    acked, released = deliveries[:2], deliveries[2:]
    for delivery in acked:
        consumer.ack(delivery)
    consumer.release(released)
    again = receive(consumer, 4, 30)
    assert sorted(run_ids(again)) == sorted(d.message.run_id for d in released)
    bus.publish_offer(make_offer("sentinel"))
    assert run_ids(receive(consumer, 1, 30)) == ["sentinel"]  # nothing else came again before it
    assert consumer.poll(0.5) == []


CONSUMER_SCRIPT = """
import json, sys
from kirby.bus import open_bus
from kirby.config import load_settings
bus = open_bus(load_settings(environ=json.loads(sys.argv[1]), cwd=sys.argv[2]))
consumer = bus.offer_consumer("doomed")
print("ready", flush=True)
while True:
    for delivery in consumer.poll(0.2):
        print(delivery.message.run_id, flush=True)
"""


class ProcessLines:
    """A subprocess' stdout lines, read by a thread so that waiting for one is bounded."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line.strip()) for line in process.stdout], daemon=True).start()

    def next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the subprocess printed nothing for {timeout} s") from None


def test_offers_of_a_consumer_killed_before_acking_go_to_another_member(bus_factory):
    bus = bus_factory()
    expected = [f"r-{n}" for n in range(6)]
    process = subprocess.Popen(
        [sys.executable, "-c", CONSUMER_SCRIPT, json.dumps(bus_factory.environ), str(bus_factory.cwd)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = ProcessLines(process)
        assert lines.next(30) == "ready"
        for run_id in expected:
            bus.publish_offer(make_offer(run_id))
        assert sorted(lines.next(30) for _ in expected) == expected
        survivor = bus.offer_consumer("survivor")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert sorted(run_ids(receive(survivor, 6, 45))) == expected
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_events_of_a_run_arrive_in_order(bus_factory):
    bus = bus_factory()
    consumer = bus.event_consumer("web", "w1")
    for seq in range(20):
        for run_id in ("r-a", "r-b", "r-c"):
            bus.publish_event(RunEvent("log", run_id, T0, "sup", {"seq": seq, "stream": "stdout", "text": f"{seq}"}))
    bus.flush()
    events = receive(consumer, 60, 30)
    for run_id in ("r-a", "r-b", "r-c"):
        assert [e.data["seq"] for e in events if e.run_id == run_id] == list(range(20))


def test_publish_events_stores_a_batch_in_order(bus_factory):
    bus = bus_factory()
    consumer = bus.event_consumer("web", "w1")
    batch = [
        RunEvent("log", run_id, T0, "sup", {"seq": seq, "stream": "stdout", "text": "x" * seq})
        for seq in range(50)
        for run_id in ("r-a", "r-b")
    ]
    bus.publish_events(batch)
    events = receive(consumer, 100, 30)
    for run_id in ("r-a", "r-b"):
        assert [e.data["text"] for e in events if e.run_id == run_id] == ["x" * seq for seq in range(50)]


def test_every_event_group_sees_every_event(bus_factory):
    bus = bus_factory()
    groups = [bus.event_consumer("web", "w1"), bus.event_consumer("audit", "a1")]
    expected = [f"r-{n}" for n in range(10)]
    for run_id in expected:
        bus.publish_event(RunEvent("started", run_id, T0))
    bus.flush()
    for consumer in groups:
        assert sorted(run_ids(receive(consumer, 10, 30))) == expected
