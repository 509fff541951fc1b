"""Consumers' partitions in /healthz, /metrics and the Supervisors page (issue 19), on the embedded
backends. The Kafka side (a consumer holding none, then all) is tests/integration/test_kafka_partitions.py."""

from __future__ import annotations

from test_web_support import TOKEN, admin_client, app, settings, web  # noqa: F401

from kirby.web.events_consumer import EventsConsumer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_healthz_reports_the_events_consumer(app):
    state = app.extensions["kirby"]
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}  # no events consumer in this process
    consumer = EventsConsumer(state, member="web-test")
    state.events_consumer = consumer
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["events_consumer"]["open"] is False  # joining: not degraded
    assert not consumer.ready.is_set()
    consumer.consume_once(timeout=0.1)
    assert consumer.ready.is_set()  # what `kirby web` waits for before serving
    try:
        body = client.get("/healthz").get_json()
        assert body == {
            "status": "ok",
            "events_consumer": {"topic": state.settings.topic_run_events, "open": True, "partitions": None},
        }  # the embedded bus has no partitions
        assert "kirby_consumer_partitions{" not in client.get("/metrics", headers=AUTH).text
    finally:
        consumer.stop()


def test_supervisors_without_offer_partitions_show_in_metrics_and_on_the_page(app, admin_client):
    leases = app.extensions["kirby"].lease_store
    leases.register_supervisor("busy", "i-1", 30, {"offer_partitions": 2})
    leases.register_supervisor("idle", "i-2", 30, {"offer_partitions": 0})
    leases.register_supervisor("joining", "i-3", 30, {"offer_partitions": None})
    metrics = admin_client.get("/metrics").get_data(as_text=True)
    assert "# TYPE kirby_consumer_partitions gauge" in metrics
    assert 'kirby_consumer_partitions{process="supervisor",supervisor="busy",stream="offers"} 2' in metrics
    assert 'kirby_consumer_partitions{process="supervisor",supervisor="idle",stream="offers"} 0' in metrics
    assert 'supervisor="joining"' not in metrics
    page = admin_client.get("/admin/supervisors/").get_data(as_text=True)
    rows = {name: page[page.index(f"<td>{name}</td>") :].split("</tr>")[0] for name in ("busy", "idle", "joining")}
    assert ">2</td>" in rows["busy"] and "receives no offers" not in rows["busy"]
    assert "0: receives no offers" in rows["idle"] and "text-danger" in rows["idle"]
    assert "&mdash;" in rows["joining"]
