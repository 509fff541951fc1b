"""Publishing offers with a bounded wait: a bus that hangs (a Kafka broker down: its client retries
for tens of seconds) holds the leader's scheduler at most ``timeout`` seconds.

``BoundedPublisher.publish(offers)`` runs ``bus.publish_offers`` in a publisher thread of its own
and waits at most ``timeout`` seconds; after that it raises ``BusError`` and the publish goes on
in the background: ``busy`` stays True until it ended, and the scheduler publishes nothing (moves
no cursor) meanwhile. Its offers may be stored in the end although no cursor moved: they are
planned and published again (a slot published twice still runs once: runs are claimed by id).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from kirby.bus.base import OfferBus
from kirby.errors import BusError
from kirby.events import Offer

PUBLISH_TIMEOUT = 20.0  # seconds a publish may hold the scheduler (Kafka's own retries take up to ~45 s)


class BoundedPublisher:
    def __init__(self, bus: OfferBus, timeout: float = PUBLISH_TIMEOUT):
        self.bus, self.timeout = bus, timeout
        self._executor: ThreadPoolExecutor | None = None  # created at the first publish
        self._pending: Future | None = None  # a publish that outlived the timeout

    @property
    def busy(self) -> bool:
        """Whether a publish that outlived the timeout is still going on."""
        if self._pending is not None and self._pending.done():
            self._pending = None
        return self._pending is not None

    def publish(self, offers: list[Offer]) -> None:
        """``bus.publish_offers(offers)``: its errors, or BusError after ``timeout`` seconds."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publisher")
        future = self._executor.submit(self.bus.publish_offers, offers)
        try:
            future.result(timeout=self.timeout)
        except FutureTimeout:
            self._pending = future
            raise BusError(
                f"publishing {len(offers)} offer(s) took more than {self.timeout:g} s (the bus is down or "
                "overloaded); nothing more is published until it ends"
            ) from None

    def close(self) -> None:
        """Stop the publisher thread, without waiting for a hung publish."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
