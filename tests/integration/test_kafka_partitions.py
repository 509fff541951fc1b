"""Kafka consumers and their topic's partitions (issue 19), on the real broker.

* A consumer opened while its topic does not exist yet waits for it (it never lets the broker
  auto-create it with ``num.partitions``, 1 on the dev broker) and is handed over holding every
  partition: before the fix it joined with no partitions and kept none for ``metadata_max_age_ms``
  (300 s), or auto-created a one-partition topic.
* The web's events consumer notices its topic deleted and re-created within seconds (metadata
  refreshed every ``METADATA_MAX_AGE_MS``); meanwhile it reports 0 partitions: ``/healthz`` says
  ``degraded``, ``/metrics`` and the Supervisors page say 0. Events published after the re-creation
  are recorded.
* A rebalance started by a metadata change completes even when each poll returns before the group's
  answers (kafka-python 2.x forgot such a join: the member held nothing for good, 1 run in ~10 of the
  test above, every time with polls that do not wait).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions

from kirby.bus.kafka import PARTITIONS, KafkaGroupConsumer
from kirby.bus.kafka_topics import delete_topics, ensure_topics
from kirby.events import RunEvent
from kirby.models import Run
from kirby.web.app import create_app
from kirby.web.events_consumer import EventsConsumer
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka
TOKEN = "test-api-token-0123456789"


@pytest.fixture
def kafka_settings(make_settings, kafka_servers):
    name = uuid.uuid4().hex[:10]
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_servers,
        KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
        KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
        KIRBY_SUPERVISOR_GROUP_ID=f"supervisors-{name}",
        KIRBY_API_TOKEN=TOKEN,
        KIRBY_SINGLE_HOST="true",  # Kafka with the embedded lease store: this test runs on one host
        SECRET_KEY="test-secret-key-abcdef",
        TESTING="true",
    )
    yield settings
    delete_topics(settings)


def partition_counts(settings) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        topics = [settings.topic_job_offers, settings.topic_run_events]
        return {d["topic"]: len(d["partitions"]) for d in admin.describe_topics(topics)}
    finally:
        admin.close()


def test_a_consumer_opened_before_its_topic_exists_waits_and_holds_every_partition(kafka_settings):
    settings = kafka_settings
    created_at: list[float] = []

    def create_soon() -> None:
        time.sleep(2)  # the scenario: another process creates the topics a moment later
        ensure_topics(settings)
        created_at.append(time.monotonic())

    creator = threading.Thread(target=create_soon)
    creator.start()
    consumer = KafkaGroupConsumer(settings, settings.topic_run_events, "web-test", "web", RunEvent.from_json)
    try:
        handed_over = time.monotonic()
        creator.join(30)
        assert created_at, "ensure_topics did not return"
        assert handed_over >= created_at[0] - 1.0, "the consumer was handed over long before its topic existed"
        assert consumer.partitions() == PARTITIONS
        assert partition_counts(settings) == {settings.topic_job_offers: PARTITIONS, settings.topic_run_events: 6}
    finally:
        consumer.close()


def test_the_events_consumer_reports_a_lost_topic_and_notices_it_recreated(kafka_settings, tmp_path):
    settings = kafka_settings
    app = create_app(settings)
    state = app.extensions["kirby"]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    consumer = EventsConsumer(state, member="web-test", poll_timeout=0.2)
    state.events_consumer = consumer
    assert client.get("/healthz").get_json()["events_consumer"]["open"] is False  # not started: joining
    consumer.start()
    try:
        wait_for(lambda: consumer.health()["partitions"] == PARTITIONS, 60, "the consumer never held the partitions")
        health = client.get("/healthz")
        assert health.status_code == 200 and health.get_json()["status"] == "ok", health.get_json()
        assert 'kirby_consumer_partitions{process="web",stream="events"} 6' in client.get("/metrics", headers=auth).text

        delete_topics(settings)
        wait_for(lambda: consumer.health()["partitions"] == 0, 30, "the deleted topic was not noticed")
        health = client.get("/healthz")
        assert health.status_code == 200, "a degraded consumer keeps /healthz at 200 while the database answers"
        assert health.get_json()["status"] == "degraded"
        assert "holds no partition" in health.get_json()["reason"]
        assert 'kirby_consumer_partitions{process="web",stream="events"} 0' in client.get("/metrics", headers=auth).text

        recreated = time.monotonic()
        ensure_topics(settings)
        wait_for(lambda: consumer.health()["partitions"] == PARTITIONS, 30, "the re-created topic was not noticed")
        noticed = time.monotonic() - recreated
        assert noticed < 15, f"the re-created topic took {noticed:.1f} s to be noticed"
        assert client.get("/healthz").get_json()["status"] == "ok"

        run_id = "backup:prod:20260102T030405Z"
        now = datetime.now(timezone.utc)
        state.bus.publish_event(
            RunEvent("offered", run_id, now, None, {"job": "backup", "environment": "prod", "scheduled_at": now})
        )

        def recorded():
            with state.database.session() as s:
                return s.get(Run, run_id) is not None

        wait_for(recorded, 30, "an event published after the re-creation was not recorded")
    finally:
        consumer.stop()
        state.close()


def test_a_rebalance_started_by_a_metadata_change_completes_even_when_each_poll_returns_at_once(kafka_settings):
    """kafka-python 2.x forgets a join started by a metadata change once the leader's own assignment
    clears the change (KAFKA-9815 in the Java client): a poll that returns before the SyncGroup answer
    left the member holding nothing for good. Polls with no wait hit that window almost every time."""
    settings = kafka_settings
    ensure_topics(settings)
    consumer = KafkaGroupConsumer(settings, settings.topic_run_events, "web-test", "web", RunEvent.from_json)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        assert consumer.partitions() == PARTITIONS
        admin.create_partitions({settings.topic_run_events: NewPartitions(total_count=PARTITIONS + 2)})
        wait_for(
            lambda: consumer.poll(0) == [] and consumer.partitions() == PARTITIONS + 2,
            30,
            "the rebalance after the partition increase never completed",
        )
    finally:
        admin.close()
        consumer.close()
