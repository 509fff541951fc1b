"""The next DST transition of a time zone, and what a schedule does around it (the form's preview).

Pure functions of (expression, zone, policy, instant), built on kirby.cron: ``next_transition``
finds the next UTC offset change after an instant (within ``HORIZON``); ``around`` lists the
slots a schedule produces near it: the last fires before, every matching wall-clock time the
transition affects (the gap's or the repeated hour's, at most ``LIMIT``), marked ``shifted``,
``skipped``, ``doubled``, ``first pass only`` or ``second pass only`` by the policy, then the
next fires after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from kirby import cron

UTC = timezone.utc
HORIZON = timedelta(days=400)
LIMIT = 8
_STEP = timedelta(days=7)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Transition:
    instant: datetime  # UTC: the first instant at the new offset
    offset_before: timedelta
    offset_after: timedelta

    @property
    def falls_back(self) -> bool:
        return self.offset_after < self.offset_before

    @property
    def wall_range(self) -> tuple[datetime, datetime]:
        """The naive wall times in the gap, or repeated, as [start, end)."""
        low, high = sorted((self.instant + self.offset_before, self.instant + self.offset_after))
        return low.replace(tzinfo=None), high.replace(tzinfo=None)


def next_transition(tz: str, after: datetime) -> Transition | None:
    """The zone's first offset change strictly after ``after`` within HORIZON, or None (no DST).

    Offsets are compared a week apart, so two changes within one week (none in today's rules)
    would be missed as a pair."""
    zone = cron.zone(tz)
    low = after.astimezone(UTC).replace(microsecond=0)
    offset = low.astimezone(zone).utcoffset()
    while low - after < HORIZON:
        high = low + _STEP
        if high.astimezone(zone).utcoffset() != offset:
            instant = cron.offset_change(tz, low, high)
            return Transition(instant, offset, instant.astimezone(zone).utcoffset())
        low = high
    return None


def _row(instant: datetime | None, wall: datetime | None, zone, mark: str = "") -> dict[str, str]:
    local = instant.astimezone(zone) if instant else None
    return {
        "wall": f"{wall or local.replace(tzinfo=None):%Y-%m-%d %H:%M:%S}",
        "zone": f"{local:%Y-%m-%d %H:%M:%S %Z}" if local else "",
        "utc": f"{instant:%Y-%m-%d %H:%M:%S} UTC" if instant else "",
        "mark": mark,
    }


def around(
    expression: str, tz: str, transition: Transition, dst: cron.DstPolicy | None = None, context: int = 2
) -> dict:
    """The slots near ``transition``: ``{"rows": [{wall, zone, utc, mark}], "more": n, "policy": ...}``.

    ``wall`` is the local time the fields name; ``zone``/``utc`` when it runs ("" if skipped).
    """
    zone = cron.zone(tz)
    fall_back, spring_forward = cron.resolve(expression, dst)
    start_wall, end_wall = transition.wall_range
    affected: list[tuple[datetime, datetime, dict]] = []
    walls, more, wall = 0, 0, start_wall - _TICK
    while (wall := cron.next_wall(expression, wall)) < end_wall:
        if walls == LIMIT:
            more += 1
            continue
        walls += 1
        if transition.falls_back:
            first = (wall - transition.offset_before).replace(tzinfo=UTC)
            second = (wall - transition.offset_after).replace(tzinfo=UTC)
            if fall_back is cron.FallBack.BOTH:
                affected += [
                    (first, wall, _row(first, wall, zone, "doubled")),
                    (second, wall, _row(second, wall, zone, "doubled")),
                ]
            elif fall_back is cron.FallBack.FIRST:
                affected.append((first, wall, _row(first, wall, zone, "first pass only")))
            else:
                affected.append((second, wall, _row(second, wall, zone, "second pass only")))
        elif spring_forward is cron.SpringForward.SHIFT:
            affected.append((transition.instant, wall, _row(transition.instant, wall, zone, "shifted")))
        else:
            affected.append((transition.instant, wall, _row(None, wall, zone, "skipped")))
    affected.sort(key=lambda item: (item[0], item[1]))
    shown = {instant for instant, _, row in affected if row["utc"]}
    first_instant = (start_wall - transition.offset_before).replace(tzinfo=UTC)
    if not transition.falls_back:
        first_instant = transition.instant
    last_instant = (end_wall - transition.offset_after).replace(tzinfo=UTC)
    before, bound = [], first_instant
    for _ in range(context):
        bound = cron.previous_fire(expression, tz, bound, dst)
        before.insert(0, _row(bound, None, zone))
    after, bound = [], last_instant - _TICK
    while len(after) < context:
        bound = cron.next_fire(expression, tz, bound, dst)
        if bound not in shown:
            after.append(_row(bound, None, zone))
    return {
        "rows": before + [row for _, _, row in affected] + after,
        "more": more,
        "policy": f"dst_fall_back {fall_back.value}, dst_spring_forward {spring_forward.value}",
    }


def describe(transition: Transition, tz: str) -> dict[str, str]:
    """The transition in words: local times on both sides, UTC, and the direction."""
    zone = cron.zone(tz)
    before = (transition.instant - _TICK).astimezone(zone)
    after = transition.instant.astimezone(zone)
    shift = abs(transition.offset_after - transition.offset_before)
    minutes = int(shift.total_seconds() // 60)
    amount = (
        f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "") if minutes >= 60 else f"{minutes} min"
    )
    return {
        "kind": "fall back" if transition.falls_back else "spring forward",
        "local": f"{before + _TICK:%Y-%m-%d %H:%M} {before:%Z} becomes {after:%H:%M %Z}",
        "utc": f"{transition.instant:%Y-%m-%d %H:%M:%S} UTC",
        "shift": f"clocks go {'back' if transition.falls_back else 'forward'} {amount}",
    }
