"""Which slots of one schedule the leader handles at ``now``: pure cron arithmetic, no I/O.

``plan_slots(entry, rule, done_until, alive_mark, now)`` lists, ascending, every slot in
``(done_until, now]`` the leader must act on, each either to publish or to record as skipped:

* slots at or before ``alive_mark`` (a time a leader was running with this schedule absent from
  its snapshot, i.e. the job or context was disabled) are not run and not listed;
* slots older than the misfire grace (``now - grace``) were missed by an outage: catch-up policy
  ``skip`` publishes none, ``latest`` the most recent one, ``all`` every one; the others are
  listed as skipped (the latest ``max_skipped`` of them only);
* at most ``max_publish`` slots are listed to publish, the latest ones;
* slots within the grace are published (late, if a failover delayed them);
* a slot inside a suspension window is skipped whatever its age.

``Track`` (one followed schedule), ``DueQueue`` (the tracks by next due instant) and ``Batch``
(one tick's writes) are the scheduler's state.

Only a bounded number of missed slots is examined (an every-second schedule after a week-long
outage is cheap): ``Plan.more_missed`` says more were left uncounted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import count

from kirby.cron import previous_fire
from kirby.events import Offer
from kirby.schedule.snapshot import ScheduleEntry, ScheduleRule
from kirby.vocabulary import CatchUp

_TICK = timedelta(microseconds=1)
_NEVER = datetime.max.replace(tzinfo=timezone.utc)

SINCE_PREFIX = "kirby:since:"  # + schedule key: the cursor where the schedule's published slots begin


def since_key(schedule_key: str) -> str:
    return SINCE_PREFIX + schedule_key


@dataclass(frozen=True)
class Slot:
    instant: datetime
    skip_reason: str | None = None  # None: publish it

    @property
    def publish(self) -> bool:
        return self.skip_reason is None


@dataclass(frozen=True)
class Plan:
    slots: tuple[Slot, ...]
    missed: int  # slots examined beyond the grace (at least this many were missed)
    more_missed: bool  # older slots were left out (beyond max_publish or max_skipped)


@dataclass
class Track:
    """One schedule the leader follows in its current epoch."""

    entry: ScheduleEntry
    rule: ScheduleRule
    key: str
    done_until: datetime  # every slot at or before this was handled (published, skipped, or inactive)
    next_due: datetime
    since: datetime | None = None  # slots after this (to the cursor) were published, unless skipped
    order: int = 0  # its place among the followed tracks: due ones are handled in this order


class DueQueue:
    """Tracks ordered by ``next_due`` (a heap): popping the due ones costs O(due x log n), not O(n).

    A track popped and not pushed back is no longer followed (its ``next_due`` is ``datetime.max``
    for good, e.g. a cron that never fires again). The scheduler rebuilds the queue whenever it
    rebuilds its tracks.
    """

    def __init__(self, tracks: Iterable[Track] = ()):
        self._order = count()
        self._heap = [(track.next_due, next(self._order), track) for track in tracks if track.next_due < _NEVER]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, track: Track) -> None:
        if track.next_due < _NEVER:
            heapq.heappush(self._heap, (track.next_due, next(self._order), track))

    def pop_due(self, now: datetime) -> list[Track]:
        """Remove and return the tracks due at ``now`` (``next_due <= now``), by ``Track.order``."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return sorted(due, key=lambda track: track.order)

    def soonest(self) -> datetime:
        """The earliest ``next_due`` queued (``datetime.max`` when none)."""
        return self._heap[0][0] if self._heap else _NEVER


@dataclass
class Batch:
    """What one tick writes: offers first, then the record of their slots and the cursors, then
    skipped-run events."""

    cursors: dict[str, datetime] = field(default_factory=dict)
    offers: list[Offer] = field(default_factory=list)
    published: dict[str, list[datetime]] = field(default_factory=dict)  # schedule key -> new slots offered
    skipped: list[tuple[Offer, str]] = field(default_factory=list)


def latest_slots(rule: ScheduleRule, start: datetime, end: datetime, limit: int) -> tuple[list[datetime], bool]:
    """Up to ``limit`` most recent slots in (start, end], ascending, and whether older ones remain."""
    found: list[datetime] = []
    bound = end + _TICK
    while True:
        slot = previous_fire(rule.cron, rule.timezone, bound, rule.dst)
        if slot <= start:
            return found[::-1], False
        if len(found) == limit:
            return found[::-1], True
        found.append(slot)
        bound = slot


def plan_slots(
    entry: ScheduleEntry,
    rule: ScheduleRule,
    done_until: datetime,
    alive_mark: datetime | None,
    now: datetime,
    max_publish: int = 1000,
    max_skipped: int = 100,
    until: datetime | None = None,
) -> Plan:
    """The slots of ``rule`` in ``(done_until, until]`` (``until``: ``now`` unless the leader publishes
    ahead of the due instants) to publish or record as skipped (see module doc); the misfire grace
    counts back from ``now``."""
    until = now if until is None else max(until, now)
    start = max(done_until, alive_mark) if alive_mark else done_until
    if start >= until:
        return Plan((), 0, False)
    grace_start = now - timedelta(seconds=rule.misfire_grace_seconds) - _TICK  # exactly grace late is in time
    due, more = latest_slots(rule, max(start, grace_start), until, max_publish)
    missed: list[datetime] = []
    if grace_start > start and not more:
        catch_all = rule.catchup == CatchUp.ALL.value
        limit = max_publish - len(due) if catch_all else max_skipped + 1
        missed, more = latest_slots(rule, start, grace_start, limit)
    policy = f"missed by more than its misfire grace ({rule.misfire_grace_seconds}s); catch-up policy {rule.catchup}"
    slots = [
        Slot(instant, None if _catch_up(rule, index == len(missed) - 1) else policy)
        for index, instant in enumerate(missed)
    ]
    slots.extend(Slot(instant) for instant in due)
    return Plan(tuple(_suspended(entry, s) for s in slots), len(missed), more)


def _catch_up(rule: ScheduleRule, is_latest: bool) -> bool:
    return rule.catchup == CatchUp.ALL.value or (rule.catchup == CatchUp.LATEST.value and is_latest)


def _suspended(entry: ScheduleEntry, slot: Slot) -> Slot:
    window = entry.suspension_at(slot.instant)
    if window is None or not slot.publish:
        return slot
    reason = f"suspended until {window.ends_at.isoformat()}" + (f": {window.reason}" if window.reason else "")
    return Slot(slot.instant, reason)
