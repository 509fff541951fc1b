"""Leader election through the lease store's leader lease.

``Election.tick(now)`` is the whole protocol (``tick`` returns how long it may wait before the next
call); ``run(stop)`` calls it in a thread of its own (``election``), so renewals never wait behind
publishing (a broker that is down, 500 offers due at once) or anything else the scheduler does:

* a follower tries ``acquire_leader`` every ``window`` seconds, and right after the current lease
  expires (it reads the holder's expiry and wakes just after it), so a dead leader is replaced
  within about ``ttl``; winning increments the epoch, the fencing token every offer and cursor
  write carries;
* the leader renews every ``renew_every`` seconds (``window / 3``), well before the lease's ``ttl``
  (``ttl_factor × window``, 1.5 x window) runs out; a renewal that fails (refused, or the store
  unreachable) makes it a follower at once, and the scheduler stops publishing;
* ``holds(epoch, now)`` answers, without I/O, whether the lease we hold under ``epoch`` is live
  by our own conservative reckoning (``now`` taken before the last successful renewal, plus
  ``ttl``): the scheduler asks it before each offer batch and cursor write (then the store too:
  ``holds_leader``, and the cursor write's compare-and-set, which stays the fence);
* a leader whose renewals failed only because the store was unreachable, and whose lease under
  the same epoch is still live when the store comes back, resumes under that epoch (no one else
  can have published meanwhile: the epoch did not change).

Logs (``LOG_FORMAT``): "supervisor NAME became leader (epoch N)", "... stopped being leader (epoch N)".
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from kirby.errors import LeaseError
from kirby.lease.base import LeaseStore

log = logging.getLogger(__name__)

MIN_WAIT = 0.01  # seconds: never ask to be called back sooner than this
TTL_FACTOR = 1.5  # the leader lease's TTL, in windows: a dead leader is replaced within 1.5 x window
RENEWALS_PER_WINDOW = 3  # the leader renews every window / 3: two renewals may fail before the lease lapses


def freeze_startup_heap() -> None:
    """Exclude everything allocated so far from the cycle collector's later passes (``gc.freeze``).

    A collection holds the GIL for as long as it scans, and a full one scans the whole heap: on a
    loaded host such a pass held the election thread for over a second (measured at load 17 on two
    cores, with the lease's TTL 1.5 s at ``--window 1``) and the leader lost its lease to its own
    garbage collector. Called once the process has started (imports, settings, connections):
    later full passes scan only what it allocated since. Garbage is collected first, so none of it
    is kept for good.
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class LeaderState:
    """The outcome of a tick: leadership, its epoch, and seconds until the election's next tick."""

    is_leader: bool
    epoch: int | None
    wait: float


class Election:
    """Supervisor ``owner``'s side of the leader election."""

    def __init__(
        self,
        lease_store: LeaseStore,
        owner: str,
        window: float,
        ttl_factor: float = TTL_FACTOR,
        on_elected: Callable[[int], None] | None = None,
        on_deposed: Callable[[int], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ):
        if window <= 0:
            raise ValueError(f"window={window!r}: the election window must be positive")
        self.store = lease_store
        self.owner = owner
        self.window = window
        self.ttl = ttl_factor * window
        self.renew_every = window / RENEWALS_PER_WINDOW
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.on_change = on_change  # called after every change of leadership (the scheduler wakes up)
        self._lock = threading.RLock()  # tick (election thread) vs step_down / release (scheduler thread)
        self._poke = threading.Event()  # wakes ``run`` early (a step-down: try again at once)
        self._epoch: int | None = None  # the epoch we hold, while leader
        self._lease: tuple[int, datetime] | None = None  # (epoch, live until at least): read without the lock
        self._last_epoch: int | None = None  # the last epoch we held (to resume it after a store outage)
        self._next_action: datetime | None = None  # when the next renew or acquire is due

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None

    @property
    def epoch(self) -> int | None:
        """The epoch we lead under, None when a follower."""
        return self._epoch

    def holds(self, epoch: int, now: datetime) -> bool:
        """Whether we lead under ``epoch`` and its lease is live at ``now`` by our own reckoning (no
        I/O): the lease was renewed (or won) no earlier than the ``now`` of that tick, so it lasts
        at least until that ``now`` + ``ttl``. A leader that was frozen (SIGSTOP) past it answers
        False before its election thread even runs again."""
        lease = self._lease  # one read: never waits behind a renewal in progress
        return lease is not None and lease[0] == epoch and now < lease[1]

    def state(self, now: datetime) -> LeaderState:
        wait = MIN_WAIT if self._next_action is None else (self._next_action - now).total_seconds()
        return LeaderState(self.is_leader, self._epoch, max(MIN_WAIT, wait))

    def tick(self, now: datetime) -> LeaderState:
        """Renew (leader) or try to acquire (follower) if it is time; return the resulting state."""
        with self._lock:
            if self._next_action is None or now >= self._next_action:
                if self.is_leader:
                    self._renew(now)
                else:
                    self._acquire(now)
            return self.state(now)

    def run(self, stop: threading.Event, clock: Callable[[], datetime]) -> None:
        """Tick until ``stop`` is set, sleeping exactly until the next renewal or acquisition try
        (woken early by a step-down). Never raises: an error is logged and the loop goes on."""
        while not stop.is_set():
            try:
                wait = self.tick(clock()).wait
            except Exception:  # noqa: BLE001 - a bug must not stop renewals silently
                log.exception("supervisor %s: the election failed; trying again", self.owner)
                with self._lock:
                    if self._epoch is not None:
                        self._lost()
                    self._next_action = None
                wait = self.window / 10
            self._poke.wait(wait)
            self._poke.clear()

    def wake(self) -> None:
        """Make ``run`` tick (or see its stop) at once."""
        self._poke.set()

    def step_down(self, reason: str) -> None:
        """Stop leading at once (e.g. a cursor write was refused as stale). The lease is left to expire."""
        with self._lock:
            if self._epoch is not None:
                log.warning("supervisor %s: %s", self.owner, reason)
                self._lost()
            self._next_action = None
        self._poke.set()

    def release(self) -> None:
        """Give the lease up (shutdown), so another supervisor takes over at once."""
        with self._lock:
            epoch = self._epoch
            if epoch is None:
                return
            self._lost()
            try:
                self.store.release_leader(self.owner, epoch)
            except LeaseError as exc:
                log.warning("supervisor %s could not release the leader lease: %s", self.owner, exc)

    # -- internals ------------------------------------------------------------------------------
    def _renew(self, now: datetime) -> None:
        try:
            renewed = self.store.renew_leader(self.owner, self._epoch, self.ttl)
        except LeaseError as exc:
            log.warning("supervisor %s could not renew the leader lease: %s", self.owner, exc)
            renewed = False
        if renewed:
            self._lease = (self._epoch, self._after(now, self.ttl))
            self._next_action = self._after(now, self.renew_every)
        else:
            self._lost()
            self._next_action = self._after(now, self.window)

    def _acquire(self, now: datetime) -> None:
        self._next_action = self._after(now, self.window)
        try:
            epoch = self.store.acquire_leader(self.owner, self.ttl)
            if epoch is None:
                epoch = self._resume_or_wait(now)
        except LeaseError as exc:
            log.warning("supervisor %s could not reach the lease store: %s", self.owner, exc)
            return
        if epoch is not None:
            self._won(now, epoch)

    def _resume_or_wait(self, now: datetime) -> int | None:
        """Resume our own live lease under our last epoch; else plan the next try at the holder's expiry."""
        holder = self.store.leader()
        if holder is None:  # expired between the two calls: try again soon
            self._next_action = self._after(now, self.window / 10)
            return None
        if holder.owner == self.owner and holder.epoch == self._last_epoch:
            if self.store.renew_leader(self.owner, holder.epoch, self.ttl):
                return holder.epoch
        until_expiry = (holder.expires_at - now).total_seconds() + MIN_WAIT  # wake just after it
        self._next_action = self._after(now, min(self.window, max(self.window / 20, until_expiry)))
        return None

    def _won(self, now: datetime, epoch: int) -> None:
        self._epoch = self._last_epoch = epoch
        self._lease = (epoch, self._after(now, self.ttl))
        self._next_action = self._after(now, self.renew_every)
        log.info("supervisor %s became leader (epoch %d)", self.owner, epoch)
        if self.on_elected:
            self.on_elected(epoch)
        if self.on_change:
            self.on_change()

    def _lost(self) -> None:
        self._lease = None
        epoch, self._epoch = self._epoch, None
        log.info("supervisor %s stopped being leader (epoch %d)", self.owner, epoch)
        if self.on_deposed:
            self.on_deposed(epoch)
        if self.on_change:
            self.on_change()

    @staticmethod
    def _after(now: datetime, seconds: float) -> datetime:
        return now + timedelta(seconds=seconds)
