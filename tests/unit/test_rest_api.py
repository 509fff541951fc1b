"""The REST API for scripts as code: jobs, environments, groups, suspensions, pause/resume, run now
with overrides; roles per token; secrets write-only. Flask test client on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select
from test_web_support import SECRET_VALUES, TOKEN, admin_client, app, seed, settings, viewer_client, web  # noqa: F401

from kirby.clock import FixedClock
from kirby.models import ConfigKey, Context, Job, Role, Run, Schedule
from kirby.tokens import create_token, revoke_token

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JOB = {
    "type": "scheduled",
    "description": "nightly report",
    "package_name": "report-pkg",
    "package_version": {"prod": "1.0.0"},
    "scheduled_param": {"cron": "0  3 * * *", "timezone": "Europe/Paris", "retries": 2},
    "config": {"JOB": {"LEVEL": "info"}, "CONTEXT": {"prod": {"API_KEY": {"value": "s3cr3t-key", "secret": True}}}},
}


def token(app, role: str, lifetime=None, name: str | None = None) -> dict:
    state = app.extensions["kirby"]
    with state.database.session() as s:
        _, secret = create_token(s, name or f"t-{role}", Role(role), state.clock.now(), lifetime)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def api(app):
    client = app.test_client()
    assert (
        client.post("/api/environments", json={"name": "prod", "description": "Production"}, headers=AUTH).status_code
        == 201
    )
    return client


def test_job_create_read_replace_patch_delete(app, api):
    created = api.post("/api/jobs", json={"name": "report", **JOB}, headers=AUTH)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["scheduled_param"]["cron"] == "0 3 * * *" and body["scheduled_param"]["retries"] == 2
    assert body["config"]["CONTEXT"]["prod"]["API_KEY"] == {"secret": True}  # write-only
    assert "s3cr3t-key" not in json.dumps(api.get("/api/jobs", headers=AUTH).get_json())
    assert api.post("/api/jobs", json={"name": "report", **JOB}, headers=AUTH).status_code == 409

    with app.extensions["kirby"].database.session() as s:
        context_id = s.scalar(select(Context.id))
        assert s.scalar(select(ConfigKey.value).where(ConfigKey.key == "API_KEY")) == "s3cr3t-key"

    # PUT what GET returned, with a new version: the context is updated in place, the secret kept.
    body["package_version"]["prod"] = "1.1.0"
    replaced = api.put("/api/jobs/report", json=body, headers=AUTH)
    assert replaced.status_code == 200 and replaced.get_json()["package_version"] == {"prod": "1.1.0"}
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(Context.id)) == context_id
        assert s.scalar(select(ConfigKey.value).where(ConfigKey.key == "API_KEY")) == "s3cr3t-key"

    patched = api.patch(
        "/api/jobs/report", json={"description": "changed", "config": {"JOB": {"LEVEL": None}}}, headers=AUTH
    )
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["description"] == "changed" and patched.get_json()["config"]["JOB"] == {}

    assert api.post("/api/jobs/report/pause", headers=AUTH).get_json()["enabled"] is False
    assert api.post("/api/jobs/report/resume", headers=AUTH).get_json()["enabled"] is True

    assert api.delete("/api/jobs/report", headers=AUTH).status_code == 204
    assert api.get("/api/jobs/report", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"scheduled_param": {"cron": "61 * * * *"}}, "scheduled_param.cron: '61 * * * *'"),
        ({"scheduled_param": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}}, "scheduled_param.timezone"),
        ({"package_version": {"prod": 1}}, "package_version.prod: Input should be a valid string"),
        ({"package_version": {"prod": "latest"}}, "package_version.prod"),
        ({"package_name": "not a package!"}, "package_name"),
        ({"config": {"JOB": {"BAD-NAME": "x"}}}, "config.JOB.BAD-NAME"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"package_version": {"prod": "1.0.0", "staging": "1.0.0"}}, "there is no environment 'staging'"),
        ({"notification_group": "nobody"}, "there is no notification group 'nobody'"),
        ({"notify_on": ["failure"]}, "notify_on: needs a notification_group"),  # the import's own check
        ({"config": {"JOB": {"NEW_SECRET": {"secret": True}}}}, "a secret without its value"),
    ],
)
def test_bad_jobs_are_refused_with_one_line_and_change_nothing(app, api, change, error):
    response = api.put("/api/jobs/report", json={**JOB, **change}, headers=AUTH)
    assert response.status_code == 400, response.get_json()
    assert error in response.get_json()["error"]
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(Job)) is None


def test_environments_groups_and_suspensions(app, api):
    assert api.post("/api/environments", json={"name": "bad:name"}, headers=AUTH).status_code == 400
    assert api.patch("/api/environments/prod", json={"description": "Live"}, headers=AUTH).get_json() == {
        "name": "prod",
        "description": "Live",
    }
    group = api.post("/api/notification-groups", json={"name": "ops", "emails": ["b@x.org", "a@x.org"]}, headers=AUTH)
    assert group.status_code == 201 and group.get_json()["emails"] == ["a@x.org", "b@x.org"]
    bad = api.put("/api/notification-groups/ops", json={"emails": ["not-an-email"]}, headers=AUTH)
    assert bad.status_code == 400 and "not an email address" in bad.get_json()["error"]
    assert api.put("/api/jobs/report", json={**JOB, "notification_group": "ops"}, headers=AUTH).status_code == 201
    assert api.delete("/api/notification-groups/ops", headers=AUTH).status_code == 409  # used by report
    assert api.delete("/api/environments/prod", headers=AUTH).status_code == 409  # report runs there

    window = {"job": "report", "starts_at": "2026-12-24T18:00:00+01:00", "ends_at": "2026-12-26T08:00:00+01:00"}
    created = api.post("/api/suspensions", json=window, headers=AUTH)
    assert created.status_code == 201, created.get_json()
    suspension = created.get_json()
    assert suspension["starts_at"] == "2026-12-24T17:00:00+00:00" and suspension["job"] == "report"
    reversed_window = api.patch(
        f"/api/suspensions/{suspension['id']}", json={"ends_at": "2026-12-01T00:00:00+00:00"}, headers=AUTH
    )
    assert reversed_window.status_code == 400 and "must be after starts_at" in reversed_window.get_json()["error"]
    patched = api.patch(f"/api/suspensions/{suspension['id']}", json={"reason": "freeze", "job": None}, headers=AUTH)
    assert patched.get_json()["reason"] == "freeze" and patched.get_json()["job"] is None
    assert len(api.get("/api/suspensions", headers=AUTH).get_json()["suspensions"]) == 1
    assert api.delete(f"/api/suspensions/{suspension['id']}", headers=AUTH).status_code == 204
    assert api.get(f"/api/suspensions/{suspension['id']}", headers=AUTH).status_code == 404


def test_run_now_with_config_overrides_is_recorded_on_the_run(app):
    seed(app)
    client = app.test_client()
    response = client.post(
        "/api/jobs/backup/run",
        json={"environment": "prod", "config": {"DRY_RUN": True, "CTX_SECRET": "override-secret"}},
        headers=AUTH,
    )
    assert response.status_code == 202, response.get_json()
    run_id = response.get_json()["run_id"]
    assert response.get_json()["config"] == ["CTX_SECRET", "DRY_RUN"]
    state = app.extensions["kirby"]
    consumer = state.bus.offer_consumer("test-member")
    try:
        deliveries = consumer.poll(timeout=5)
        assert [d.message.run_id for d in deliveries] == [run_id]
        offer = deliveries[0].message
        assert offer.config["DRY_RUN"] == "true" and offer.config["CTX_SECRET"] == "override-secret"
        assert offer.config["JOB_SECRET"] == "hunter2-job" and "CTX_SECRET" in offer.secrets  # still masked in logs
        consumer.ack(deliveries[0])
    finally:
        consumer.close()
    with state.database.session() as s:
        assert json.loads(s.get(Run, run_id).config_overrides) == {"CTX_SECRET": "********", "DRY_RUN": "true"}
    detail = client.get(f"/api/runs/{run_id}", headers=AUTH).get_json()
    assert detail["config_overrides"] == {"CTX_SECRET": "********", "DRY_RUN": "true"}
    assert not any(value in json.dumps(detail) for value in ("override-secret", *SECRET_VALUES))
    bad = client.post("/api/jobs/backup/run", json={"config": {"1BAD": "x"}}, headers=AUTH)
    assert bad.status_code == 400 and "config.1BAD" in bad.get_json()["error"]


def test_roles_viewer_reads_only_expired_and_revoked_tokens_are_refused(app, api):
    assert api.put("/api/jobs/report", json=JOB, headers=AUTH).status_code == 201
    viewer, admin = token(app, "viewer"), token(app, "admin")
    assert api.get("/api/jobs/report", headers=viewer).status_code == 200
    assert api.get("/api/openapi.json", headers=viewer).status_code == 200
    for method, path in (
        ("put", "/api/jobs/report"),
        ("delete", "/api/jobs/report"),
        ("post", "/api/jobs/report/pause"),
        ("post", "/api/jobs/report/run"),
        ("post", "/api/environments"),
    ):
        refused = getattr(api, method)(path, json={}, headers=viewer)
        assert refused.status_code == 403, (method, path)
        assert "viewer role" in refused.get_json()["error"] or "admin role" in refused.get_json()["error"]
    assert api.post("/api/jobs/report/pause", headers=admin).status_code == 200

    state = app.extensions["kirby"]
    expiring = token(app, "admin", timedelta(minutes=5), name="expiring")
    assert api.get("/api/jobs", headers=expiring).status_code == 200
    state.clock = FixedClock(state.clock.now() + timedelta(minutes=6))
    expired = api.get("/api/jobs", headers=expiring)
    assert expired.status_code == 401 and "expired" in expired.get_json()["error"]
    assert api.get("/api/runs", headers=expiring).status_code == 401  # the older API too
    with state.database.session() as s:
        revoke_token(s, "t-admin", state.clock.now())
    revoked = api.post("/api/jobs/report/resume", headers=admin)
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]
    unknown = api.get("/api/jobs", headers={"Authorization": "Bearer kirby_nope"})
    assert unknown.status_code == 401 and "unknown API token" in unknown.get_json()["error"]
    assert api.get("/api/jobs").status_code == 401


def test_sessions_use_their_role_and_writes_need_csrf(app, admin_client, viewer_client):
    assert viewer_client.get("/api/environments").status_code == 200
    assert viewer_client.post("/api/environments", json={"name": "dev"}).status_code == 403
    assert admin_client.post("/api/environments", json={"name": "dev"}).status_code == 201  # TESTING: CSRF off
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        refused = admin_client.post("/api/environments", json={"name": "qa"})
        assert refused.status_code == 400 and "CSRF" in refused.get_json()["error"]
    finally:
        app.config["WTF_CSRF_ENABLED"] = False


def test_jobs_list_paginates(app, api):
    for i in range(5):
        assert api.put(f"/api/jobs/job{i}", json=JOB, headers=AUTH).status_code == 201
    first = api.get("/api/jobs?per_page=2", headers=AUTH).get_json()
    assert [j["name"] for j in first["jobs"]] == ["job0", "job1"] and first["has_next"] is True
    last = api.get("/api/jobs?per_page=2&page=3", headers=AUTH).get_json()
    assert [j["name"] for j in last["jobs"]] == ["job4"] and last["has_next"] is False
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(Schedule.retries).limit(1)) == 2


CELERY_JOB = {
    "type": "scheduled",
    "celery_task": {"name": "reports.tasks.nightly", "args": [1], "kwargs": {"day": "today"}, "priority": 3},
    "environments": ["prod"],
    "scheduled_param": {"cron": "0 3 * * *"},
}


def test_a_celery_job_is_created_read_and_refused_with_the_reason(app, api):
    created = api.post("/api/jobs", json={"name": "nightly", **CELERY_JOB}, headers=AUTH)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["celery_task"] == {
        "name": "reports.tasks.nightly",
        "args": [1],
        "kwargs": {"day": "today"},
        "queue": None,
        "routing_key": None,
        "priority": 3,
    }
    assert body["environments"] == ["prod"] and "package_version" not in body
    assert api.put("/api/jobs/nightly", json=body, headers=AUTH).status_code == 200
    for change, error in [
        ({"name": "reports tasks"}, "celery_task.name: 'reports tasks' is not a Celery task name"),
        ({"args": {"a": 1}}, "celery_task.args: Input should be a valid list"),
        ({"priority": 300}, "celery_task.priority"),
    ]:
        bad = {**CELERY_JOB, "celery_task": {**CELERY_JOB["celery_task"], **change}}
        response = api.put("/api/jobs/nightly", json=bad, headers=AUTH)
        assert response.status_code == 400 and error in response.get_json()["error"], response.get_json()
    response = api.put("/api/jobs/nightly", json={**CELERY_JOB, "environments": ["staging"]}, headers=AUTH)
    assert (
        response.status_code == 400 and "environments.staging: there is no environment" in response.get_json()["error"]
    )
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(Job.celery_kwargs).where(Job.name == "nightly")) == '{"day": "today"}'
