"""The lease store: ``open_lease_store(settings)`` picks Redis when REDIS_URL is set, else the embedded store.

The embedded store coordinates the processes of one host only: with Kafka (processes on several
hosts) and no Redis, each host would elect its own leader and run every slot once per host. That
is an error unless ``KIRBY_SINGLE_HOST=true`` says every process runs on this host.
"""

from __future__ import annotations

import logging

from kirby.config import Settings
from kirby.errors import ConfigError
from kirby.lease.base import Claim, Leader, LeaseHolder, LeaseStore, StaleEpoch, SupervisorInfo

log = logging.getLogger(__name__)


def open_lease_store(settings: Settings) -> LeaseStore:
    if settings.kafka_bootstrap_servers and not settings.redis_url and not settings.single_host:
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is set but REDIS_URL is not: the embedded lease store coordinates one host"
            " only, so supervisors on several hosts would each lead and run every slot; set REDIS_URL, or set"
            " KIRBY_SINGLE_HOST=true if every Kirby process runs on this host"
        )
    if settings.redis_url:
        from kirby.lease.redis import RedisLeaseStore

        return RedisLeaseStore(settings)
    from kirby.lease.local import LocalLeaseStore

    log.info("embedded lease store: %s (KIRBY_EMBEDDED_PATH)", settings.embedded_path)
    return LocalLeaseStore(settings)


__all__ = ["Claim", "Leader", "LeaseHolder", "LeaseStore", "StaleEpoch", "SupervisorInfo", "open_lease_store"]
