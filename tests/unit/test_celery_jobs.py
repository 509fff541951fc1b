"""Celery jobs in the script database: the import format, export/apply, the schedule document, the
offers, and the refusals (bad task name, args that are not a JSON list, ...) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from kirby import validation
from kirby.celery.task import CeleryTask
from kirby.demo import import_file
from kirby.demo.files import apply_file, export_text
from kirby.errors import DemoImportError, InvalidValue
from kirby.models import Context, Job
from kirby.schedule.document import build_schedule
from kirby.schedule.snapshot import offer_for_slot, parse_schedule

TASK = {
    "name": "reports.tasks.nightly",
    "args": [1, "a"],
    "kwargs": {"day": "today"},
    "queue": "reports",
    "routing_key": None,
    "priority": 5,
}


def document(**job) -> dict:
    body = {
        "type": "scheduled",
        "celery_task": TASK,
        "environments": ["production", "staging"],
        "scheduled_param": {"cron": "* * * * * *", "timezone": "Europe/Paris", "misfire_grace_seconds": 30},
        "config": {"CONTEXT": {"staging": {"KIRBY_CELERY_BROKER_URL": {"value": "redis://x:6379/1", "secret": True}}}},
    }
    body.update(job)
    return {"ENVS": {"production": "", "staging": ""}, "JOBS": {"nightly": body}}


def write(tmp_path, body: dict):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(SQLALCHEMY_DATABASE_URI=database_url)


def test_a_celery_job_imports_schedules_and_offers_its_task(db, settings, tmp_path):
    import_file(db, settings, write(tmp_path, document()))
    with db.session() as session:
        job = session.scalar(select(Job).where(Job.name == "nightly"))
        assert CeleryTask.of_job(job) == CeleryTask.from_dict(TASK)
        assert sorted((c.environment.name, c.package_name, c.package_version) for c in job.contexts) == [
            ("production", "", ""),
            ("staging", "", ""),
        ]
        snapshot = parse_schedule(build_schedule(session, datetime(2026, 12, 2, tzinfo=timezone.utc)))
    entries = {e.environment: e for e in snapshot.entries}
    assert entries["production"].celery == CeleryTask.from_dict(TASK)
    assert entries["staging"].config["KIRBY_CELERY_BROKER_URL"] == "redis://x:6379/1"
    instant = datetime(2026, 12, 2, 1, 0, 0, tzinfo=timezone.utc)
    offer = offer_for_slot(entries["production"], entries["production"].schedules[0], instant, 3, instant)
    assert offer.celery == TASK and offer.not_after == datetime(2026, 12, 2, 1, 0, 30, tzinfo=timezone.utc)
    assert type(offer).from_json(offer.to_json()).celery == TASK


def test_export_writes_the_import_format_and_apply_round_trips(db, settings, tmp_path):
    import_file(db, settings, write(tmp_path, document()))
    exported = json.loads(export_text(db, "json", True)[0])
    body = exported["JOBS"]["nightly"]
    assert body["celery_task"] == TASK and body["environments"] == ["production", "staging"]
    assert "package_version" not in body and "package_name" not in body
    assert apply_file(db, settings, write(tmp_path, exported), prune=True, dry_run=True).changes == []
    exported["JOBS"]["nightly"]["celery_task"]["kwargs"] = {"day": "yesterday"}
    plan = apply_file(db, settings, write(tmp_path, exported), prune=False, dry_run=False)
    assert [str(c) for c in plan.changes] == ["changed job nightly (celery_task)"]
    with db.session() as session:
        assert json.loads(session.scalar(select(Job.celery_kwargs))) == {"day": "yesterday"}
        assert session.scalar(select(Context.id).limit(1)) is not None


@pytest.mark.parametrize(
    "change, path, message",
    [
        ({"name": "reports tasks"}, "celery_task.name", "is not a Celery task name"),
        ({"name": "1reports.x"}, "celery_task.name", "is not a Celery task name"),
        ({"args": {"a": 1}}, "celery_task.args", "must be a JSON list"),
        ({"args": "[1, 2"}, "celery_task.args", "is a string; write the JSON args itself"),
        ({"kwargs": [1]}, "celery_task.kwargs", "must be a JSON object"),
        ({"priority": 300}, "celery_task.priority", "is not a Celery priority"),
        ({"queue": "a queue"}, "celery_task.queue", "is not a Celery queue"),
        ({"eta": 3}, "celery_task.eta", "unknown key"),
    ],
)
def test_a_bad_task_is_refused_with_the_reason_and_changes_nothing(db, settings, tmp_path, change, path, message):
    with pytest.raises(DemoImportError) as error:
        import_file(db, settings, write(tmp_path, document(celery_task={**TASK, **change})))
    assert error.value.path == f"JOBS.nightly.{path}" and message in error.value.message
    with db.session() as session:
        assert session.scalar(select(Job.id)) is None


@pytest.mark.parametrize(
    "job, path, message",
    [
        ({"package_version": {"production": "1.0"}}, "JOBS.nightly.package_version", "unknown key"),
        ({"environments": []}, "JOBS.nightly.environments", "is empty"),
        ({"type": "daemon"}, "JOBS.nightly.type", "a Celery task job is scheduled"),
        (
            {"config": {"CONTEXT": {"dev": {"A": "1"}}}},
            "JOBS.nightly.config.CONTEXT.dev",
            "not in environments",
        ),
    ],
)
def test_a_bad_celery_job_is_refused(db, settings, tmp_path, job, path, message):
    with pytest.raises(DemoImportError) as error:
        import_file(db, settings, write(tmp_path, document(**job)))
    assert error.value.path == path and message in error.value.message


def test_the_validation_rules_accept_text_from_forms():
    assert validation.celery_args('[1, {"a": 2}]') == [1, {"a": 2}]
    assert validation.celery_args("") == []
    assert validation.celery_kwargs('{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidValue, match=r"the task's args is not JSON \(Expecting"):
        validation.celery_args("[1,")
    with pytest.raises(InvalidValue, match="must be a JSON object"):
        validation.celery_kwargs("[1]")
    assert validation.celery_task_name("a.b_c.D") == "a.b_c.D"
    assert validation.celery_route("", "queue") is None and validation.celery_priority("") is None
