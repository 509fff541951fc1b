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

``Track`` (one followed schedule) and ``Batch`` (one tick's writes) are the scheduler's state.

Only a bounded number of missed slots is examined (an every-second schedule after a week-long
outage is cheap): ``Plan.more_missed`` says more were left uncounted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kirby.cron import previous_fire
from kirby.events import Offer
from kirby.schedule.snapshot import ScheduleEntry, ScheduleRule
from kirby.vocabulary import CatchUp

_TICK = timedelta(microseconds=1)


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


@dataclass
class Batch:
    """What one tick writes: cursors first, then offers, then skipped-run events."""

    cursors: dict[str, datetime] = field(default_factory=dict)
    offers: list[Offer] = field(default_factory=list)
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
) -> Plan:
    """The slots of ``rule`` in ``(done_until, now]`` to publish or record as skipped (see module doc)."""
    start = max(done_until, alive_mark) if alive_mark else done_until
    if start >= now:
        return Plan((), 0, False)
    grace_start = now - timedelta(seconds=rule.misfire_grace_seconds) - _TICK  # exactly grace late is in time
    due, more = latest_slots(rule, max(start, grace_start), now, max_publish)
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
