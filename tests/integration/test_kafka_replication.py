"""Kirby's topics get a replication factor and ``min.insync.replicas`` suited to the cluster (issue
10): settings, or defaults from the broker count (1 on a development broker); bad values are one
error naming the variable, and create nothing. The producer publishes with ``acks=all``."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from kirby.bus.kafka_topics import delete_topics, ensure_topics, replication
from kirby.errors import BusError


def test_defaults_follow_the_broker_count_and_bad_values_name_their_variable(make_settings):
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092")
    assert [replication(settings, brokers) for brokers in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]
    assert replication(make_settings(KIRBY_KAFKA_REPLICATION_FACTOR="5"), 5) == (5, 4)
    assert replication(make_settings(KIRBY_KAFKA_MIN_INSYNC_REPLICAS="3"), 3) == (3, 3)
    with pytest.raises(BusError, match=r"^KIRBY_KAFKA_REPLICATION_FACTOR=2 but Kafka at .* has 1 broker\(s\)"):
        replication(make_settings(KIRBY_KAFKA_REPLICATION_FACTOR="2"), 1)
    with pytest.raises(BusError, match=r"^KIRBY_KAFKA_MIN_INSYNC_REPLICAS=3 exceeds the replication factor 2"):
        replication(make_settings(KIRBY_KAFKA_REPLICATION_FACTOR="2", KIRBY_KAFKA_MIN_INSYNC_REPLICAS="3"), 3)


def topic_settings(servers: str, topic: str) -> tuple[int, str]:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        (described,) = admin.describe_topics([topic])
        (response,) = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
        return len(described["partitions"][0]["replicas"]), entries["min.insync.replicas"]
    finally:
        admin.close()


@pytest.mark.kafka
def test_topics_are_created_with_the_replication_the_cluster_allows(make_settings, kafka_servers):
    name = uuid.uuid4().hex[:10]
    topics = {
        "KIRBY_TOPIC_JOB_OFFERS": f".kirby.test-{name}.offers",
        "KIRBY_TOPIC_RUN_EVENTS": f".kirby.test-{name}.events",
    }
    too_many = make_settings(KAFKA_BOOTSTRAP_SERVERS=kafka_servers, KIRBY_KAFKA_REPLICATION_FACTOR="2", **topics)
    with pytest.raises(BusError, match="KIRBY_KAFKA_REPLICATION_FACTOR=2 but Kafka at"):
        ensure_topics(too_many)
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=kafka_servers, **topics)
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    try:
        assert not set(topics.values()) & set(admin.list_topics()), "the refused settings created a topic"
    finally:
        admin.close()
    try:
        ensure_topics(settings)
        for topic in topics.values():
            assert topic_settings(kafka_servers, topic) == (1, "1")  # the development broker: 1 replica
    finally:
        delete_topics(settings)
