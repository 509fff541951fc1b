"""The runner: consumes offers, claims each run exactly once, and launches it.

For each offer, in order:

1. an offer fenced by an epoch older than the lease store's current epoch is dropped (a deposed
   leader published it; the new leader re-publishes what is still due) and counted;
2. the run id is claimed in the lease store; a loser drops the offer and counts it; the winner
   of an offer received after its ``not_after`` (the end of its misfire grace) records it
   ``skipped`` ("expired: ...") instead of starting it;
3. the offer is acknowledged after the claim (a crash before it means redelivery, and the
   redelivered offer loses the claim, so the run never starts twice); the offers of one poll are
   all claimed and launched before they are acknowledged, so none waits for another's ack;
4. (after the venv is ready) the overlap policy is applied cluster-wide through a named lease ``overlap:<job>:<env>`` owned
   by ``<run id>@<instance>``: the overlap state belongs to the live run and its supervisor
   instance, so a lease whose instance is gone from the registry is taken over at once. Only a run
   of an *earlier* slot holding it counts: a run never waits for, or is skipped because of, a later
   slot. ``forbid`` skips the run while an earlier one really runs; ``allow`` runs it; ``replace``
   asks the running one to stop (a short-lived cancel request its supervisor watches) and waits for
   the lease; ``buffer_one`` lets one run wait for the lease (a second lease
   ``overlap-wait:<job>:<env>``) and skips others while one waits;
5. the venv is prepared (before the overlap policy is applied: a run being prepared does not
   count as running); right before the spawn the claim is marked *started* (refused when the
   claim was released because this instance was presumed dead: then nothing is spawned), and the
   process is started through the executor; the claim is settled when the run is over. A failed
   run with retries left publishes the next attempt as a new offer (``slot#N``), each its own record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from kirby.bus.base import Consumer, Delivery, OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError, PackageError
from kirby.events import Offer
from kirby.lease.base import LeaseStore
from kirby.run_ids import SLOT, attempt_run_id, parse_run_id
from kirby.supervisor.identity import live_instances
from kirby.supervisor.reporting import RunReporter
from kirby.tasks.base import Executor, RunResult, RunSpec
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


def spec_for(offer: Offer, supervisor: str) -> RunSpec:
    return RunSpec(
        run_id=offer.run_id,
        job=offer.job,
        environment=offer.environment,
        package=offer.package,
        version=offer.version,
        scheduled_at=offer.scheduled_at,
        supervisor=supervisor,
        module=offer.module,
        run_as=offer.run_as,
        config=dict(offer.config),
        secrets=tuple(offer.secrets),
        timeout_seconds=offer.timeout_seconds,
    )


def next_attempt(offer: Offer, now: datetime) -> Offer:
    attempt = offer.attempt + 1
    return replace(
        offer,
        run_id=attempt_run_id(offer.slot_id, attempt),
        attempt=attempt,
        epoch=None,
        not_after=None,  # a retry is due when its predecessor failed, however late that is
        trigger="retry",
        offered_at=now,
    )


@dataclass
class RunnerCounters:
    claimed: int = 0
    duplicates: int = 0
    stale: int = 0
    skipped_overlap: int = 0
    expired: int = 0
    started: int = 0
    finished: int = 0
    not_started: int = 0  # claims released meanwhile (this instance was presumed dead)


class Runner:
    """Consumes offers for supervisor ``name`` and runs them through ``executor``."""

    def __init__(
        self,
        name: str,
        consumer: Consumer[Offer],
        bus: OfferBus,
        lease_store: LeaseStore,
        executor: Executor,
        reporter: RunReporter,
        max_parallel: int = 16,
        clock: Callable[[], datetime] = utcnow,
        instance: str = "",
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.instance = instance
        self.monotonic = monotonic
        self.stopping = threading.Event()  # set at shutdown: runs waiting for an overlap lease give up
        self.consumer = consumer
        self.bus = bus
        self.leases = lease_store
        self.executor = executor
        self.reporter = reporter
        self.clock = clock
        self.counters = RunnerCounters()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="run")
        self._overlaps: dict[str, str] = {}  # run id -> overlap lease key held for it
        self._waiting: dict[str, str] = {}  # run id -> overlap-wait lease key held for it (buffer_one)
        self._lock = threading.Lock()

    # -- consuming --------------------------------------------------------------------------------
    def poll_once(self, timeout: float = 1.0) -> int:
        """Receive and handle what arrives within ``timeout``; returns how many offers were handled.

        Every offer of the poll is fenced, claimed and launched before any is acknowledged, so an
        offer does not wait for the acknowledgements (a Kafka commit each) of those before it. An
        offer is acknowledged only once its claim is decided: when the lease store (or the bus)
        fails before that, every unacknowledged offer of the poll is released back to the bus and
        the error raised; they come again (those already claimed are then dropped as duplicates).
        """
        deliveries = self.consumer.poll(timeout)
        acked = 0
        try:
            epoch = self.leases.current_epoch() if any(d.message.epoch is not None for d in deliveries) else None
            for delivery in deliveries:  # fenced by the epoch read once per poll: one store round trip
                self._accept(delivery, epoch)
            for delivery in deliveries:
                self.consumer.ack(delivery)
                acked += 1
        except KirbyError as exc:
            log.warning("giving %d offer(s) back to the bus, their claims undecided: %s", len(deliveries) - acked, exc)
            self.consumer.release(deliveries[acked:])
            raise
        return len(deliveries)

    def _accept(self, delivery: Delivery[Offer], epoch: int | None) -> bool:
        """Fence (by ``epoch``, the store's current one; read whenever the poll holds a fenced offer)
        and claim one offer; launch it if claimed. Acknowledging is the caller's (after the claim: a
        crash before the ack means redelivery, and the redelivered offer loses the claim)."""
        offer = delivery.message
        if offer.epoch is not None and offer.epoch < epoch:
            self.counters.stale += 1
            log.warning("dropped offer %s of stale epoch %s", offer.run_id, offer.epoch)
            return False
        if not self.leases.claim_run(offer.run_id, self.name, offer.attempt, self.instance, offer.to_json().decode()):
            self.counters.duplicates += 1
            log.info("dropped duplicate offer %s (already claimed)", offer.run_id)
            return False
        self.counters.claimed += 1
        log.info("claimed run %s", offer.run_id)
        self.reporter.claimed(offer)
        now = self.clock()
        if offer.not_after is not None and now > offer.not_after:  # decided by the claim holder, once
            reason = (
                f"expired: received at {now.isoformat()}, after the end of its misfire grace "
                f"({offer.not_after.isoformat()})"
            )
            self.counters.expired += 1
            log.warning("skipped run %s: %s", offer.run_id, reason)
            self.reporter.skipped(offer, reason)
            return False
        self._pool.submit(self._launch, offer)
        return True

    # -- launching --------------------------------------------------------------------------------
    def _launch(self, offer: Offer) -> None:
        try:
            try:
                self.executor.prepare(offer.package, offer.version)
            except PackageError as exc:
                self.reporter.failed_before_start(offer.run_id, str(exc), exc.output.splitlines())
                self._settle(offer.run_id)
                log.error("run %s failed before start: %s", offer.run_id, exc)
                self._maybe_retry(offer, "failed")
                return
            if not self._take_overlap_slot(offer):  # after the build: a run being prepared is not running
                return
            if not self.leases.mark_started(offer.run_id, self.instance):  # right before the spawn
                self._release_overlap(offer.run_id)
                self.counters.not_started += 1
                log.warning(
                    "run %s not started: its claim was released (this supervisor was presumed dead)", offer.run_id
                )
                return
            started = self.clock()
            self.executor.start(
                spec_for(offer, self.name),
                on_line=self.reporter.line,
                on_exit=lambda result: self._finished(offer, result),
            )
            self.counters.started += 1
            self.reporter.started(offer.run_id, started)
            log.info("started run %s (%s==%s)", offer.run_id, offer.package, offer.version)
        except Exception as exc:  # never lose a claimed run silently
            log.exception("run %s could not start", offer.run_id)
            self._release_overlap(offer.run_id)
            self.reporter.failed_before_start(offer.run_id, f"could not start: {exc}", [])
            self._settle(offer.run_id)

    def _finished(self, offer: Offer, result: RunResult) -> None:
        self._release_overlap(offer.run_id)
        self.counters.finished += 1
        self.reporter.finished(result)
        self._settle(offer.run_id)
        log.info(
            "finished run %s: %s (exit code %s, signal %s)", offer.run_id, result.state, result.exit_code, result.signal
        )
        self._maybe_retry(offer, result.state)

    def _settle(self, run_id: str) -> None:
        try:
            self.leases.settle_run(run_id)
        except KirbyError as exc:  # it stays active; whoever settles dead instances' runs will see it
            log.error("could not settle run %s: %s", run_id, exc)

    def _maybe_retry(self, offer: Offer, state: str) -> None:
        if state in ("failed", "timed_out") and offer.attempt <= offer.retries:
            retry = next_attempt(offer, self.clock())
            try:
                self.bus.publish_offer(retry)
                self.reporter.offered(retry)
                log.info("run %s failed; published attempt %d as %s", offer.run_id, retry.attempt, retry.run_id)
            except KirbyError as exc:
                log.error("could not publish retry %s: %s", retry.run_id, exc)

    # -- overlap ----------------------------------------------------------------------------------
    def _take_overlap_slot(self, offer: Offer) -> bool:
        """Apply the overlap policy; True when the run may start (holding the lease if one is needed)."""
        if offer.overlap == Overlap.ALLOW.value:
            return True
        key, me = overlap_key(offer), lease_owner(offer.run_id, self.instance)
        deadline = None
        try:
            while True:
                if self._acquire(offer.run_id, key, me, self._overlaps):
                    return True
                holder = self.leases.lease_holder(key)
                if holder is None:  # released or expired meanwhile: try again at once
                    continue
                held_run, held_instance = split_owner(holder.owner)
                if held_instance not in self._live_instances():
                    log.info("overlap lease of run %s: its supervisor instance is gone; taking it over", held_run)
                    if self._acquire(offer.run_id, key, me, self._overlaps, replaces=holder.owner):
                        return True
                    continue
                if not runs_before(held_run, offer):
                    log.info("run %s starts although run %s of a later slot runs", offer.run_id, held_run)
                    return True
                if offer.overlap == Overlap.REPLACE.value:
                    if deadline is None:
                        self.leases.request_cancel(held_run, CANCEL_TTL)
                        deadline = self.monotonic() + REPLACE_WAIT
                    elif self.monotonic() >= deadline:
                        return self._skip(offer, held_run)
                elif offer.overlap == Overlap.BUFFER_ONE.value:
                    if not self._wait_turn(offer, me):
                        return self._skip(offer, held_run, "another run already waits for it")
                else:
                    return self._skip(offer, held_run)
                if self.stopping.wait(OVERLAP_POLL):
                    return self._skip(offer, held_run, "its supervisor is stopping")
        finally:
            self._release_waiting(offer.run_id)

    def _acquire(self, run_id: str, key: str, owner: str, held: dict, replaces: str | None = None) -> bool:
        if self.leases.acquire_lease(key, owner, OVERLAP_TTL, replaces=replaces) is None:
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

    def _skip(self, offer: Offer, held_run: str, why: str = "") -> bool:
        reason = (
            f"overlap policy {offer.overlap}: run {held_run} of {offer.job} in {offer.environment} is still running"
            + (f"; {why}" if why else "")
        )
        self.counters.skipped_overlap += 1
        log.info("skipped run %s: %s", offer.run_id, reason)
        self.reporter.skipped(offer, reason)
        self._settle(offer.run_id)
        return False

    def _release_waiting(self, run_id: str) -> None:
        with self._lock:
            key = self._waiting.pop(run_id, None)
        if key:
            self.leases.release_lease(key, lease_owner(run_id, self.instance))

    def _release_overlap(self, run_id: str) -> None:
        with self._lock:
            key = self._overlaps.pop(run_id, None)
        if key:
            try:
                self.leases.release_lease(key, lease_owner(run_id, self.instance))
            except KirbyError as exc:  # it expires; its instance is known live meanwhile, so it holds
                log.error("could not release the overlap lease of run %s: %s", run_id, exc)

    def renew_overlaps(self) -> None:
        """Renew the overlap (and waiting) leases of this supervisor's runs. Call every few seconds,
        from a thread that never does slow work."""
        with self._lock:
            held = [*self._overlaps.items(), *self._waiting.items()]
        for run_id, key in held:
            if not self.leases.renew_lease(key, lease_owner(run_id, self.instance), OVERLAP_TTL):
                log.warning("lost the overlap lease %s of run %s", key, run_id)

    def check_cancels(self) -> None:
        """Stop the runs a replacing run asked to stop. Call every few seconds."""
        with self._lock:
            held = list(self._overlaps)
        for run_id in held:
            if run_id in self.executor.running() and self.leases.cancel_requested(run_id):
                log.info("run %s is replaced by a newer run; stopping it", run_id)
                self.executor.cancel(run_id)
