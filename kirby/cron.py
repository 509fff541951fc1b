"""Cron math: pure functions of (expression, time zone, instant). No I/O, no clock reads.

Expressions have 5 fields (``minute hour day month weekday``) or 6 with a TRAILING seconds field
(croniter's form: ``minute hour day month weekday second``). Field syntax is croniter's (lists,
ranges, steps, month and weekday names, ``L`` and ``nW`` in the day field, ``n#k`` in the weekday
field); ``@hourly``-style aliases are expanded. When both day and weekday are restricted, a date
matching either one fires (classic cron; croniter intersects them when ``n#k`` or ``nW`` is used). A step larger than its field (``*/70`` minutes), hashed
``H`` fields, 7-field (year) forms and expressions that never fire are refused with CronError.

The fields are wall-clock time in the schedule's IANA time zone. Every instant this module returns
is an aware UTC datetime; every instant it takes must be aware (naive ones raise ValueError).

DST rules. A wall-clock time the fields match is *normal* (it happens once), *repeated* (a
fall-back hour: it happens twice, first in summer time, then in standard time) or *in a gap* (a
spring-forward hour: it never happens). A ``DstPolicy`` says what each of the latter does:

- ``fall_back``: ``first`` (run once, at the first occurrence), ``second`` (run once, at the
  second), ``both`` (run at both occurrences: two distinct UTC instants, so two run ids);
- ``spring_forward``: ``shift`` (run once at the first valid instant after the gap, e.g. 03:00 in
  Europe/Paris; several slots of one gap, and a slot that names that instant itself, are one run:
  fire instants are a set) or ``skip`` (do not run);
- ``auto`` (the default of both): by the hour field. A schedule whose hour field covers every
  hour (``*``, ``*/1``, ``0-23``, or a list of all 24) is a *frequency*: it fires at every real
  instant whose local time matches, i.e. ``both`` and ``skip`` (an hourly job runs 25 times on the
  fall-back day and 23 on the spring-forward day). A schedule at fixed hours is a *time of day*:
  ``first`` and ``shift`` (``30 2 * * *`` runs once on both days).

Fire instants are found by asking croniter for the next/previous matching *naive* wall-clock time
(plain calendar arithmetic, where croniter has no DST bugs), then mapping it to its instants by the
policy. Under every policy the smallest (and the largest) instant of a wall time is non-decreasing
in the wall time, so the first matching wall time with an instant beyond the bound is the answer,
except for the second pass of a repeated hour, which is looked at separately (``_second_pass``).
Parsed expressions and resolved policies are cached.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from kirby.errors import CronError

UTC = timezone.utc
FIELDS = ("minute", "hour", "day", "month", "weekday", "second")
_FIELD_SIZES = {"minute": 60, "hour": 24, "day": 31, "month": 12, "weekday": 7, "second": 60}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_STEP = re.compile(r"/(\d+)$")
_ONE_MICROSECOND = timedelta(microseconds=1)


class FallBack(str, enum.Enum):
    """What a wall-clock slot in a repeated (fall-back) hour does; ``auto``: by the hour field."""

    AUTO = "auto"
    FIRST = "first"
    SECOND = "second"
    BOTH = "both"


class SpringForward(str, enum.Enum):
    """What a wall-clock slot in a spring-forward gap does; ``auto``: by the hour field."""

    AUTO = "auto"
    SHIFT = "shift"
    SKIP = "skip"


@dataclass(frozen=True)
class DstPolicy:
    """A schedule's DST policy (values of FallBack and SpringForward); the default is auto/auto."""

    fall_back: str = FallBack.AUTO.value
    spring_forward: str = SpringForward.AUTO.value


AUTO = DstPolicy()


class CronFieldError(CronError):
    """One field of a cron expression is invalid; ``field`` is its name, ``value`` its text."""

    def __init__(self, field: str, value: str, message: str):
        self.field = field
        self.value = value
        super().__init__(message)


def _check_field(field: str, value: str) -> str:
    """Return the field's text if croniter accepts it alone and no step exceeds the field."""
    return _checked_field(field, str(value).strip())


@lru_cache(maxsize=4096)
def _checked_field(field: str, text: str) -> str:
    message = f"{text!r} is not a valid {field} field"
    if not text or any(c.isspace() for c in text):
        raise CronFieldError(field, text, message)
    for part in text.split(","):
        step = _STEP.search(part)
        if step and not 1 <= int(step.group(1)) <= _FIELD_SIZES[field]:
            raise CronFieldError(field, text, message)
    fields = ["*"] * (6 if field == "second" else 5)
    fields[FIELDS.index(field)] = text
    try:
        croniter.expand(" ".join(fields))
    except (CroniterError, ValueError, KeyError, IndexError):
        raise CronFieldError(field, text, message) from None
    return text


@lru_cache(maxsize=4096)
def _parse(expression: str) -> tuple[str, croniter]:
    """(normalized expression, a croniter prototype on naive wall-clock time); raises CronError."""
    if not isinstance(expression, str):
        raise CronError(f"{expression!r} is not a cron expression: use e.g. '*/5 * * * *'")
    text = _ALIASES.get(expression.strip().lower(), expression)
    parts = text.split()
    if len(parts) not in (5, 6):
        raise CronError(
            f"{expression!r} is not a cron expression: use 5 fields (minute hour day month weekday), "
            "or 6 with a trailing second field"
        )
    try:
        for name, part in zip(FIELDS, parts):
            _check_field(name, part)
    except CronFieldError as exc:
        raise CronFieldError(exc.field, exc.value, f"{expression!r}: {exc}") from None
    normalized = " ".join(parts)
    try:
        prototype = croniter(normalized, datetime(2000, 1, 1))
        copy.copy(prototype).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"{expression!r} never fires: no date matches its day, month and weekday fields") from None
    except (CroniterError, ValueError, KeyError, IndexError) as exc:
        raise CronError(f"{expression!r} is not a valid cron expression: {exc}") from None
    return normalized, prototype


def validate(expression: str) -> str:
    """Return ``expression`` normalized (single spaces, aliases expanded); raise CronError if invalid."""
    return _parse(expression)[0]


def from_fields(minute="*", hour="*", day="*", month="*", weekday="*", second=None) -> str:
    """The original Kirby's separate fields as one expression; raises CronFieldError per field."""
    values = {"minute": minute, "hour": hour, "day": day, "month": month, "weekday": weekday}
    if second is not None:
        values["second"] = second
    expression = " ".join(_check_field(name, value) for name, value in values.items())
    return validate(expression)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; CronError if there is no such zone."""
    message = f"{name!r} is not an IANA time zone, e.g. Europe/Paris"
    if not isinstance(name, str) or not name.strip():
        raise CronError(message)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(message) from None


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value!r} must be a timezone-aware datetime, e.g. datetime.now(timezone.utc)")
    return value


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else zone(tz)


def _transition(tz: ZoneInfo, low: int, high: int) -> datetime:
    """The UTC instant in (low, high] (POSIX seconds) where tz's offset changes from low's offset."""
    before = datetime.fromtimestamp(low, UTC).astimezone(tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(tz).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def every_hour(expression: str) -> bool:
    """Whether the hour field of (valid) ``expression`` covers every hour: a frequency, not a time of day."""
    return _every_hour(_parse(expression)[0])


@lru_cache(maxsize=4096)
def _every_hour(normalized: str) -> bool:
    hours = croniter.expand(normalized)[0][1]
    return hours == ["*"] or set(hours) >= set(range(24))


def resolve(expression: str, dst: DstPolicy | None = None) -> tuple[FallBack, SpringForward]:
    """The concrete (fall_back, spring_forward) of ``dst`` for ``expression`` (``auto`` resolved)."""
    dst = dst or AUTO
    return _resolve(_parse(expression)[0], dst.fall_back, dst.spring_forward)


@lru_cache(maxsize=4096)
def _resolve(normalized: str, fall_back: str, spring_forward: str) -> tuple[FallBack, SpringForward]:
    try:
        fb, sf = FallBack(fall_back), SpringForward(spring_forward)
    except ValueError:
        raise CronError(
            f"DST policy {fall_back!r}/{spring_forward!r}: use dst_fall_back auto|first|second|both "
            "and dst_spring_forward auto|shift|skip"
        ) from None
    frequency = _every_hour(normalized)
    if fb is FallBack.AUTO:
        fb = FallBack.BOTH if frequency else FallBack.FIRST
    if sf is SpringForward.AUTO:
        sf = SpringForward.SKIP if frequency else SpringForward.SHIFT
    return fb, sf


def _utc(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


def _offsets(tz: ZoneInfo, wall: datetime) -> tuple[timedelta, timedelta]:
    """(offset of the first occurrence or before a gap, offset of the second or after a gap)."""
    return wall.replace(tzinfo=tz, fold=0).utcoffset(), wall.replace(tzinfo=tz, fold=1).utcoffset()


def _shift_of(tz: ZoneInfo, wall: datetime, offsets: tuple[timedelta, timedelta]) -> datetime:
    """The transition instant of the gap or repeated hour that ``wall`` is in."""
    low, high = sorted((_utc(wall, offsets[0]), _utc(wall, offsets[1])))
    return _transition(tz, int(low.timestamp()), int(high.timestamp()))


def _instances(
    tz: ZoneInfo, wall: datetime, fb: FallBack, sf: SpringForward
) -> tuple[tuple[datetime, ...], tuple[datetime, tuple[timedelta, timedelta]] | None]:
    """The instants a matching wall time fires at by the policy (ascending), and, for a wall time
    in a gap, (transition, offsets before and after it) so a search can jump over the gap."""
    offsets = _offsets(tz, wall)
    first, second = offsets
    if first == second:  # the usual case
        return (_utc(wall, first),), None
    if first > second:  # repeated
        early, late = _utc(wall, first), _utc(wall, second)
        return {FallBack.FIRST: (early,), FallBack.SECOND: (late,), FallBack.BOTH: (early, late)}[fb], None
    shift = _shift_of(tz, wall, offsets)
    return ((shift,) if sf is SpringForward.SHIFT else ()), (shift, offsets)


def _in_repeated_pass(tz: ZoneInfo, local: datetime) -> tuple[int, datetime, timedelta, timedelta] | None:
    """If aware ``local`` (in ``tz``) is in a repeated hour: (pass 0 or 1, transition, offset before, after)."""
    now = local.utcoffset()
    other = local.replace(fold=1 - local.fold).utcoffset()
    if other == now or (local.fold == 0) != (now > other):  # not repeated (or a gap's fold quirk)
        return None
    before, after = (now, other) if local.fold == 0 else (other, now)
    wall = local.replace(tzinfo=None)
    return local.fold, _shift_of(tz, wall, (before, after)), before, after


def _wall_next(expression: str, wall: datetime) -> datetime:
    cron = copy.copy(_parse(expression)[1])
    try:
        return cron.get_next(datetime, start_time=wall)
    except CroniterBadDateError:
        raise CronError(f"{expression!r} does not fire after {wall.isoformat()}") from None


def _wall_previous(expression: str, wall: datetime) -> datetime:
    cron = copy.copy(_parse(expression)[1])
    try:
        return cron.get_prev(datetime, start_time=wall)
    except CroniterBadDateError:
        raise CronError(f"{expression!r} does not fire before {wall.isoformat()}") from None


def next_wall(expression: str, wall: datetime) -> datetime:
    """The first naive wall-clock time strictly after naive ``wall`` that the fields match."""
    return _wall_next(_parse(expression)[0], wall)


def offset_change(tz: str, low: datetime, high: datetime) -> datetime:
    """The UTC instant in (low, high] (whole seconds) where the zone's offset at ``low`` changes;
    the caller knows it changes in between."""
    return _transition(_zone(tz), int(low.timestamp()), int(high.timestamp()))


def next_fire(expression: str, tz: str, after: datetime, dst: DstPolicy | None = None) -> datetime:
    """The first fire instant strictly after ``after`` (aware), as an aware UTC datetime."""
    tzinfo = _zone(tz)
    fb, sf = resolve(expression, dst)
    local = _aware(after, "after").astimezone(tzinfo)
    wall = local.replace(tzinfo=None)
    best = None
    repeated = _in_repeated_pass(tzinfo, local)
    if repeated is not None:
        fold, shift, before, later = repeated
        if fold == 0 and fb is not FallBack.FIRST:  # second occurrences of wall times <= now are to come
            candidate = _wall_next(expression, (shift + later).replace(tzinfo=None) - _ONE_MICROSECOND)
            if candidate <= wall:
                best = _utc(candidate, later)
        elif fold == 1 and fb is FallBack.FIRST:  # the rest of the repeated hour fired in the first pass
            wall = (shift + before).replace(tzinfo=None) - _ONE_MICROSECOND
    while True:
        wall = _wall_next(expression, wall)
        fires, jump = _instances(tzinfo, wall, fb, sf)
        fires = [f for f in fires if f > after]
        if fires:
            return min(fires[0], best) if best else fires[0]
        if jump is not None:  # a skipped gap: resume at its end
            wall = (jump[0] + jump[1][1]).replace(tzinfo=None) - _ONE_MICROSECOND


def previous_fire(expression: str, tz: str, before: datetime, dst: DstPolicy | None = None) -> datetime:
    """The last fire instant strictly before ``before`` (aware), as an aware UTC datetime."""
    tzinfo = _zone(tz)
    fb, sf = resolve(expression, dst)
    local = _aware(before, "before").astimezone(tzinfo)
    wall = local.replace(tzinfo=None)
    best = None
    repeated = _in_repeated_pass(tzinfo, local)
    if repeated is not None:
        fold, shift, earlier, after = repeated
        if fold == 1 and fb is not FallBack.SECOND:  # first occurrences of wall times >= now have fired
            candidate = _wall_previous(expression, (shift + earlier).replace(tzinfo=None))
            if candidate >= wall:
                best = _utc(candidate, earlier)
        elif fold == 0 and fb is FallBack.SECOND:  # the repeated hour so far fires in the second pass
            wall = (shift + after).replace(tzinfo=None)
    while True:
        wall = _wall_previous(expression, wall)
        fires, jump = _instances(tzinfo, wall, fb, sf)
        fires = [f for f in fires if f < before]
        if fires:
            return max(fires[-1], best) if best else fires[-1]
        if jump is not None:  # a skipped gap, or one that shifts to ``before`` itself: resume at its start
            wall = (jump[0] + jump[1][0]).replace(tzinfo=None)


def slots_between(
    expression: str, tz: str, start: datetime, end: datetime, dst: DstPolicy | None = None
) -> Iterator[datetime]:
    """Every fire instant in (start, end], ascending, as aware UTC datetimes."""
    tzinfo = _zone(tz)
    validate(expression)
    end = _aware(end, "end")
    slot = _aware(start, "start")
    while True:
        slot = next_fire(expression, tzinfo, slot, dst)
        if slot > end:
            return
        yield slot


def next_fires(expression: str, tz: str, after: datetime, count: int, dst: DstPolicy | None = None) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after`` (for previews)."""
    tzinfo = _zone(tz)
    fires: list[datetime] = []
    for _ in range(count):
        after = next_fire(expression, tzinfo, after, dst)
        fires.append(after)
    return fires
