"""The runner: consumes offers, claims each run exactly once, and launches it.

For each offer, in order:

1. an offer fenced by an epoch older than the lease store's current epoch is dropped (a deposed
   leader published it; the new leader re-publishes what is still due) and counted;
2. the run id is claimed in the lease store; a loser drops the offer and counts it; the winner
   of an offer received after its ``not_after`` (the end of its misfire grace) records it
   ``skipped`` ("expired: ...") instead of starting it;
3. the offers of one poll are claimed together (one store round trip, ``claim_runs``) and
   acknowledged together (one commit), then launched: a crash before the ack means redelivery,
   and the redelivered offer loses the claim, so the run never starts twice; a crash after it
   leaves a claim that never started, re-offered once the instance is gone (``settling``);
4. the venv is prepared; an offer received before its due instant (the leader publishes slightly
   ahead, ``Scheduler.ahead``) takes its overlap lease if it is free (``overlap.OverlapGuard``),
   then waits for the instant (by this host's clock, at most ``MAX_EARLY`` seconds); the overlap
   policy is applied at the instant (a run being prepared or waiting does not count as running);
5. right before the spawn the claim is marked *started* (refused when the claim was released
   because this instance was presumed dead: then nothing is spawned; the runs of one instant are
   marked together, one store round trip, ``batching.Combined``), and the process is started
   through the executor (spawns run in parallel, one pool thread each); the claim is settled when
   the run is over. A failed run with retries left publishes the next attempt as a new offer
   (``slot#N``), each its own record. A supervisor stopping while a run waits for its instant does
   not start it: its never-started claim is re-offered once the instance is gone (``settling``).

A Celery run (``offer.celery``) has no venv, no process and no overlap policy (the Celery workers
run the task): right after the claim it is marked *started* and sent (``kirby.celery.sender``),
recorded ``sent`` and settled; a send that fails (broker down, after ``EXT_RETRIES``) fails the
run with the sender's one line, and is retried like a failed script. Its capacity is freed once
the send is decided.

**Capacity.** At most ``capacity`` claimed runs are in hand at once (from the claim until the run
is over or decided not to start: preparing, waiting for an overlap lease, running). A poll asks
the bus for at most the room left, so an offer beyond it is never received, never claimed: it
stays on the bus for a supervisor with room (the embedded bus hands it to the next member that
polls; on Kafka this member stops fetching, and the leader routes offers to members with room).
With no room the runner receives nothing (it stays a live member of the group) until a run ends,
except on a partitioned bus (Kafka) with ``handback``: offers routed to this member meanwhile (the
leader's picture of its room was stale) are handed back, unclaimed, to the partitions of members
with room (``routing.handback_routes``) and then acknowledged (a crash in between leaves a copy:
harmless, runs are claimed by id); with nobody else having room they wait here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kirby.bus.base import Consumer, OfferBus
from kirby.clock import utcnow
from kirby.errors import KirbyError, LeaseError, PackageError
from kirby.events import Offer
from kirby.lease.base import ClaimRequest, ClaimsClosed, LeaseStore
from kirby.run_ids import attempt_run_id
from kirby.supervisor.amnesia import ClaimMemory
from kirby.supervisor.batching import Combined
from kirby.supervisor.overlap import OverlapGuard
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.undecided import UndecidedClaims
from kirby.tasks.base import Executor, RunResult, RunSpec

log = logging.getLogger(__name__)

DRAIN_POLL = 0.02  # seconds a poll that received offers waits for more before claiming them together
HANDBACK_POLL = 0.2  # seconds a full runner waits for offers to hand back, between looks at its room
HANDBACK_BATCH = 100  # offers handed back per poll at most
MARK_RETRY = 0.5  # seconds between attempts to mark a claim started while the lease store is unreachable
MAX_EARLY = 30.0  # seconds an offer received before its instant waits at most (a leader's clock far ahead)


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
        capacity: int = 16,
        clock: Callable[[], datetime] = utcnow,
        instance: str = "",
        monotonic: Callable[[], float] = time.monotonic,
        memory: ClaimMemory | None = None,
        generation: Callable[[], str | None] = lambda: None,
        celery: Any = None,
        handback: Callable[[int], list[int] | None] | None = None,
    ):
        self.name = name
        self.handback = handback  # partitions of other members with room for n offers (None: nobody)
        self.handed_back = 0  # offers handed back while full
        self.memory = memory  # the runs this process claimed, re-asserted after amnesia
        self.celery = celery  # a kirby.celery.sender.CelerySender: sends Celery runs
        self.generation = generation  # the store generation this process knows: claims only under it
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
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r}: a runner needs room for at least one run")
        self.capacity = capacity
        self._busy: set[str] = set()  # run ids claimed here and not over yet (each holds one unit of capacity)
        self.undecided = UndecidedClaims(monotonic)  # claim calls that failed: their outcome is unknown
        self._freed = threading.Event()  # set when a run ends: a full runner takes offers again at once
        self._pool = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="run")
        self.overlap = OverlapGuard(lease_store, instance, self.stopping, monotonic, generation)
        self._mark = Combined(lambda run_ids: self.leases.mark_runs_started(run_ids, self.instance))
        self._lock = threading.Lock()

    # -- capacity ---------------------------------------------------------------------------------
    @property
    def busy(self) -> int:
        """Claimed runs in hand: being prepared, waiting for their overlap lease, or running."""
        with self._lock:
            return len(self._busy)

    @property
    def room(self) -> int:
        return max(0, self.capacity - self.busy)

    def _hold(self, run_id: str) -> None:
        with self._lock:
            self._busy.add(run_id)

    def _free(self, run_id: str) -> None:
        """The run is over (or will not start): its unit of capacity is free. Idempotent."""
        with self._lock:
            self._busy.discard(run_id)
        self._freed.set()

    # -- consuming --------------------------------------------------------------------------------
    def poll_once(self, timeout: float = 1.0) -> int:
        """Receive and handle what arrives within ``timeout``; returns how many offers were handled.

        The offers of the poll (on a partitioned bus, also those arriving within DRAIN_POLL of each
        other: Kafka hands a burst over in several fetches; on the embedded bus a poll takes a fair
        share, and draining would take the others' too) are fenced (the epoch read once), claimed in one store round
        trip and acknowledged together, then launched. An offer is acknowledged only once its claim
        is decided: when the lease store (or the bus) fails before that, or refuses claims (amnesia),
        every offer of the poll is released back to the bus and the error raised; they come again
        (those claimed meanwhile are launched all the same, and their copies dropped as duplicates;
        a claim the store applied but whose reply was lost is found again by its token, or read
        back from the store when its offer went elsewhere: ``undecided``).

        At most ``room`` offers are received; with none, nothing is (the consumer stays a member of
        its group) and the call returns as soon as a run ends, or after ``timeout``.
        """
        room = self.room
        if room and len(self.undecided):
            self._resolve_undecided()
            room = self.room
        if room == 0:
            self._freed.clear()
            if self._hand_back(min(timeout, HANDBACK_POLL)):
                return 0
            self.consumer.poll(0, max_messages=0)
            self._freed.wait(timeout)
            return 0
        deliveries = self.consumer.poll(timeout, max_messages=room)
        partitioned = self.consumer.partitions() is not None  # the embedded bus hands out fair shares: no drain
        while partitioned and deliveries and len(deliveries) < room:  # what follows at once joins the batch
            more = self.consumer.poll(DRAIN_POLL, max_messages=room - len(deliveries))
            if not more:
                break
            deliveries += more
        if not deliveries:
            return 0
        claimed: list[Offer] = []
        try:
            self._accept_all([delivery.message for delivery in deliveries], claimed)
            self.consumer.ack_all(deliveries)
        except KirbyError as exc:
            log.warning("giving %d offer(s) back to the bus, their claims undecided: %s", len(deliveries), exc)
            self.consumer.release(deliveries)
            raise
        finally:  # launched once the batch is decided: their threads do not slow the claims and the ack down
            for offer in claimed:
                self._pool.submit(self._run, offer)
        return len(deliveries)

    def _hand_back(self, timeout: float) -> bool:
        """Full: hand what arrives back to members with room (see the module docstring); False when
        there is nobody to hand it to, or the bus has no partitions (offers then wait on the bus)."""
        if self.handback is None or self.consumer.partitions() is None or self.handback(1) is None:
            return False
        deliveries = self.consumer.poll(timeout, max_messages=HANDBACK_BATCH)
        if not deliveries:
            return True
        routes = self.handback(len(deliveries))
        if routes is None:  # everyone filled up meanwhile: they come again when this member has room
            self.consumer.release(deliveries)
            return False
        try:
            self.bus.publish_offers([d.message for d in deliveries], partitions=routes)
            self.consumer.ack_all(deliveries)
        except KirbyError as exc:
            log.warning("could not hand %d offer(s) back: %s; they stay here", len(deliveries), exc)
            self.consumer.release(deliveries)
            return False
        self.handed_back += len(deliveries)
        log.info("full: handed %d offer(s) back to members with room (partitions %s)", len(deliveries), routes)
        return True

    def _accept_all(self, offers: list[Offer], claimed: list[Offer]) -> None:
        """Fence and claim ``offers`` (one round trip); those to launch go to ``claimed``. Raises
        ClaimsClosed (the ones claimed still in ``claimed``) when the store refused some (its
        generation is closed: amnesia)."""
        fenced = any(offer.epoch is not None for offer in offers)
        epoch = self.leases.current_epoch() if fenced else None  # one store round trip per poll
        wanted: dict[str, Offer] = {}  # one claim per run id: two copies would carry one token, and both win
        for offer in offers:
            if offer.epoch is not None and offer.epoch < epoch:
                self.counters.stale += 1
                log.warning("dropped offer %s of stale epoch %s", offer.run_id, offer.epoch)
            elif offer.run_id in wanted or (self.memory is not None and self.memory.knows(offer.run_id)):
                self._duplicate(offer)
            else:
                wanted[offer.run_id] = offer
        requests = [
            ClaimRequest(o.run_id, self.name, o.attempt, self.instance, o.to_json().decode(), self.undecided.token(o))
            for o in wanted.values()
        ]
        outcomes = self.leases.claim_runs(requests, self.generation()) if requests else []  # raises: kept undecided
        self.undecided.decided(list(wanted))
        for offer, won in zip(wanted.values(), outcomes):
            if won:
                if self._claimed(offer):
                    claimed.append(offer)
            elif won is False:
                self._duplicate(offer)
        if None in outcomes:
            raise ClaimsClosed("runs not claimed: the lease store's generation is closed or new (amnesia)")

    def _resolve_undecided(self) -> None:
        """Decide the failed claim calls whose offers did not come back (``undecided``): a claim
        that is this instance's and never started was applied and its reply lost; it is launched
        (or recorded skipped, past its grace) as if the reply had come. Any other outcome (no claim,
        someone else's) leaves the run to whoever holds its offer or claim. A store error: later."""
        for offer in self.undecided.due(self.room):
            try:
                claim = self.leases.get_claim(offer.run_id)
            except KirbyError as exc:
                log.warning("cannot read the claim of %s (its claim call failed): %s; trying later", offer.run_id, exc)
                return
            self.undecided.decided([offer.run_id])
            ours = claim is not None and bool(self.instance) and claim.instance == self.instance
            if not ours or claim.started_at is not None or claim.settled or claim.released:
                continue
            if (self.memory is not None and self.memory.knows(offer.run_id)) or offer.run_id in self._busy:
                continue
            log.warning("claim of %s found in the lease store after its reply was lost: running it here", offer.run_id)
            if self._claimed(offer):
                self._pool.submit(self._run, offer)

    def _duplicate(self, offer: Offer) -> None:
        self.counters.duplicates += 1
        log.info("dropped duplicate offer %s (already claimed)", offer.run_id)

    def _claimed(self, offer: Offer) -> bool:
        """``offer`` was claimed here: skip it if expired (False), else hold its capacity (True: launch it)."""
        if self.memory is not None:
            self.memory.claimed(offer)
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
            if self.memory is not None:
                self.memory.settled(offer.run_id)
            log.warning("skipped run %s: %s", offer.run_id, reason)
            self.reporter.skipped(offer, reason)
            return False
        self._hold(offer.run_id)
        return True

    def _run(self, offer: Offer) -> None:
        """Launch ``offer``; free its capacity at once unless a process started (then ``_finished`` does)."""
        started = False
        try:
            started = self._launch(offer)
        finally:
            if not started:
                self._free(offer.run_id)

    # -- launching --------------------------------------------------------------------------------
    def _launch(self, offer: Offer) -> bool:
        """Prepare, wait for the instant, apply the overlap policy, and start; True once started."""
        if offer.celery is not None:
            self._send(offer)
            return False
        staged = None
        try:
            try:
                self.executor.prepare(offer.package, offer.version)
            except PackageError as exc:
                self.reporter.failed_before_start(offer.run_id, str(exc), exc.output.splitlines())
                self._settle(offer.run_id)
                log.error("run %s failed before start: %s", offer.run_id, exc)
                self._maybe_retry(offer, "failed")
                return False
            reason = None
            if self._until_instant(offer) > 0 and self.overlap.try_early(offer):  # nothing earlier runs
                staged = self._stage(offer)  # the process starts up now; its script waits for the release
                on_time = self._wait_for_instant(offer)
            else:
                on_time = self._wait_for_instant(offer)
                reason = self.overlap.take(offer) if on_time else None  # at the instant, the venv ready
            if not on_time:
                self._give_up(offer, staged)
                log.warning("run %s not started: its supervisor is stopping (it will be re-offered)", offer.run_id)
                return False
            if reason is not None:
                return self._skip(offer, reason)
            if not self._mark_started_when_reachable(offer):  # right before the script may run
                self._forget(offer.run_id)
                self._give_up(offer, staged)
                self.counters.not_started += 1
                log.warning(
                    "run %s not started: its claim was released (this supervisor was presumed dead)", offer.run_id
                )
                return False
            started = self.clock()
            if staged is not None:
                staged.release()
            else:
                self.executor.start(
                    spec_for(offer, self.name),
                    on_line=self.reporter.line,
                    on_exit=lambda result: self._finished(offer, result),
                    on_lines=self.reporter.lines,
                )
            self.counters.started += 1
            self.reporter.started(offer.run_id, started)
            log.info("started run %s (%s==%s)", offer.run_id, offer.package, offer.version)
            return True
        except Exception as exc:  # never lose a claimed run silently
            log.exception("run %s could not start", offer.run_id)
            self._give_up(offer, staged)
            self.reporter.failed_before_start(offer.run_id, f"could not start: {exc}", [])
            self._settle(offer.run_id)
            return False

    def _stage(self, offer: Offer):
        return self.executor.stage(
            spec_for(offer, self.name),
            on_line=self.reporter.line,
            on_exit=lambda result: self._finished(offer, result),
            on_lines=self.reporter.lines,
        )

    def _give_up(self, offer: Offer, staged) -> None:
        """The run will not start here: end its held process (no script code ran), free its lease."""
        if staged is not None:
            staged.abort()
        self.overlap.release(offer.run_id)

    def _until_instant(self, offer: Offer) -> float:
        """Seconds until ``offer``'s due instant by this host's clock (0 when due), at most MAX_EARLY."""
        return min(MAX_EARLY, max(0.0, (offer.scheduled_at - self.clock()).total_seconds()))

    def _wait_for_instant(self, offer: Offer) -> bool:
        """Wait for ``offer``'s instant; False when the supervisor started stopping meanwhile (do not start)."""
        seconds = self._until_instant(offer)
        return seconds <= 0 or not self.stopping.wait(seconds)

    def _forget(self, run_id: str) -> None:
        """The claim of ``run_id`` was released: a re-offer of it may be claimed again, here too."""
        if self.memory is not None:
            self.memory.released(run_id)

    def _mark_started_when_reachable(self, offer: Offer) -> bool:
        """``_mark_started``, tried again every MARK_RETRY while the lease store is unreachable (or
        closed after amnesia): the claim stays this process's meanwhile, since nobody can release it
        without the store. Gives up, raising the store's error, once the offer's misfire grace has
        ended or the supervisor is stopping."""
        failures = 0
        while True:
            try:
                return self._mark_started(offer)
            except LeaseError as exc:
                late = offer.not_after is not None and self.clock() > offer.not_after
                if late or self.stopping.wait(MARK_RETRY):
                    raise
                failures += 1
                if failures == 1:
                    log.warning("run %s: cannot mark it started yet (%s); trying again", offer.run_id, exc)

    def _mark_started(self, offer: Offer) -> bool:
        """Mark the claim started (with the other runs starting now: one round trip); a claim the
        store forgot (amnesia) is written back first, from memory."""
        if self._mark(offer.run_id):
            if self.memory is not None:
                self.memory.started(offer.run_id)
            return True
        if self.memory is None or self.leases.get_claim(offer.run_id) is not None:
            return False
        mine = [claim for claim in self.memory.claims() if claim.run_id == offer.run_id]
        if not mine or self.leases.restore_claims(mine):
            return False
        log.warning("run %s: its claim was lost by the lease store (amnesia); written back", offer.run_id)
        return self._mark_started(offer)

    def _send(self, offer: Offer) -> None:
        """Send a Celery run (see the module docstring); never raises."""
        try:
            if not self._mark_started_when_reachable(offer):
                self._forget(offer.run_id)
                self.counters.not_started += 1
                log.warning("run %s not sent: its claim was released (this supervisor was presumed dead)", offer.run_id)
                return
            if self.celery is None:
                raise KirbyError("this supervisor cannot send Celery tasks (no Celery sender)")
            expires = self.celery.send(offer)
        except Exception as exc:  # a KirbyError is the sender's one line; anything else is a bug
            if not isinstance(exc, KirbyError):
                log.exception("run %s could not be sent", offer.run_id)
            log.error("run %s failed: %s", offer.run_id, exc)
            self.reporter.failed_before_start(offer.run_id, str(exc), [])
            self._settle(offer.run_id)
            self._maybe_retry(offer, "failed")
            return
        self.counters.started += 1
        self.reporter.sent(offer.run_id, self.clock(), offer.celery.get("name", ""), expires)
        self._settle(offer.run_id)
        log.info("sent run %s (Celery task %s)", offer.run_id, offer.celery.get("name"))

    def _finished(self, offer: Offer, result: RunResult) -> None:
        self._free(offer.run_id)
        self.overlap.release(offer.run_id)
        self.counters.finished += 1
        self.reporter.finished(result)
        self._settle(offer.run_id)
        log.info(
            "finished run %s: %s (exit code %s, signal %s)", offer.run_id, result.state, result.exit_code, result.signal
        )
        self._maybe_retry(offer, result.state)

    def _settle(self, run_id: str) -> None:
        if self.memory is not None:
            self.memory.settled(run_id)
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
    def _skip(self, offer: Offer, reason: str) -> bool:
        self.counters.skipped_overlap += 1
        log.info("skipped run %s: %s", offer.run_id, reason)
        self.reporter.skipped(offer, reason)
        self._settle(offer.run_id)
        return False

    def renew_overlaps(self) -> None:
        """Renew the overlap (and waiting) leases of this supervisor's runs. Call every few seconds,
        from a thread that never does slow work."""
        self.overlap.renew()

    def reassert_overlaps(self) -> None:
        """After amnesia (a ``GenerationWatch`` listener): write back the overlap (and waiting) leases
        of this process's runs, which vanished with the store's data. Allowed while the generation
        is closed (no other owner can be given them then); a lease someone else holds meanwhile is
        logged. Idempotent; raises LeaseError when the store is unreachable (tried again)."""
        lost = self.overlap.reassert()
        log.warning(
            "supervisor %s re-asserted the overlap leases of its runs after amnesia%s",
            self.name,
            f"; {len(lost)} held by another owner: {lost[:5]}" if lost else "",
        )

    def check_cancels(self) -> None:
        """Stop the runs a replacing run asked to stop. Call every few seconds."""
        for run_id in self.overlap.held():
            if run_id in self.executor.running() and self.leases.cancel_requested(run_id):
                log.info("run %s is replaced by a newer run; stopping it", run_id)
                self.executor.cancel(run_id)
