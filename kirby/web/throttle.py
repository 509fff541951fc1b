"""Failed-login backoff per (username, client address): each failure past a few doubles the wait.

Refusing early (HTTP 429 with the wait) instead of sleeping keeps the server's threads free.
Time is passed in (``now``, seconds) so the policy is tested without waiting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """After ``free`` failures, each further failure blocks the key for 1, 2, 4... s (capped)."""

    def __init__(self, free: int = 3, cap_seconds: float = 300.0, forget_after: float = 3600.0):
        self.free = free
        self.cap_seconds = cap_seconds
        self.forget_after = forget_after
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, key: tuple[str, str], now: float) -> float:
        """Seconds before ``key`` may try again (0 when it may try now)."""
        with self._lock:
            record = self._records.get(key)
            return max(0.0, record.blocked_until - now) if record else 0.0

    def failure(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            self._forget_old(now)
            record = self._records.setdefault(key, _Record())
            record.failures += 1
            record.last_failure = now
            excess = record.failures - self.free
            if excess > 0:
                record.blocked_until = now + min(self.cap_seconds, 2.0 ** (excess - 1))

    def success(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._records.pop(key, None)

    def _forget_old(self, now: float) -> None:
        if len(self._records) > 10_000:
            for key in [k for k, r in self._records.items() if now - r.last_failure > self.forget_after]:
                del self._records[key]
