"""``kirby.celery.beat_import``: beat entries -> cron, checked against celery's own crontab math."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.schedules import crontab, schedule, solar

from kirby import cron
from kirby.celery.beat_import import (
    BeatImportError,
    Refused,
    Translated,
    app_zone,
    crontab_cron,
    interval_cron,
    job_name,
    jobs_document,
    load_app,
    translate,
    translate_entry,
)


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (1, "* * * * * *"),
        (30, "* * * * * */30"),
        (60, "* * * * *"),
        (300, "*/5 * * * *"),
        (1800, "*/30 * * * *"),
        (3600, "0 * * * *"),
        (7200, "0 */2 * * *"),
        (43200, "0 */12 * * *"),
        (86400, "0 0 * * *"),
        (604800, "0 0 * * 0"),
        (30.0, "* * * * * */30"),
    ],
)
def test_an_interval_that_divides_its_unit_becomes_the_cron_of_the_same_period(seconds, expected):
    expression = interval_cron(seconds)
    assert expression == expected
    start = datetime(2026, 3, 28, 23, 0, 7, tzinfo=timezone.utc)  # a DST weekend elsewhere: UTC does not care
    fires = cron.next_fires(expression, "UTC", start, 4)
    assert {b - a for a, b in zip(fires, fires[1:])} == {timedelta(seconds=seconds)}


@pytest.mark.parametrize(
    "seconds, nearest",
    [
        (7, "6 s or 10 s"),
        (90 * 60, "1 h or 2 h"),
        (5 * 3600, "4 h or 6 h"),
        (2 * 86400, "1 day or 1 week"),
        (150, "2 min or 3 min"),
        (30 * 86400, "1 week"),
    ],
)
def test_an_interval_without_an_exact_cron_is_refused_naming_the_nearest_ones(seconds, nearest):
    with pytest.raises(ValueError) as error:
        interval_cron(seconds)
    assert "has no exact cron" in str(error.value)
    assert str(error.value).endswith(f"the nearest exact periods are {nearest}")


@pytest.mark.parametrize("seconds", [0, -5, 0.5, 2.25])
def test_an_interval_that_is_not_a_positive_whole_number_of_seconds_is_refused(seconds):
    with pytest.raises(ValueError, match="cron counts whole seconds"):
        interval_cron(seconds)


def _cron_of(entry: crontab) -> str:
    return crontab_cron(entry.minute, entry.hour, entry.day_of_week, entry.day_of_month, entry.month_of_year)


CRONTABS = [
    (crontab(), "* * * * *"),
    (crontab(minute="*/15"), "*/15 * * * *"),
    (crontab(minute=0, hour="*/3"), "0 */3 * * *"),
    (crontab(minute=30, hour=7, day_of_week="mon-fri"), "30 7 * * 1-5"),
    (crontab(minute=0, hour=0, day_of_week="sun"), "0 0 * * 0"),
    (crontab(minute=0, hour=0, day_of_week="fri-mon"), "0 0 * * 0-1,5-6"),  # celery wraps the range
    (crontab(minute="1,13,30-45,50-59/2", hour="0,8-17/2"), "1,13,30-45,50,52,54,56,58 0,8,10,12,14,16 * * *"),
    (crontab(minute=0, hour=0, day_of_month="2-30/2"), "0 0 2-30/2 * *"),
    (crontab(minute=0, hour=0, day_of_month=1, month_of_year="*/3"), "0 0 1 */3 *"),
    (crontab(minute=0, hour=9, day_of_week="mon", day_of_month="1-7"), "0 9 * * 1#1"),
    (crontab(minute=0, hour=9, day_of_week="mon,wed", day_of_month="1-7,15-21"), "0 9 * * 1#1,1#3,3#1,3#3"),
    (crontab(minute=0, hour=9, day_of_week="fri", day_of_month="29-31"), "0 9 * * 5#5"),
]


@pytest.mark.parametrize("entry, expected", CRONTABS, ids=[e for _, e in CRONTABS])
def test_a_crontab_becomes_the_cron_that_fires_when_celery_would(entry, expected):
    assert _cron_of(entry) == expected
    for zone in ("UTC", "Asia/Kolkata"):  # no DST in either: celery's own math is the oracle here
        app = Celery("oracle", set_as_current=False)
        app.conf.timezone = zone
        instant = datetime(2026, 1, 27, 13, 7, tzinfo=ZoneInfo(zone))
        oracle = crontab(entry._orig_minute, entry._orig_hour, entry._orig_day_of_week, entry._orig_day_of_month,
                         entry._orig_month_of_year, app=app, nowfun=lambda: instant)  # fmt: skip
        for _ in range(12):
            expected_next = instant + oracle.remaining_estimate(instant)
            assert cron.next_fire(expected, zone, instant) == expected_next.astimezone(timezone.utc)
            instant = expected_next.astimezone(ZoneInfo(zone))


def test_day_of_month_and_day_of_week_both_restricted_outside_whole_weeks_is_refused():
    with pytest.raises(ValueError) as error:
        _cron_of(crontab(minute=0, hour=0, day_of_week="sun", day_of_month=13))
    assert "celery runs on days matching both, cron on days matching either" in str(error.value)


def _entry(schedule_, **extra):
    return {"task": "proj.tasks.nightly", "schedule": schedule_, **extra}


def test_an_entry_carries_task_args_kwargs_options_and_expires_as_the_misfire_grace():
    result = translate_entry(
        "nightly report",
        _entry(
            crontab(minute=30, hour=2),
            args=(1, "a"),
            kwargs={"full": True, "tags": ("x",)},
            options={"queue": "reports", "routing_key": "r.k", "priority": 7, "expires": 600},
        ),
        "Europe/Paris",
    )
    assert isinstance(result, Translated)
    assert (result.job, result.cron, result.timezone) == ("nightly-report", "30 2 * * *", "Europe/Paris")
    assert result.celery_task() == {
        "name": "proj.tasks.nightly",
        "args": [1, "a"],
        "kwargs": {"full": True, "tags": ["x"]},
        "queue": "reports",
        "routing_key": "r.k",
        "priority": 7,
    }
    assert result.scheduled_param() == {"cron": "30 2 * * *", "timezone": "Europe/Paris", "misfire_grace_seconds": 600}
    assert "crontab '30 2 * * *'" in str(result)


def test_an_interval_entry_runs_in_utc_whatever_the_app_zone():
    result = translate_entry("tick", _entry(timedelta(seconds=30)), "Europe/Paris")
    assert (result.cron, result.timezone) == ("* * * * * */30", "UTC")
    assert translate_entry("tick", _entry(schedule(timedelta(minutes=5))), "Europe/Paris").cron == "*/5 * * * *"
    assert translate_entry("tick", _entry(10.0), "Europe/Paris").cron == "* * * * * */10"


@pytest.mark.parametrize(
    "body, reason",
    [
        (_entry(timedelta(seconds=7)), "every 7 s has no exact cron"),
        (_entry(True), "is not a crontab, timedelta or number"),
        (_entry(crontab(minute=0, nowfun=lambda: None)), "has its own nowfun"),
        (_entry(60, args=[datetime(2026, 1, 1)]), "do not survive JSON unchanged"),
        (_entry(60, kwargs={1: "x"}), "do not survive JSON unchanged"),
        (_entry(60, options={"exchange": "x", "countdown": 3}), "option(s) 'exchange', 'countdown' would be dropped"),
        (_entry(60, options={"expires": 5}), "below Kirby's smallest misfire grace (10 s)"),
        (_entry(60, options={"expires": datetime(2027, 1, 1)}), "only a number of seconds"),
        (_entry(60, options={"priority": 300}), "priority 300 is not a whole number from 0 to 255"),
        (_entry(60, schedul=1), "unknown key(s) 'schedul'"),
        ({"schedule": 60}, "no task name"),
        ({"task": "t"}, "no schedule"),
        ("every minute", "the entry is a str"),
    ],
)
def test_an_entry_kirby_cannot_reproduce_exactly_is_refused_with_the_reason(body, reason):
    result = translate_entry("e", body, "UTC")
    assert isinstance(result, Refused)
    assert reason in result.reason, result.reason


def test_a_solar_entry_is_refused_cron_has_no_sunrise():
    result = translate_entry("sunrise", _entry(solar("sunrise", 48.85, 2.35)), "UTC")
    assert isinstance(result, Refused)
    assert result.reason.startswith("solar('sunrise') follows the sun at (48.85, 2.35): cron has no sunrise")


def test_entry_names_become_job_names_and_two_entries_of_one_name_are_refused():
    assert job_name("add every 10 seconds!") == "add-every-10-seconds"
    assert job_name("reports.nightly_v2") == "reports.nightly_v2"
    assert job_name("***") == "beat-entry"
    results = translate({"a b": _entry(60), "a-b": _entry(60), "c": _entry(60)}, "UTC")
    assert [type(r).__name__ for r in results] == ["Translated", "Refused", "Translated"]
    assert results[1].reason == "its job name 'a-b' is taken by entry 'a b'"


def test_the_jobs_document_is_the_import_format_of_a_celery_job():
    item = translate_entry("tick", _entry(timedelta(seconds=30), options={"queue": "q"}), "UTC")
    assert jobs_document([item], {"tick": ["production"]}) == {
        "tick": {
            "type": "scheduled",
            "description": "celery beat entry 'tick' (an interval of 30 s)",
            "celery_task": {
                "name": "proj.tasks.nightly",
                "args": [],
                "kwargs": {},
                "queue": "q",
                "routing_key": None,
                "priority": None,
            },
            "environments": ["production"],
            "scheduled_param": {"cron": "* * * * * */30", "timezone": "UTC"},
        }
    }


def test_the_app_zone_follows_celerys_rule():
    assert app_zone("Europe/Paris", True) == "Europe/Paris"
    assert app_zone("Europe/Paris", False) == "Europe/Paris"
    assert app_zone(ZoneInfo("Asia/Tokyo"), True) == "Asia/Tokyo"
    assert app_zone(None, True) == "UTC"
    with pytest.raises(BeatImportError, match="beat used this machine's local time; set app.conf.timezone"):
        app_zone(None, False)
    with pytest.raises(BeatImportError, match="'Mars/Olympus' is not an IANA time zone"):
        app_zone("Mars/Olympus", True)


def test_load_app_names_what_is_wrong_with_module_app(tmp_path):
    (tmp_path / "beatproj.py").write_text(
        textwrap.dedent(
            """
            from celery import Celery
            app = Celery("beatproj", set_as_current=False)
            app.conf.beat_schedule = {"tick": {"task": "beatproj.tick", "schedule": 60}}
            not_an_app = 3
            """
        )
    )
    (tmp_path / "brokenproj.py").write_text("raise RuntimeError('settings missing')\n")
    assert load_app("beatproj:app", cwd=tmp_path).conf.beat_schedule["tick"]["schedule"] == 60
    for spec, message in [
        ("beatproj", "'beatproj': give the app as MODULE:APP, e.g. proj.celery:app"),
        (
            "nosuchproj:app",
            "nosuchproj:app: importing nosuchproj failed: ModuleNotFoundError: No module named 'nosuchproj'",
        ),
        ("brokenproj:app", "brokenproj:app: importing brokenproj failed: RuntimeError: settings missing"),
        ("beatproj:celery", "beatproj:celery: beatproj has no attribute 'celery'; name the Celery app object"),
        ("beatproj:not_an_app", "beatproj:not_an_app: is a int, not a Celery application"),
    ]:
        with pytest.raises(BeatImportError) as error:
            load_app(spec, cwd=tmp_path)
        assert str(error.value).startswith(message), str(error.value)
