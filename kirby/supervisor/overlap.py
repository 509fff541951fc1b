"""The overlap policy of scheduled runs, applied cluster-wide through named leases.

The lease ``overlap:<job>:<env>`` is owned by ``<run id>@<instance>``: the overlap state belongs to
the live run and its supervisor instance, so a lease whose instance is gone from the registry is
taken over at once. Only a run of an *earlier* slot holding it counts: a run never waits for, or is
skipped because of, a later slot. ``forbid`` skips the run while an earlier one really runs;
``allow`` runs it; ``replace`` asks the running one to stop (a short-lived cancel request its
supervisor watches) and waits for the lease; ``buffer_one`` lets one run wait for the lease (a
second lease ``overlap-wait:<job>:<env>``) and skips others while one waits.

A new holder takes these leases only under the store generation this process knows
(``generation``): after amnesia nobody is given one until the leader has rebuilt the store (a run
waits meanwhile), and ``reassert`` (called by the runner as a ``GenerationWatch`` listener) writes
back the leases of the runs this process still runs, so a ``forbid`` run running across the loss
still fences the next slots once the store reopens.

``OverlapGuard.take`` is called once the venv is ready (a run being prepared does not count as
running). A run that arrived before its due instant may first ``try_early``: one attempt to take a
free lease before waiting for the instant (nobody holds it, so no earlier run runs); when it fails
the policy is applied in full at the instant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.lease.base import ClaimsClosed, LeaseStore
from kirby.run_ids import SLOT, parse_run_id
from kirby.supervisor.identity import live_instances
from kirby.vocabulary import Overlap

log = logging.getLogger(__name__)

OVERLAP_TTL = 30.0  # seconds; renewed every few seconds while the run lives
REPLACE_WAIT = 60.0  # seconds a replacing run waits for the run it replaces to stop
CANCEL_TTL = 2 * REPLACE_WAIT  # seconds a replace request lives
OVERLAP_POLL = 0.2  # seconds between looks at a held overlap lease while waiting for it


def overlap_key(offer: Offer) -> str:
    return f"overlap:{offer.job}:{offer.environment}"


def waiting_key(offer: Offer) -> str:
    return f"overlap-wait:{offer.job}:{offer.environment}"


def lease_owner(run_id: str, instance: str) -> str:
    """The owner of an overlap lease: the run and the supervisor instance running it."""
    return f"{run_id}@{instance}"


def split_owner(owner: str) -> tuple[str, str]:
    """(run id, instance) of an overlap lease owner."""
    run_id, _, instance = owner.rpartition("@")
    return (run_id, instance) if run_id else (owner, "")


def runs_before(held_run_id: str, offer: Offer) -> bool:
    """Whether run ``held_run_id`` belongs to an earlier slot than ``offer`` (or is no slot run, e.g.
    a manual run, which counts as earlier)."""
    try:
        held = parse_run_id(held_run_id)
    except ValueError:
        return True
    if held.kind != SLOT:
        return True
    return (held.instant, held.attempt) < (offer.scheduled_at, offer.attempt)


class OverlapGuard:
    """The overlap leases of one supervisor instance's runs. Thread-safe."""

    def __init__(
        self,
        leases: LeaseStore,
        instance: str,
        stopping: threading.Event,
        monotonic: Callable[[], float],
        generation: Callable[[], str | None] = lambda: None,
    ):
        self.leases, self.instance, self.stopping, self.monotonic = leases, instance, stopping, monotonic
        self.generation = generation
        self._overlaps: dict[str, str] = {}  # run id -> overlap lease key held for it
        self._waiting: dict[str, str] = {}  # run id -> overlap-wait lease key held for it (buffer_one)
        self._lock = threading.Lock()

    def held(self) -> list[str]:
        """Run ids holding an overlap lease here."""
        with self._lock:
            return list(self._overlaps)

    def try_early(self, offer: Offer) -> bool:
        """One attempt to take the free lease of ``offer``; True when the run needs no more (ALLOW too)."""
        if offer.overlap == Overlap.ALLOW.value:
            return True
        return self._acquire(offer.run_id, overlap_key(offer), lease_owner(offer.run_id, self.instance), self._overlaps)

    def take(self, offer: Offer) -> str | None:
        """Apply the policy: None when the run may start (holding the lease if one is needed), else
        why it is skipped."""
        if offer.overlap == Overlap.ALLOW.value:
            return None
        key, me = overlap_key(offer), lease_owner(offer.run_id, self.instance)
        deadline = None
        try:
            while True:
                if self._acquire(offer.run_id, key, me, self._overlaps):
                    return None
                holder = self.leases.lease_holder(key)
                if holder is None:  # released or expired meanwhile: try again at once
                    continue
                held_run, held_instance = split_owner(holder.owner)
                if held_instance not in self._live_instances():
                    log.info("overlap lease of run %s: its supervisor instance is gone; taking it over", held_run)
                    if self._acquire(offer.run_id, key, me, self._overlaps, replaces=holder.owner):
                        return None
                    continue
                if not runs_before(held_run, offer):
                    log.info("run %s starts although run %s of a later slot runs", offer.run_id, held_run)
                    return None
                if offer.overlap == Overlap.REPLACE.value:
                    if deadline is None:
                        self.leases.request_cancel(held_run, CANCEL_TTL)
                        deadline = self.monotonic() + REPLACE_WAIT
                    elif self.monotonic() >= deadline:
                        return _reason(offer, held_run)
                elif offer.overlap == Overlap.BUFFER_ONE.value:
                    if not self._wait_turn(offer, me):
                        return _reason(offer, held_run, "another run already waits for it")
                else:
                    return _reason(offer, held_run)
                if self.stopping.wait(OVERLAP_POLL):
                    return _reason(offer, held_run, "its supervisor is stopping")
        finally:
            self._release_waiting(offer.run_id)

    def _acquire(self, run_id: str, key: str, owner: str, held: dict, replaces: str | None = None) -> bool:
        """Take lease ``key`` for ``owner`` under the generation this process knows. While the store's
        generation is closed or new to it (amnesia) nobody is given it: wait a moment and answer
        False (the caller looks again, and waits while it is free); at shutdown, raise ClaimsClosed
        (the run is recorded as not started, with that line)."""
        try:
            taken = self.leases.acquire_lease(key, owner, OVERLAP_TTL, replaces=replaces, generation=self.generation())
        except ClaimsClosed:
            if self.stopping.wait(OVERLAP_POLL):
                raise
            return False
        if taken is None:
            return False
        with self._lock:
            held[run_id] = key
        return True

    def _wait_turn(self, offer: Offer, me: str) -> bool:
        """buffer_one: hold the waiting place (or keep it); False when another live run holds it."""
        with self._lock:
            if offer.run_id in self._waiting:
                return True
        key = waiting_key(offer)
        if self._acquire(offer.run_id, key, me, self._waiting):
            return True
        holder = self.leases.lease_holder(key)
        if holder is not None and split_owner(holder.owner)[1] not in self._live_instances():
            return self._acquire(offer.run_id, key, me, self._waiting, replaces=holder.owner)
        return False

    def _live_instances(self) -> set[str]:
        return live_instances(self.leases.supervisors()) | {self.instance}

    def _release_waiting(self, run_id: str) -> None:
        with self._lock:
            key = self._waiting.pop(run_id, None)
        if key:
            self.leases.release_lease(key, lease_owner(run_id, self.instance))

    def release(self, run_id: str) -> None:
        """Give up the overlap lease held for ``run_id`` (if any); never raises a store error."""
        with self._lock:
            key = self._overlaps.pop(run_id, None)
        if key:
            try:
                self.leases.release_lease(key, lease_owner(run_id, self.instance))
            except KirbyError as exc:  # it expires; its instance is known live meanwhile, so it holds
                log.error("could not release the overlap lease of run %s: %s", run_id, exc)

    def renew(self) -> None:
        """Renew the overlap (and waiting) leases of this instance's runs."""
        with self._lock:
            held = [*self._overlaps.items(), *self._waiting.items()]
        for run_id, key in held:
            if not self.leases.renew_lease(key, lease_owner(run_id, self.instance), OVERLAP_TTL):
                log.warning("lost the overlap lease %s of run %s", key, run_id)

    def reassert(self) -> list[str]:
        """Write back the overlap (and waiting) leases of this instance's runs, which vanished with
        the store's data; return the keys someone else holds meanwhile. Allowed while the generation
        is closed (no other owner can be given them then). Idempotent; raises LeaseError when the
        store is unreachable."""
        with self._lock:
            held = [*self._overlaps.items(), *self._waiting.items()]
        return [
            key
            for run_id, key in held
            if self.leases.acquire_lease(key, lease_owner(run_id, self.instance), OVERLAP_TTL) is None
        ]


def _reason(offer: Offer, held_run: str, why: str = "") -> str:
    return f"overlap policy {offer.overlap}: run {held_run} of {offer.job} in {offer.environment} is still running" + (
        f"; {why}" if why else ""
    )
