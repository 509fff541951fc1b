"""The arbiter: each enabled daemon runs as exactly one instance in the cluster.

Every supervisor ticks its arbiter with the current list of daemons (from the schedule). A daemon
is run by whoever holds its lease (``daemon:<job>:<environment>`` in the lease store):

* a free daemon is taken by a supervisor below its fair share (ceil(daemons / live supervisors)),
  so daemons spread among supervisors instead of one taking all;
* the holder starts the process and renews the lease every ``ttl / 3``; if it cannot renew before
  ``ttl - fence_margin`` has passed since its last successful renewal, it kills the process before
  the lease can expire (self-fencing), so two instances never overlap;
* a crash restarts the daemon with exponential backoff (1 s doubling to ``max_backoff``), reset
  after ``healthy_after`` seconds of uptime;
* a new version (or package, or config) restarts it on the new one; a disabled or deleted daemon
  is stopped and its lease released.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from kirby.clock import utcnow
from kirby.errors import KirbyError, PackageError
from kirby.events import Offer
from kirby.lease.base import LeaseStore
from kirby.run_ids import daemon_run_id
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.runner import spec_for
from kirby.tasks.base import Executor, RunResult

log = logging.getLogger(__name__)


def daemon_key(job: str, environment: str) -> str:
    return f"daemon:{job}:{environment}"


@dataclass(frozen=True)
class DaemonSpec:
    """A daemon as the schedule describes it; ``offer`` is a template (run id filled per start)."""

    job: str
    environment: str
    offer: Offer

    @property
    def key(self) -> str:
        return daemon_key(self.job, self.environment)

    @property
    def identity(self) -> tuple:
        """What, when changed, needs a restart."""
        o = self.offer
        return (o.package, o.version, o.module, tuple(sorted(o.config.items())))


@dataclass
class _Held:
    spec: DaemonSpec
    last_renewed: float
    run_id: str | None = None
    started_at: float | None = None
    failures: int = 0
    next_start: float = 0.0
    stopping: bool = False
    fence: Path | None = None  # touched at each renewal; the run stops itself when it goes stale

    def touch_fence(self) -> None:
        if self.fence is not None:
            self.fence.touch()

    def remove_fence(self) -> None:
        if self.fence is not None:
            self.fence.unlink(missing_ok=True)
            self.fence = None


class Arbiter:
    def __init__(
        self,
        name: str,
        lease_store: LeaseStore,
        executor: Executor,
        reporter: RunReporter,
        ttl: float = 15.0,
        max_backoff: float = 60.0,
        healthy_after: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        fence_directory: Path | None = None,
    ):
        self.name = name
        self.fence_directory = fence_directory
        self.leases = lease_store
        self.executor = executor
        self.reporter = reporter
        self.ttl = ttl
        self.fence_margin = ttl / 3
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.RLock()

    # -- one tick ---------------------------------------------------------------------------------
    def tick(self, daemons: list[DaemonSpec], live_supervisors: int) -> None:
        """Converge: renew or fence what we hold, stop what is gone, take our share of free daemons."""
        now = self.clock().timestamp()
        wanted = {d.key: d for d in daemons}
        with self._lock:
            fenced = set()  # not taken again in the same tick: others get their chance first
            for key, held in list(self._held.items()):
                if key not in wanted:
                    log.info("daemon %s is disabled or deleted; stopping it", key)
                    self._give_up(key, release=True)
                elif not self._renew(key, held, now):
                    fenced.add(key)
                elif wanted[key].identity != held.spec.identity:
                    log.info("daemon %s changed (%s); restarting it", key, wanted[key].offer.version)
                    self._stop_process(held)
                    held.spec = wanted[key]
                    held.failures = 0
                    held.next_start = now
            share = math.ceil(len(wanted) / max(live_supervisors, 1))
            holders = self.leases.daemon_holders()
            for key, spec in wanted.items():
                if len(self._held) >= share:
                    break
                if key not in self._held and key not in holders and key not in fenced:
                    if self.leases.acquire_daemon(key, self.name, self.ttl):
                        log.info("took daemon %s", key)
                        self._held[key] = _Held(spec=spec, last_renewed=now, next_start=now)
            for held in self._held.values():
                if held.run_id is None and not held.stopping and now >= held.next_start:
                    self._start(held)

    def _renew(self, key: str, held: _Held, now: float) -> bool:
        """Renew the lease; self-fence when renewal failed for too long. True while we hold it."""
        try:
            renewed = self.leases.renew_daemon(key, self.name, self.ttl)
        except KirbyError as exc:
            log.warning("could not renew daemon lease %s: %s", key, exc)
            renewed = None
        if renewed:
            held.last_renewed = now
            held.touch_fence()
            return True
        if renewed is False or now - held.last_renewed >= self.ttl - self.fence_margin:
            log.error("lost the lease of daemon %s; stopping its process (self-fencing)", key)
            self._give_up(key, release=False)
            return False
        return True

    # -- processes --------------------------------------------------------------------------------
    def _start(self, held: _Held) -> None:
        spec = held.spec
        started = self.clock()
        run_id = daemon_run_id(spec.job, spec.environment, started)
        offer = Offer(
            **{
                **spec.offer.__dict__,
                "run_id": run_id,
                "slot_id": run_id,
                "scheduled_at": started,
                "trigger": "daemon",
                "epoch": None,
                "timeout_seconds": None,
            }
        )
        self.reporter.claimed(offer)
        run_spec = spec_for(offer, self.name)
        if self.fence_directory is not None:  # the process stops itself before the lease can expire
            self.fence_directory.mkdir(parents=True, exist_ok=True)
            held.fence = self.fence_directory / f"{spec.job}.{spec.environment}.{uuid.uuid4().hex[:8]}"
            held.touch_fence()
            run_spec = replace(run_spec, fence_file=str(held.fence), fence_after=self.ttl - self.fence_margin)
        try:
            self.executor.prepare(offer.package, offer.version)
            held.run_id = run_id
            held.started_at = started.timestamp()
            self.executor.start(
                run_spec, on_line=self.reporter.line, on_exit=lambda result, key=spec.key: self._exited(key, result)
            )
        except PackageError as exc:
            held.run_id = None
            self.reporter.failed_before_start(run_id, str(exc), exc.output.splitlines())
            self._backoff(held)
            return
        self.reporter.started(run_id, started)
        log.info("started daemon %s as run %s", spec.key, run_id)

    def _exited(self, key: str, result: RunResult) -> None:
        """Called from the executor's thread; takes no lock (``cancel`` may wait for this call)."""
        self.reporter.finished(result)
        held = self._held.get(key)
        if held is None or held.run_id != result.run_id:
            return
        held.remove_fence()
        held.run_id = None
        if held.stopping:
            return
        uptime = result.finished_at.timestamp() - (held.started_at or 0)
        if uptime >= self.healthy_after:
            held.failures = 0
        log.warning("daemon %s exited (%s, exit code %s)", key, result.state, result.exit_code)
        self._backoff(held)

    def _backoff(self, held: _Held) -> None:
        delay = min(self.max_backoff, 2.0**held.failures)
        held.failures += 1
        held.next_start = self.clock().timestamp() + delay
        log.info("daemon %s restarts in %.0f s", held.spec.key, delay)

    def _cancel_and_wait(self, run_id: str, grace: float) -> None:
        """Stop ``run_id`` (SIGTERM, SIGKILL after ``grace``) and wait until it is gone."""
        self.executor.cancel(run_id, grace=grace)
        deadline = time.monotonic() + grace + 5.0
        while run_id in self.executor.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        if run_id in self.executor.running():
            log.error("daemon run %s did not stop within %.0f s", run_id, grace + 5.0)

    def _stop_process(self, held: _Held) -> None:
        if held.run_id:
            held.stopping = True
            self._cancel_and_wait(held.run_id, grace=10.0)
            held.run_id = None
            held.stopping = False

    def _give_up(self, key: str, release: bool) -> None:
        held = self._held.pop(key)
        held.stopping = True
        held.remove_fence()
        if held.run_id:  # within the fence margin, so the process is gone before the lease expires
            self._cancel_and_wait(held.run_id, grace=self.fence_margin / 2)
        if release:
            self.leases.release_daemon(key, self.name)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def stop_all(self) -> None:
        """Stop every daemon and release its lease so that others take over at once."""
        with self._lock:
            for key in list(self._held):
                self._give_up(key, release=True)
