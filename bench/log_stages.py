"""Log capture stage by stage, in this process (not a test): CPU per line of each stage on its own.

Run: .venv/bin/python bench/log_stages.py [--lines 1000000] [--backend embedded|kafka-redis]
(``eval "$(deploy/services env)"`` first for kafka-redis.)

The stages ``bench/logs.py`` measures end to end, each timed alone on the same ~25-byte lines
(process CPU time, so the machine's load matters less than for wall time):

1. supervisor, read: 256 KiB chunks -> complete lines -> decoded and masked (``LineSplitter``,
   ``mask_lines``, with ten secrets);
2. supervisor, publish: lines -> ``log`` events (``RunReporter.lines``' cutting) -> JSON -> the bus;
3. web, poll: the bus -> events (``kirby-web`` group, batches of 500 as ``EventsConsumer``);
4. web, record: events -> rows in a fresh SQLite script database (``kirby.recorder.record``, one
   transaction per 20,000 lines as ``EventsConsumer``).

Next to: one sqlite3 ``executemany`` of one row per line into ``log_lines`` (the floor of the
row-per-line design this replaced).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import load  # noqa: E402
from kirby.bus import open_bus  # noqa: E402
from kirby.bus.kafka_topics import delete_topics  # noqa: E402
from kirby.config import load_settings  # noqa: E402
from kirby.db import open_database  # noqa: E402
from kirby.events import RunEvent  # noqa: E402
from kirby.logstore import count_lines  # noqa: E402
from kirby.recorder import record  # noqa: E402
from kirby.supervisor.reporting import RunReporter  # noqa: E402
from kirby.tasks.base import OutputLines  # noqa: E402
from kirby.tasks.masking import Masker  # noqa: E402
from kirby.tasks.output import LineSplitter, mask_lines  # noqa: E402
from kirby.tasks.process import READ_SIZE  # noqa: E402
from kirby.web.events_consumer import _parts  # noqa: E402

RUN = "chatty:bench:2026-01-01T00:00:00Z"


class _Collect:
    """A stand-in for the reporter's queue: keeps the events ``RunReporter.lines`` makes."""

    def __init__(self):
        self.events: list[RunEvent] = []

    def put(self, event, weight=1, text=0, timeout=None):
        self.events.append(event)


def cpu() -> float:
    return time.process_time()


def report(name: str, seconds: float, lines: int) -> None:
    print(f"  {name:<44} {seconds:6.2f} CPU s  {lines / seconds:>12,.0f} lines per CPU-second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["embedded", "kafka-redis"], default="embedded")
    args = parser.parse_args()
    n = args.lines
    print(f"bench/log_stages.py: {n:,} lines, {args.backend}; {load()}")
    data = "".join(f"line {i} of chatty output\n" for i in range(n)).encode()
    mask = Masker([f"secret-value-{i}" for i in range(10)])

    started, splitter, batches, seq = cpu(), LineSplitter(), [], 0
    for offset in range(0, len(data), READ_SIZE):
        texts = mask_lines(mask, splitter.feed(data[offset : offset + READ_SIZE]))
        batches.append(OutputLines(RUN, seq, datetime.now(timezone.utc), "stdout", texts))
        seq += len(texts)
    report("1. supervisor: split and mask", cpu() - started, n)

    with tempfile.TemporaryDirectory(prefix="kirby-bench-stages-") as temp:
        environ = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{temp}/kirby.db", "KIRBY_EMBEDDED_PATH": f"{temp}/bus.db"}
        if args.backend == "kafka-redis":  # topics of its own, deleted at the end
            topic = f"bench-stages-{uuid.uuid4().hex[:8]}"
            environ |= {
                "KAFKA_BOOTSTRAP_SERVERS": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                "KIRBY_TOPIC_RUN_EVENTS": topic,
                "KIRBY_TOPIC_JOB_OFFERS": f"{topic}-offers",
            }
        settings = load_settings(environ=environ, cwd=Path(temp))
        bus = open_bus(settings)
        reporter, collect = RunReporter(bus, "bench"), _Collect()
        reporter._queue, reporter._thread = collect, True  # keep the events instead of queueing them
        started = cpu()
        for output in batches:
            reporter.lines(output)
        events = collect.events
        for start in range(0, len(events), 5):  # the reporter's round trips: 5,000 lines
            bus.publish_events(events[start : start + 5])
        bus.flush()
        report(f"2. supervisor: events, JSON, publish ({len(events):,} events)", cpu() - started, n)

        consumer = bus.event_consumer(group="bench", member="bench")
        started, received, deadline = cpu(), [], time.monotonic() + 120
        while len(received) < len(events) and time.monotonic() < deadline:
            deliveries = consumer.poll(1.0, 500)
            received += [delivery.message for delivery in deliveries]
            consumer.ack_all(deliveries)
        report("3. web: poll, decode, acknowledge", cpu() - started, n)
        consumer.close()
        bus.close()
        if args.backend == "kafka-redis":
            delete_topics(settings)
        assert len(received) == len(events), f"{len(received)} of {len(events)} events came back"

        database = open_database(settings)
        with database.session() as s:
            record(s, [RunEvent("started", RUN, datetime.now(timezone.utc), "bench")])
        started = cpu()
        for part in _parts(received, 20_000):
            with database.session() as s:
                record(s, part, max_lines=n + 10)
        report("4. web: record (SQLite)", cpu() - started, n)
        with database.session() as s:
            assert count_lines(s, RUN) == n, "not every line was stored"
        database.dispose()

        connection = sqlite3.connect(f"{temp}/floor.db")
        connection.execute(
            "CREATE TABLE log_lines (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id VARCHAR(255), seq INTEGER,"
            " time DATETIME, stream VARCHAR(8), text TEXT, UNIQUE (run_id, seq))"
        )
        rows = [(RUN, i, "2026-01-01 00:00:00.000000", "stdout", f"line {i} of chatty output") for i in range(n)]
        started = cpu()
        with connection:
            connection.executemany(
                "INSERT INTO log_lines (run_id, seq, time, stream, text) VALUES (?, ?, ?, ?, ?)", rows
            )
        report("baseline: sqlite3 executemany, a row per line", cpu() - started, n)
        connection.close()
    print(f"done ({load()})")


if __name__ == "__main__":
    main()
