"""Noticing that the lease store lost its data (amnesia, issue 10), on every supervisor.

* ``GenerationWatch`` follows the store's generation marker (``LeaseStore.check_generation``): its
  disappearance, its change, or a restart of the store's server (the last writes before a crash may
  be lost, e.g. Redis' ``appendfsync everysec``). Each loss is logged once (error) and counted
  (``detected``, in the supervisor's registration and so in the web's /metrics), and its listeners
  run: the runner writes back the claims it remembers (``ClaimMemory``). While the generation is
  closed the store grants no claim and gives no daemon lease to a new owner (the holder of a lease
  that vanished stops its daemon at its next renewal, within ``window``, well inside the leader's
  ``3 x window`` hold: ``kirby.supervisor.arbiter``), and the leader does not publish until it has rebuilt claims and
  cursors from the runs table (``kirby.supervisor.rebuild``).
* ``ClaimMemory`` is one supervisor process's memory of the runs it claimed whose offer could still
  be delivered again: until the offer's ``not_after`` (after which no runner starts it) or, for
  offers without one (retries, manual runs), ``KEEP_WITHOUT_DEADLINE``. Re-asserted after amnesia,
  it makes a redelivered or re-published offer of a run this process claimed lose its claim again;
  the runner also drops such an offer itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from kirby.clock import utcnow
from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.lease.base import Generation, LeaseStore, RestoredClaim

log = logging.getLogger(__name__)

KEEP_WITHOUT_DEADLINE = 3600.0  # seconds a claim of an offer without not_after is remembered


class GenerationWatch:
    """Supervisor ``name``'s view of the store's generation; ``check()`` from any thread."""

    def __init__(self, store: LeaseStore, name: str):
        self.store, self.name = store, name
        self.marker: str | None = None
        self.open = True
        self.detected = 0  # losses noticed by this process
        self._listeners: list[Callable[[], None]] = []
        self._noticed: set[tuple[str, datetime | None]] = set()
        self._pending: tuple[str, datetime | None] | None = None  # a loss whose listeners have yet to succeed
        self._lock = threading.Lock()

    def on_loss(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def check(self) -> Generation:
        """Read the marker (LeaseError when the store is unreachable); notice and report a loss once."""
        with self._lock:
            generation = self.store.check_generation(self.marker)
            loss = (generation.marker, generation.closed_at)
            changed = self.marker is not None and generation.marker != self.marker
            if (changed or not generation.open) and loss not in self._noticed and generation.closed_at is not None:
                self._noticed.add(loss)
                self.detected += 1
                self._pending = loss
                log.error(
                    "supervisor %s: the lease store lost its data (amnesia: generation %s -> %s%s); no claims until "
                    "the leader has rebuilt them from the runs table",
                    self.name,
                    (self.marker or "?")[:8],
                    generation.marker[:8],
                    ", server restarted" if not changed else "",
                )
            elif changed and loss not in self._noticed:  # a loss the leader already rebuilt while we slept
                self._noticed.add(loss)
                self.detected += 1
                self._pending = loss
                log.error("supervisor %s: the lease store lost its data and was rebuilt meanwhile", self.name)
            self.marker, self.open = generation.marker, generation.open
            if self._pending is not None and self._notify():
                self._pending = None
            return generation

    def _notify(self) -> bool:
        for listener in self._listeners:
            try:
                listener()
            except KirbyError as exc:  # tried again at the next check
                log.error("supervisor %s: after amnesia, %s", self.name, exc)
                return False
        return True


@dataclass(frozen=True)
class _Remembered:
    claim: RestoredClaim
    keep_until: datetime


class ClaimMemory:
    """The runs one supervisor process claimed, while their offers may come again (thread-safe)."""

    def __init__(self, supervisor: str, instance: str, clock: Callable[[], datetime] = utcnow):
        self.supervisor, self.instance, self.clock = supervisor, instance, clock
        self._runs: dict[str, _Remembered] = {}
        self._lock = threading.Lock()
        self._pruned = time.monotonic()

    def claimed(self, offer: Offer) -> None:
        keep = offer.not_after or (self.clock() + timedelta(seconds=KEEP_WITHOUT_DEADLINE))
        claim = RestoredClaim(
            offer.run_id,
            self.supervisor,
            self.instance,
            offer.attempt,
            offer.to_json().decode(),
            started=False,
            settled=False,
        )
        with self._lock:
            self._runs[offer.run_id] = _Remembered(claim, keep)
            if time.monotonic() - self._pruned > 60:
                self._prune()

    def started(self, run_id: str) -> None:
        self._update(run_id, started=True)

    def settled(self, run_id: str) -> None:
        self._update(run_id, settled=True)

    def released(self, run_id: str) -> None:
        """Forget ``run_id``: its claim was released (settling presumed this process dead and
        re-offered the run), so a re-offer of it is anyone's to claim, this process's too."""
        with self._lock:
            self._runs.pop(run_id, None)

    def knows(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def claims(self) -> list[RestoredClaim]:
        """The remembered claims still worth fencing, to write back after amnesia."""
        with self._lock:
            self._prune()
            return [remembered.claim for remembered in self._runs.values()]

    def _update(self, run_id: str, **changes: bool) -> None:
        with self._lock:
            remembered = self._runs.get(run_id)
            if remembered is not None:
                self._runs[run_id] = replace(remembered, claim=replace(remembered.claim, **changes))

    def _prune(self) -> None:
        now, self._pruned = self.clock(), time.monotonic()
        for run_id in [r for r, m in self._runs.items() if m.keep_until < now and m.claim.settled]:
            del self._runs[run_id]


def reassert(store: LeaseStore, memory: ClaimMemory) -> None:
    """Write back ``memory``'s claims (the missing ones); conflicts are logged."""
    claims = memory.claims()
    conflicts = store.restore_claims(claims)
    log.warning(
        "supervisor %s re-asserted %d claim(s) after amnesia%s",
        memory.supervisor,
        len(claims),
        f"; {len(conflicts)} already claimed by another instance: {conflicts[:5]}" if conflicts else "",
    )
