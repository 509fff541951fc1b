"""The lease store contract. Backends: ``redis.py`` (Redis) and ``local.py`` (embedded, SQLite file).

What it holds, all with server-side expiry measured by the store's own clock:

* the **leader lease** with an **epoch** (fencing token): acquiring increments the epoch; renew
  and release are compare-and-set on (owner, epoch), so a holder that lost its lease can neither
  extend nor delete its successor's;
* **per-schedule cursors** (the last slot the leader published), written only under the current
  epoch;
* **run claims**: a run id is claimed exactly once, cluster-wide;
* **daemon leases**: one holder per daemon, with a TTL;
* the **supervisor registry**: heartbeats; a name used by a live supervisor cannot be taken.

Errors: a backend that cannot reach its service after ``EXT_RETRIES`` retries raises
``LeaseError`` with one line naming the address and the variable to fix. No call blocks forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class StaleEpoch(Exception):
    """A write guarded by an epoch that is no longer the leader's current epoch."""


CLAIM_RETENTION = 7 * 24 * 3600.0
"""Seconds a run claim is kept (a run id claimed within this window cannot be claimed again)."""


def as_utc(instant: datetime) -> datetime:
    """``instant`` in UTC; a naive datetime is refused (Kirby stores aware UTC datetimes only)."""
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: pass an aware UTC datetime")
    return instant.astimezone(timezone.utc)


@dataclass(frozen=True)
class Leader:
    owner: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class Claim:
    run_id: str
    supervisor: str
    attempt: int
    claimed_at: datetime


@dataclass(frozen=True)
class SupervisorInfo:
    name: str
    instance: str
    last_heartbeat: datetime
    info: dict[str, Any] = field(default_factory=dict)


class LeaseStore(ABC):
    """All of Kirby's cluster coordination state. Safe to use from several threads."""

    # -- leader lease ---------------------------------------------------------------------------
    @abstractmethod
    def acquire_leader(self, owner: str, ttl: float) -> int | None:
        """Take the leader lease if it is free or expired: increments and returns the new epoch.

        Returns None when another owner holds a live lease. An owner that already holds the
        lease gets None too (it should ``renew_leader``).
        """

    @abstractmethod
    def renew_leader(self, owner: str, epoch: int, ttl: float) -> bool:
        """Extend the lease by ``ttl`` from now iff ``owner`` still holds it under ``epoch``."""

    @abstractmethod
    def release_leader(self, owner: str, epoch: int) -> bool:
        """Give the lease up iff ``owner`` holds it under ``epoch`` (the epoch is kept)."""

    @abstractmethod
    def leader(self) -> Leader | None:
        """The live holder, or None."""

    @abstractmethod
    def current_epoch(self) -> int:
        """The newest epoch ever issued (0 before the first election)."""

    # -- cursors --------------------------------------------------------------------------------
    @abstractmethod
    def get_cursor(self, schedule_key: str) -> datetime | None:
        """The last instant published for ``schedule_key``, or None."""

    @abstractmethod
    def set_cursor(self, schedule_key: str, instant: datetime, epoch: int, owner: str | None = None) -> None:
        """Record ``instant`` for ``schedule_key``; raises StaleEpoch unless ``epoch`` is current.

        Current means: the leader lease is live under ``epoch`` (and held by ``owner`` when given;
        a backend that issues lease tokens also compares the token it acquired the lease with). A write is refused once a newer
        epoch was issued, and also when the lease expired or was released without a successor
        (the old leader must win a new election, under a new epoch, before writing again).
        ``instant`` must be timezone-aware (ValueError otherwise); it is read back in UTC.
        """

    def get_cursors(self, schedule_keys: list[str]) -> dict[str, datetime]:
        """The cursors of ``schedule_keys`` that exist. Backends may override to read in one round trip."""
        cursors = {key: self.get_cursor(key) for key in schedule_keys}
        return {key: instant for key, instant in cursors.items() if instant is not None}

    def set_cursors(self, cursors: dict[str, datetime], epoch: int, owner: str | None = None) -> None:
        """``set_cursor`` for each item (StaleEpoch stops at the first refusal). Backends may override
        to write them in one round trip (then all or none)."""
        for key, instant in cursors.items():
            self.set_cursor(key, instant, epoch, owner)

    # -- run claims -----------------------------------------------------------------------------
    @abstractmethod
    def claim_run(self, run_id: str, supervisor: str, attempt: int = 1) -> bool:
        """Claim ``run_id`` for ``supervisor``: True for exactly one caller, ever (within retention)."""

    @abstractmethod
    def get_claim(self, run_id: str) -> Claim | None:
        """The claim of ``run_id``, or None."""

    @abstractmethod
    def list_claims(self) -> list[Claim]:
        """Every retained claim."""

    # -- daemon leases --------------------------------------------------------------------------
    @abstractmethod
    def acquire_daemon(self, daemon: str, owner: str, ttl: float) -> bool:
        """Take the lease of ``daemon`` if free or expired (True also if ``owner`` holds it)."""

    @abstractmethod
    def renew_daemon(self, daemon: str, owner: str, ttl: float) -> bool:
        """Extend iff ``owner`` holds it."""

    @abstractmethod
    def release_daemon(self, daemon: str, owner: str) -> bool:
        """Release iff ``owner`` holds it."""

    @abstractmethod
    def daemon_holders(self) -> dict[str, str]:
        """Live daemon leases: daemon -> owner."""

    # -- supervisor registry --------------------------------------------------------------------
    @abstractmethod
    def register_supervisor(self, name: str, instance: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        """Register (or heartbeat) supervisor ``name`` run by process ``instance``.

        Raises SupervisorNameTaken (a LeaseError) when a live supervisor of that name has another
        instance id.
        """

    @abstractmethod
    def unregister_supervisor(self, name: str, instance: str) -> None:
        """Remove the registration iff it is ``instance``'s."""

    @abstractmethod
    def supervisors(self) -> list[SupervisorInfo]:
        """Live supervisors."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    # -- fencing and amnesia (issue 10) ---------------------------------------------------------
    def holds_leader(self, owner: str, epoch: int) -> bool:
        """Whether ``owner`` holds a live leader lease under ``epoch`` (a read: a leader checks it
        right before publishing, so a deposed one that has not noticed publishes nothing)."""
        held = self.leader()
        return held is not None and held.owner == owner and held.epoch == epoch

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the record of published slots (issue 10) -------------------------------------------------
    @abstractmethod
    def add_published(self, slots: dict[str, list[datetime]], forget_before: datetime) -> None:
        """Record that the slots ``slots[schedule key]`` were published; forget records of slots
        before ``forget_before`` (older than any misfire grace). Idempotent."""

    @abstractmethod
    def published_slots(self, schedule_key: str, after: datetime, until: datetime) -> list[datetime]:
        """The recorded slots of ``schedule_key`` in ``(after, until]``, ascending, in UTC. A new
        leader re-publishes these (those still unclaimed), never a re-computation of the past."""
