"""Offers per second published and consumed on both bus backends, next to raw baselines of the same run.

Run: .venv/bin/python bench/bus.py [--count N] [--rounds R]      (not a test)
Kafka is measured when KAFKA_BOOTSTRAP_SERVERS is set (``eval "$(deploy/services env)"``), on
fresh topics of Kirby's partition count, deleted afterwards. Each figure is the best of R rounds
(kirby and baseline alternate), after a warm-up.

Kirby's figures: ``publish_offer`` one by one (each returns once stored), ``publish_offers`` of
the whole batch, then one consumer polling (at most 100 per poll) and acknowledging every offer. Baselines, on the same payloads:
* embedded: bare sqlite3 on a WAL file with the same pragmas: one INSERT per offer; SELECTs of
  100 rows by id, alone and with one DELETE per row (what an acknowledgement costs);
* Kafka: kafka-python alone: a producer (acks=all) waiting for each send (like-for-like) or
  flushing once at the end (the batched ceiling); a consumer on assigned partitions committing
  each offset (like-for-like) or not committing (the ceiling).
The baselines send ready-made bytes; Kirby's figures include ``Offer.to_json`` / ``from_json``,
whose own rate is printed too.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from kirby.bus import open_bus
from kirby.bus.kafka import PARTITIONS, SESSION_TIMEOUT_MS, client_config
from kirby.bus.kafka_topics import delete_topics
from kirby.config import load_settings
from kirby.events import Offer

WARMUP = 200


def offers(count: int, prefix: str) -> list[Offer]:
    at = datetime(2026, 11, 28, tzinfo=timezone.utc)
    config = {"GREETING": "hello", "TOKEN": "s3cret"}
    return [
        Offer(f"{prefix}-{n}", f"slot-{n}", "job", "prod", "pkg", "1.0", at, 1, config=config) for n in range(count)
    ]


def rate(count: int, function) -> float:
    begin = time.perf_counter()
    function()
    return count / (time.perf_counter() - begin)


def consume_all(consumer, count: int, timeout: float = 300.0) -> None:
    got, deadline = 0, time.monotonic() + timeout
    while got < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {got} of {count} offers consumed within {timeout} s")
        for delivery in consumer.poll(1.0):
            consumer.ack(delivery)
            got += 1


class KirbyBus:
    """Kirby's bus with one consumer that has joined its group and seen a warm-up."""

    def __init__(self, settings):
        self.bus = open_bus(settings)
        self.consumer = self.bus.offer_consumer("bench")
        self.round(WARMUP)

    def round(self, count: int) -> dict[str, float]:
        one_by_one, batch = offers(count, uuid.uuid4().hex[:6]), offers(count, uuid.uuid4().hex[:6])
        results = {"publish": rate(count, lambda: [self.bus.publish_offer(offer) for offer in one_by_one])}
        results["publish_offers"] = rate(count, lambda: self.bus.publish_offers(batch))
        results["consume"] = rate(2 * count, lambda: consume_all(self.consumer, 2 * count))
        return results

    def close(self) -> None:
        self.consumer.close()
        self.bus.close()


class SqliteBaseline:
    def __init__(self, path: Path):
        self.connection = sqlite3.connect(str(path), isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(
            "CREATE TABLE raw (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, payload BLOB, created_at REAL)"
        )
        self.cursor = 0

    def round(self, payloads: list[bytes]) -> dict[str, float]:
        insert = "INSERT INTO raw (run_id, payload, created_at) VALUES (?, ?, ?)"
        results = {
            "insert": rate(
                len(payloads), lambda: [self.connection.execute(insert, ("r", p, time.time())) for p in payloads]
            )
        }
        start = self.cursor
        results["insert-batch"] = rate(len(payloads), lambda: self.insert_batch(insert, payloads))
        results["select"] = rate(len(payloads), lambda: self.select(start, delete=False))
        results["select+delete"] = rate(len(payloads), lambda: self.select(start, delete=True))
        return results

    def insert_batch(self, insert: str, payloads: list[bytes]) -> None:
        self.connection.execute("BEGIN")
        self.connection.executemany(insert, [("r", p, time.time()) for p in payloads])
        self.connection.execute("COMMIT")

    def select(self, cursor: int, delete: bool) -> None:
        query = "SELECT id, payload FROM raw WHERE id > ? ORDER BY id LIMIT 100"
        while rows := self.connection.execute(query, (cursor,)).fetchall():
            cursor = rows[-1][0]
            for row_id, _ in rows:
                if delete:
                    self.connection.execute("DELETE FROM raw WHERE id = ?", (row_id,))
        self.cursor = cursor

    def close(self) -> None:
        self.connection.close()


class KafkaBaseline:
    def __init__(self, settings):
        self.config = client_config(settings)
        self.topic = f".kirby.bench-raw-{uuid.uuid4().hex[:8]}"
        self.admin = KafkaAdminClient(**self.config)
        self.admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])
        self.producer = KafkaProducer(acks="all", enable_idempotence=True, linger_ms=0, **self.config)
        self.batching = KafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **self.config)
        self.sent = 0
        self.send_each([b"{}"] * WARMUP)

    def send_each(self, payloads: list[bytes]) -> None:
        for i, payload in enumerate(payloads):
            self.producer.send(self.topic, key=b"r%d" % i, value=payload).get(30)
        self.sent += len(payloads)

    def send_batched(self, payloads: list[bytes]) -> None:
        for i, payload in enumerate(payloads):
            self.batching.send(self.topic, key=b"r%d" % i, value=payload)
        self.batching.flush(60)
        self.sent += len(payloads)

    def consume(self, commit: bool) -> float:
        consumer = KafkaConsumer(
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            **self.config,
        )
        consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        consumer.seek_to_beginning()
        total, got = self.sent, 0

        def read() -> None:
            nonlocal got
            while got < total:
                for partition, records in consumer.poll(1000, max_records=100).items():
                    for record in records:
                        if commit:
                            consumer.commit({partition: OffsetAndMetadata(record.offset + 1, "", -1)})
                        got += 1

        result = rate(total, read)
        consumer.close()
        return result

    def round(self, payloads: list[bytes]) -> dict[str, float]:
        results = {"send+get": rate(len(payloads), lambda: self.send_each(payloads))}
        results["batched"] = rate(len(payloads), lambda: self.send_batched(payloads))
        results["poll+commit"] = self.consume(commit=True)
        results["poll"] = self.consume(commit=False)
        return results

    def close(self) -> None:
        self.producer.close()
        self.batching.close()
        self.admin.delete_topics([self.topic])
        self.admin.close()


def best(rounds: int, kirby, baseline, payloads) -> tuple[dict[str, float], dict[str, float]]:
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    for _ in range(rounds):
        for name, value in kirby.round(len(payloads)).items():
            ours[name] = max(ours.get(name, 0.0), value)
        for name, value in baseline.round(payloads).items():
            theirs[name] = max(theirs.get(name, 0.0), value)
    return ours, theirs


def report(backend: str, ours: dict, theirs: dict, rows: list[tuple[str, str, str]]) -> None:
    for step, key, description in rows:
        print(
            f"{backend:<9}{step:<15}{ours[step]:>10,.0f}/s {theirs[key]:>10,.0f}/s {ours[step] / theirs[key]:>7.2f}x   {description}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="offers per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the best is shown (default 2)")
    arguments = parser.parse_args()
    batch = offers(arguments.count, "raw")
    payloads = [offer.to_json() for offer in batch]
    encode = rate(len(batch), lambda: [offer.to_json() for offer in batch])
    decode = rate(len(batch), lambda: [Offer.from_json(payload) for payload in payloads])
    print(f"{arguments.count:,} offers of {len(payloads[0])} bytes per round, best of {arguments.rounds}")
    print(f"Offer.to_json alone: {encode:,.0f}/s; Offer.from_json alone: {decode:,.0f}/s")
    print(f"{'backend':<9}{'kirby step':<15}{'kirby':>12} {'baseline':>12} {'ratio':>8}   baseline")
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(environ={"KIRBY_EMBEDDED_PATH": f"{folder}/bus.db"}, cwd=Path(folder))
        kirby, baseline = KirbyBus(settings), SqliteBaseline(Path(folder) / "raw.db")
        ours, theirs = best(arguments.rounds, kirby, baseline, payloads)
        kirby.close()
        baseline.close()
    report(
        "embedded",
        ours,
        theirs,
        [
            ("publish", "insert", "sqlite3 INSERT per offer (WAL, synchronous=NORMAL)"),
            ("publish_offers", "insert-batch", "sqlite3 executemany in one transaction"),
            ("consume", "select", "sqlite3 SELECT 100 rows at a time"),
            ("consume", "select+delete", "sqlite3 SELECT 100 at a time + DELETE per row"),
        ],
    )
    servers = load_settings(cwd=Path.cwd()).kafka_bootstrap_servers
    if not servers:
        print('kafka: skipped (KAFKA_BOOTSTRAP_SERVERS is not set; eval "$(deploy/services env)")')
        return
    name = uuid.uuid4().hex[:8]
    settings = load_settings(
        environ={
            "KAFKA_BOOTSTRAP_SERVERS": servers,
            "KIRBY_TOPIC_JOB_OFFERS": f".kirby.bench-{name}.offers",
            "KIRBY_TOPIC_RUN_EVENTS": f".kirby.bench-{name}.events",
            "KIRBY_SUPERVISOR_GROUP_ID": f"bench-{name}",
        },
        cwd=Path.cwd(),
    )
    try:
        kirby, baseline = KirbyBus(settings), KafkaBaseline(settings)
        ours, theirs = best(arguments.rounds, kirby, baseline, payloads)
        kirby.close()
        baseline.close()
    finally:
        delete_topics(settings)
    report(
        "kafka",
        ours,
        theirs,
        [
            ("publish", "send+get", "kafka-python producer, acks=all, waiting for each send"),
            ("publish_offers", "batched", "kafka-python producer, acks=all, one flush at the end"),
            ("consume", "poll+commit", "kafka-python consumer, commit per message"),
            ("consume", "poll", "kafka-python consumer, no commits"),
        ],
    )


if __name__ == "__main__":
    main()
