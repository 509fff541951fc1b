"""One supervisor process: registry heartbeat, election + leader scheduling, runner, arbiter.

Threads (all stop when ``stop`` is set):

* ``scheduler``: the election and, while leader, the scheduler (``Scheduler.run``);
* ``runner``: consumes offers, claims and launches runs;
* ``housekeeping``: every ``window / 2`` seconds heartbeats the registry, renews the overlap
  leases of running runs and ticks the arbiter with the daemons of the schedule (refreshed every
  ``wakeup`` seconds).

Shutdown (SIGTERM/SIGINT): stop consuming; stop the daemons this supervisor holds and release
their leases, so others take over at once; give running scheduled runs ``grace`` seconds, then
stop them (recorded as failed: stopped by their supervisor); release the leader lease; leave the
registry.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime

from kirby.bus import open_bus
from kirby.clock import utcnow
from kirby.config import Settings
from kirby.errors import KirbyError
from kirby.hardening import is_dumpable
from kirby.lease import open_lease_store
from kirby.schedule import ScheduleClient, ScheduleSnapshot, ScheduleSource, entry_offer
from kirby.supervisor.arbiter import Arbiter, DaemonSpec
from kirby.supervisor.election import Election
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.runner import Runner
from kirby.supervisor.scheduler import Scheduler
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
    ):
        self.settings = settings
        self.name = name
        self.window = window
        self.grace = grace
        self.instance = uuid.uuid4().hex
        self.leases = open_lease_store(settings)
        self.bus = open_bus(settings)
        self.executor = LocalExecutor(settings, name, known_secrets=self._known_secrets)
        self.reporter = RunReporter(self.bus, name)
        self.election = Election(self.leases, name, window)
        self.scheduler = Scheduler(
            source or ScheduleClient(settings),
            self.leases,
            self.bus,
            self.election,
            wakeup=wakeup,
            reporter=self.reporter,
        )
        self.runner: Runner | None = None
        self.arbiter = Arbiter(
            name,
            self.leases,
            self.executor,
            self.reporter,
            ttl=3 * window,
            fence_directory=settings.run_directory / ".fences" / name,
        )

    def _known_secrets(self) -> set[str]:
        """Secret values of every job of the schedule: masked in the output of every run."""
        snapshot = self.scheduler.snapshot
        return snapshot.secret_values() if snapshot is not None else set()

    def _info(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "daemons": self.arbiter.held(),
            "running": self.executor.running(),
            "leader": self.election.is_leader,
            "epoch": self.election.epoch,
        }

    def _heartbeat(self) -> None:
        self.leases.register_supervisor(self.name, self.instance, 3 * self.window, self._info())

    # -- threads ----------------------------------------------------------------------------------
    def _run_offers(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.runner.poll_once(timeout=1.0)
            except KirbyError as exc:
                log.error("offer consumer: %s; retrying", exc)
                stop.wait(self.settings.ext_wait_between_retries or 1.0)

    def _housekeeping(self, stop: threading.Event) -> None:
        """Heartbeat, overlap leases, and the daemons of the scheduler's copy of the schedule."""
        while not stop.wait(self.window / 2):
            try:
                self._heartbeat()
                self.runner.renew_overlaps()
                snapshot = self.scheduler.snapshot
                if snapshot is not None:
                    daemons = daemon_specs(snapshot, utcnow())
                    self.arbiter.tick(daemons, live_supervisors=len(self.leases.supervisors()))
            except KirbyError as exc:
                log.error("housekeeping: %s", exc)

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly. Raises SupervisorNameTaken at start."""
        self._heartbeat()
        log.info(
            "supervisor %s started (host %s, pid %d, instance %s)",
            self.name,
            socket.gethostname(),
            os.getpid(),
            self.instance[:8],
        )
        log.info(describe(self.executor.identity, self.executor.limits, non_dumpable=not is_dumpable()))
        self.runner = Runner(
            self.name, self.bus.offer_consumer(self.name), self.bus, self.leases, self.executor, self.reporter
        )
        threads = [
            threading.Thread(target=self.scheduler.run, args=(stop,), name="scheduler"),
            threading.Thread(target=self._run_offers, args=(stop,), name="runner"),
            threading.Thread(target=self._housekeeping, args=(stop,), name="housekeeping"),
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        log.info("supervisor %s stopping", self.name)
        for thread in threads[1:]:
            thread.join()
        self._shutdown()
        threads[0].join()
        self.leases.unregister_supervisor(self.name, self.instance)
        self.reporter.close()
        self.bus.close()
        self.leases.close()
        log.info("supervisor %s stopped", self.name)

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
