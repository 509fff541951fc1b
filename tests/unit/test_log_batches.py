"""Log lines in bulk (issue 14): split and masked per chunk, published as few events, stored as rows
of up to ROW_LINES consecutive lines (kirby.logstore) and read back line by line; secrets split
over two reads still masked; the per-run cap still holds."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from kirby.bus import open_bus
from kirby.events import RunEvent
from kirby.logstore import ROW_LINES, last_lines, last_seq, lines_after, stored_lines
from kirby.models import LogLine
from kirby.recorder import record, truncated_text
from kirby.supervisor.reporting import LINES_PER_EVENT, TEXT_PER_EVENT, RunReporter, _BoundedQueue, _Full
from kirby.tasks.base import OutputLines
from kirby.tasks.masking import Masker
from kirby.tasks.output import CUT_MARKER, MAX_LINE, LineSplitter, mask_lines

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
RUN = "backup:prod:2026-01-02T03:04:00Z"


def batch(first: int, texts: list[str], stream: str = "stdout", seconds: int = 0) -> RunEvent:
    return RunEvent(
        "log", RUN, T0 + timedelta(seconds=seconds), "sup-a", {"seq": first, "stream": stream, "texts": texts}
    )


def stored(db) -> list[tuple[int, str, str, datetime]]:
    with db.session() as s:
        return [(line.seq, line.stream, line.text, line.time) for line in stored_lines(s)]


def rows(db) -> list[tuple[int, int]]:
    with db.session() as s:
        return [tuple(row) for row in s.execute(select(LogLine.seq, LogLine.line_count).order_by(LogLine.seq))]


def test_a_batch_of_lines_is_stored_line_by_line_and_redelivery_changes_nothing(db):
    events = [batch(0, [f"line {n}" for n in range(1500)]), batch(1500, ["oops"], "stderr", 1)]
    with db.session() as s:
        record(s, events)
    with db.session() as s:
        record(s, events + [RunEvent("log", RUN, T0, "sup-a", {"seq": 3, "stream": "stdout", "text": "again"})])
    lines = stored(db)
    assert [line[0] for line in lines] == list(range(1501))
    assert lines[3] == (3, "stdout", "line 3", T0)  # the first stored wins; times read back aware UTC
    assert lines[-1] == (1500, "stderr", "oops", T0 + timedelta(seconds=1))
    assert rows(db) == [(0, ROW_LINES), (ROW_LINES, 1500 - ROW_LINES), (1500, 1)]  # 3 rows, not 1501


def test_lines_sent_again_under_another_batching_are_stored_once(db):
    with db.session() as s:
        record(s, [batch(0, [f"a{n}" for n in range(10)])])
    with db.session() as s:  # overlaps the stored row at both ends, and itself
        record(s, [batch(5, [f"b{n}" for n in range(5, 15)]), batch(12, [f"c{n}" for n in range(12, 20)])])
    assert [line[2] for line in stored(db)] == [f"a{n}" for n in range(10)] + ["b10", "b11", "b12", "b13", "b14"] + [
        f"c{n}" for n in range(15, 20)
    ]
    assert rows(db) == [(0, 10), (10, 5), (15, 5)]


def test_a_line_holding_a_newline_gets_a_row_of_its_own(db):
    with db.session() as s:
        record(s, [batch(0, ["one", "two\nlines", "three"])])
    assert [line[2] for line in stored(db)] == ["one", "two\nlines", "three"]
    assert rows(db) == [(0, 1), (1, 1), (2, 1)]


def test_lines_are_read_from_inside_a_row(db):
    with db.session() as s:
        record(s, [batch(0, [f"line {n}" for n in range(2500)])])
    with db.session() as s:
        assert [line.seq for line in lines_after(s, RUN, 1499, 3)] == [1500, 1501, 1502]
        assert [line.seq for line in lines_after(s, RUN, 995, 10)] == list(range(996, 1006))  # across two rows
        assert lines_after(s, RUN, 2499, 10) == []
        assert [line.text for line in last_lines(s, RUN, 2)] == ["line 2498", "line 2499"]
        assert last_seq(s, RUN) == 2499


def test_the_per_run_cap_cuts_inside_a_batch(db):
    with db.session() as s:
        record(s, [batch(0, [f"l{n}" for n in range(8)]), batch(8, ["l8", "l9", "l10", "l11"])], max_lines=10)
    with db.session() as s:
        record(s, [batch(12, ["l12"])], max_lines=10)
    lines = stored(db)
    assert [line[2] for line in lines] == [f"l{n}" for n in range(10)] + [truncated_text(10)]
    assert lines[-1][:2] == (10, "system")


def test_a_secret_split_over_two_reads_is_masked():
    mask = Masker(["s3cret-value"])
    splitter = LineSplitter()
    first = splitter.feed(b"before\nthe token is s3cr")  # the read ends in the middle of the secret
    second = splitter.feed(b"et-value, ok\nafter \xc3")  # and in the middle of a character
    third = splitter.feed(b"\xa9\n")
    assert mask_lines(mask, first) == ["before"]
    assert mask_lines(mask, second) == ["the token is ***, ok"]
    assert mask_lines(mask, third) == ["after \u00e9"]


def test_a_secret_at_the_cut_of_a_long_line_is_masked_in_bulk_too():
    mask = Masker(["s3cret-value"])
    splitter = LineSplitter()
    prefix = b"x" * (MAX_LINE - 5)
    lines = splitter.feed(b"short s3cret-value\n" + prefix + b"s3cret-value and more\nlast\n")
    texts = mask_lines(mask, lines)
    assert texts[0] == "short ***" and texts[2] == "last"
    assert texts[1] == prefix.decode() + "***" + CUT_MARKER.format(len("t-value and more"))


class _Recorded:
    """The events a reporter publishes, read back from the embedded bus."""

    def __init__(self, make_settings, tmp_path):
        self.bus = open_bus(make_settings(KIRBY_EMBEDDED_PATH=str(tmp_path / "embedded.db")))
        self.consumer = self.bus.event_consumer(group="test", member="test")

    def events(self, count: int) -> list[RunEvent]:
        found = []
        for _ in range(50):
            deliveries = self.consumer.poll(0.2, 1000)
            self.consumer.ack_all(deliveries)
            found += [d.message for d in deliveries]
            if len(found) >= count:
                break
        return found


def test_lines_read_together_travel_as_few_bounded_events(make_settings, tmp_path):
    recorded = _Recorded(make_settings, tmp_path)
    reporter = RunReporter(recorded.bus, "sup-a")
    short = [f"line {n}" for n in range(2 * LINES_PER_EVENT + 1)]
    long = ["y" * (TEXT_PER_EVENT // 2 + 1)] * 3 + ["z" * (TEXT_PER_EVENT + 10)]  # a line over the bound: alone
    reporter.lines(OutputLines(RUN, 0, T0, "stdout", short))
    reporter.lines(OutputLines(RUN, len(short), T0, "stderr", long))
    reporter.close()
    events = recorded.events(7)
    assert [(e.data["seq"], len(e.data["texts"])) for e in events] == [
        (0, LINES_PER_EVENT),
        (LINES_PER_EVENT, LINES_PER_EVENT),
        (2 * LINES_PER_EVENT, 1),
        (len(short), 1),
        (len(short) + 1, 1),
        (len(short) + 2, 1),
        (len(short) + 3, 1),
    ]
    assert [text for e in events[:3] for text in e.data["texts"]] == short
    assert all(len(e.to_json()) < 1_000_000 for e in events)  # under Kafka's default message size
    recorded.bus.close()


def test_an_event_of_many_escaped_characters_stays_under_kafkas_message_size():
    texts = ["\x01" * (TEXT_PER_EVENT // 4)] * 4  # JSON writes each as \u0001: 6 bytes
    event = batch(0, texts)
    assert len(event.to_json()) < 1_000_000 and json.loads(event.to_json())["data"]["texts"] == texts


def test_the_reporters_queue_is_bounded_in_lines_and_in_text():
    queue = _BoundedQueue(max_weight=10, max_text=100)
    queue.put("a", weight=6, text=10)
    with pytest.raises(_Full):
        queue.put("b", weight=6, timeout=0.05)  # 12 lines > 10
    queue.put("c", weight=1, text=90)
    with pytest.raises(_Full):
        queue.put("d", weight=1, text=1, timeout=0.05)  # 101 characters > 100
    assert queue.take(max_weight=6) == ["a"] and queue.take(max_weight=100) == ["c"]
    queue.put("huge", weight=50, text=1000)  # heavier than the bounds: let in alone, never refused
    assert queue.take(max_weight=1) == ["huge"]


def test_a_trickle_of_log_events_waits_for_a_fuller_batch_and_any_other_event_ends_the_wait():
    queue = _BoundedQueue(max_weight=100, max_text=100)
    queue.put("log 1", urgent=False)
    started = time.monotonic()
    assert queue.take(max_weight=10, linger=0.2) == ["log 1"]
    assert time.monotonic() - started >= 0.2, "a lone log event waited for company"

    queue.put("log 2", urgent=False)
    taken = []
    taker = threading.Thread(target=lambda: taken.append(queue.take(max_weight=10, linger=600)))
    taker.start()
    queue.put("log 3", urgent=False)
    queue.put("finished")  # a run's state change: published at once, with the lines before it
    taker.join(timeout=60)
    assert taken == [["log 2", "log 3", "finished"]]

    queue.put("log 4", weight=5, urgent=False)
    queue.put("log 5", weight=5, urgent=False)
    taker = threading.Thread(target=lambda: taken.append(queue.take(max_weight=10, linger=600)))
    taker.start()
    taker.join(timeout=60)
    assert taken[-1] == ["log 4", "log 5"], "a full batch goes at once"


def test_a_script_printing_faster_than_the_bus_is_held_back(make_settings, tmp_path, monkeypatch):
    """Back-pressure: the reporter's ``lines`` blocks while its queue is full (the reading thread
    then stops reading, the script blocks on its pipe), so memory stays bounded."""
    recorded = _Recorded(make_settings, tmp_path)
    reporter = RunReporter(recorded.bus, "sup-a", max_queued=3_000, batch_size=1)  # one event per round trip
    release = threading.Event()
    publish = recorded.bus.publish_events

    def slow_publish(events):  # the bus is slow: the first round trip waits for the test
        release.wait(30)
        publish(events)

    monkeypatch.setattr(recorded.bus, "publish_events", slow_publish)
    reporter.lines(OutputLines(RUN, 0, T0, "stdout", ["x"] * 1000))  # taken by the held publisher
    reporter.lines(OutputLines(RUN, 1000, T0, "stdout", ["x"] * 2000))  # queued: 2 x (1 + 1,000) of 3,000
    blocked = threading.Thread(target=reporter.lines, args=(OutputLines(RUN, 3000, T0, "stdout", ["x"] * 1500),))
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive(), "a full queue took more lines"
    release.set()
    blocked.join(30)
    assert not blocked.is_alive(), "the queue did not make room once the bus took events"
    reporter.close()
    assert sum(len(e.data["texts"]) for e in recorded.events(5)) == 4500
    recorded.bus.close()


def test_the_web_records_a_backlog_of_lines_in_several_transactions():
    from kirby.web.events_consumer import _parts

    started = RunEvent("started", RUN, T0, "sup-a")
    events = [started, batch(0, ["x"] * 600), batch(600, ["x"] * 600), batch(1200, ["x"] * 1500), started]
    parts = _parts(events, 1000)
    assert parts == [events[:2], events[2:3], events[3:4], events[4:]]  # in order; an event is never split
    assert _parts(events, 10_000) == [events] and _parts([], 10) == []


def test_the_downgrade_of_migration_0016_splits_rows_back_into_a_row_per_line(db):
    from alembic import command

    from kirby.db import alembic_config

    with db.session() as s:
        record(s, [batch(0, [f"line {n}" for n in range(1500)]), batch(1500, ["two\nlines"], "stderr")])
    before = stored(db)
    command.downgrade(alembic_config(db.engine), "0016-1")
    with db.engine.connect() as connection:
        old = connection.execute(select(LogLine.seq, LogLine.text).order_by(LogLine.seq)).all()
    assert [tuple(row) for row in old] == [(line[0], line[2]) for line in before]
    command.upgrade(alembic_config(db.engine), "head")
    assert stored(db) == before and rows(db) == [(n, 1) for n in range(1501)]
