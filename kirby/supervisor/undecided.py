"""Claims whose call failed, so that their outcome is unknown to the runner that made them.

A claim call can fail after the store applied it: Redis wrote the claim, then the reply was lost
(Redis SIGKILLed, a cut link). The claim then belongs to this runner, which does not know it. Two
ways lead from there to the run, never to two runs:

- the offer comes back (the runner gave it back to the bus): the runner claims it again with the
  failed call's token (``token``) and finds its own claim, instead of dropping the offer as
  claimed by someone else;
- the offer goes elsewhere (a Kafka rebalance gave its partition to another member, which dropped
  it as already claimed): after ``RESOLVE_AFTER`` the runner reads the claim (``due``); if it is
  this instance's and never started, it goes on as if the reply had come (launches the run, or
  records it skipped when past its grace). A copy that comes back later is a duplicate.

A call that succeeded is ``decided`` at once, so only failed calls stay here (at most ``limit``,
the oldest dropped first).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from kirby.events import Offer

MAX_UNDECIDED = 10_000  # failed claim calls kept for their offers' return, at most
RESOLVE_AFTER = 5.0  # seconds after a failed claim call before the runner reads the claim itself


@dataclass
class _Undecided:
    token: str
    offer: Offer
    since: float  # monotonic time of the first call with this token


class UndecidedClaims:
    """The tokens and offers of claim calls not decided yet, by run id. Thread-safe."""

    def __init__(
        self, monotonic: Callable[[], float], limit: int = MAX_UNDECIDED, resolve_after: float = RESOLVE_AFTER
    ):
        self.monotonic = monotonic
        self.limit = limit
        self.resolve_after = resolve_after
        self._entries: dict[str, _Undecided] = {}
        self._lock = threading.Lock()

    def token(self, offer: Offer) -> str:
        """The token to claim ``offer``'s run with: that of its last undecided call, else a new one
        (kept until ``decided``)."""
        with self._lock:
            entry = self._entries.get(offer.run_id)
            if entry is None:
                entry = self._entries[offer.run_id] = _Undecided(uuid.uuid4().hex, offer, self.monotonic())
                while len(self._entries) > self.limit:  # the oldest first
                    self._entries.pop(next(iter(self._entries)))
            return entry.token

    def decided(self, run_ids: list[str]) -> None:
        """The claims of ``run_ids`` have a known outcome: forget them."""
        with self._lock:
            for run_id in run_ids:
                self._entries.pop(run_id, None)

    def due(self, limit: int) -> list[Offer]:
        """At most ``limit`` offers (oldest first) whose claim call failed ``resolve_after`` ago or
        more and that have not come back since: the caller reads their claims and decides them."""
        if limit <= 0 or not self._entries:
            return []
        horizon = self.monotonic() - self.resolve_after
        with self._lock:
            return [e.offer for e in self._entries.values() if e.since <= horizon][:limit]

    def __len__(self) -> int:
        return len(self._entries)
