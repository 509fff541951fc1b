"""The lease store contract. Backends: ``redis.py`` (Redis) and ``local.py`` (embedded, SQLite file).

What it holds, all with server-side expiry measured by the store's own clock:

* the **leader lease** with an **epoch** (fencing token): acquiring increments the epoch; renew
  and release are compare-and-set on (owner, epoch), so a holder that lost its lease can neither
  extend nor delete its successor's;
* **per-schedule cursors** (the last slot the leader published), written only under the current
  epoch;
* **run claims**: a run id is claimed exactly once, cluster-wide, by one supervisor *instance*
  (process); the claim is marked *started* right before the spawn and *settled* when the run is
  over. Active (unsettled) claims are indexed and never expire; a settled claim is kept
  ``CLAIM_RETENTION``. A never-started claim of a dead instance can be *released* (re-offered
  under the same run id: it cannot have run);
* **named leases** (daemons ``daemon:…``, overlap ``overlap:…``): one owner per name, a TTL, and
  a *generation* (fencing token) that grows at each change of owner; listed per key space
  (the part before the first ``:``) from an index;
* **cancel requests**: short-lived marks asking a run's supervisor to stop it;
* the **supervisor registry**: heartbeats, indexed; a name used by a live instance cannot be
  taken, except by naming the dead instance it replaces.

Errors: a backend that cannot reach its service after ``EXT_RETRIES`` retries raises
``LeaseError`` with one line naming the address and the variable to fix. No call blocks forever.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kirby.errors import LeaseError, SupervisorNameTaken


class StaleEpoch(Exception):
    """A write guarded by an epoch that is no longer the leader's current epoch."""


class ClaimsClosed(LeaseError):
    """``claim_run`` (or a new owner's ``acquire_lease``) refused: the store's generation is not the
    caller's, or is closed (the store lost its data and the leader has not rebuilt it yet). The
    offer must go back to the bus; a daemon lease is tried again later."""


CLAIM_RETENTION = 7 * 24 * 3600.0
"""Seconds a *settled* run claim is kept: as long as the bus can redeliver an offer, and no longer
(Kafka's default ``retention.ms`` and the embedded bus's ``max_age``: 7 days). A redelivered or
re-published offer of that run id within this window loses the claim; an active claim (not yet
settled) never expires."""


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
    instance: str = ""  # the supervisor process (its registry instance id) holding the claim
    started_at: datetime | None = None  # set right before the spawn (``mark_started``)
    settled: bool = False  # the run is over (or recorded lost); the claim only fences duplicates
    released: bool = False  # never started and its instance died: open to be claimed again
    offer: str | None = None  # the offer (JSON) the claim was made for, to re-offer it


@dataclass(frozen=True)
class ClaimRequest:
    """One run to claim in ``LeaseStore.claim_runs`` (the arguments of ``claim_run``).

    ``token``: the caller's id for this claim, kept with it where a reply can be lost (Redis). A
    caller whose claim call failed (the store may have applied it) passes the same token when it
    claims the run again: it then finds its own claim and wins. Empty: a new one per call."""

    run_id: str
    supervisor: str
    attempt: int = 1
    instance: str = ""
    offer: str | None = None
    token: str = ""


@dataclass(frozen=True)
class Generation:
    """The store's generation marker (amnesia detection, issue 10).

    ``marker`` is a random id written once per store life: it disappears (or changes) when the store
    loses its data. ``open`` is False from the moment a loss is noticed (the marker was found missing
    by a process that had seen another, or the server restarted: ``boot`` changed, and the last
    writes before a crash may be lost) until the leader has rebuilt claims and cursors from the
    runs table; meanwhile ``claim_run`` refuses every claim. ``closed_at`` is the server time it was
    closed; ``rebuilt`` says it was opened by a rebuild (not by a fresh store's first user)."""

    marker: str
    open: bool
    boot: str = ""
    closed_at: datetime | None = None
    rebuilt: bool = False


@dataclass(frozen=True)
class RestoredClaim:
    """A claim written back after amnesia, by the supervisor that holds it (from its memory) or by the
    leader (from the runs table): ``settled`` for a run that is over, ``started`` for one running."""

    run_id: str
    supervisor: str
    instance: str = ""
    attempt: int = 1
    offer: str | None = None
    started: bool = False
    settled: bool = True


@dataclass(frozen=True)
class LeaseHolder:
    """A live named lease: its owner, its generation (fencing token) and when it expires."""

    name: str
    owner: str
    generation: int
    expires_at: datetime


@dataclass(frozen=True)
class SupervisorInfo:
    name: str
    instance: str
    last_heartbeat: datetime
    info: dict[str, Any] = field(default_factory=dict)


def name_taken(name: str, holder: SupervisorInfo, now: datetime):
    """The SupervisorNameTaken error for ``name`` held by ``holder`` (host and pid from its info)."""
    age = max(0.0, (now - holder.last_heartbeat).total_seconds())
    where = f"on host {holder.info.get('host', '?')} (pid {holder.info.get('pid', '?')})"
    return SupervisorNameTaken(
        f"a supervisor named {name!r} is already running {where}, last heartbeat {age:.0f} s ago; "
        "choose another name or stop it",
        holder,
    )


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
    def claim_run(
        self,
        run_id: str,
        supervisor: str,
        attempt: int = 1,
        instance: str = "",
        offer: str | None = None,
        generation: str | None = None,
    ) -> bool:
        """Claim ``run_id`` for ``supervisor``'s ``instance``: True for exactly one caller, ever
        (within retention), unless the claim was released (then the next caller gets it).
        ``offer`` (JSON) is kept with the claim so that a released run can be re-offered.
        With ``generation`` (the marker the caller knows), raises ClaimsClosed unless the store's
        marker is that one and open: a store that lost its data grants no claim until rebuilt."""

    def claim_runs(self, requests: list[ClaimRequest], generation: str | None = None) -> list[bool | None]:
        """``claim_run`` for each request, in order, in one store round trip where the backend can
        (Redis: one pipeline; embedded: one transaction): the offers of one poll are claimed together.

        Per request: True (claimed here), False (claimed by someone else: a duplicate), or None (the
        store's generation is not ``generation``'s open one, as ``claim_run`` raising ClaimsClosed).
        Same answers as ``claim_run`` called once per request; never two winners for a run id."""
        outcomes: list[bool | None] = []
        for r in requests:
            try:
                outcomes.append(self.claim_run(r.run_id, r.supervisor, r.attempt, r.instance, r.offer, generation))
            except ClaimsClosed:
                outcomes.append(None)
        return outcomes

    @abstractmethod
    def get_claim(self, run_id: str) -> Claim | None:
        """The claim of ``run_id``, or None."""

    @abstractmethod
    def list_claims(self) -> list[Claim]:
        """Every retained claim (a full scan: for tools and tests, not for supervisors' loops)."""

    @abstractmethod
    def mark_started(self, run_id: str, instance: str) -> bool:
        """Record that ``instance`` is about to spawn ``run_id``; False (spawn nothing) unless its
        claim is ``instance``'s, not released and not settled. Idempotent."""

    def mark_runs_started(self, run_ids: list[str], instance: str) -> list[bool]:
        """``mark_started`` for each run id, in one store round trip where the backend can: the runs
        of one instant, marked together right before their spawns."""
        return [self.mark_started(run_id, instance) for run_id in run_ids]

    @abstractmethod
    def release_claim(self, run_id: str, instance: str) -> bool:
        """Open ``run_id``'s claim again iff it is ``instance``'s (a dead one), never started and not
        settled: the run cannot have run, so it may be offered again under the same id."""

    @abstractmethod
    def settle_run(self, run_id: str) -> None:
        """The run is over (finished, failed before start, skipped, or recorded lost): drop it
        from the active index; the claim is kept ``CLAIM_RETENTION`` to fence duplicates."""

    @abstractmethod
    def active_claims(self) -> list[Claim]:
        """Claims not settled, read from an index (cost independent of the settled claims)."""

    # -- named leases (daemons, overlap) -----------------------------------------------------------
    @abstractmethod
    def acquire_lease(
        self, name: str, owner: str, ttl: float, replaces: str | None = None, generation: str | None = None
    ) -> int | None:
        """Take lease ``name`` if it is free, expired, already ``owner``'s, or held by ``replaces``
        (an owner known to be dead): returns its generation, which grows each time the lease
        changes owner (a fencing token; a counter lost with the store's data restarts, once the
        store is rebuilt, from the time in ms, above those issued before). None when someone else
        holds it. With ``generation`` (the marker the caller knows), raises ClaimsClosed instead of
        giving the lease to a new owner unless the store's marker is that one and open: after
        amnesia a lease that vanished with the data is given to nobody until the rebuild (its
        holder, whose renewal fails, has stopped by then; ``kirby.supervisor.arbiter``). Overlap
        leases are taken the same way (``kirby.supervisor.runner``). Without ``generation`` nothing
        is checked: for tools, and for a holder writing back, while the generation is closed, the
        lease of a run it still runs (``Runner.reassert_overlaps``); a counter created while the
        generation is closed starts from the time in ms as well."""

    @abstractmethod
    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Extend by ``ttl`` from now iff ``owner`` holds it."""

    def renew_leases(self, names: list[str], owner: str, ttl: float) -> dict[str, bool]:
        """``renew_lease`` of each of ``names`` in one round trip where the backend can (an idle
        supervisor renews its daemons' leases every few seconds): name -> renewed. Each renewal
        stands alone (one failing does not undo the others); an error raises for all."""
        return {name: self.renew_lease(name, owner, ttl) for name in names}

    @abstractmethod
    def release_lease(self, name: str, owner: str) -> bool:
        """Release iff ``owner`` holds it."""

    @abstractmethod
    def lease_holder(self, name: str) -> LeaseHolder | None:
        """The live holder of ``name``, or None."""

    @abstractmethod
    def lease_holders(self, space: str) -> dict[str, LeaseHolder]:
        """Live leases whose name starts with ``space + ":"``, from an index: name -> holder."""

    # -- deliveries (kirby.celery's worker side) ------------------------------------------------
    @abstractmethod
    def claim_delivery(self, key: str, owner: str, ttl: float) -> str | None:
        """Take ``key`` for ``owner`` if nobody holds it: None for the first caller within ``ttl``
        seconds (it may run the delivery), else the owner who took it (drop the delivery). Atomic
        across processes and hosts; never extended, never released."""

    # -- cancel requests ------------------------------------------------------------------------
    @abstractmethod
    def request_cancel(self, run_id: str, ttl: float) -> None:
        """Ask ``run_id``'s supervisor to stop it; the request lives ``ttl`` seconds."""

    @abstractmethod
    def cancel_requested(self, run_id: str) -> bool:
        """True while a cancel request for ``run_id`` lives."""

    # -- supervisor registry --------------------------------------------------------------------
    @abstractmethod
    def register_supervisor(
        self, name: str, instance: str, ttl: float, info: dict[str, Any] | None = None, replaces: str | None = None
    ) -> None:
        """Register (or heartbeat) supervisor ``name`` run by process ``instance``.

        Raises SupervisorNameTaken (a LeaseError, with the live holder's ``SupervisorInfo`` as
        ``holder`` and its host and pid in the message) when a live registration of that name has
        another instance id, unless that id is ``replaces`` (an instance known to be dead).
        """

    @abstractmethod
    def unregister_supervisor(self, name: str, instance: str) -> None:
        """Remove the registration iff it is ``instance``'s."""

    @abstractmethod
    def supervisors(self) -> list[SupervisorInfo]:
        """Live supervisors, read from an index (cost independent of the number of claims)."""

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

    # -- generation marker: amnesia detection (issue 10) ------------------------------------------
    @abstractmethod
    def check_generation(self, known: str | None) -> Generation:
        """The store's generation, after noticing a loss. Atomically: a missing marker is created,
        open only when ``known`` is None (a fresh store's first user), closed otherwise (amnesia); a
        server restart (``boot`` changed) closes it; a marker other than ``known`` that was opened
        fresh (not by a rebuild) is closed too (someone new created it after the loss)."""

    @abstractmethod
    def open_generation(self, marker: str, epoch: int, owner: str) -> bool:
        """Open the closed generation ``marker`` (the rebuild is done) iff ``owner`` holds the live
        leader lease under ``epoch``; claims are granted again."""

    @abstractmethod
    def restore_claims(self, claims: list[RestoredClaim]) -> list[str]:
        """Write back the claims that are missing (allowed while closed); never overwrites one.
        Returns the run ids already claimed by another instance (a conflict worth logging)."""

    # -- the record of published slots (issue 10) -------------------------------------------------
    @abstractmethod
    def add_published(self, slots: dict[str, list[datetime]], forget_before: datetime) -> None:
        """Record that the slots ``slots[schedule key]`` were published; forget records of slots
        before ``forget_before`` (older than any misfire grace). Idempotent."""

    @abstractmethod
    def published_slots(self, schedule_key: str, after: datetime, until: datetime) -> list[datetime]:
        """The recorded slots of ``schedule_key`` in ``(after, until]``, ascending, in UTC. A new
        leader re-publishes these (those still unclaimed), never a re-computation of the past."""
