"""Celery's task events from one broker, in a thread: ``EventsReceiver(broker, on_event).start()``.

A Celery events receiver (``app.events.Receiver``) on the broker; every task event dict is handed to
``on_event`` (from the receiver's thread). The connection is reopened after an error (logged once
per outage), so a broker restart only loses the events sent while nobody listened. Workers send
task events when started with ``-E`` (or ``worker_send_task_events = True``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery

from kirby.celery.sender import masked

log = logging.getLogger(__name__)


class EventsReceiver:
    def __init__(self, broker: str, on_event: Callable[[dict[str, Any]], None], retry_every: float = 2.0):
        self.broker = broker
        self.on_event = on_event
        self.retry_every = retry_every
        self.app = Celery("kirby-events", broker=broker, set_as_current=False)
        self.app.conf.broker_connection_timeout = 5.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._receiver: Any = None
        self.connected = threading.Event()  # set while the receiver is consuming

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kirby-celery-events", daemon=True)
        self._thread.start()

    def _handle(self, event: dict[str, Any]) -> None:
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - one bad event must not stop the stream
            log.exception("could not record Celery event %s of task %s", event.get("type"), event.get("uuid"))

    def _loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    connection.ensure_connection(max_retries=1)
                    receiver = self._receiver = self.app.events.Receiver(connection, handlers={"*": self._handle})
                    receiver.should_stop = self._stop.is_set()
                    self.connected.set()
                    if failing:
                        log.info("Celery events: connected to %s again", masked(self.broker))
                    failing = False
                    for _ in receiver.consume(limit=None, timeout=None, safety_interval=1, wakeup=False):
                        if self._stop.is_set():
                            receiver.should_stop = True
            except Exception as exc:  # noqa: BLE001 - reconnect; the outage is logged once
                self.connected.clear()
                if not failing:
                    log.error("Celery events: lost %s (%s); reconnecting", masked(self.broker), exc)
                failing = True
                self._stop.wait(self.retry_every)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True  # checked by the consumer loop at least every second
        if self._thread is not None:
            self._thread.join(timeout)
