"""``kirby.demo.beat``: translated beat entries written through ``kirby apply``'s machinery,
all or nothing, on SQLite and PostgreSQL; re-importing updates what beat defines and keeps the rest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from celery.schedules import crontab
from sqlalchemy import select

from kirby.celery.beat_import import BeatImportError, translate
from kirby.demo.beat import EntriesRefused, import_beat, select_entries
from kirby.demo.files import apply_checked, export_text
from kirby.demo.parse import parse
from kirby.errors import DemoImportError
from kirby.models import Context, Environment, Job


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(SQLALCHEMY_DATABASE_URI=database_url)


BEAT = {
    "nightly report": {
        "task": "reports.tasks.nightly",
        "schedule": crontab(minute=30, hour=2),
        "kwargs": {"full": True},
        "options": {"queue": "reports", "expires": 900},
    },
    "tick": {"task": "proj.tasks.tick", "schedule": timedelta(seconds=30), "args": (1, 2)},
}


def exported(db) -> dict:
    return json.loads(export_text(db, "json", False)[0])


def run_import(db, settings, beat=BEAT, environment="production", dry_run=False, skip=()):
    return import_beat(db, settings, select_entries(translate(beat, "Europe/Paris"), skip), environment, dry_run)


def test_the_entries_become_enabled_celery_jobs_and_a_second_import_changes_nothing(db, settings):
    done = run_import(db, settings)
    assert {str(c) for c in done.plan.changes} == {
        "created environment production",
        "created job nightly-report",
        "created job tick",
    }
    jobs = exported(db)["JOBS"]
    assert jobs["nightly-report"]["celery_task"] == {
        "name": "reports.tasks.nightly",
        "args": [],
        "kwargs": {"full": True},
        "queue": "reports",
        "routing_key": None,
        "priority": None,
    }
    assert jobs["nightly-report"]["environments"] == ["production"]
    param = jobs["nightly-report"]["scheduled_param"]
    assert (param["cron"], param["timezone"], param["misfire_grace_seconds"]) == ("30 2 * * *", "Europe/Paris", 900)
    assert (jobs["tick"]["scheduled_param"]["cron"], jobs["tick"]["scheduled_param"]["timezone"]) == (
        "* * * * * */30",
        "UTC",
    )
    assert jobs["tick"]["celery_task"]["args"] == [1, 2]
    with db.session() as session:
        assert session.scalars(
            select(Context.enabled).join(Job).where(Job.name.in_(["tick", "nightly-report"]))
        ).all() == [
            True,
            True,
        ]
    assert run_import(db, settings).plan.changes == []


def test_a_dry_run_shows_the_changes_and_writes_nothing(db, settings):
    done = run_import(db, settings, dry_run=True)
    assert "created job tick" in {str(c) for c in done.plan.changes}
    assert exported(db)["JOBS"] == {}


def test_a_refused_entry_stops_the_whole_import_unless_it_is_skipped(db, settings):
    beat = {**BEAT, "every 7 s": {"task": "proj.tasks.tick", "schedule": 7}}
    with pytest.raises(EntriesRefused) as error:
        run_import(db, settings, beat)
    assert [r.entry for r in error.value.refused] == ["every 7 s"]
    assert str(error.value).startswith("1 of 3 beat entries cannot be imported (see above); nothing was written")
    assert exported(db)["JOBS"] == {}
    done = run_import(db, settings, beat, skip=("every 7 s",))
    assert done.skipped == ["every 7 s"] and sorted(exported(db)["JOBS"]) == ["nightly-report", "tick"]
    with pytest.raises(BeatImportError, match="--skip 'nope': the beat_schedule has no such entry"):
        run_import(db, settings, beat, skip=("nope",))
    with pytest.raises(BeatImportError, match="has no entry to import"):
        run_import(db, settings, {})


def test_reimporting_into_another_environment_keeps_what_was_added_in_kirby(db, settings):
    apply_checked(
        db,
        settings,
        parse({"ENVS": {"staging": "the staging cluster"}, "JOBS": {}, "NOTIFICATION_GROUPS": {"ops": []}}),
        prune=False,
        dry_run=False,
    )
    run_import(db, settings, environment="staging")
    document = exported(db)
    document["JOBS"]["tick"]["notification_group"] = "ops"
    document["JOBS"]["tick"]["scheduled_param"]["retries"] = 2
    apply_checked(db, settings, parse(document), prune=False, dry_run=False)

    changed = dict(BEAT, tick={**BEAT["tick"], "schedule": timedelta(minutes=5)})
    done = run_import(db, settings, changed, environment="production")
    assert {str(c) for c in done.plan.changes} == {
        "created environment production",
        "changed job tick (environments, scheduled_param, config)",  # config: the new context's (empty) keys
        "changed job nightly-report (environments, config)",
    }
    tick = exported(db)["JOBS"]["tick"]
    assert tick["environments"] == ["production", "staging"]
    assert (tick["notification_group"], tick["scheduled_param"]["retries"]) == ("ops", 2)
    assert tick["scheduled_param"]["cron"] == "*/5 * * * *"
    with db.session() as session:
        assert session.scalar(select(Environment.description).where(Environment.name == "staging")) == (
            "the staging cluster"
        )
        assert set(session.scalars(select(Context.enabled).join(Job).where(Job.name == "tick"))) == {True}
    assert run_import(db, settings, changed, environment="staging").plan.changes == []  # already there


def test_a_package_job_of_the_same_name_is_never_overwritten(db, settings):
    package_job = {
        "type": "scheduled",
        "package_version": {"production": "1.0.0"},
        "scheduled_param": {"cron": "0 * * * *"},
    }
    apply_checked(db, settings, parse({"ENVS": {}, "JOBS": {"tick": package_job}}), prune=False, dry_run=False)
    with pytest.raises(BeatImportError, match="a job named 'tick' exists and runs a package, not a Celery task"):
        run_import(db, settings)
    assert sorted(exported(db)["JOBS"]) == ["tick"]  # nightly-report was not written either


def test_what_the_import_format_refuses_changes_nothing(db, settings):
    beat = {**BEAT, "bad": {"task": "not a task name!", "schedule": 60}}
    with pytest.raises(DemoImportError, match=r"^JOBS\.bad\.celery_task\.name: "):
        run_import(db, settings, beat)
    assert exported(db)["JOBS"] == {}
    with pytest.raises(BeatImportError, match="--environment: 'prod uction' is not a valid environment name"):
        run_import(db, settings, environment="prod uction")
