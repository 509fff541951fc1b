"""The Redis lease store's issue-10 records, mixed into ``RedisLeaseStore`` (``redis.py``, which holds
the connection; redis-py is not imported here): the record of published slots and the generation
marker that detects amnesia. Keys: ``published:<schedule key>`` and ``generation`` (see ``redis.py``)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from kirby.lease.base import CLAIM_RETENTION, Generation, RestoredClaim, as_utc

RESTORE_BATCH = 200  # claims per script call


class RecordMixin:
    """Needs ``_redis``, ``_call``, ``_run``, ``_key`` and ``_tokens`` from ``RedisLeaseStore``."""

    # -- the record of published slots ----------------------------------------------------------
    def add_published(self, slots: dict[str, list[datetime]], forget_before: datetime) -> None:
        """One pipeline: ZADD each schedule's slots, ZREMRANGEBYSCORE what is older than ``forget_before``."""
        if not any(slots.values()):
            return

        def write() -> None:
            pipeline = self._redis.pipeline(transaction=True)
            for key, instants in slots.items():
                if instants:
                    name = self._key("published", key)
                    pipeline.zadd(name, {as_utc(i).isoformat(): as_utc(i).timestamp() for i in instants})
                    pipeline.zremrangebyscore(name, "-inf", f"({as_utc(forget_before).timestamp()}")
            pipeline.execute()

        self._call(write)

    def published_slots(self, schedule_key: str, after: datetime, until: datetime) -> list[datetime]:
        name = self._key("published", schedule_key)
        low, high = f"({as_utc(after).timestamp()}", as_utc(until).timestamp()
        return [datetime.fromisoformat(text) for text in self._call(lambda: self._redis.zrangebyscore(name, low, high))]

    # -- generation marker ----------------------------------------------------------------------
    def check_generation(self, known: str | None) -> Generation:
        """INFO's ``run_id`` is the boot id: it changes at every start of the Redis server."""
        boot = self._call(lambda: self._redis.info("server").get("run_id", ""))
        args = [known or "", uuid.uuid4().hex, boot]
        marker, is_open, boot, closed_ms, rebuilt = self._run("CHECK_GENERATION", [self._key("generation")], args)
        closed = datetime.fromtimestamp(int(closed_ms) / 1000, timezone.utc) if closed_ms else None
        return Generation(marker, is_open == "1", boot, closed, rebuilt == "1")

    def open_generation(self, marker: str, epoch: int, owner: str) -> bool:
        token = self._tokens.get((owner, epoch), "")
        keys = [self._key("generation"), self._key("leader")]
        return self._run("OPEN_GENERATION", keys, [marker, str(epoch), owner, token]) == 1

    def restore_claims(self, claims: list[RestoredClaim]) -> list[str]:
        conflicts: list[str] = []
        for at in range(0, len(claims), RESTORE_BATCH):
            batch = claims[at : at + RESTORE_BATCH]
            keys = [self._key("claims", "active")] + [self._key("claim", c.run_id) for c in batch]
            args: list = [int(CLAIM_RETENTION * 1000)]
            for c in batch:
                args += [c.run_id, c.supervisor, c.instance, c.attempt, c.offer or "", int(c.started), int(c.settled)]
            conflicts += self._run("RESTORE_CLAIMS", keys, args)
        return conflicts
