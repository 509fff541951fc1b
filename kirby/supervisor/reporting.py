"""Run events out of a supervisor: claimed, started, log lines, finished, skipped.

``RunReporter`` publishes through the bus from one background thread, so a slow bus never blocks
a script's output reader for long; its queue is bounded (in events plus log lines, and in bytes
of log text), so a script that prints faster than the bus can carry is slowed down
(back-pressure through its pipe) instead of growing memory.

Log lines read together (``lines``) travel as few ``log`` events: each carries up to
LINES_PER_EVENT consecutive lines (``seq`` of the first, ``texts``) and at most
TEXT_PER_EVENT characters (one line over that travels alone: lines are cut at 64 KiB), so an
event stays well under Kafka's default 1 MB message limit whatever JSON escaping does.

A trickle of log lines (a daemon's heartbeat every second) is not published line by line: a batch
of log events only waits up to ``linger`` seconds (LOG_LINGER) for more, until ``batch_size`` is
queued or any other event (claimed, started, finished...) or shutdown comes, which ends the wait at
once; so an idle supervisor makes a few bus round trips a second, not one per line, and a run's
state changes are never delayed.

A batch the bus refuses (Kafka down for minutes) is kept and published again every
``retry_every`` seconds until the bus takes it, so no run is left ``claimed`` or ``running`` in the
runs table for want of its events; meanwhile the queue fills and, once full, slows the emitters
down. Only ``close`` gives up on what it cannot publish within its timeout (and says so).
"""

from __future__ import annotations

import collections
import logging
import threading
import time as monotonic_time
from datetime import datetime

from kirby.bus.base import OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError
from kirby.events import Offer, RunEvent, offer_data
from kirby.tasks.base import OutputLine, OutputLines, RunResult

log = logging.getLogger(__name__)

_STOP = object()
LINES_PER_EVENT = 1000
LOG_LINGER = 1.0  # seconds a batch of log events waits for more (see above)
TEXT_PER_EVENT = 128 * 1024  # characters


class _Full(Exception):
    pass


class _BoundedQueue:
    """A FIFO bounded in weight (events + log lines) and in log text (characters); an item heavier
    than the bounds is let in when the queue is empty, so nothing is refused for its size."""

    def __init__(self, max_weight: int, max_text: int):
        self.max_weight, self.max_text = max_weight, max_text
        self._items: collections.deque = collections.deque()
        self._weight = self._text = 0
        self._urgent = 0  # queued items that end a linger
        self._linger_weight: int | None = None  # while the taker lingers: the weight that ends it
        self._changed = threading.Condition()

    def put(self, item, weight: int = 1, text: int = 0, timeout: float | None = None, urgent: bool = True) -> None:
        deadline = None if timeout is None else monotonic_time.monotonic() + timeout
        with self._changed:
            while self._items and (self._weight + weight > self.max_weight or self._text + text > self.max_text):
                left = None if deadline is None else deadline - monotonic_time.monotonic()
                if left is not None and left <= 0:
                    raise _Full
                self._changed.wait(left)
            self._items.append((item, weight, text, urgent))
            self._weight += weight
            self._text += text
            self._urgent += urgent
            if self._linger_weight is None or urgent or self._lingered_enough(self._linger_weight):
                self._changed.notify_all()  # a lingering taker is woken only to end its wait

    def _lingered_enough(self, max_weight: int) -> bool:
        """A full batch is queued, or the queue is half full (writers may soon be held back)."""
        return self._weight >= max_weight or 2 * self._weight >= self.max_weight or 2 * self._text >= self.max_text

    def take(self, max_weight: int, linger: float = 0.0) -> list:
        """Wait for items; return the first ones, up to ``max_weight`` (at least one). With
        ``linger``, while only items put with ``urgent=False`` are queued, under ``max_weight``,
        wait up to ``linger`` seconds more for a fuller batch."""
        with self._changed:
            while not self._items:
                self._changed.wait()
            until = monotonic_time.monotonic() + linger
            self._linger_weight = max_weight
            while not self._urgent and not self._lingered_enough(max_weight) and monotonic_time.monotonic() < until:
                self._changed.wait(until - monotonic_time.monotonic())
            self._linger_weight = None
            taken, weight = [], 0
            while self._items and (not taken or weight + self._items[0][1] <= max_weight):
                item, item_weight, text, urgent = self._items.popleft()
                taken.append(item)
                weight += item_weight
                self._weight -= item_weight
                self._text -= text
                self._urgent -= urgent
            self._changed.notify_all()
            return taken

    def qsize(self) -> int:
        with self._changed:
            return len(self._items)


class RunReporter:
    """Publishes run events of supervisor ``supervisor`` in order, from one thread."""

    def __init__(
        self,
        bus: OfferBus,
        supervisor: str,
        max_queued: int = 100_000,
        batch_size: int = 20_000,
        retry_every: float = 1.0,
        max_queued_text: int = 16 * 1024 * 1024,
        linger: float = LOG_LINGER,
    ):
        """``max_queued``: events + log lines held at most (and ``max_queued_text`` characters of
        log text: the bound that holds for long lines); ``batch_size``: events + log lines published
        in one bus round trip at most (20 events of 1,000 lines: a round trip per 20,000 lines);
        ``linger``: seconds a batch of log events waits for more (0: publish at once)."""
        self.bus = bus
        self.linger = linger
        self.retry_every = retry_every
        self._giving_up = threading.Event()
        self.batch_size = batch_size
        self.supervisor = supervisor
        self._queue = _BoundedQueue(max_queued, max_queued_text)
        self._thread: threading.Thread | None = None  # started with the first event, not here
        self._starting = threading.Lock()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish_loop, name="run-reporter", daemon=True)
                self._thread.start()

    def _emit(self, kind: str, run_id: str, data: dict, time: datetime | None = None, lines: int = 0, text: int = 0):
        if self._thread is None:
            self._start()
        event = RunEvent(kind=kind, run_id=run_id, time=time or utcnow(), supervisor=self.supervisor, data=data)
        self._queue.put(event, 1 + lines, text, urgent=kind != "log")

    def offered(self, offer: Offer) -> None:
        self._emit("offered", offer.run_id, offer_data(offer))

    def claimed(self, offer: Offer) -> None:
        self._emit("claimed", offer.run_id, offer_data(offer))

    def skipped(self, offer: Offer, reason: str) -> None:
        self._emit("skipped", offer.run_id, {**offer_data(offer), "state": "skipped", "error": reason})

    def started(self, run_id: str, when: datetime) -> None:
        self._emit("started", run_id, {}, when)

    def sent(self, run_id: str, when: datetime, task: str, expires_at: datetime | None) -> None:
        """A Celery run was handed to its broker (``kirby.recorder``: state ``sent``)."""
        self._emit("sent", run_id, {"task": task, "expires_at": expires_at}, when)

    def line(self, line: OutputLine) -> None:
        self._emit("log", line.run_id, {"seq": line.seq, "stream": line.stream, "text": line.text}, line.time, 1)

    def lines(self, batch: OutputLines) -> None:
        """Lines read together: as few ``log`` events as the bounds per event allow (see above)."""
        texts, start = batch.texts, 0
        while start < len(texts):
            end = min(len(texts), start + LINES_PER_EVENT)
            size = sum(map(len, texts[start:end]))
            if size > TEXT_PER_EVENT:  # long lines: as many as fit, at least one
                end, size = start + 1, len(texts[start])
                while end < len(texts) and size + len(texts[end]) <= TEXT_PER_EVENT:
                    size += len(texts[end])
                    end += 1
            data = {"seq": batch.first_seq + start, "stream": batch.stream, "texts": texts[start:end]}
            self._emit("log", batch.run_id, data, batch.time, end - start, size)
            start = end

    def finished(self, result: RunResult, state: str | None = None) -> None:
        state = state or result.state
        error = result.error
        if state == "cancelled":  # the runs table has no such state: judge by how the process ended
            state = "succeeded" if result.exit_code == 0 else "failed"
            error = error or "stopped by its supervisor"
        data = {
            "state": state,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "error": error,
        }
        self._emit("finished", result.run_id, data, result.finished_at)

    def failed_before_start(self, run_id: str, error: str, output_lines: list[str]) -> None:
        """A run that could not start (e.g. its package failed to install): log lines, then failed."""
        now = utcnow()
        for seq, text in enumerate(output_lines, start=1):
            self._emit("log", run_id, {"seq": seq, "stream": "system", "text": text}, now)
        self._emit("finished", run_id, {"state": "failed", "exit_code": None, "signal": None, "error": error}, now)

    def _publish_loop(self) -> None:
        """Publish what is queued in batches (one bus round trip each), in order, until stopped."""
        while True:
            batch, stop = self._queue.take(self.batch_size, self.linger), False
            if _STOP in batch:
                batch, stop = batch[: batch.index(_STOP)], True
            if batch:
                self._publish(batch)
            if stop:
                return

    def _publish(self, events: list[RunEvent]) -> None:
        failures = 0
        while True:
            try:
                self.bus.publish_events(events)
                if failures:
                    log.info("published the %d run event(s) held back since the bus failed", len(events))
                return
            except KirbyError as exc:  # the bus retried already: hold the batch and try again
                failures += 1
                if self._giving_up.is_set():
                    log.error(
                        "could not publish %d run event(s) (first: %s of run %s) before shutting down: %s",
                        len(events),
                        events[0].kind,
                        events[0].run_id,
                        exc,
                    )
                    return
                if failures == 1:
                    log.error(
                        "could not publish %d run event(s); holding them until the bus takes them: %s", len(events), exc
                    )
                self._giving_up.wait(self.retry_every)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued (up to ``timeout``), then stop the thread."""
        if self._thread is None:  # nothing was ever reported
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except _Full:
            self._giving_up.set()
            log.error("run reporter: %d events still queued at shutdown", self._queue.qsize())
            return
        self._thread.join(timeout)
        if self._thread.is_alive():  # the bus is still down: stop holding events back
            self._giving_up.set()
            self._thread.join(timeout)
        try:
            self.bus.flush()
        except KirbyError as exc:
            log.error("run reporter: flush failed at shutdown: %s", exc)
