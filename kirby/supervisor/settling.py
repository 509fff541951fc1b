"""Settling the runs of dead supervisor instances: re-offer what never started, record the rest lost.

A run's claim names the supervisor *instance* (one process) holding it and stays active until the
run is over (``LeaseStore.settle_run``). An instance is dead when no live registration carries its
id (its heartbeats stopped for the registration's TTL, or a new process took its name over), or
when its registration names a process of this host that is gone (``identity.live_instances``). Whoever notices settles its claims,
at most once each (the store's compare-and-set calls decide):

* a claim that was never marked *started* is released and its offer re-published under the same
  run id: the run cannot have run (the spawn happens only after the started mark, and the mark is
  refused once the claim is released), so it is not missed;
* a started claim is recorded ``lost`` (a ``lost`` run event naming the holder and when it was last
  seen) and settled, however old it is and whatever name comes back; a real ``finished`` event
  arriving later still wins (the recorder lets it replace ``lost``);
* a claim without an offer (a daemon's run) is recorded lost the same way (its arbiter restarts it);
* a lost run whose schedule says ``on_lost: retry`` is offered again as its next attempt
  (``slot#N``, its own record), for scripts that are safe to repeat.

The leader does this on every housekeeping tick, a supervisor that took a dead instance's name
over does it at once, and the web's lost detection does it too. Claims without an instance (made
before instances were recorded) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from kirby.bus.base import OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError
from kirby.events import Offer, RunEvent
from kirby.lease.base import Claim, LeaseStore, SupervisorInfo
from kirby.supervisor.identity import live_instances
from kirby.supervisor.runner import next_attempt
from kirby.vocabulary import OnLost

log = logging.getLogger(__name__)


@dataclass
class Settled:
    reoffered: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # new attempts of lost runs (on_lost: retry)


class Settler:
    """Settles the active claims of dead instances; remembers when each instance was last seen."""

    def __init__(
        self,
        store: LeaseStore,
        bus: OfferBus,
        clock: Callable[[], datetime] = utcnow,
        record_lost: Callable[[Claim, str], None] | None = None,
    ):
        """``record_lost(claim, reason)`` records a lost run (default: a ``lost`` run event on the bus;
        the web records it in its database directly)."""
        self.store, self.bus, self.clock = store, bus, clock
        self.record_lost = record_lost or self._publish_lost
        self._seen: dict[str, SupervisorInfo] = {}  # instance -> its last registration seen

    def remember(self, info: SupervisorInfo) -> None:
        """Note a registration (e.g. the predecessor whose name was taken over)."""
        known = self._seen.get(info.instance)
        if known is None or known.last_heartbeat < info.last_heartbeat:
            self._seen[info.instance] = info

    def settle(self) -> Settled:
        """One pass over the active claims (read before the registry: a claim is made by a
        registered instance, so one registered after the claims were read is not taken for dead)."""
        claims = self.store.active_claims()
        registrations = self.store.supervisors()
        for info in registrations:
            self.remember(info)
        live = live_instances(registrations)
        done = Settled()
        for claim in claims:
            if not claim.instance or claim.instance in live or claim.released:
                continue
            try:
                self._settle_one(claim, done)
            except KirbyError as exc:
                log.error("could not settle run %s of a dead supervisor: %s", claim.run_id, exc)
        return done

    def _settle_one(self, claim: Claim, done: Settled) -> None:
        if claim.started_at is None and claim.offer:
            if self.store.release_claim(claim.run_id, claim.instance):
                offer = Offer.from_json(claim.offer)
                self.bus.publish_offer(replace(offer, epoch=None))  # not the leader's: claims fence it
                done.reoffered.append(claim.run_id)
                log.warning(
                    "re-offered run %s: supervisor %s died after claiming it and before starting it",
                    claim.run_id,
                    claim.supervisor,
                )
            return
        seen = self._seen.get(claim.instance)
        when = f"{seen.last_heartbeat:%Y-%m-%d %H:%M:%S}Z" if seen else "an unknown time"
        host = f" on host {seen.info.get('host')} (pid {seen.info.get('pid')})" if seen else ""
        reason = (
            f"Kirby: supervisor {claim.supervisor}{host} died (last seen at {when}) while it held this run"
            f"{'' if claim.started_at else ' (never started)'}; this run is recorded as lost."
        )
        self.record_lost(claim, reason)
        self.store.settle_run(claim.run_id)
        done.lost.append(claim.run_id)
        offer = Offer.from_json(claim.offer) if claim.offer else None
        if offer is not None and offer.on_lost == OnLost.RETRY.value:
            retry = next_attempt(offer, self.clock())
            self.bus.publish_offer(retry)
            done.retried.append(retry.run_id)
            log.warning("run %s was lost; its schedule asks on_lost retry: offered %s", claim.run_id, retry.run_id)
        log.warning("run %s recorded lost: supervisor %s died (last seen at %s)", claim.run_id, claim.supervisor, when)

    def _publish_lost(self, claim: Claim, reason: str) -> None:
        event = RunEvent(
            kind="lost", run_id=claim.run_id, time=self.clock(), supervisor=claim.supervisor, data={"error": reason}
        )
        self.bus.publish_event(event)
