"""Cron math: examples, errors, and properties against croniter (UTC) and around DST transitions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from croniter.croniter import CroniterBadDateError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kirby import cron
from kirby.errors import CronError

UTC = timezone.utc
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(instant: datetime, tz: str) -> str:
    return instant.astimezone(ZoneInfo(tz)).isoformat()


# --- examples --------------------------------------------------------------------------------


def test_validate_normalizes_five_and_six_fields_and_aliases():
    assert cron.validate("  */5   *  * * mon-fri ") == "*/5 * * * mon-fri"
    assert cron.validate("0 12 * * * 30") == "0 12 * * * 30"
    assert cron.validate("@hourly") == "0 * * * *"
    assert cron.validate("0 0 L * *") == "0 0 L * *"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("*/70 * * * *", "'*/70 * * * *': '*/70' is not a valid minute field"),
        ("0 24 * * *", "'0 24 * * *': '24' is not a valid hour field"),
        ("0 0 32 * *", "'0 0 32 * *': '32' is not a valid day field"),
        ("0 0 * 13 *", "'0 0 * 13 *': '13' is not a valid month field"),
        ("0 0 * * 8", "'0 0 * * 8': '8' is not a valid weekday field"),
        ("0 0 * * * 60", "'0 0 * * * 60': '60' is not a valid second field"),
        ("*/0 * * * *", "'*/0 * * * *': '*/0' is not a valid minute field"),
        ("H * * * *", "'H * * * *': 'H' is not a valid minute field"),
        ("1 2 3", "'1 2 3' is not a cron expression: use 5 fields"),
        ("0 0 * * * 0 2030", "is not a cron expression: use 5 fields"),
        ("", "'' is not a cron expression"),
        ("0 0 31 2 *", "'0 0 31 2 *' never fires"),
    ],
)
def test_invalid_expressions_name_the_input(expression, message):
    with pytest.raises(CronError) as error:
        cron.validate(expression)
    assert message in str(error.value)


def test_from_fields_builds_and_reports_the_bad_field():
    assert cron.from_fields(minute="*/2", hour="*") == "*/2 * * * *"
    assert cron.from_fields(minute=5, hour="8-18", weekday="mon-fri", second="30") == "5 8-18 * * mon-fri 30"
    with pytest.raises(cron.CronFieldError) as error:
        cron.from_fields(minute="*", hour="*/2", day="0")
    assert (error.value.field, error.value.value) == ("day", "0")
    assert str(error.value) == "'0' is not a valid day field"
    with pytest.raises(cron.CronFieldError) as error:
        cron.from_fields(minute="*/70")
    assert isinstance(error.value, CronError)
    assert str(error.value) == "'*/70' is not a valid minute field"
    with pytest.raises(cron.CronFieldError, match="'1 2' is not a valid hour field"):
        cron.from_fields(hour="1 2")


def test_zone():
    assert cron.zone("Europe/Paris") == ZoneInfo("Europe/Paris")
    for name in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(CronError) as error:
            cron.zone(name)
        assert str(error.value) == f"{name!r} is not an IANA time zone, e.g. Europe/Paris"


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.next_fire("* * * * *", "UTC", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.previous_fire("* * * * *", "UTC", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        list(cron.slots_between("* * * * *", "UTC", datetime(2024, 1, 1), utc(2024, 1, 2)))


def test_next_and_previous_fire_are_strict_and_utc():
    after = utc(2024, 1, 1, 10, 0)
    assert cron.next_fire("0 * * * *", "UTC", after) == utc(2024, 1, 1, 11, 0)
    assert cron.previous_fire("0 * * * *", "UTC", after) == utc(2024, 1, 1, 9, 0)
    assert cron.next_fire("* * * * * */15", "UTC", after + timedelta(microseconds=1)) == utc(2024, 1, 1, 10, 0, 15)
    paris_noon = cron.next_fire("0 12 * * *", "Europe/Paris", after)
    assert paris_noon == utc(2024, 1, 1, 11, 0) and paris_noon.tzinfo == UTC
    other_zone = datetime(2024, 1, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert cron.next_fire("0 * * * *", "UTC", other_zone) == utc(2024, 1, 1, 4, 0)


def test_slots_between_and_next_fires():
    slots = list(cron.slots_between("*/20 * * * *", "UTC", utc(2024, 1, 1, 10, 0), utc(2024, 1, 1, 11, 0)))
    assert slots == [utc(2024, 1, 1, 10, 20), utc(2024, 1, 1, 10, 40), utc(2024, 1, 1, 11, 0)]
    assert cron.next_fires("0 9 * * *", "UTC", utc(2024, 1, 1), 3) == [utc(2024, 1, d, 9) for d in (1, 2, 3)]


def test_spring_forward_gap_runs_once_at_the_first_valid_instant():
    # Europe/Paris, 2024-03-31: 02:00 local jumps to 03:00 (01:00 UTC).
    assert local(cron.next_fire("30 2 * * *", "Europe/Paris", utc(2024, 3, 30, 12)), "Europe/Paris") == (
        "2024-03-31T03:00:00+02:00"
    )
    hourly = cron.slots_between("0 * * * *", "Europe/Paris", utc(2024, 3, 30, 22), utc(2024, 3, 31, 3))
    assert [local(s, "Europe/Paris")[11:16] for s in hourly] == ["00:00", "01:00", "03:00", "04:00", "05:00"]
    # Australia/Lord_Howe shifts by 30 minutes: 02:00 -> 02:30 on 2024-10-06. Every hour: the gap's
    # 02:00 and 02:15 do not exist and are skipped; with the shift policy they run once at 02:30.
    window = ("Australia/Lord_Howe", utc(2024, 10, 5, 14, 40), utc(2024, 10, 5, 16))
    slots = cron.slots_between("0,15,45 * * * *", *window)
    assert [local(s, "Australia/Lord_Howe")[11:22] for s in slots] == [
        "01:15:00+10",
        "01:45:00+10",
        "02:45:00+11",
        "03:00:00+11",
    ]
    slots = cron.slots_between("0,15,45 * * * *", *window, dst=cron.DstPolicy(spring_forward="shift"))
    assert [local(s, "Australia/Lord_Howe")[11:22] for s in slots] == [
        "01:15:00+10",
        "01:45:00+10",
        "02:30:00+11",
        "02:45:00+11",
        "03:00:00+11",
    ]


def test_fall_back_repeated_hour_runs_once_first_occurrence():
    # America/New_York, 2024-11-03: 01:00-02:00 happens twice (EDT then EST).
    window = ("America/New_York", utc(2024, 11, 3, 4), utc(2024, 11, 3, 9))
    slots = list(cron.slots_between("30 * * * *", *window, dst=cron.DstPolicy(fall_back="first")))
    assert [local(s, "America/New_York") for s in slots] == [
        "2024-11-03T00:30:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T02:30:00-05:00",
        "2024-11-03T03:30:00-05:00",
    ]
    second_pass = utc(2024, 11, 3, 6, 10)  # 01:10 EST
    assert local(cron.next_fire("30 1 * * *", "America/New_York", second_pass), "America/New_York") == (
        "2024-11-04T01:30:00-05:00"
    )
    assert cron.previous_fire("30 1 * * *", "America/New_York", utc(2024, 11, 3, 6, 40)) == utc(2024, 11, 3, 5, 30)


def test_fall_back_every_hour_runs_in_both_passes_by_default():
    window = ("America/New_York", utc(2024, 11, 3, 4), utc(2024, 11, 3, 9))
    assert [local(s, "America/New_York") for s in cron.slots_between("30 * * * *", *window)] == [
        "2024-11-03T00:30:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:30:00-05:00",
        "2024-11-03T02:30:00-05:00",
        "2024-11-03T03:30:00-05:00",
    ]
    second = cron.DstPolicy(fall_back="second")
    assert [local(s, "America/New_York") for s in cron.slots_between("30 1 * * *", *window, dst=second)] == [
        "2024-11-03T01:30:00-05:00"
    ]
    first_pass = utc(2024, 11, 3, 5, 40)  # 01:40 EDT: 01:30 EST is still to come
    assert cron.next_fire("30 1 * * *", "America/New_York", first_pass, second) == utc(2024, 11, 3, 6, 30)
    assert cron.previous_fire("30 1 * * *", "America/New_York", first_pass, second) == utc(2024, 11, 2, 5, 30)


def test_previous_fire_at_the_end_of_a_gap_excludes_the_gap_slot():
    gap_end = utc(2024, 3, 31, 1, 0)  # 03:00 Paris, where 02:30 fires
    assert cron.next_fire("30 2 * * *", "Europe/Paris", gap_end - timedelta(seconds=1)) == gap_end
    assert cron.previous_fire("30 2 * * *", "Europe/Paris", gap_end) == utc(2024, 3, 30, 1, 30)
    assert cron.previous_fire("30 2 * * *", "Europe/Paris", gap_end + timedelta(microseconds=1)) == gap_end


# --- properties ------------------------------------------------------------------------------


def _numbers(low: int, high: int):
    single = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda p: f"{min(p)}-{max(p)}")
    step = st.tuples(st.sampled_from(["*", f"{low}-{high}"]), st.integers(1, high - low + 1)).map(
        lambda p: f"{p[0]}/{p[1]}"
    )
    listed = st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True).map(
        lambda xs: ",".join(map(str, sorted(xs)))
    )
    return st.one_of(st.just("*"), single, span, step, listed)


EXPRESSIONS = st.tuples(
    _numbers(0, 59),
    _numbers(0, 23),
    st.one_of(_numbers(1, 28), st.just("L")),
    _numbers(1, 12),
    st.one_of(_numbers(0, 6), st.sampled_from(["mon-fri", "sat,sun", "1#2"])),
    st.one_of(st.none(), _numbers(0, 59)),
).map(lambda fields: " ".join(f for f in fields if f is not None))
INSTANTS = st.datetimes(datetime(2001, 1, 1), datetime(2039, 1, 1)).map(lambda d: d.replace(tzinfo=UTC))


@PROPERTY
@given(EXPRESSIONS, INSTANTS)
def test_matches_croniter_in_utc(expression, instant):
    try:
        expected = croniter(expression, instant).get_next(datetime)
    except CroniterBadDateError:  # e.g. 'L' with '1#2': croniter intersects them, so it never fires
        with pytest.raises(CronError, match="never fires"):
            cron.next_fire(expression, "UTC", instant)
        return
    assert cron.next_fire(expression, "UTC", instant) == expected
    assert cron.previous_fire(expression, "UTC", instant) == croniter(expression, instant).get_prev(datetime)


# Transitions (UTC instants) in zones with 1-hour and 30-minute DST shifts.
TRANSITIONS = [
    ("Europe/Paris", utc(2024, 3, 31, 1)),
    ("Europe/Paris", utc(2024, 10, 27, 1)),
    ("America/New_York", utc(2024, 3, 10, 7)),
    ("America/New_York", utc(2024, 11, 3, 6)),
    ("Australia/Lord_Howe", utc(2024, 10, 5, 15, 30)),
    ("Australia/Lord_Howe", utc(2024, 4, 6, 15)),
]
COARSE = st.tuples(
    st.sampled_from(["0", "30", "*/15", "*/7", "0,45", "59", "10-40/10", "*"]),
    _numbers(0, 23),
    st.sampled_from(["*", "6", "7"]),
    st.sampled_from(["*", "0,30", None, None, None]),
).map(lambda f: " ".join(x for x in (f[0], f[1], "*", "*", f[2], f[3]) if x is not None))
AROUND = st.tuples(st.sampled_from(TRANSITIONS), st.integers(-4 * 3600, 4 * 3600), st.integers(1, 5 * 3600))


POLICIES = st.sampled_from(
    [None] + [cron.DstPolicy(fb.value, sf.value) for fb in cron.FallBack for sf in cron.SpringForward]
)


def _expected_slots(expression: str, tz: str, start: datetime, end: datetime, dst=None) -> list[datetime]:
    """Reference: enumerate matching naive wall times, map each by the DST policy, by brute force."""
    zone = ZoneInfo(tz)
    fall_back, spring_forward = cron.resolve(expression, dst)
    wall = start.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)
    last_wall = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=3)
    walls = croniter(expression, wall)
    fires = set()
    while (wall := walls.get_next(datetime)) <= last_wall:
        first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: first occurrence
        second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        if first.astimezone(zone).replace(tzinfo=None) != wall:  # in a gap: first instant after it
            if spring_forward == "skip":
                continue
            first = second.replace(second=0)
            while first.astimezone(zone).replace(tzinfo=None) < wall:  # transitions are on whole minutes
                first += timedelta(minutes=1)
            fires.add(first)
        elif first == second or fall_back == "first":
            fires.add(first)
        elif fall_back == "second":
            fires.add(second)
        else:
            fires.update((first, second))
    return sorted(f for f in fires if start < f <= end)


@PROPERTY
@given(COARSE, AROUND, POLICIES)
def test_slots_around_dst_follow_the_rules(expression, around, dst):
    (tz, transition), shift, length = around
    start = transition + timedelta(seconds=shift)
    end = start + timedelta(seconds=length)
    slots = list(cron.slots_between(expression, tz, start, end, dst))
    assert slots == sorted(set(slots)), "slots must be ascending without duplicates"
    assert all(s.tzinfo == UTC and start < s <= end for s in slots)
    assert slots == _expected_slots(expression, tz, start, end, dst)


@PROPERTY
@given(COARSE, AROUND, st.integers(0, 999_999), POLICIES)
def test_next_and_previous_fire_are_consistent(expression, around, micros, dst):
    (tz, transition), shift, _ = around
    instant = transition + timedelta(seconds=shift, microseconds=micros)
    following = cron.next_fire(expression, tz, instant, dst)
    preceding = cron.previous_fire(expression, tz, instant, dst)
    assert preceding < instant < following
    assert cron.next_fire(expression, tz, preceding, dst) >= instant  # nothing fires in between...
    assert cron.previous_fire(expression, tz, following, dst) <= instant
    assert list(cron.slots_between(expression, tz, preceding, following, dst)) == (
        [instant, following] if cron.next_fire(expression, tz, preceding, dst) == instant else [following]
    )


@PROPERTY
@given(COARSE, AROUND, POLICIES)
def test_previous_fire_walks_back_over_exactly_the_slots(expression, around, dst):
    """The leader plans backwards with previous_fire: walking back must list what slots_between lists."""
    (tz, transition), shift, length = around
    start = transition + timedelta(seconds=shift)
    end = start + timedelta(seconds=length)
    backwards, bound = [], end + timedelta(microseconds=1)
    while (bound := cron.previous_fire(expression, tz, bound, dst)) > start:
        backwards.append(bound)
    assert backwards[::-1] == list(cron.slots_between(expression, tz, start, end, dst))


@pytest.mark.parametrize(("tz", "transition"), TRANSITIONS)
def test_no_hourly_slot_is_lost(tz, transition):
    zone = ZoneInfo(tz)
    day_start = transition.astimezone(zone).replace(hour=0, minute=0, tzinfo=None)
    slots = list(
        cron.slots_between("0 * * * *", tz, transition - timedelta(hours=12), transition + timedelta(hours=12))
    )
    fired_hours = {s.astimezone(zone).replace(tzinfo=None) for s in slots}
    for hour in range(24):
        wall = day_start + timedelta(hours=hour)
        first = wall.replace(tzinfo=zone).astimezone(UTC)
        if not slots[0] <= first <= slots[-1]:
            continue
        if first.astimezone(zone).replace(tzinfo=None) == wall:  # an existing wall time fires there
            assert first in slots, f"{wall} {tz} did not fire"
        else:  # inside a gap: fires at the first valid instant after it
            assert any(wall < f <= wall + timedelta(hours=1) for f in fired_hours), f"{wall} {tz} lost"
