"""Batched log events through every bus (issue 14): a backlog of several MB on one partition is read."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from kirby.events import RunEvent, log_texts

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_a_backlog_of_megabytes_of_log_lines_of_one_run_is_delivered_in_order(bus_factory):
    """One run's events share a partition; 40 events of 1,000 lines (~4 MB) are published before
    the consumer polls, and come out complete and in order."""
    bus = bus_factory()
    consumer = bus.event_consumer("web", "w1")
    line = "y" * 90
    events = [
        RunEvent(
            "log",
            "r-big",
            T0,
            "sup",
            {"seq": first, "stream": "stdout", "texts": [f"{first + n} {line}" for n in range(1000)]},
        )
        for first in range(0, 40_000, 1000)
    ]
    for start in range(0, len(events), 5):
        bus.publish_events(events[start : start + 5])
    bus.flush()
    got, deadline = [], time.monotonic() + 90
    while len(got) < len(events):
        assert time.monotonic() < deadline, f"received {len(got)} of {len(events)} events within 90 s"
        deliveries = consumer.poll(0.5, 500)
        consumer.ack_all(deliveries)
        got += [d.message for d in deliveries]
    texts = [text for event in got for text in log_texts(event)]
    assert [int(text.split()[0]) for text in texts] == list(range(40_000))
    consumer.close()
