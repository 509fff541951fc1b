"""DST behaviour checked against an independent implementation: cronsim (Debian cron's DST rules).

The README's "Time zones and DST" section documents where Kirby's default differs from cronsim;
each difference is asserted here: Kirby, given the policy cronsim implicitly applies, equals
cronsim on every 2025-2027 transition of several zones; Kirby's default equals cronsim except for
the documented classes, where it is shown to differ.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kirby import cron

UTC = timezone.utc
ZONES = (
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",  # transitions at midnight
    "America/Havana",  # transitions at midnight (00:00 -> 01:00, 01:00 -> 00:00)
    "Australia/Lord_Howe",  # 30-minute shift
    "Pacific/Chatham",  # 02:45 -> 03:45
    "Australia/Sydney",  # southern hemisphere
    "Europe/London",
)
WINDOW = timedelta(hours=4)
BOTH_SKIP = cron.DstPolicy("both", "skip")
FIRST_SHIFT = cron.DstPolicy("first", "shift")


@cache
def transitions(tz: str, years=(2025, 2026, 2027)) -> tuple[datetime, ...]:
    """Every UTC instant the zone's offset changes in ``years`` (an hourly scan, then bisection)."""
    zone = ZoneInfo(tz)
    found = []
    instant = datetime(years[0], 1, 1, tzinfo=UTC)
    end = datetime(years[-1] + 1, 1, 1, tzinfo=UTC)
    while instant < end:
        later = instant + timedelta(hours=1)
        if instant.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            low, high = instant, later
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high.replace(microsecond=0))
        instant = later
    return tuple(found)


ALL_TRANSITIONS = [(tz, t) for tz in ZONES for t in transitions(tz)]


def cronsim_slots(expression: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    """cronsim's fire instants in (start, end]. Kirby's trailing seconds field is cronsim's first."""
    parts = expression.split()
    if len(parts) == 6:
        parts = [parts[5], *parts[:5]]
    fires = []
    for fire in CronSim(" ".join(parts), start.astimezone(ZoneInfo(tz))):
        fire = fire.astimezone(UTC)
        if fire > end:
            return fires
        if fire > start:
            fires.append(fire)
    return fires


def kirby_slots(expression: str, tz: str, start: datetime, end: datetime, dst=None) -> list[datetime]:
    return list(cron.slots_between(expression, tz, start, end, dst))


def cronsim_policy(expression: str) -> cron.DstPolicy:
    """The policy cronsim applies: fixed-time handling only for 5-field expressions whose minute and
    hour fields do not start with '*' (Debian cron's rule); all others fire at every real instant."""
    parts = expression.split()
    fixed = len(parts) == 5 and not parts[0].startswith("*") and not parts[1].startswith("*")
    return FIRST_SHIFT if fixed else BOTH_SKIP


def kirby_default(expression: str) -> cron.DstPolicy:
    return BOTH_SKIP if cron.every_hour(expression) else FIRST_SHIFT


# Expression classes: (expression, where Kirby's default differs from cronsim, or None).
CLASSES = [
    ("0 * * * *", None),
    ("*/15 * * * *", None),
    ("30 * * * *", None),
    ("*/7 * * * *", None),
    ("* * * * *", None),
    ("0 */1 * * 0", None),
    ("30 2 * * *", None),
    ("0 2 * * *", None),
    ("0 1 * * *", None),
    ("15 3 * * *", None),
    ("0 0 * * *", None),
    ("45 23 * * *", None),
    ("0 9 * * 1-5", None),
    ("0,30 1-3 * * *", None),
    ("*/5 1-3 * * *", "fixed hours, minute field starting with '*'"),
    ("* 2 * * *", "fixed hours, minute field starting with '*'"),
    ("0 */2 * * *", "hour step that skips hours"),
    ("30 */3 * * *", "hour step that skips hours"),
    ("0 0-23 * * *", "every hour, hour field not starting with '*'"),
    (
        "15 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23 * * *",
        "every hour, hour field not starting with '*'",
    ),
    ("0 2 * * * 30", "6 fields at fixed hours"),
    ("0 * * * * */20", None),
]


# cronsim's own quirks (the README's table): it misses some real matching instants right after a
# transition in zones whose DST shift is not a whole hour or not on the hour, and it fires a
# frequency job at the instant of a spring-forward gap at midnight, where the local time (01:00
# in America/Santiago) does not match its fields.
SUB_HOUR_ZONES = ("Australia/Lord_Howe", "Pacific/Chatham")


def checked_against_cronsim(expression: str, tz: str, transition: datetime) -> list[datetime]:
    """Kirby's slots under cronsim's policy, asserted equal to cronsim's but for its documented misses."""
    start, end = transition - WINDOW, transition + WINDOW
    expected = cronsim_slots(expression, tz, start, end)
    slots = kirby_slots(expression, tz, start, end, cronsim_policy(expression))
    where = f"{expression!r} in {tz} around {transition}"
    for extra in sorted(set(expected) - set(slots)):
        assert extra == transition and not croniter_matches(expression, extra.astimezone(ZoneInfo(tz))), (
            f"{where}: cronsim fires at {extra} where Kirby (with cronsim's policy) does not"
        )
    for extra in sorted(set(slots) - set(expected)):
        local = extra.astimezone(ZoneInfo(tz))
        assert tz in SUB_HOUR_ZONES and transition <= extra, f"{where}: Kirby fires at {local} where cronsim does not"
        assert cron.next_fire(expression, tz, extra - timedelta(microseconds=1), cronsim_policy(expression)) == extra
        assert croniter_matches(expression, local), f"{where}: {local} does not match"
    return slots


def croniter_matches(expression: str, local: datetime) -> bool:
    from croniter import croniter

    return croniter.match(expression, local.replace(tzinfo=None))


@pytest.mark.parametrize(("expression", "difference"), CLASSES)
def test_kirby_equals_cronsim_given_its_policy_and_differs_only_where_documented(expression, difference):
    differing = 0
    for tz, transition in ALL_TRANSITIONS:
        reference = checked_against_cronsim(expression, tz, transition)
        default = kirby_slots(expression, tz, transition - WINDOW, transition + WINDOW)
        if difference is None:
            assert default == reference, f"{expression!r} in {tz} around {transition}: default differs from cronsim"
        differing += default != reference
    assert (cronsim_policy(expression) != kirby_default(expression)) == (difference is not None)
    if difference is not None:  # the documented exception is real: it shows on some transitions
        assert differing > 0, f"{expression!r} ({difference}) never differed from cronsim"


def test_cronsim_misses_the_second_pass_of_lord_howes_repeated_half_hour():
    # 2026-04-05 02:00 LHDT (+11) -> 01:30 LHST (+10:30): 01:30 happens at 14:30Z and again at 15:00Z.
    transition = datetime(2026, 4, 4, 15, 0, tzinfo=UTC)
    start, end = transition - timedelta(hours=1), transition + timedelta(hours=1)
    assert kirby_slots("30 * * * *", "Australia/Lord_Howe", start, end) == [
        datetime(2026, 4, 4, 14, 30, tzinfo=UTC),
        datetime(2026, 4, 4, 15, 0, tzinfo=UTC),
        datetime(2026, 4, 4, 16, 0, tzinfo=UTC),
    ]
    assert cronsim_slots("30 * * * *", "Australia/Lord_Howe", start, end) == [
        datetime(2026, 4, 4, 14, 30, tzinfo=UTC),
        datetime(2026, 4, 4, 16, 0, tzinfo=UTC),
    ]


def _field(low: int, high: int):
    return st.one_of(
        st.just("*"),
        st.integers(low, high).map(str),
        st.tuples(st.integers(low, high), st.integers(low, high))
        .filter(lambda p: p[0] != p[1])  # croniter reads "0-0" as "*"
        .map(lambda p: f"{min(p)}-{max(p)}"),
        st.integers(1, 12).map(lambda n: f"*/{n}"),
        st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True).map(
            lambda xs: ",".join(map(str, sorted(xs)))
        ),
    )


EXPRESSIONS = st.tuples(_field(0, 59), _field(0, 23), st.sampled_from(["*", "0", "1-5", "6"])).map(
    lambda f: f"{f[0]} {f[1]} * * {f[2]}"
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS, st.sampled_from(ALL_TRANSITIONS))
def test_random_expressions_match_cronsim_by_the_documented_table(expression, around):
    tz, transition = around
    reference = checked_against_cronsim(expression, tz, transition)
    if cronsim_policy(expression) == kirby_default(expression):
        assert kirby_slots(expression, tz, transition - WINDOW, transition + WINDOW) == reference


def day_slots(expression: str, tz: str, day: tuple[int, int, int], dst=None) -> list[datetime]:
    zone = ZoneInfo(tz)
    start = datetime(*day, tzinfo=zone).astimezone(UTC)
    end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)  # next local midnight
    return kirby_slots(expression, tz, start - timedelta(microseconds=1), end - timedelta(microseconds=1), dst)


@pytest.mark.parametrize(
    ("tz", "fall_back_day", "spring_forward_day"),
    [("Europe/Paris", (2026, 10, 25), (2026, 3, 29)), ("America/New_York", (2026, 11, 1), (2026, 3, 8))],
)
def test_fire_counts_on_transition_days(tz, fall_back_day, spring_forward_day):
    """The README's examples: runs on the local fall-back day and spring-forward day (default policy)."""
    expressions = ("0 * * * *", "*/15 * * * *", "30 2 * * *", "*/5 1-3 * * *")
    counts = {e: (len(day_slots(e, tz, fall_back_day)), len(day_slots(e, tz, spring_forward_day))) for e in expressions}
    assert counts == {"0 * * * *": (25, 23), "*/15 * * * *": (100, 92), "30 2 * * *": (1, 1), "*/5 1-3 * * *": (36, 24)}
    assert len(day_slots("*/5 1-3 * * *", tz, fall_back_day, cron.DstPolicy(fall_back="both"))) == 48
    ordinary = (fall_back_day[0], fall_back_day[1], fall_back_day[2] + 1)  # the day after
    assert len(day_slots("0 * * * *", tz, ordinary)) == 24


def test_policies_on_the_paris_transition_days():
    paris = ZoneInfo("Europe/Paris")

    def walls(expression, day, dst=None):
        return [f"{s.astimezone(paris):%H:%M%Z}" for s in day_slots(expression, "Europe/Paris", day, dst)]

    autumn, spring = (2026, 10, 25), (2026, 3, 29)
    assert walls("30 2 * * *", autumn) == ["02:30CEST"]
    assert walls("30 2 * * *", autumn, cron.DstPolicy(fall_back="second")) == ["02:30CET"]
    assert walls("30 2 * * *", autumn, cron.DstPolicy(fall_back="both")) == ["02:30CEST", "02:30CET"]
    assert walls("30 2 * * *", spring) == ["03:00CEST"]
    assert walls("30 2 * * *", spring, cron.DstPolicy(spring_forward="skip")) == []
    hourly_first = walls("0 * * * *", autumn, cron.DstPolicy(fall_back="first"))
    assert len(hourly_first) == 24 and hourly_first[2:4] == ["02:00CEST", "03:00CET"]
    assert walls("0 * * * *", spring, cron.DstPolicy(spring_forward="shift"))[1:3] == ["01:00CET", "03:00CEST"]
    every5 = walls("*/5 1-3 * * *", autumn)  # fixed hours: the repeated 02:xx run once, in summer time
    assert len(every5) == 36 and every5[12] == "02:00CEST" and every5[24] == "03:00CET"
    assert len(walls("*/5 1-3 * * *", autumn, cron.DstPolicy(fall_back="both"))) == 48
    assert len(walls("*/5 1-3 * * *", spring)) == 24  # the gap's 02:xx merge into the 03:00 run


def test_run_ids_are_unique_across_both_passes_of_a_repeated_hour():
    from kirby.models import run_slot_id

    slots = day_slots("*/15 * * * *", "America/New_York", (2026, 11, 1))
    ids = [run_slot_id("report", "prod", s) for s in slots]
    assert len(ids) == len(set(ids)) == 100
    repeated = [s for s in slots if s.astimezone(ZoneInfo("America/New_York")).hour == 1]
    assert len(repeated) == 8  # 01:00-01:45 in EDT, then again in EST
    assert ids[4:12] == [f"report:prod:20261101T{h:02d}{m:02d}00Z" for h in (5, 6) for m in (0, 15, 30, 45)]
