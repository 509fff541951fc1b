"""The embedded bus prunes what every group acknowledged, after the retention; never what is in flight."""

from __future__ import annotations

from datetime import datetime, timezone

from kirby.bus.local import LocalBus
from kirby.bus.sqlite import prune
from kirby.events import Offer


def offer(run_id: str) -> Offer:
    return Offer(run_id, f"slot-{run_id}", "job", "prod", "pkg", "1.0", datetime(2026, 11, 28, tzinfo=timezone.utc))


def stored(bus: LocalBus) -> list[str]:
    return [row[0] for row in bus._db.execute("SELECT run_id FROM bus_offers ORDER BY id")]


def test_prune_keeps_unacknowledged_and_recent_offers(make_settings):
    bus = LocalBus(make_settings(), retention=3600, max_age=7 * 86400)
    consumer = bus.offer_consumer("a")
    bus.publish_offers([offer("acked"), offer("in-flight")])
    acked, in_flight = consumer.poll(1.0)
    consumer.ack(acked)
    bus.publish_offer(offer("not-yet-delivered"))
    (published_at,) = bus._db.execute("SELECT MAX(created_at) FROM bus_offers")[0]

    prune(bus._db, "offers", published_at + 60, bus.retention, bus.max_age)
    assert stored(bus) == ["acked", "in-flight", "not-yet-delivered"], "within the retention"

    prune(bus._db, "offers", published_at + 3601, bus.retention, bus.max_age)
    assert stored(bus) == ["in-flight", "not-yet-delivered"]

    prune(bus._db, "offers", published_at + 7 * 86400 + 1, bus.retention, bus.max_age)
    assert stored(bus) == [], "past max_age everything goes, as with Kafka's retention"
    assert consumer.poll(0.1) == []
    bus.close()
