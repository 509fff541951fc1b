"""The arbiter: each enabled daemon runs as exactly one instance in the cluster.

Every supervisor ticks its arbiter with the current list of daemons (from the schedule). A daemon
is run by whoever holds its lease (``daemon:<job>:<environment>`` in the lease store, owned by
``<supervisor>@<instance>``, so a restarted process under the same name is a new owner):

* a free daemon is taken by a supervisor below its fair share (ceil(daemons / live supervisors)),
  so daemons spread among supervisors instead of one taking all;
* ``renew()`` (called from the supervisor's heartbeat thread, which does nothing slow) renews each
  held lease every few seconds; the fence deadline is the renewal's *start* plus
  ``ttl - fence_margin``, on the monotonic clock, written into the run's fence file; a holder that
  cannot renew by then kills its process (self-fencing), and the process also stops itself when the
  deadline in its fence file passes, so it is gone before the lease can expire;
* the venv is built in a starter thread, never in the thread that renews; right before the spawn the
  holder renews the lease again (a slow build may have outlived it) and spawns only if that worked;
* each start gets the lease's generation as ``KIRBY_FENCE_TOKEN``: it grows at every change of
  holder, so a daemon can fence its own outside writes (README, "Supervisor crashes");
* amnesia (the lease store lost its data, e.g. Redis restarted empty; ``kirby.supervisor.amnesia``):
  the lease vanishes with the data, so the holder's next renewal (every ``window / 2``, from the
  heartbeat) fails and it stops its process at once (SIGTERM, SIGKILL after ``fence_margin / 2`` =
  ``window / 2``); if the store is unreachable meanwhile, it self-fences at its deadline (``2 x
  window`` after its last renewal, before the restart) and the process also stops itself from its
  fence file. Meanwhile nobody can take the lease: acquisition is made under the generation this
  process knows (``generation``), which is refused while the store's generation is missing or
  closed. It opens only after the leader's rebuild, which waits ``3 x window`` from the moment it
  noticed the loss (after the restart), so the old instance is gone (after at most ``window``, or
  ``2 x window`` + the kill when the store stayed unreachable) before a new one can start;
* a crash restarts the daemon with exponential backoff (1 s doubling to ``max_backoff``), reset
  after ``healthy_after`` seconds of uptime;
* a new version (or package, or config) restarts it on the new one; a disabled or deleted daemon
  is stopped and its lease released.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from kirby.clock import utcnow
from kirby.errors import KirbyError, PackageError
from kirby.events import Offer
from kirby.lease.base import ClaimsClosed, LeaseStore
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
    deadline: float  # monotonic: the process must be gone by then unless the lease is renewed
    generation: int = 0
    run_id: str | None = None
    started_at: float | None = None
    failures: int = 0
    next_start: float = 0.0
    starting: bool = False
    stopping: bool = False
    fence: Path | None = None  # holds ``deadline``; the run stops itself once it passes

    def write_fence(self) -> None:
        """Replace the fence file with ``deadline`` (a new file renamed over it: never read half
        written). Plain os calls: it runs for every daemon at every renewal."""
        if self.fence is not None:
            part = f"{self.fence}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies
            try:
                os.write(fd, repr(self.deadline).encode())
            finally:
                os.close(fd)
            os.replace(part, self.fence)

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
        instance: str = "",
        monotonic: Callable[[], float] = time.monotonic,
        generation: Callable[[], str | None] = lambda: None,
    ):
        self.name = name
        self.instance = instance
        self.owner = f"{name}@{instance}" if instance else name
        self.fence_directory = fence_directory
        self.leases = lease_store
        self.executor = executor
        self.reporter = reporter
        self.ttl = ttl
        self.fence_margin = ttl / 3
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self.clock = clock
        self.monotonic = monotonic
        self.generation = generation  # the store's generation marker this process knows (amnesia)
        self._held: dict[str, _Held] = {}
        self._lock = threading.RLock()  # held only for quick steps: renewals never wait behind slow work
        self._starter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="daemon-start")
        self._fenced: set[str] = set()  # fenced since the last tick: others get their chance first

    # -- renewals (heartbeat thread) --------------------------------------------------------------
    def renew(self) -> None:
        """Renew every held lease (one round trip: ``renew_leases``), or fence its process. Fast:
        no venv build, no wait for a stop."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return
        began = self.monotonic()  # the leases run from (at the latest) this instant
        try:
            renewed = self.leases.renew_leases([key for key, _ in held], self.owner, self.ttl)
        except KirbyError as exc:
            log.warning("could not renew the daemon leases %s: %s", ", ".join(key for key, _ in held), exc)
            renewed = {}
        for key, entry in held:
            self._renewed(key, entry, began, renewed.get(key))

    def _renewed(self, key: str, held: _Held, began: float, renewed: bool | None) -> bool:
        """After a renewal begun at ``began`` (None: it failed to run): extend the deadline, or
        self-fence when the lease is lost or renewal failed for too long. True while we hold it."""
        with self._lock:
            if self._held.get(key) is not held:
                return False
            if renewed:
                held.deadline = began + self.ttl - self.fence_margin
                held.write_fence()
                return True
            if renewed is False or self.monotonic() >= held.deadline:
                log.error("lost the lease of daemon %s; stopping its process (self-fencing)", key)
                self._held.pop(key)
                self._fenced.add(key)
                held.stopping = True
                held.remove_fence()  # the process sees its fence gone and stops itself too
                if held.run_id:
                    self.executor.cancel(held.run_id, grace=self.fence_margin / 2)
                return False
        return True

    # -- one tick (housekeeping thread) -----------------------------------------------------------
    def tick(self, daemons: list[DaemonSpec], live_supervisors: int) -> None:
        """Converge: stop what is gone or changed, take our share of free daemons, start what we hold."""
        now = self.monotonic()
        wanted = {d.key: d for d in daemons}
        with self._lock:
            held = dict(self._held)
            fenced, self._fenced = self._fenced, set()
        for key, entry in held.items():
            if key not in wanted:
                log.info("daemon %s is disabled or deleted; stopping it", key)
                self._give_up(key, release=True)
            elif wanted[key].identity != entry.spec.identity and not entry.starting:
                log.info("daemon %s changed (%s); restarting it", key, wanted[key].offer.version)
                self._stop_process(entry)
                entry.spec, entry.failures, entry.next_start = wanted[key], 0, now
        share = math.ceil(len(wanted) / max(live_supervisors, 1))
        # the holders are read only when this supervisor may take more (an idle one holds its share)
        holders = self.leases.lease_holders("daemon") if len(self.held()) < share else {}
        for key, spec in wanted.items():
            if len(self.held()) >= share:
                break
            if key not in self._held and key not in holders and key not in fenced:
                began = self.monotonic()
                try:
                    generation = self.leases.acquire_lease(key, self.owner, self.ttl, generation=self.generation())
                except ClaimsClosed as exc:  # amnesia: nobody takes a daemon until the leader rebuilt the store
                    log.info("daemon %s not taken: %s", key, exc)
                    break
                if generation is not None:
                    log.info("took daemon %s (generation %d)", key, generation)
                    with self._lock:
                        self._held[key] = _Held(spec, began + self.ttl - self.fence_margin, generation, next_start=now)
        with self._lock:
            for key, entry in self._held.items():
                if entry.run_id is None and not entry.starting and not entry.stopping and now >= entry.next_start:
                    entry.starting = True
                    self._starter.submit(self._start, key, entry)

    # -- processes --------------------------------------------------------------------------------
    def _start(self, key: str, held: _Held) -> None:
        """In a starter thread: build the venv, re-check the lease, spawn."""
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
        try:
            self.executor.prepare(offer.package, offer.version)  # slow: minutes, for a big package
            if not self._spawn(key, held, offer):
                return
        except PackageError as exc:
            self.reporter.failed_before_start(run_id, str(exc), exc.output.splitlines())
            self._backoff(held)
            return
        except Exception as exc:  # noqa: BLE001 - a starter thread must not die silently
            log.exception("daemon %s could not start", key)
            self.reporter.failed_before_start(run_id, f"could not start: {exc}", [])
            self._backoff(held)
            return
        finally:
            held.starting = False
        self.reporter.started(run_id, started)
        log.info("started daemon %s as run %s (fence token %d)", key, run_id, held.generation)

    def _spawn(self, key: str, held: _Held, offer: Offer) -> bool:
        """Renew the lease right before the spawn; spawn only if that worked. True when started."""
        began = self.monotonic()
        if held.stopping or not self.leases.renew_lease(key, self.owner, self.ttl):
            log.error("lost the lease of daemon %s while preparing it; not starting it", key)
            with self._lock:
                if self._held.get(key) is held:
                    self._held.pop(key)
            return False
        self.leases.claim_run(offer.run_id, self.name, 1, self.instance)
        self.leases.mark_started(offer.run_id, self.instance)
        self.reporter.claimed(offer)
        with self._lock:
            if self._held.get(key) is not held or held.stopping:
                self.leases.settle_run(offer.run_id)
                return False
            held.deadline = began + self.ttl - self.fence_margin
            run_spec = replace(spec_for(offer, self.name), fence_token=held.generation)
            if self.fence_directory is not None:  # the process stops itself before the lease can expire
                self.fence_directory.mkdir(parents=True, exist_ok=True)
                held.fence = self.fence_directory / f"{offer.job}.{offer.environment}.{uuid.uuid4().hex[:8]}"
                held.write_fence()
                run_spec = replace(run_spec, fence_file=str(held.fence), fence_after=self.ttl - self.fence_margin)
            held.run_id = offer.run_id
            held.started_at = self.monotonic()
            self.executor.start(
                run_spec,
                on_line=self.reporter.line,
                on_exit=lambda result: self._exited(key, held, result),
                on_lines=self.reporter.lines,
            )
            return True

    def _exited(self, key: str, held: _Held, result: RunResult) -> None:
        """Called from the executor's thread; takes no lock (``cancel`` may wait for this call)."""
        self.reporter.finished(result)
        try:
            self.leases.settle_run(result.run_id)
        except KirbyError as exc:
            log.error("could not settle daemon run %s: %s", result.run_id, exc)
        if held.run_id != result.run_id:
            return
        held.remove_fence()
        held.run_id = None
        if held.stopping or self._held.get(key) is not held:
            return
        uptime = self.monotonic() - (held.started_at or 0)
        if uptime >= self.healthy_after:
            held.failures = 0
        log.warning("daemon %s exited (%s, exit code %s)", key, result.state, result.exit_code)
        self._backoff(held)

    def _backoff(self, held: _Held) -> None:
        delay = min(self.max_backoff, 2.0**held.failures)
        held.failures += 1
        held.next_start = self.monotonic() + delay
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
        with self._lock:
            held = self._held.pop(key, None)
            if held is None:
                return
            held.stopping = True
        held.remove_fence()
        if held.run_id:  # within the fence margin, so the process is gone before the lease expires
            self._cancel_and_wait(held.run_id, grace=self.fence_margin / 2)
        if release:
            self.leases.release_lease(key, self.owner)

    def held(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def stop_all(self) -> None:
        """Stop every daemon and release its lease so that others take over at once."""
        with self._lock:
            keys = list(self._held)
        for key in keys:
            self._give_up(key, release=True)
        self._starter.shutdown(wait=False, cancel_futures=True)  # a build in progress spawns nothing
