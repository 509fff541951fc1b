"""The lease store: ``open_lease_store(settings)`` picks Redis when REDIS_URL is set, else the embedded store."""

from __future__ import annotations

from kirby.config import Settings
from kirby.lease.base import Claim, Leader, LeaseHolder, LeaseStore, StaleEpoch, SupervisorInfo


def open_lease_store(settings: Settings) -> LeaseStore:
    if settings.redis_url:
        from kirby.lease.redis import RedisLeaseStore

        return RedisLeaseStore(settings)
    from kirby.lease.local import LocalLeaseStore

    return LocalLeaseStore(settings)


__all__ = ["Claim", "Leader", "LeaseHolder", "LeaseStore", "StaleEpoch", "SupervisorInfo", "open_lease_store"]
