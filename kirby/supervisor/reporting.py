"""Run events out of a supervisor: claimed, started, log lines, finished, skipped.

``RunReporter`` publishes through the bus from one background thread, so a slow bus never blocks
a script's output reader for long; its queue is bounded, so a script that prints faster than the
bus can carry is slowed down (back-pressure through its pipe) instead of growing memory.

A batch the bus refuses (Kafka down for minutes) is kept and published again every
``retry_every`` seconds until the bus takes it, so no run is left ``claimed`` or ``running`` in the
runs table for want of its events; meanwhile the queue fills and, once full, slows the emitters
down. Only ``close`` gives up on what it cannot publish within its timeout (and says so).
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime

from kirby.bus.base import OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError
from kirby.events import Offer, RunEvent, offer_data
from kirby.tasks.base import OutputLine, RunResult

log = logging.getLogger(__name__)

_STOP = object()


class RunReporter:
    """Publishes run events of supervisor ``supervisor`` in order, from one thread."""

    def __init__(
        self, bus: OfferBus, supervisor: str, max_queued: int = 10_000, batch_size: int = 500, retry_every: float = 1.0
    ):
        self.bus = bus
        self.retry_every = retry_every
        self._giving_up = threading.Event()
        self.batch_size = batch_size
        self.supervisor = supervisor
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None  # started with the first event, not here
        self._starting = threading.Lock()

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._publish_loop, name="run-reporter", daemon=True)
                self._thread.start()

    def _emit(self, kind: str, run_id: str, data: dict, time: datetime | None = None) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(
            RunEvent(kind=kind, run_id=run_id, time=time or utcnow(), supervisor=self.supervisor, data=data)
        )

    def offered(self, offer: Offer) -> None:
        self._emit("offered", offer.run_id, offer_data(offer))

    def claimed(self, offer: Offer) -> None:
        self._emit("claimed", offer.run_id, offer_data(offer))

    def skipped(self, offer: Offer, reason: str) -> None:
        self._emit("skipped", offer.run_id, {**offer_data(offer), "state": "skipped", "error": reason})

    def started(self, run_id: str, when: datetime) -> None:
        self._emit("started", run_id, {}, when)

    def line(self, line: OutputLine) -> None:
        self._emit("log", line.run_id, {"seq": line.seq, "stream": line.stream, "text": line.text}, line.time)

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
            batch, stop = [self._queue.get()], False
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
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
        except queue.Full:
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
