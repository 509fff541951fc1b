"""Kafka topic administration: Kirby's two topics created, checked and awaited (kafka-python's
admin client, with the connection helpers of ``kirby.bus.kafka``).

* Topics ``KIRBY_TOPIC_JOB_OFFERS`` and ``KIRBY_TOPIC_RUN_EVENTS`` are created when missing
  (``PARTITIONS`` partitions; replication ``KIRBY_KAFKA_REPLICATION_FACTOR``, default
  ``min(3, brokers)``; ``min.insync.replicas`` ``KIRBY_KAFKA_MIN_INSYNC_REPLICAS``, default the
  replication factor - 1, at least 1: with ``acks=all`` an acknowledged offer is on that many
  replicas, so losing one broker loses none). A factor above the brokers, or a minimum above the
  factor, is one error naming the variable; existing topics with fewer replicas than asked are
  logged, not changed. ``ensure_topics`` returns only once both are visible, every partition with
  a leader. No Kirby client lets the broker auto-create a topic (that would make it with the
  broker's ``num.partitions``, often 1).
* ``delete_topics`` removes both (tests and tear-down).
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from kirby.bus.kafka import PARTITIONS, TOPIC_WAIT, _poll_until, _topic_variable, call, client_config
from kirby.config import Settings
from kirby.errors import BusError

log = logging.getLogger(__name__)


def _admin(settings: Settings) -> KafkaAdminClient:
    return call(settings, "connect", lambda: KafkaAdminClient(client_id="kirby-admin", **client_config(settings)))


def replication(settings: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics Kirby creates on ``brokers`` brokers."""
    factor = settings.kafka_replication_factor or min(3, brokers)
    if factor > brokers:
        raise BusError(
            f"KIRBY_KAFKA_REPLICATION_FACTOR={factor} but Kafka at {settings.kafka_bootstrap_servers} has {brokers} "
            f"broker(s): set it to at most {brokers}, or unset it (min(3, brokers))"
        )
    minimum = settings.kafka_min_insync_replicas or max(1, factor - 1)
    if minimum > factor:
        raise BusError(
            f"KIRBY_KAFKA_MIN_INSYNC_REPLICAS={minimum} exceeds the replication factor {factor}: no publish could "
            f"succeed; set it to at most {factor}, or unset it (the factor - 1)"
        )
    return factor, minimum


def _create_topic(admin: KafkaAdminClient, topic: str, replicas: tuple[int, int]) -> None:
    factor, minimum = replicas
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, factor, topic_configs={"min.insync.replicas": str(minimum)})])
    except TopicAlreadyExistsError:  # another process created it first
        pass


def _wait_visible(settings: Settings, admin: KafkaAdminClient, topics: list[str], factor: int = 1) -> None:
    """Describe ``topics`` until each has partitions, all with a leader (at most TOPIC_WAIT s)."""

    def visible() -> list[dict] | None:
        described = call(settings, "describe topics", lambda: admin.describe_topics(topics))
        ready = all(not d["error_code"] and all(p["leader"] >= 0 for p in d["partitions"]) for d in described)
        return described if ready and all(d["partitions"] for d in described) else None

    described = _poll_until(visible, TOPIC_WAIT, f"waiting for Kafka to show topics {', '.join(topics)}")
    if described is None:
        names = ", ".join(f"{t} ({_topic_variable(settings, t)})" for t in topics)
        raise BusError(
            f"Kafka at {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS) does not show topics {names} "
            f"with a leader for every partition {TOPIC_WAIT:.0f} s after their creation; check the broker's log"
        )
    for d in described:
        fewest = min(len(p["replicas"]) for p in d["partitions"])
        if fewest < factor:
            log.warning(
                "topic %s has partitions with %d replica(s), fewer than the replication factor %d: losing a broker "
                "may lose offers; reassign its partitions (kafka-reassign-partitions) to add replicas",
                *(d["topic"], fewest, factor),
            )
        if len(d["partitions"]) < PARTITIONS:
            log.warning(
                "topic %s has %d partition(s), fewer than %d: fewer members of a group receive from it; "
                "delete it (Kirby re-creates it) or add partitions",
                *(d["topic"], len(d["partitions"]), PARTITIONS),
            )


def ensure_topics(settings: Settings) -> None:
    """Create the offers and events topics when missing (harmless when another process races us);
    return once both are visible to this client, each partition with a leader."""
    topics = [settings.topic_job_offers, settings.topic_run_events]
    admin = _admin(settings)
    try:
        existing = set(call(settings, "list topics", admin.list_topics))
        brokers = len(call(settings, "describe the cluster", admin.describe_cluster)["brokers"])
        replicas = replication(settings, brokers)
        for topic in topics:
            if topic in existing:
                continue
            log.info("creating topic %s: replication factor %d, min.insync.replicas %d", topic, *replicas)
            call(settings, f"create topic {topic}", lambda: _create_topic(admin, topic, replicas))
        _wait_visible(settings, admin, topics, replicas[0])
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
