"""The runner: consumes offers, claims each run exactly once, and launches it.

For each offer, in order:

1. an offer fenced by an epoch older than the lease store's current epoch is dropped (a deposed
   leader published it; the new leader re-publishes what is still due) and counted;
2. the run id is claimed in the lease store; a loser drops the offer and counts it;
3. the offer is acknowledged after the claim (a crash before it means redelivery, and the
   redelivered offer loses the claim, so the run never starts twice); the offers of one poll are
   all claimed and launched before they are acknowledged, so none waits for another's ack;
4. the overlap policy is applied cluster-wide through a named lease per (job, environment):
   ``forbid`` skips the run while another runs, ``allow`` runs it, ``replace`` asks the running one
   to stop (a ``cancel:<run id>`` claim its supervisor watches) and waits for its lease;
5. the venv is prepared and the process started through the executor; a failed run with retries
   left publishes the next attempt as a new offer (``slot#N``), each attempt its own record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from kirby.bus.base import Consumer, Delivery, OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError, PackageError
from kirby.events import Offer
from kirby.lease.base import LeaseStore
from kirby.run_ids import attempt_run_id
from kirby.supervisor.reporting import RunReporter
from kirby.tasks.base import Executor, RunResult, RunSpec

log = logging.getLogger(__name__)

OVERLAP_TTL = 30.0  # seconds; renewed every OVERLAP_TTL / 3 while the run lives
REPLACE_WAIT = 60.0  # seconds a replacing run waits for the run it replaces to stop


def overlap_key(offer: Offer) -> str:
    return f"overlap:{offer.job}:{offer.environment}"


def cancel_claim_id(run_id: str) -> str:
    return f"cancel:{run_id}"


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
        trigger="retry",
        offered_at=now,
    )


@dataclass
class RunnerCounters:
    claimed: int = 0
    duplicates: int = 0
    stale: int = 0
    skipped_overlap: int = 0
    started: int = 0
    finished: int = 0


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
    ):
        self.name = name
        self.consumer = consumer
        self.bus = bus
        self.leases = lease_store
        self.executor = executor
        self.reporter = reporter
        self.clock = clock
        self.counters = RunnerCounters()
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="run")
        self._overlaps: dict[str, str] = {}  # run id -> overlap lease key held for it
        self._lock = threading.Lock()

    # -- consuming --------------------------------------------------------------------------------
    def poll_once(self, timeout: float = 1.0) -> int:
        """Receive and handle what arrives within ``timeout``; returns how many offers were handled.

        Every offer of the poll is fenced, claimed and launched before any is acknowledged, so an
        offer does not wait for the acknowledgements (a Kafka commit each) of those before it.
        """
        deliveries = self.consumer.poll(timeout)
        epoch = self.leases.current_epoch() if any(d.message.epoch is not None for d in deliveries) else None
        for delivery in deliveries:  # fenced by the epoch read once per poll: one store round trip
            self._accept(delivery, epoch)
        for delivery in deliveries:
            self.consumer.ack(delivery)
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
        if not self.leases.claim_run(offer.run_id, self.name, offer.attempt):
            self.counters.duplicates += 1
            log.info("dropped duplicate offer %s (already claimed)", offer.run_id)
            return False
        self.counters.claimed += 1
        log.info("claimed run %s", offer.run_id)
        self.reporter.claimed(offer)
        self._pool.submit(self._launch, offer)
        return True

    # -- launching --------------------------------------------------------------------------------
    def _launch(self, offer: Offer) -> None:
        try:
            if not self._take_overlap_slot(offer):
                return
            try:
                self.executor.prepare(offer.package, offer.version)
            except PackageError as exc:
                self._release_overlap(offer.run_id)
                self.reporter.failed_before_start(offer.run_id, str(exc), exc.output.splitlines())
                log.error("run %s failed before start: %s", offer.run_id, exc)
                self._maybe_retry(offer, "failed")
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

    def _finished(self, offer: Offer, result: RunResult) -> None:
        self._release_overlap(offer.run_id)
        self.counters.finished += 1
        self.reporter.finished(result)
        log.info(
            "finished run %s: %s (exit code %s, signal %s)", offer.run_id, result.state, result.exit_code, result.signal
        )
        self._maybe_retry(offer, result.state)

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
        if offer.overlap == "allow":
            return True
        key = overlap_key(offer)
        if self.leases.acquire_daemon(key, offer.run_id, OVERLAP_TTL):
            self._hold_overlap(offer.run_id, key)
            return True
        holder = self.leases.daemon_holders().get(key)
        if offer.overlap == "replace" and holder:
            self.leases.claim_run(cancel_claim_id(holder), self.name)
            deadline = self.clock().timestamp() + REPLACE_WAIT
            stop = threading.Event()
            while self.clock().timestamp() < deadline:
                if self.leases.acquire_daemon(key, offer.run_id, OVERLAP_TTL):
                    self._hold_overlap(offer.run_id, key)
                    return True
                stop.wait(0.2)
        reason = f"overlap policy {offer.overlap}: run {holder or 'another run'} of {offer.job} in {offer.environment} is still running"
        self.counters.skipped_overlap += 1
        log.info("skipped run %s: %s", offer.run_id, reason)
        self.reporter.skipped(offer, reason)
        return False

    def _hold_overlap(self, run_id: str, key: str) -> None:
        with self._lock:
            self._overlaps[run_id] = key

    def _release_overlap(self, run_id: str) -> None:
        with self._lock:
            key = self._overlaps.pop(run_id, None)
        if key:
            self.leases.release_daemon(key, run_id)

    def renew_overlaps(self) -> None:
        """Renew the overlap leases of running runs and honour replace requests. Call every few seconds."""
        with self._lock:
            held = dict(self._overlaps)
        for run_id, key in held.items():
            if self.leases.get_claim(cancel_claim_id(run_id)) is not None:
                log.info("run %s is replaced by a newer run; stopping it", run_id)
                self.executor.cancel(run_id)
            elif not self.leases.renew_daemon(key, run_id, OVERLAP_TTL):
                log.warning("lost the overlap lease of run %s", run_id)
