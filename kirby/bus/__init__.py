"""The offer bus: ``open_bus(settings)`` picks Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else the embedded bus."""

from __future__ import annotations

import logging

from kirby.bus.base import Consumer, Delivery, OfferBus
from kirby.config import Settings

log = logging.getLogger(__name__)


def open_bus(settings: Settings) -> OfferBus:
    if settings.kafka_bootstrap_servers:
        from kirby.bus.kafka import KafkaBus

        return KafkaBus(settings)
    from kirby.bus.local import LocalBus

    log.info("embedded bus: %s (KIRBY_EMBEDDED_PATH)", settings.embedded_path)
    return LocalBus(settings)


__all__ = ["Consumer", "Delivery", "OfferBus", "open_bus"]
