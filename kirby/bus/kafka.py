"""The Kafka offer bus. kafka-python is imported here and in ``kirby.bus.kafka_topics``, nowhere else.

* Topics: ``kirby.bus.kafka_topics`` creates and checks them (``ensure_topics``) before the first
  producer or consumer; no Kirby client lets the broker auto-create one.
* Producer: ``acks=all``, idempotent, keyed by run id (one run's messages share a partition, so
  they stay in order); ``publish_*`` wait for the broker's acknowledgement.
* Consumers are handed over only once their topic is in their metadata (waiting up to
  ``TOPIC_WAIT`` s, logged) and they have joined the group holding partitions of it (waiting up
  to ``ASSIGNMENT_WAIT`` s, logged; a member beyond the topic's partition count legitimately
  holds none). They refresh their metadata every ``METADATA_MAX_AGE_MS``, so a re-created topic
  or new partitions are noticed within seconds, and the rebalance that follows completes whatever
  the poll timeouts (``_keep_pending_join``); ``partitions()`` says how many they hold.
* Consumers: offers in group ``KIRBY_SUPERVISOR_GROUP_ID``, events in the group passed in;
  ``auto_offset_reset=earliest``, no auto-commit: ``ack`` commits the delivery's offset + 1 on its
  partition, which also acknowledges what came before it there (ack in the order received);
  ``release`` seeks each partition back to the oldest released offset (a partition the group
  moved to another member meanwhile goes on from its committed offset there).
  A consumer that stops heartbeating (killed) leaves the group after ``SESSION_TIMEOUT_MS`` and its
  uncommitted offers go to the remaining members.
* Outside calls are retried ``EXT_RETRIES`` times, ``EXT_WAIT_BETWEEN_RETRIES`` s apart (tenacity);
  every blocking call is bounded; what cannot be done raises BusError in one line naming the
  address and the variable.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
    NodeNotReadyError,
    RequestTimedOutError,
)
from kafka.structs import OffsetAndMetadata
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from kirby.bus.base import Consumer, Delivery, M, OfferBus
from kirby.config import Settings
from kirby.errors import BusError
from kirby.events import Offer, RunEvent

log = logging.getLogger(__name__)

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms default: a dead member moves within ~6-10 s
HEARTBEAT_INTERVAL_MS = 1500
REQUEST_TIMEOUT_MS = 8000  # per request; the consumer needs it above the session timeout
# kafka-python 2.3 refuses network frames over 1,000,000 bytes by default, below its own 1 MiB
# max_partition_fetch_bytes: a full fetch of a partition with a backlog of log lines was seen to
# fail with "Invalid frame length: 1048668" (bench/logs.py, kirby web's log). Above fetch_max_bytes (50 MiB).
RECEIVE_MESSAGE_MAX_BYTES = 64 * 1024 * 1024
SEND_TIMEOUT = 10.0  # seconds one publish attempt waits for the broker's acknowledgement
METADATA_MAX_AGE_MS = 3000  # Kirby's topics are few: re-read their metadata often (kafka-python: 300 s)
TOPIC_WAIT = 30.0  # seconds a new topic may take to become visible, with a leader for every partition
ASSIGNMENT_WAIT = 20.0  # seconds a new consumer waits to hold partitions of its topic
EMPTY_JOIN_WAIT = 2 * METADATA_MAX_AGE_MS / 1000  # after a join with none: a metadata refresh may fix it
LOG_EVERY = 5.0  # seconds between "still waiting" log lines
UNREACHABLE = (NoBrokersAvailable, KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError)
T = TypeVar("T")


def client_config(settings: Settings) -> dict:
    """Connection settings shared by the producer, consumers and admin client."""
    config = {
        "bootstrap_servers": [server.strip() for server in settings.kafka_bootstrap_servers.split(",")],
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        "api_version_auto_timeout_ms": 3000,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
        "receive_message_max_bytes": RECEIVE_MESSAGE_MAX_BYTES,
    }
    if settings.kafka_use_ssl:
        config.update(
            security_protocol="SSL",
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )
    return config


def bus_error(settings: Settings, what: str, exc: Exception) -> BusError:
    """One line naming the address, the variables to check and the fix."""
    servers = settings.kafka_bootstrap_servers
    name, detail = type(exc).__name__, str(exc).strip()
    reason = (detail if detail.startswith(name) else f"{name}: {detail}" if detail else name).splitlines()[0]
    ssl = " and KAFKA_USE_SSL / KAFKA_SSL_* files" if settings.kafka_use_ssl else ""
    if isinstance(exc, UNREACHABLE):
        return BusError(
            f"cannot reach Kafka at {servers} (KAFKA_BOOTSTRAP_SERVERS) to {what}: {reason}; "
            f"check the address{ssl} or start Kafka (deploy/services up kafka)"
        )
    return BusError(
        f"Kafka at {servers} (KAFKA_BOOTSTRAP_SERVERS) refused to {what}: {reason}; check the broker's log{ssl}"
    )


def call(settings: Settings, what: str, function: Callable[[], T], retry: bool = True) -> T:
    """Run ``function``, retrying Kafka errors EXT_RETRIES times; raise BusError when it still fails."""
    attempts = settings.ext_retries + 1 if retry else 1
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_fixed(settings.ext_wait_between_retries),
            retry=retry_if_exception_type(KafkaError),
            reraise=True,
        ):
            with attempt:
                return function()
    except (KafkaError, ssl.SSLError) as exc:  # a TLS refusal is not retried: it will not change
        raise bus_error(settings, what, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _topic_variable(settings: Settings, topic: str) -> str:
    return "KIRBY_TOPIC_JOB_OFFERS" if topic == settings.topic_job_offers else "KIRBY_TOPIC_RUN_EVENTS"


def _poll_until(check: Callable[[], T], timeout: float, waiting: str) -> T | None:
    """``check()`` every 0.2 s until truthy (returned), logging ``waiting`` every LOG_EVERY s; None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    next_log = time.monotonic() + LOG_EVERY
    while not (value := check()):
        now = time.monotonic()
        if now >= deadline:
            return None
        if now >= next_log:
            log.warning("%s", waiting)
            next_log = now + LOG_EVERY
        time.sleep(0.2)
    return value


def _keep_pending_join(consumer: KafkaConsumer) -> None:
    """Make the next poll finish a group join that kafka-python 2.x would forget (the Java client's
    KAFKA-9815). A rebalance started by a metadata change (a topic re-created, partitions added) is
    wanted only while the metadata differs from the leader's last assignment, and the leader's own
    new assignment ends that difference: when a poll's timeout ends before the SyncGroup answer, no
    later poll completes the join, and the member holds no partition until some other rebalance
    (seen: a re-created events topic not consumed for good). A pending join is marked wanted again."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and coordinator.join_future is not None and not coordinator.rejoin_needed:
        coordinator.request_rejoin()


class _Assignments(ConsumerRebalanceListener):
    """Counts the partitions of ``topic`` held (called in the polling thread): those of the latest
    assignment; during a rebalance (eager protocol: all revoked) none."""

    def __init__(self, consumer: KafkaGroupConsumer):
        self._owner = consumer

    def on_partitions_revoked(self, revoked) -> None:
        owner = self._owner  # a rebalance: nothing is received until it ends
        kept = [p for p in owner._consumer.assignment() if p.topic == owner.topic and p not in revoked]
        owner._held, owner._ids = len(kept), frozenset(p.partition for p in kept)
        owner._paused -= set(revoked)

    def on_partitions_assigned(self, assigned) -> None:
        owner = self._owner
        held = [partition for partition in owner._consumer.assignment() if partition.topic == owner.topic]
        owner._held, owner._ids = len(held), frozenset(p.partition for p in held)
        if owner._held == 0 and owner._joined_at is not None:
            log.warning("%s now holds no partition of %s: it receives nothing from it", owner.member, owner.topic)
        owner._joined_at = owner._joined_at or time.monotonic()


class KafkaGroupConsumer(Consumer[M]):
    """A KafkaConsumer in a group; its delivery token is (TopicPartition, offset). One thread only
    (``partitions`` excepted: any thread may read it)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        member: str,
        decode: Callable[[bytes], M],
        wait_for_partitions: bool = True,
    ):
        self._settings, self._decode = settings, decode
        self.topic, self.group, self.member = topic, group, member
        self._held = 0  # partitions of ``topic`` in the latest assignment (set by _Assignments)
        self._ids: frozenset[int] = frozenset()  # their numbers (set by _Assignments)
        self._paused: set[TopicPartition] = set()  # paused while this member has no room
        self._joined_at: float | None = None
        self._pending: dict = {}  # records polled while waiting for the assignment, returned first
        self._consumer = call(
            settings,
            f"join group {group}",
            lambda: KafkaConsumer(
                group_id=group,
                client_id=f"kirby-{member}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                max_poll_interval_ms=300_000,
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
                allow_auto_create_topics=False,
                **client_config(settings),
            ),
        )
        self.on_close: Callable[[KafkaGroupConsumer], None] = lambda consumer: None
        try:
            self._wait_for_topic()
            self._consumer.subscribe([topic], listener=_Assignments(self))
            if wait_for_partitions:
                self._wait_for_partitions()
        except BaseException:
            self._consumer.close(autocommit=False, timeout_ms=REQUEST_TIMEOUT_MS)
            raise

    def _wait_for_topic(self) -> None:
        """Subscribe only once the topic is in this consumer's metadata: a group formed while it is
        not gets no partitions of it until the next metadata refresh."""
        if not _poll_until(
            lambda: call(self._settings, f"read the metadata of {self.topic}", self._topic_partitions),
            TOPIC_WAIT,
            f"{self.member}: topic {self.topic} is not in Kafka's metadata yet; waiting",
        ):
            raise BusError(
                f"topic {self.topic} ({_topic_variable(self._settings, self.topic)}) is missing on Kafka at "
                f"{self._settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) after {TOPIC_WAIT:.0f} s; "
                f"start kirby web or a supervisor (they create it) or check the broker's log"
            )

    def _topic_partitions(self) -> set[int]:
        return self._consumer.partitions_for_topic(self.topic)

    def _wait_for_partitions(self) -> None:
        """Poll (keeping what arrives for ``poll``) until the group gave this member partitions; give
        up after ASSIGNMENT_WAIT s, or EMPTY_JOIN_WAIT s after a join that gave it none, logged."""
        started = time.monotonic()

        def settled() -> bool:
            polled = self._poll(0.2, 1, f"join group {self.group}")
            for partition, records in polled.items():
                self._pending.setdefault(partition, []).extend(records)
            return bool(self._held) or (
                self._joined_at is not None and time.monotonic() - self._joined_at >= EMPTY_JOIN_WAIT
            )

        _poll_until(settled, ASSIGNMENT_WAIT, f"{self.member}: waiting for partitions of {self.topic} in {self.group}")
        waited = time.monotonic() - started
        if self._held:
            log.info("%s holds %d partition(s) of %s after %.1f s", self.member, self._held, self.topic, waited)
        else:
            log.warning(
                "%s holds no partition of %s in group %s after %.0f s: it receives nothing from it until a "
                "rebalance gives it some (more members than the topic's partitions?)",
                *(self.member, self.topic, self.group, waited),
            )

    def partitions(self) -> int:
        return self._held

    def assigned(self) -> list[int]:
        """The partition numbers of ``topic`` this member holds (advertised with its heartbeat, so
        the leader can route offers to members that are alive and have room). Safe from any thread."""
        return sorted(self._ids)

    def poll(self, timeout: float, max_messages: int = 100) -> list[Delivery[M]]:
        if max_messages <= 0:  # no room: fetch nothing (paused), but poll to stay in the group
            self._pause()
            self._poll(timeout)
            return []
        if self._paused:
            self._consumer.resume(*(self._paused & self._consumer.assignment()))
            self._paused = set()
        if self._pending:  # what arrived while joining comes first
            batches, self._pending = self._pending, {}
            return self._deliveries(batches)
        return self._deliveries(self._poll(timeout, max_messages))

    def _poll(self, timeout: float, max_records: int | None = None, what: str = "poll") -> dict:
        """One ``KafkaConsumer.poll`` of at most ``timeout`` s; a Kafka error is one BusError, not
        retried (polling again is the caller's loop)."""
        limit = {"max_records": max_records} if max_records else {}
        try:
            return call(
                self._settings,
                what,
                lambda: self._consumer.poll(timeout_ms=int(max(timeout, 0) * 1000), **limit),
                retry=False,
            )
        finally:
            _keep_pending_join(self._consumer)

    def _deliveries(self, batches: dict) -> list[Delivery[M]]:
        deliveries = []
        for partition, records in batches.items():
            for record in records:
                try:
                    message = self._decode(record.value)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("skipping undecodable message at %s offset %d: %s", partition, record.offset, exc)
                    continue
                deliveries.append(Delivery(message, (TopicPartition(record.topic, record.partition), record.offset)))
        return deliveries

    def _pause(self) -> None:
        """Pause every assigned partition (newly assigned ones too). kafka-python drops what it had
        fetched ahead for them and fetches it again from the position after ``resume``: nothing
        fetched ahead is lost or skipped."""
        assigned = self._consumer.assignment()
        if assigned - self._paused:
            self._consumer.pause(*assigned)
        self._paused = set(assigned)

    def ack(self, delivery: Delivery[M]) -> None:
        self.ack_all([delivery])

    def ack_all(self, deliveries: list[Delivery[M]]) -> None:
        """One commit: for each partition, the highest offset delivered + 1."""
        highest: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            partition, offset = delivery.token
            highest[partition] = max(offset, highest.get(partition, -1))
        if not highest:
            return
        commit = {partition: OffsetAndMetadata(offset + 1, "", -1) for partition, offset in highest.items()}

        def commit_offsets() -> None:
            try:
                self._consumer.commit(commit, timeout_ms=REQUEST_TIMEOUT_MS)
            except CommitFailedError:
                # The partition moved to another member in a rebalance: it receives these
                # messages again and drops them (offers already claimed, events recorded).
                log.warning("offsets %s not committed (rebalanced); another member gets them again", highest)

        call(self._settings, "commit an offset", commit_offsets)

    def release(self, deliveries: list[Delivery[M]]) -> None:
        oldest: dict[TopicPartition, int] = {}
        for delivery in deliveries:
            partition, offset = delivery.token
            oldest[partition] = min(offset, oldest.get(partition, offset))
        assigned = self._consumer.assignment()
        for partition, offset in oldest.items():
            if partition in assigned:  # else revoked: its new owner starts from the committed offset
                self._consumer.seek(partition, offset)
                log.info("released %s from offset %d: it will be received again", partition, offset)

    def close(self) -> None:
        """Leave the group at once; uncommitted offers go to the other members."""
        try:
            self._consumer.close(autocommit=False, timeout_ms=REQUEST_TIMEOUT_MS)
        finally:
            self.on_close(self)


class KafkaBus(OfferBus):
    """The bus on ``KAFKA_BOOTSTRAP_SERVERS``. Creating it checks the broker and the topics."""

    def __init__(self, settings: Settings):
        from kirby.bus.kafka_topics import ensure_topics  # built on this module's helpers: imported here, no cycle

        self._settings = settings
        ensure_topics(settings)
        self._producer = call(
            settings,
            "connect a producer",
            lambda: KafkaProducer(
                client_id="kirby-producer",
                acks="all",
                enable_idempotence=True,
                linger_ms=0,  # publishes wait for their acknowledgement one by one
                # Records of one partition sent together fill one batch per request: log events of
                # ~30 kB would otherwise go one per request (the default batch is 16 kB).
                batch_size=512 * 1024,
                retries=5,
                retry_backoff_ms=200,
                max_block_ms=5000,
                delivery_timeout_ms=int(SEND_TIMEOUT * 1000),
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
                allow_auto_create_topics=False,
                **client_config(settings),
            ),
        )
        self._consumers: set[KafkaGroupConsumer] = set()
        self._lock = threading.Lock()
        self._router: Callable[[int], list[int] | None] | None = None

    def route_offers(self, router: Callable[[int], list[int] | None]) -> None:
        """Offers go to the partitions ``router(n)`` picks for the next ``n`` (None: by key). A
        partition the topic lacks, or a router that fails, falls back to the key."""
        self._router = router

    def _routes(self, count: int) -> list[int | None]:
        if self._router is None:
            return [None] * count
        try:
            chosen = self._router(count)
            known = call(self._settings, "read the offers topic's partitions", self._offer_partitions)
        except Exception as exc:  # noqa: BLE001 - routing is an optimisation: the key always works
            log.warning("routing %d offer(s) by key: %s", count, exc)
            return [None] * count
        if not chosen or len(chosen) != count:
            return [None] * count
        return [partition if partition in known else None for partition in chosen]

    def _offer_partitions(self) -> set[int]:
        return self._producer.partitions_for(self._settings.topic_job_offers) or set()

    def publish_offer(self, offer: Offer) -> None:
        self.publish_offers([offer])

    def _send_all(
        self, topic: str, messages: list[tuple[str, bytes]], partitions: list[int | None] | None = None
    ) -> None:
        """Send them all (to ``partitions``, one each; None: by key), then wait for every
        acknowledgement (a retry sends them all again)."""
        chosen = partitions or [None] * len(messages)

        def send_all() -> None:
            futures = [
                self._producer.send(topic, key=run_id.encode(), value=payload, partition=partition)
                for (run_id, payload), partition in zip(messages, chosen)
            ]
            for future in futures:
                future.get(timeout=SEND_TIMEOUT + 1)

        call(self._settings, f"publish to {topic}", send_all)

    def _send(self, topic: str, run_id: str, payload: bytes) -> None:
        self._send_all(topic, [(run_id, payload)])

    def publish_offers(self, offers: list[Offer], partitions: list[int] | None = None) -> None:
        chosen = partitions if partitions and len(partitions) == len(offers) else self._routes(len(offers))
        self._send_all(self._settings.topic_job_offers, [(o.run_id, o.to_json()) for o in offers], chosen)

    def publish_event(self, event: RunEvent) -> None:
        self._send(self._settings.topic_run_events, event.run_id, event.to_json())

    def publish_events(self, events: list[RunEvent]) -> None:
        self._send_all(self._settings.topic_run_events, [(e.run_id, e.to_json()) for e in events])

    def offer_consumer(self, member: str) -> Consumer[Offer]:
        return self._consumer(
            self._settings.topic_job_offers, self._settings.supervisor_group_id, member, Offer.from_json
        )

    def event_consumer(self, group: str, member: str) -> Consumer[RunEvent]:
        return self._consumer(self._settings.topic_run_events, group, member, RunEvent.from_json)

    def _consumer(self, topic: str, group: str, member: str, decode: Callable) -> KafkaGroupConsumer:
        """A new member of ``group``. A second member of a group opened on this bus does not wait for
        partitions: the group settles only once the first one polls again, after this returns."""
        with self._lock:
            alone = not any(consumer.group == group for consumer in self._consumers)
        consumer = KafkaGroupConsumer(self._settings, topic, group, member, decode, wait_for_partitions=alone)
        with self._lock:
            self._consumers.add(consumer)
        consumer.on_close = self._forget
        return consumer

    def _forget(self, consumer: KafkaGroupConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def flush(self) -> None:
        call(self._settings, "flush", lambda: self._producer.flush(timeout=SEND_TIMEOUT))

    def close(self) -> None:
        """Close the consumers opened here (leaving their groups), then the producer."""
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.close()
        self._producer.close(timeout=SEND_TIMEOUT)
