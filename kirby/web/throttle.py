"""Failed-login backoff per (username, client address) and per client address.

Every login attempt first *reserves* itself with :meth:`LoginThrottle.attempt`: under one lock it
checks both keys and, if neither is blocked, counts the attempt as a failure of both before the
password is checked. So parallel attempts cannot all slip past the check (each one is counted
before the next is decided), and the slow password hash (~110 ms of CPU) only runs for attempts
that were let through. A right password then calls :meth:`succeeded`: the (username, address)
record is forgotten and the address gets this one attempt back (not its other failures).

* (username, address): after ``free`` failures each further failure blocks the key for 1, 2,
  4... s (capped). Another address is never blocked by it: a correct password from an address
  that has not failed always gets through (nobody can lock a user out from elsewhere).
* address: after ``address_free`` failures across any usernames (unknown ones included), the
  same doubling backoff for the whole address (no CPU denial of service by password spraying).

Refusing early (HTTP 429 with the wait) instead of sleeping keeps the server's threads free.
Time is passed in (``now``, seconds) so the policy is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class _Backoff:
    """Doubling backoff per key (not locked: :class:`LoginThrottle` holds the lock)."""

    def __init__(self, free: int, cap_seconds: float, forget_after: float):
        self.free, self.cap_seconds, self.forget_after = free, cap_seconds, forget_after
        self.records: dict[object, _Record] = {}

    def wait(self, key, now: float) -> float:
        record = self.records.get(key)
        return max(0.0, record.blocked_until - now) if record else 0.0

    def fail(self, key, now: float) -> None:
        if len(self.records) > 10_000:
            for old in [k for k, r in self.records.items() if now - r.last_failure > self.forget_after]:
                del self.records[old]
        record = self.records.setdefault(key, _Record())
        record.failures += 1
        record.last_failure = now
        excess = record.failures - self.free
        if excess > 0:
            record.blocked_until = now + min(self.cap_seconds, 2.0 ** (excess - 1))

    def give_back(self, key) -> None:
        """Undo one counted failure (a reserved attempt turned out right)."""
        record = self.records.get(key)
        if record is not None:
            record.failures = max(0, record.failures - 1)
            if record.failures <= self.free:
                record.blocked_until = 0.0


class LoginThrottle:
    """Login attempts per (username, address) and per address, reserved atomically."""

    def __init__(
        self,
        free: int = 3,
        address_free: int = 20,
        cap_seconds: float = 300.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock  # what the login view passes as ``now`` (tests freeze it)
        self.free = free
        self.cap_seconds = cap_seconds
        self._users = _Backoff(free, cap_seconds, forget_after)
        self._addresses = _Backoff(address_free, cap_seconds, forget_after)
        self._lock = threading.Lock()

    def attempt(self, username: str, address: str, now: float) -> float:
        """Reserve one attempt: 0 (let through, counted as a failure until :meth:`succeeded`), or
        the seconds to wait (refused, nothing counted)."""
        key = (username, address)
        with self._lock:
            wait = max(self._users.wait(key, now), self._addresses.wait(address, now))
            if wait > 0:
                return wait
            self._users.fail(key, now)
            self._addresses.fail(address, now)
            return 0.0

    def succeeded(self, username: str, address: str) -> None:
        """The reserved attempt had the right password: forget the user's record at this address."""
        with self._lock:
            self._users.records.pop((username, address), None)
            self._addresses.give_back(address)

    def wait_seconds(self, key: tuple[str, str], now: float) -> float:
        """Seconds before (username, address) ``key`` may try again (0 when it may try now)."""
        with self._lock:
            return max(self._users.wait(key, now), self._addresses.wait(key[1], now))
