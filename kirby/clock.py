"""The one clock: wall time (aware UTC) and monotonic time. Nothing else in Kirby reads the time.

Objects that schedule, run or lease take a ``Clock`` (default ``SYSTEM_CLOCK``); tests pass their
own (``FixedClock``) instead of sleeping. ``utcnow()`` is the system clock's wall time, for the
few places that only stamp records (an ORM default, an event's time).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone


def utcnow() -> datetime:
    """The current instant, an aware UTC datetime."""
    return datetime.now(timezone.utc)


class Clock:
    """Wall time for what is scheduled or recorded; monotonic time for what is measured."""

    def now(self) -> datetime:
        """The current instant, aware UTC (may jump: NTP, a VM resumed)."""
        return utcnow()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, lease renewals, backoff)."""
        return time.monotonic()

    def __call__(self) -> datetime:  # a Clock also serves where a ``() -> datetime`` is expected
        return self.now()


class FixedClock(Clock):
    """A clock that moves only when told (tests): ``advance(seconds)`` moves both times."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError(f"naive datetime {start!r}: a clock runs on aware UTC datetimes")
        self._now = start.astimezone(timezone.utc)
        self._monotonic = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds


SYSTEM_CLOCK = Clock()
