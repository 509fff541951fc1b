"""Cron math: pure functions of (expression, time zone, instant). No I/O, no clock reads.

Expressions have 5 fields (``minute hour day month weekday``) or 6 with a TRAILING seconds field
(croniter's form: ``minute hour day month weekday second``). Field syntax is croniter's (lists,
ranges, steps, month and weekday names, ``L`` and ``nW`` in the day field, ``n#k`` in the weekday
field); ``@hourly``-style aliases are expanded. When both day and weekday are restricted, a date
matching either one fires (classic cron; croniter intersects them when ``n#k`` or ``nW`` is used). A step larger than its field (``*/70`` minutes), hashed
``H`` fields, 7-field (year) forms and expressions that never fire are refused with CronError.

The fields are wall-clock time in the schedule's IANA time zone. Every instant this module returns
is an aware UTC datetime; every instant it takes must be aware (naive ones raise ValueError).

DST rules (each wall-clock slot the fields name runs exactly once):

- Spring forward: a slot inside the gap (e.g. 02:30 in Europe/Paris on the last Sunday of March)
  runs at the first valid instant after the gap (03:00 local). Several slots in one gap, and a slot
  that names that first valid instant itself, are one run: fire instants are a set.
- Fall back: a slot in the repeated hour (e.g. 01:30 in America/New_York in November) runs once,
  at its first occurrence (EDT); the second pass through the same wall-clock times fires nothing.

So the wall-clock to instant map is non-decreasing, and next/previous fires are found by asking
croniter for the next/previous matching *naive* wall-clock time (plain calendar arithmetic, where
croniter has no DST bugs), then mapping it with the rules above. Parsed expressions are cached.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
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


def _fire_instant(tz: ZoneInfo, wall: datetime) -> datetime:
    """The UTC instant a matching naive wall-clock time fires at, by the DST rules above."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()  # fold=0: the first occurrence, or before a gap
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if first >= second:  # a normal time, or a repeated one (first occurrence)
        return (wall - first).replace(tzinfo=UTC)
    gap_start = (wall - second).replace(tzinfo=UTC).timestamp()
    gap_end = (wall - first).replace(tzinfo=UTC).timestamp()
    return _transition(tz, int(gap_start), int(gap_end))


def _second_pass_end(tz: ZoneInfo, instant: datetime, local: datetime) -> datetime | None:
    """If ``instant`` is in the second pass of a repeated hour, the naive wall time that pass ends."""
    first = local.replace(tzinfo=tz, fold=0).utcoffset()
    if not local.fold or first <= local.utcoffset():
        return None
    start = (instant - (first - local.utcoffset())).timestamp()
    transition = _transition(tz, int(start), int(instant.timestamp()))
    return (transition + first).replace(tzinfo=None)


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


def next_fire(expression: str, tz: str, after: datetime) -> datetime:
    """The first fire instant strictly after ``after`` (aware), as an aware UTC datetime."""
    tzinfo = _zone(tz)
    local = _aware(after, "after").astimezone(tzinfo)
    end_of_pass = _second_pass_end(tzinfo, after, local)
    if end_of_pass is not None:  # the repeated wall times already fired: resume where the pass ends
        wall = _wall_next(expression, end_of_pass - _ONE_MICROSECOND)
    else:
        wall = _wall_next(expression, local.replace(tzinfo=None))
    return _fire_instant(tzinfo, wall)


def previous_fire(expression: str, tz: str, before: datetime) -> datetime:
    """The last fire instant strictly before ``before`` (aware), as an aware UTC datetime."""
    tzinfo = _zone(tz)
    local = _aware(before, "before").astimezone(tzinfo)
    bound = _second_pass_end(tzinfo, before, local)
    if bound is None:
        bound = local.replace(tzinfo=None)
        just_before = (before - _ONE_MICROSECOND).astimezone(tzinfo).replace(tzinfo=None)
        if bound - just_before > _ONE_MICROSECOND:  # ``before`` ends a gap: gap slots fire at ``before``
            bound = just_before + _ONE_MICROSECOND
    return _fire_instant(tzinfo, _wall_previous(expression, bound))


def slots_between(expression: str, tz: str, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every fire instant in (start, end], ascending, as aware UTC datetimes."""
    tzinfo = _zone(tz)
    validate(expression)
    end = _aware(end, "end")
    slot = _aware(start, "start")
    while True:
        slot = next_fire(expression, tzinfo, slot)
        if slot > end:
            return
        yield slot


def next_fires(expression: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants strictly after ``after`` (for previews)."""
    tzinfo = _zone(tz)
    fires: list[datetime] = []
    for _ in range(count):
        after = next_fire(expression, tzinfo, after)
        fires.append(after)
    return fires
