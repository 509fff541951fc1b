"""The offer bus contract. Backends: ``kafka.py`` (Kafka) and ``local.py`` (embedded, SQLite file).

Two streams travel on the bus:

* **offers** (topic ``KIRBY_TOPIC_JOB_OFFERS``): published keyed by run id; consumed by the members
  of one consumer group (``KIRBY_SUPERVISOR_GROUP_ID``), each offer delivered to one member at a
  time. A member acknowledges an offer explicitly (the runner does it once the claim of the run
  is decided); an offer whose consumer dies or closes unacknowledged is redelivered to another
  member, and one the member gives back (``release``: it could not decide it) is delivered again.
  Delivery is at-least-once: duplicates are possible and harmless (runs are claimed by id).
* **run events** (topic ``KIRBY_TOPIC_RUN_EVENTS``): state changes and log lines, keyed by run
  id so that the events of one run stay in order; consumed with the same group semantics by the
  processes that persist them (``kirby web``).

Errors: a backend that cannot reach its service after ``EXT_RETRIES`` retries raises ``BusError``
with one line naming the address and the variable to fix. No method blocks forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kirby.events import Offer, RunEvent

M = TypeVar("M")


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One received message and the backend's opaque token to acknowledge it."""

    message: M
    token: Any


class Consumer(ABC, Generic[M]):
    """A member of a consumer group on one stream."""

    @abstractmethod
    def poll(self, timeout: float, max_messages: int = 100) -> list[Delivery[M]]:
        """Wait up to ``timeout`` seconds for messages; return what arrived (maybe nothing), at most
        ``max_messages``. What this member is not handed stays on the bus: a member with no room
        passes ``max_messages=0`` to receive nothing while staying a live member of the group (Kafka:
        its partitions are paused until it asks for messages again)."""

    @abstractmethod
    def ack(self, delivery: Delivery[M]) -> None:
        """Acknowledge ``delivery``: it will not be redelivered to this group.

        Acknowledge in the order received; acknowledging a message may acknowledge the ones
        received before it on the same partition (Kafka's offsets).
        """

    def ack_all(self, deliveries: list[Delivery[M]]) -> None:
        """Acknowledge ``deliveries`` (in the order received). Backends may override to do it in one
        round trip (Kafka: one commit of the highest offset per partition)."""
        for delivery in deliveries:
            self.ack(delivery)

    @abstractmethod
    def release(self, deliveries: list[Delivery[M]]) -> None:
        """Give ``deliveries`` (received, not acknowledged) back: they will be delivered again, to
        this member or another, as if never received. Call it when handling them failed before
        their outcome was decided (e.g. the lease store was unreachable).

        Pass every unacknowledged delivery of the partitions concerned (Kafka rewinds each
        partition to the oldest one given, so what followed it there comes again too).
        """

    @abstractmethod
    def close(self) -> None:
        """Leave the group. Unacknowledged messages go to other members."""

    def partitions(self) -> int | None:
        """How many partitions of its stream this member holds in its latest assignment; 0 means it
        receives nothing (health pages report it). Safe from any thread. ``None`` (the default):
        the backend does not split streams into partitions (the embedded bus)."""
        return None

    def assigned(self) -> list[int] | None:
        """The numbers of the partitions ``partitions()`` counts; ``None`` without partitions."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OfferBus(ABC):
    """Publishes and consumes offers and run events. Safe to use from several threads."""

    @abstractmethod
    def publish_offer(self, offer: Offer) -> None:
        """Publish ``offer`` keyed by its run id; returns once the bus has stored it durably."""

    def publish_offers(self, offers: list[Offer], partitions: list[int] | None = None) -> None:
        """Publish each offer, in order; returns once all are stored. Backends may override to batch
        them (e.g. send all, then wait once). ``partitions`` (one per offer) overrides the router on
        a partitioned bus (a full member handing offers back); others ignore it."""
        for offer in offers:
            self.publish_offer(offer)

    def route_offers(self, router: Callable[[int], list[int] | None]) -> None:
        """Let ``router(n)`` pick the partitions of the next ``n`` offers published (None: the
        backend's own choice). Default: ignored, for a bus whose offers any member may take (the
        embedded bus); Kafka uses it to send offers to members that are alive and have room."""

    @abstractmethod
    def offer_consumer(self, member: str) -> Consumer[Offer]:
        """Join the supervisors' group as ``member`` and return its offer consumer."""

    @abstractmethod
    def publish_event(self, event: RunEvent) -> None:
        """Publish a run event keyed by its run id (durable when this returns, unless ``flush`` is deferred)."""

    def publish_events(self, events: list[RunEvent]) -> None:
        """Publish each event, in order; returns once all are stored. Backends may batch them."""
        for event in events:
            self.publish_event(event)

    @abstractmethod
    def event_consumer(self, group: str, member: str) -> Consumer[RunEvent]:
        """Join consumer group ``group`` on the run events and return the consumer."""

    def flush(self) -> None:
        """Wait until everything published so far is stored. Default: publishing is synchronous."""

    @abstractmethod
    def close(self) -> None:
        """Release connections. The bus is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
