"""Caps on open live-log streams: ``StreamSlots(total, per_user)``.

Each Server-Sent Events stream holds one of the web server's threads while it is open, so
``kirby web`` admits at most ``KIRBY_MAX_LOG_STREAMS`` at once, at most
``KIRBY_MAX_LOG_STREAMS_PER_USER`` per user (the API token counts as one user), and runs with that
many threads *plus* ``kirby.web.server.RESERVED_THREADS`` for everything else: streams can never
take the threads the leader's ``/schedule`` and ``/healthz`` need. A stream beyond a cap is
refused at once (503 with ``Retry-After``) instead of waiting for a thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

RETRY_AFTER_SECONDS = 15


class StreamSlots:
    def __init__(self, total: int, per_user: int):
        self.total, self.per_user = total, per_user
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, user: str) -> Callable[[], None] | str:
        """A release function (call it exactly once when the stream ends), or why it was refused."""
        with self._lock:
            if self._open[user] >= self.per_user:
                return f"you already have {self.per_user} live-log streams open (KIRBY_MAX_LOG_STREAMS_PER_USER)"
            if sum(self._open.values()) >= self.total:
                return f"the server already serves {self.total} live-log streams (KIRBY_MAX_LOG_STREAMS)"
            self._open[user] += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._open[user] -= 1
                if self._open[user] <= 0:
                    del self._open[user]

        return release

    def open_count(self, user: str | None = None) -> int:
        with self._lock:
            return self._open[user] if user is not None else sum(self._open.values())
