"""The Kafka offer bus. kafka-python is imported here and nowhere else in Kirby.

* Topics ``KIRBY_TOPIC_JOB_OFFERS`` and ``KIRBY_TOPIC_RUN_EVENTS`` are created when missing
  (``PARTITIONS`` partitions, replication ``min(3, brokers)``).
* Producer: ``acks=all``, idempotent, keyed by run id (one run's messages share a partition, so
  they stay in order); ``publish_*`` wait for the broker's acknowledgement.
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
from collections.abc import Callable
from typing import TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NoBrokersAvailable,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
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
SEND_TIMEOUT = 10.0  # seconds one publish attempt waits for the broker's acknowledgement
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


def _admin(settings: Settings) -> KafkaAdminClient:
    return call(settings, "connect", lambda: KafkaAdminClient(client_id="kirby-admin", **client_config(settings)))


def _create_topic(admin: KafkaAdminClient, topic: str, replicas: int) -> None:
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, replicas)])
    except TopicAlreadyExistsError:  # another process created it first
        pass


def ensure_topics(settings: Settings) -> None:
    """Create the offers and events topics when missing (harmless when another process races us)."""
    admin = _admin(settings)
    try:
        existing = set(call(settings, "list topics", admin.list_topics))
        brokers = len(call(settings, "describe the cluster", admin.describe_cluster)["brokers"])
        for topic in (settings.topic_job_offers, settings.topic_run_events):
            if topic in existing:
                continue
            call(settings, f"create topic {topic}", lambda: _create_topic(admin, topic, min(3, brokers)))
    finally:
        admin.close()


def delete_topics(settings: Settings) -> None:
    """Delete the offers and events topics (tests and tear-down; missing topics are fine)."""
    admin = _admin(settings)
    try:
        for topic in (settings.topic_job_offers, settings.topic_run_events):
            try:
                admin.delete_topics([topic])
            except UnknownTopicOrPartitionError:
                pass
    finally:
        admin.close()


class KafkaGroupConsumer(Consumer[M]):
    """A KafkaConsumer in a group; its delivery token is (TopicPartition, offset). One thread only."""

    def __init__(self, settings: Settings, topic: str, group: str, member: str, decode: Callable[[bytes], M]):
        self._settings, self._decode = settings, decode
        self._consumer = call(
            settings,
            f"join group {group}",
            lambda: KafkaConsumer(
                topic,
                group_id=group,
                client_id=f"kirby-{member}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
                max_poll_interval_ms=300_000,
                **client_config(settings),
            ),
        )
        self.on_close: Callable[[KafkaGroupConsumer], None] = lambda consumer: None

    def poll(self, timeout: float, max_messages: int = 100) -> list[Delivery[M]]:
        batches = call(
            self._settings,
            "poll",
            lambda: self._consumer.poll(timeout_ms=int(max(timeout, 0) * 1000), max_records=max_messages),
            retry=False,  # polling again is the caller's loop
        )
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

    def ack(self, delivery: Delivery[M]) -> None:
        partition, offset = delivery.token
        commit = {partition: OffsetAndMetadata(offset + 1, "", -1)}

        def commit_offset() -> None:
            try:
                self._consumer.commit(commit, timeout_ms=REQUEST_TIMEOUT_MS)
            except CommitFailedError:
                # The partition moved to another member in a rebalance: it receives this offer
                # again and drops it as already claimed. Nothing is lost.
                log.warning(
                    "offset %d of %s not committed (rebalanced); another member gets it again", offset, partition
                )

        call(self._settings, "commit an offset", commit_offset)

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
                retries=5,
                retry_backoff_ms=200,
                max_block_ms=5000,
                delivery_timeout_ms=int(SEND_TIMEOUT * 1000),
                **client_config(settings),
            ),
        )
        self._consumers: set[KafkaGroupConsumer] = set()
        self._lock = threading.Lock()

    def _send(self, topic: str, run_id: str, payload: bytes) -> None:
        call(
            self._settings,
            f"publish to {topic}",
            lambda: self._producer.send(topic, key=run_id.encode(), value=payload).get(timeout=SEND_TIMEOUT + 1),
        )

    def publish_offer(self, offer: Offer) -> None:
        self._send(self._settings.topic_job_offers, offer.run_id, offer.to_json())

    def _send_all(self, topic: str, messages: list[tuple[str, bytes]]) -> None:
        """Send them all, then wait for every acknowledgement (a retry sends them all again)."""

        def send_all() -> None:
            futures = [self._producer.send(topic, key=run_id.encode(), value=payload) for run_id, payload in messages]
            for future in futures:
                future.get(timeout=SEND_TIMEOUT + 1)

        call(self._settings, f"publish to {topic}", send_all)

    def publish_offers(self, offers: list[Offer]) -> None:
        self._send_all(self._settings.topic_job_offers, [(o.run_id, o.to_json()) for o in offers])

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
        consumer = KafkaGroupConsumer(self._settings, topic, group, member, decode)
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
