"""One supervisor process: registry heartbeat, election + leader scheduling, runner, arbiter.

Threads (all stop when ``stop`` is set):

* ``scheduler``: while leader, the scheduler (``Scheduler.run``), which starts the ``election``
  thread (renewals every ``window / 3``, never behind a publish) and the schedule-refresh thread;
* ``runner``: consumes offers, claims and launches runs;
* ``heartbeat``: every ``window / 2`` seconds heartbeats the registry and renews the overlap leases
  of running runs and the daemon leases (fencing a daemon whose lease cannot be renewed); it does
  nothing slow, so renewals never wait behind a venv build, a stop or the reporter;
* ``housekeeping``: every ``window / 2`` seconds ticks the arbiter with the daemons of the
  schedule (its venv builds run in the arbiter's own starter threads), honours replace requests,
  and, while leader, settles the runs of dead instances (``settling``);
* both loops log any exception with its traceback and go on;
* the heartbeat also checks the lease store's generation marker (``amnesia``): a loss is logged
  once, counted in the registration (``amnesia``), and the claims this process remembers and the
  overlap leases of its running runs are written back; the runner claims, and takes overlap
  leases, only under the generation it knows.

Start: a name whose registration is held by a dead process of this host (pid gone, or another
process start time) is taken over at once, and its unfinished runs are settled at once (re-offered
if they never started, else recorded lost); a name held by a live process is refused.

Shutdown (SIGTERM/SIGINT): stop consuming; stop the daemons this supervisor holds and release
their leases, so others take over at once; give running scheduled runs ``grace`` seconds (the
heartbeat thread keeps their overlap leases and the registration alive meanwhile), then stop them
(recorded as failed: stopped by their supervisor); release the leader lease; leave the registry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from kirby.bus import open_bus
from kirby.celery.sender import CelerySender
from kirby.clock import utcnow
from kirby.config import Settings
from kirby.errors import KirbyError, SupervisorNameTaken
from kirby.hardening import is_dumpable
from kirby.lease import open_lease_store
from kirby.lease.base import ClaimsClosed
from kirby.schedule import ScheduleClient, ScheduleSnapshot, ScheduleSource, entry_offer
from kirby.schedule.record import RunRecordClient, RunRecordSource
from kirby.supervisor.amnesia import ClaimMemory, GenerationWatch, reassert
from kirby.supervisor.arbiter import Arbiter, DaemonSpec
from kirby.supervisor.election import Election, freeze_startup_heap
from kirby.supervisor.identity import identity, is_dead_here
from kirby.supervisor.rebuild import Recovery
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.routing import handback_routes, plan_routes
from kirby.supervisor.runner import Runner
from kirby.supervisor.scheduler import Scheduler
from kirby.supervisor.settling import Settler
from kirby.tasks.executor import LocalExecutor
from kirby.tasks.isolation import describe

log = logging.getLogger(__name__)


def daemon_specs(snapshot: ScheduleSnapshot, now: datetime) -> list[DaemonSpec]:
    """The daemons of ``snapshot``, each with its offer template."""
    return [
        DaemonSpec(entry.job, entry.environment, entry_offer(entry, "", now, now, trigger="daemon"))
        for entry in snapshot.daemons
    ]


class Supervisor:
    """``kirby supervisor NAME``: build with the settings, then ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        window: float = 5.0,
        wakeup: float = 30.0,
        grace: float = 30.0,
        source: ScheduleSource | None = None,
        concurrency: int | None = None,
        record: RunRecordSource | None = None,
    ):
        self.settings = settings
        self.name = name
        self.window = window
        self.concurrency = concurrency or settings.concurrency
        self.grace = grace
        self.instance = uuid.uuid4().hex
        self.leases = open_lease_store(settings)
        self.bus = open_bus(settings)
        self.executor = LocalExecutor(settings, name, known_secrets=self._known_secrets)
        self.reporter = RunReporter(self.bus, name)
        self.election = Election(self.leases, name, window)
        self.watch = GenerationWatch(self.leases, name)
        self.memory = ClaimMemory(name, self.instance)
        self.watch.on_loss(lambda: reassert(self.leases, self.memory))
        recovery = Recovery(
            self.leases,
            record or RunRecordClient(settings),
            self.watch,
            name,
            self.reporter,
            settle=3 * window,
            check_every=window / 2,
        )
        self.scheduler = Scheduler(
            source or ScheduleClient(settings),
            self.leases,
            self.bus,
            self.election,
            wakeup=wakeup,
            reporter=self.reporter,
            recovery=recovery,
            ahead=settings.publish_ahead,
        )
        self.runner: Runner | None = None
        self.arbiter = Arbiter(
            name,
            self.leases,
            self.executor,
            self.reporter,
            ttl=3 * window,
            fence_directory=settings.run_directory / ".fences" / name,
            instance=self.instance,
            generation=lambda: self.watch.marker,
        )
        self.settler = Settler(self.leases, self.bus)

    def _known_secrets(self) -> frozenset[str]:
        """Secret values of every job of the schedule: masked in the output of every run."""
        snapshot = self.scheduler.snapshot
        return snapshot.secret_values() if snapshot is not None else frozenset()

    def _info(self) -> dict:
        return {
            **identity(),
            "daemons": self.arbiter.held(),
            "running": self.executor.running(),
            "leader": self.election.is_leader,
            "epoch": self.election.epoch,
            "amnesia": self.watch.detected,  # losses of the lease store's data this process noticed
            # partitions of the offers topic held (0: receives no offers); None while joining or without partitions
            "offer_partitions": self.runner.consumer.partitions() if self.runner is not None else None,
            "offer_partition_ids": self.runner.consumer.assigned() if self.runner is not None else None,
            "capacity": self.concurrency,  # scheduled runs it runs at once (--concurrency)
            "busy": self.runner.busy if self.runner is not None else 0,  # scheduled runs in hand
        }

    def _routes(self, count: int) -> list[int] | None:
        """Partitions for the next ``count`` offers: live members with room (``routing``)."""
        return plan_routes(self.leases.supervisors(), utcnow(), self.window, count)

    def _handback_routes(self, count: int) -> list[int] | None:
        """Partitions of other live members with room, for offers this full member hands back."""
        return handback_routes(self.leases.supervisors(), self.name, utcnow(), self.window, count)

    def _heartbeat(self) -> None:
        self.leases.register_supervisor(self.name, self.instance, 3 * self.window, self._info())

    def _register(self) -> bool:
        """Register at start, taking over the name of a dead process of this host; True when it did."""
        try:
            self._heartbeat()
            return False
        except SupervisorNameTaken as taken:
            holder = taken.holder
            if holder is None or not is_dead_here(holder.info):
                raise
            log.warning(
                "supervisor %s: taking the name over from its dead predecessor (pid %s, instance %s)",
                self.name,
                holder.info.get("pid"),
                holder.instance[:8],
            )
            self.settler.remember(holder)
            self.leases.register_supervisor(
                self.name, self.instance, 3 * self.window, self._info(), replaces=holder.instance
            )
            return True

    # -- threads ----------------------------------------------------------------------------------
    def _run_offers(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.runner.poll_once(timeout=1.0)
            except ClaimsClosed as exc:  # amnesia: offers wait on the bus until the leader rebuilt the store
                log.info("offer consumer: %s; waiting", exc)
                try:
                    self.watch.check()
                except KirbyError as error:
                    log.error("offer consumer: %s", error)
                stop.wait(self.window / 4)
            except KirbyError as exc:
                log.error("offer consumer: %s; retrying", exc)
                stop.wait(self.settings.ext_wait_between_retries or 1.0)

    def _loop(self, what: str, step: Callable[[], None], stop: threading.Event) -> None:
        """Call ``step`` every ``window / 2`` seconds until ``stop``; log any failure and go on."""
        while not stop.wait(self.window / 2):
            try:
                step()
            except KirbyError as exc:
                log.error("%s: %s", what, exc)
            except Exception:  # noqa: BLE001 - a bug must not stop heartbeats or renewals silently
                log.exception("%s failed; going on", what)

    def _beat(self) -> None:
        """Heartbeat and renewals only: nothing slow."""
        runner = self.runner  # None while the offer consumer joins its group
        steps = (self._heartbeat, *([runner.renew_overlaps] if runner else []), self.arbiter.renew, self.watch.check)
        for step in steps:
            try:
                step()
            except KirbyError as exc:  # one failing renewal must not keep the others from running
                log.error("heartbeat (%s): %s", step.__name__, exc)

    def _housekeep(self) -> None:
        """The arbiter's convergence, replace requests, and (leader) settling of dead instances."""
        self.runner.check_cancels()
        if self.election.is_leader:
            self.settler.settle()
        snapshot = self.scheduler.snapshot
        if snapshot is not None:
            daemons = daemon_specs(snapshot, utcnow())
            self.arbiter.tick(daemons, live_supervisors=len(self.leases.supervisors()))

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly. Raises SupervisorNameTaken at start."""
        self.watch.check()  # the generation this process starts under (claims are made under it)
        took_over = self._register()
        log.info(
            "supervisor %s started (host %s, pid %d, instance %s)",
            self.name,
            socket.gethostname(),
            os.getpid(),
            self.instance[:8],
        )
        log.info(describe(self.executor.identity, self.executor.limits, non_dumpable=not is_dumpable()))
        if took_over:
            self._settle_now()
        beating = threading.Event()  # the heartbeat outlives the other threads until runs are done
        heartbeat = threading.Thread(target=self._loop, args=("heartbeat", self._beat, beating), name="heartbeat")
        heartbeat.start()  # before the offer consumer joins its group (seconds on Kafka): see _open_runner
        try:
            self._open_runner()
        except BaseException:
            beating.set()
            heartbeat.join()
            raise
        self.bus.route_offers(self._routes)
        freeze_startup_heap()  # a full collection then never holds the election thread long
        threads = [
            threading.Thread(target=self.scheduler.run, args=(stop,), name="scheduler"),
            threading.Thread(target=self._run_offers, args=(stop,), name="runner"),
            threading.Thread(target=self._loop, args=("housekeeping", self._housekeep, stop), name="housekeeping"),
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        log.info("supervisor %s stopping", self.name)
        self.runner.stopping.set()
        for thread in threads[1:]:
            thread.join()
        self._shutdown()
        beating.set()
        heartbeat.join()
        threads[0].join()
        self.leases.unregister_supervisor(self.name, self.instance)
        self.reporter.close()
        self.bus.close()
        self.leases.close()
        log.info("supervisor %s stopped", self.name)

    def _open_runner(self) -> None:
        """Join the offers' consumer group and build the runner. The heartbeat already runs: a join
        can take longer than the registration's TTL (a Kafka rebalance: 7 s measured), and a claim
        made by an instance whose registration lapsed meanwhile is settled as a dead one's (recorded
        lost while it runs)."""
        self.runner = Runner(
            self.name,
            self.bus.offer_consumer(self.name),
            self.bus,
            self.leases,
            self.executor,
            self.reporter,
            capacity=self.concurrency,
            instance=self.instance,
            memory=self.memory,
            generation=lambda: self.watch.marker,
            celery=CelerySender(self.settings),
            handback=self._handback_routes,
        )
        self.watch.on_loss(self.runner.reassert_overlaps)  # after the claims (listeners run in order)

    def _settle_now(self) -> None:
        try:
            settled = self.settler.settle()
            log.info(
                "supervisor %s settled its predecessor's runs: %d re-offered, %d lost",
                self.name,
                len(settled.reoffered),
                len(settled.lost),
            )
        except KirbyError as exc:
            log.error("could not settle the predecessor's runs (the leader will): %s", exc)

    def _shutdown(self) -> None:
        self.runner.consumer.close()
        self.arbiter.stop_all()
        deadline = time.monotonic() + self.grace
        while self.executor.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        still = self.executor.running()
        if still:
            log.warning("stopping %d run(s) still running after the %.0f s grace: %s", len(still), self.grace, still)
        self.executor.shutdown(grace=5.0)
