"""The embedded offer bus: one SQLite file shared by the processes of one host (the default).

Same semantics as the Kafka backend, across processes:

* each stream (``bus_offers``, ``bus_events``) is a table of messages whose autoincrement id is
  the publish order (SQLite serializes writers, so ids commit in order);
* each consumer group has a cursor (``bus_groups``: the highest id handed out) and in-flight rows
  (``bus_inflight``: handed out, not yet acknowledged, with their owner); a new group starts at
  the oldest retained message, like Kafka's ``auto_offset_reset=earliest``;
* consumers heartbeat (``bus_members``) from their polls and a background thread, at most once
  every HEARTBEAT_INTERVAL seconds; an owner unseen for ``session_timeout`` seconds is dead and its in-flight rows go back to the group, as do
  a closing consumer's. Messages are handed out in publish order, so one consumer sees the events
  of a run in order;
* a waiting poll sleeps until a writer signals new work through the stream's wake file
  (``kirby.bus.wake``: inotify), so an idle consumer costs no look at the file every 20 ms;
* acknowledged messages older than ``retention`` seconds are pruned, and any message older than
  ``max_age`` (Kafka's retention.ms).

Tables are prefixed ``bus_``: the embedded lease store shares the file. Commits use WAL with
``synchronous=NORMAL``: a published message survives the crash of any process (like Kafka's
default, which does not fsync each message); a power loss may lose the last ones.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kirby.bus.base import Consumer, Delivery, M, OfferBus
from kirby.bus.sqlite import SCHEMA, STREAMS, bus_file, prune
from kirby.bus.wake import Waiter, touch, wake_path
from kirby.config import Settings
from kirby.errors import BusError
from kirby.events import Offer, RunEvent

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0  # seconds; at most one heartbeat write per interval
PRUNE_INTERVAL = 60.0


class LocalConsumer(Consumer[M]):
    """A member of group ``group`` on ``stream``; its token is the message id."""

    def __init__(self, bus: LocalBus, stream: str, group: str, member: str, decode: Callable[[bytes], M]):
        self._bus, self._stream, self._decode = bus, stream, decode
        self._table = STREAMS[stream]
        self.member_id = f"{member}:{uuid.uuid4().hex[:12]}"  # two consumers may share a name
        self._db = bus_file(bus.path, bus.busy_timeout)
        self._key = (stream, group)
        self._db.execute("INSERT OR IGNORE INTO bus_groups (stream, grp) VALUES (?, ?)", self._key)
        self._closed = threading.Event()
        self._waiter = Waiter(bus.wake[stream])  # watching before the first look: no signal is lost
        self._beaten = float("-inf")  # monotonic instant of the last heartbeat write
        self.heartbeat(time.time())
        self._last_prune = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"bus-heartbeat-{member}", daemon=True)
        self._thread.start()

    def heartbeat(self, now: float) -> None:
        """Record this member alive at ``now`` (skipped when done less than HEARTBEAT_INTERVAL ago)."""
        if time.monotonic() - self._beaten < HEARTBEAT_INTERVAL:
            return
        self._beaten = time.monotonic()
        self._db.execute(
            "INSERT INTO bus_members (stream, grp, member, last_seen) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (stream, grp, member) DO UPDATE SET last_seen = excluded.last_seen",
            (*self._key, self.member_id, now),
        )

    def _beat(self) -> None:
        while not self._closed.wait(HEARTBEAT_INTERVAL):
            try:
                self.heartbeat(time.time())
                if time.monotonic() - self._last_prune > PRUNE_INTERVAL:
                    self._last_prune = time.monotonic()
                    prune(self._db, self._stream, time.time(), self._bus.retention, self._bus.max_age)
            except BusError as exc:  # missed beats only make this member look dead sooner
                log.warning("bus heartbeat of %s failed: %s", self.member_id, exc)

    def poll(self, timeout: float, max_messages: int = 100) -> list[Delivery[M]]:
        if self._closed.is_set():
            raise BusError("this bus consumer is closed; open a new one")
        deadline = time.monotonic() + max(timeout, 0.0)
        self.heartbeat(time.time())
        while True:
            self._waiter.clear()  # before the look: a signal after it ends the next wait at once
            rows = self.take(time.time(), max_messages)
            if rows or time.monotonic() >= deadline:
                return [Delivery(self._decode(payload), message_id) for message_id, payload in rows]
            self._waiter.wait(deadline - time.monotonic())

    def _live_after(self, now: float) -> float:
        return now - self._bus.session_timeout

    def _has_work(self, now: float) -> bool:
        """A cheap read: new messages, or in-flight rows without a live owner."""
        (found,) = self._db.execute(
            f"SELECT EXISTS (SELECT 1 FROM {self._table} WHERE id >"
            " (SELECT cursor FROM bus_groups WHERE stream = ? AND grp = ?))"
            " OR EXISTS (SELECT 1 FROM bus_inflight WHERE stream = ? AND grp = ? AND (owner IS NULL"
            "  OR owner NOT IN (SELECT member FROM bus_members WHERE stream = ? AND grp = ? AND last_seen >= ?)))",
            (*self._key, *self._key, *self._key, self._live_after(now)),
        )[0]
        return bool(found)

    def take(self, now: float, limit: int) -> list[tuple[int, bytes]]:
        """Release dead owners' rows, then hand this member up to ``limit`` messages, oldest first."""
        if limit <= 0 or not self._has_work(now):
            return []
        stream, group = self._key
        with self._db.transaction() as c:
            c.execute(
                "UPDATE bus_inflight SET owner = NULL WHERE stream = ? AND grp = ? AND owner IS NOT NULL"
                " AND owner NOT IN (SELECT member FROM bus_members WHERE stream = ? AND grp = ? AND last_seen >= ?)",
                (*self._key, *self._key, self._live_after(now)),
            )
            c.execute(
                "DELETE FROM bus_members WHERE stream = ? AND grp = ? AND last_seen < ?",
                (*self._key, self._live_after(now)),
            )
            limit = self._fair_share(c, now, limit)
            released = [
                row[0]
                for row in c.execute(
                    "SELECT message_id FROM bus_inflight WHERE stream = ? AND grp = ? AND owner IS NULL"
                    " ORDER BY message_id LIMIT ?",
                    (*self._key, limit),
                )
            ]
            c.executemany(
                "UPDATE bus_inflight SET owner = ?, delivered_at = ? WHERE stream = ? AND grp = ? AND message_id = ?",
                [(self.member_id, now, stream, group, message_id) for message_id in released],
            )
            (cursor,) = c.execute("SELECT cursor FROM bus_groups WHERE stream = ? AND grp = ?", self._key).fetchone()
            fresh = [
                row[0]
                for row in c.execute(
                    f"SELECT id FROM {self._table} WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit - len(released))
                )
            ]
            c.executemany(
                "INSERT INTO bus_inflight (stream, grp, message_id, owner, delivered_at) VALUES (?, ?, ?, ?, ?)",
                [(stream, group, message_id, self.member_id, now) for message_id in fresh],
            )
            if fresh:
                c.execute("UPDATE bus_groups SET cursor = ? WHERE stream = ? AND grp = ?", (fresh[-1], *self._key))
            ids = released + fresh
            marks = ",".join("?" * len(ids))
            return c.execute(f"SELECT id, payload FROM {self._table} WHERE id IN ({marks}) ORDER BY id", ids).fetchall()

    def _fair_share(self, c, now: float, limit: int) -> int:
        """``limit``, or less: waiting messages (new, or released) / live members, rounded up. Counts
        at most ``limit`` x members rows, so a long backlog (a run's log lines) costs no more."""
        (members,) = c.execute(
            "SELECT COUNT(*) FROM bus_members WHERE stream = ? AND grp = ? AND last_seen >= ?",
            (*self._key, self._live_after(now)),
        ).fetchone()
        if members <= 1:
            return limit
        cap = limit * members
        (waiting,) = c.execute(
            f"SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM {self._table} WHERE id >"
            " (SELECT cursor FROM bus_groups WHERE stream = ? AND grp = ?) LIMIT ?))"
            " + (SELECT COUNT(*) FROM (SELECT 1 FROM bus_inflight WHERE stream = ? AND grp = ? AND owner IS NULL"
            " LIMIT ?))",
            (*self._key, cap, *self._key, cap),
        ).fetchone()
        return max(1, min(limit, -(-waiting // members)))

    def ack(self, delivery: Delivery[M]) -> None:
        self._db.execute(
            "DELETE FROM bus_inflight WHERE stream = ? AND grp = ? AND message_id = ?", (*self._key, delivery.token)
        )

    def ack_all(self, deliveries: list[Delivery[M]]) -> None:
        """One transaction for all of them."""
        with self._db.transaction() as c:
            c.executemany(
                "DELETE FROM bus_inflight WHERE stream = ? AND grp = ? AND message_id = ?",
                [(*self._key, delivery.token) for delivery in deliveries],
            )

    def release(self, deliveries: list[Delivery[M]]) -> None:
        """The rows go back to the group at once (the next ``take`` of any member hands them out)."""
        if not deliveries:
            return
        with self._db.transaction() as c:
            c.executemany(
                "UPDATE bus_inflight SET owner = NULL WHERE stream = ? AND grp = ? AND message_id = ? AND owner = ?",
                [(*self._key, delivery.token, self.member_id) for delivery in deliveries],
            )
        touch(self._bus.wake[self._stream])

    def close(self) -> None:
        """Leave the group: this member's unacknowledged messages go back to it at once."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join()
        try:
            with self._db.transaction() as c:
                c.execute(
                    "UPDATE bus_inflight SET owner = NULL WHERE stream = ? AND grp = ? AND owner = ?",
                    (*self._key, self.member_id),
                )
                c.execute(
                    "DELETE FROM bus_members WHERE stream = ? AND grp = ? AND member = ?", (*self._key, self.member_id)
                )
            touch(self._bus.wake[self._stream])  # its messages are free for the others now
        finally:
            self._waiter.close()
            self._db.close()
            self._bus.forget(self)


class LocalBus(OfferBus):
    """The embedded bus on ``settings.embedded_path``. Timeouts and retention are in seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        session_timeout: float = 6.0,
        busy_timeout: float = 10.0,
        retention: float = 3600.0,
        max_age: float = 7 * 24 * 3600.0,
    ):
        self.path = Path(settings.embedded_path)
        self.group_id = settings.supervisor_group_id
        self.session_timeout, self.busy_timeout = session_timeout, busy_timeout
        self.retention, self.max_age = retention, max_age
        self._db = bus_file(self.path, busy_timeout)
        with self._db.transaction() as c:
            for statement in SCHEMA:
                c.execute(statement)
        self.wake = {stream: wake_path(self.path, stream) for stream in STREAMS}  # touched after a commit
        for path in self.wake.values():
            touch(path)
        self._consumers: set[LocalConsumer] = set()
        self._consumers_lock = threading.Lock()
        self._last_prune = 0.0

    def _publish(self, stream: str, messages: list[tuple[str, bytes]]) -> None:
        """Insert ``(run_id, payload)`` messages in one transaction."""
        now = time.time()
        with self._db.transaction() as c:
            c.executemany(
                f"INSERT INTO {STREAMS[stream]} (run_id, payload, created_at) VALUES (?, ?, ?)",
                [(run_id, payload, now) for run_id, payload in messages],
            )
        touch(self.wake[stream])
        if time.monotonic() - self._last_prune > PRUNE_INTERVAL:
            self._last_prune = time.monotonic()
            prune(self._db, stream, now, self.retention, self.max_age)

    def publish_offer(self, offer: Offer) -> None:
        self._publish("offers", [(offer.run_id, offer.to_json())])

    def publish_offers(self, offers: list[Offer], partitions: list[int] | None = None) -> None:
        self._publish("offers", [(offer.run_id, offer.to_json()) for offer in offers])

    def publish_event(self, event: RunEvent) -> None:
        self._publish("events", [(event.run_id, event.to_json())])

    def publish_events(self, events: list[RunEvent]) -> None:
        self._publish("events", [(event.run_id, event.to_json()) for event in events])

    def offer_consumer(self, member: str) -> Consumer[Offer]:
        return self._consumer("offers", self.group_id, member, Offer.from_json)

    def event_consumer(self, group: str, member: str) -> Consumer[RunEvent]:
        return self._consumer("events", group, member, RunEvent.from_json)

    def _consumer(self, stream: str, group: str, member: str, decode: Callable) -> LocalConsumer:
        consumer = LocalConsumer(self, stream, group, member, decode)
        with self._consumers_lock:
            self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: LocalConsumer) -> None:
        with self._consumers_lock:
            self._consumers.discard(consumer)

    def close(self) -> None:
        """Close the consumers opened here (their unacknowledged messages are released), then the file."""
        with self._consumers_lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.close()
        self._db.close()
