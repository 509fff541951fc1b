"""Admin panel: validation refuses bad input and saves nothing; schedule preview; secrets masked;
run history fast on 100,000 runs."""

from __future__ import annotations

import re

from sqlalchemy import event, func, select
from test_web_support import SECRET_VALUES, admin_client, app, seed, settings, viewer_client, web  # noqa: F401

from kirby.models import CatchUp, ConfigKey, ConfigScope, Context, Environment, Job, Run, RunState, Schedule


def schedule_form(context_id: int, **overrides) -> dict:
    form = {
        "context": str(context_id),
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "enabled": "y",
        "misfire_grace_seconds": "300",
        "catchup": "latest",
        "overlap": "forbid",
        "retries": "0",
    }
    form.update(overrides)
    return form


def count(app, model) -> int:
    with app.extensions["kirby"].database.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_a_bad_cron_expression_or_time_zone_is_refused_with_the_reason(app, admin_client):
    ids = seed(app)
    before = count(app, Schedule)
    page = admin_client.post("/admin/schedule/new/", data=schedule_form(ids["context_id"], cron="61 * * * *"))
    assert page.status_code == 200 and "is not a valid minute field" in page.get_data(as_text=True)
    page = admin_client.post("/admin/schedule/new/", data=schedule_form(ids["context_id"], timezone="Mars/Olympus"))
    assert "is not an IANA time zone" in page.get_data(as_text=True)
    assert count(app, Schedule) == before
    response = admin_client.post(
        "/admin/schedule/new/", data=schedule_form(ids["context_id"], cron="*/15  9-17 * * mon-fri")
    )
    assert response.status_code == 302
    assert count(app, Schedule) == before + 1


def test_a_misfire_grace_under_the_minimum_is_refused_with_the_reason(app, admin_client):
    ids = seed(app)
    before = count(app, Schedule)
    page = admin_client.post("/admin/schedule/new/", data=schedule_form(ids["context_id"], misfire_grace_seconds="0"))
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "at least 10 seconds: a slot must be published, delivered and claimed" in text
    assert count(app, Schedule) == before
    ok = admin_client.post("/admin/schedule/new/", data=schedule_form(ids["context_id"], misfire_grace_seconds="10"))
    assert ok.status_code == 302 and count(app, Schedule) == before + 1


def test_the_preview_lists_five_fires_in_the_zone_and_in_utc(app, admin_client):
    response = admin_client.get("/admin/schedule/preview?cron=30 2 * * *&timezone=America/New_York")
    fires = response.get_json()["fires"]
    assert len(fires) == 5
    assert all(f["zone"].endswith(("EST", "EDT")) and f["zone"][11:16] == "02:30" for f in fires)
    assert all(f["utc"].endswith("UTC") and f["utc"][11:16] in ("06:30", "07:30") for f in fires)
    bad = admin_client.get("/admin/schedule/preview?cron=nope&timezone=UTC")
    assert bad.status_code == 400 and "cron" in bad.get_json()["error"]


def test_the_edit_page_shows_the_preview(app, viewer_client, admin_client):
    seed(app)
    with app.extensions["kirby"].database.session() as s:
        schedule_id = s.scalar(select(Schedule.id))
    with app.extensions["kirby"].database.session() as s:
        s.get(Schedule, schedule_id).catchup = CatchUp.ALL
    page = admin_client.get(f"/admin/schedule/edit/?id={schedule_id}").get_data(as_text=True)
    fires = page.split("preview-table")[1].split("</table>")[0]  # not the DST transition's table
    assert fires.count(" CET</td>") + fires.count(" CEST</td>") == 5
    assert "Next DST transition" in page
    # enum selects show the stored value (not the first choice, which a save would then write)
    assert '<option selected value="all">' in page and '<option selected value="forbid">' in page
    details = viewer_client.get(f"/admin/schedule/details/?id={schedule_id}").get_data(as_text=True)
    assert details.split("preview-table")[1].split("</table>")[0].count(" UTC</td>") == 5


def test_names_that_would_break_run_ids_are_refused_by_the_forms(app, admin_client):
    """The name rule of the import holds in the admin forms too: ':' and '#' separate run-id parts."""
    seed(app)
    jobs, environments = count(app, Job), count(app, Environment)
    page = admin_client.post("/admin/job/new/", data={"name": "a:b", "type": "scheduled", "enabled": "y"})
    assert "&#39;a:b&#39; is not a valid job name" in page.get_data(as_text=True)
    page = admin_client.post("/admin/environment/new/", data={"name": "eu#1"})
    assert "&#39;eu#1&#39; is not a valid environment name" in page.get_data(as_text=True)
    assert (count(app, Job), count(app, Environment)) == (jobs, environments)


def test_bad_package_names_and_versions_are_refused(app, admin_client):
    ids = seed(app)
    form = {
        "job": str(ids["job_id"]),
        "environment": str(ids["environment_id"]),
        "package_name": "bad name!",
        "package_version": "1.0",
        "enabled": "y",
    }
    page = admin_client.post("/admin/context/new/", data=form).get_data(as_text=True)
    assert "is not a valid name: use letters" in page  # the rule of kirby.validation
    form.update(package_name="good-name", package_version="latest")
    page = admin_client.post("/admin/context/new/", data=form).get_data(as_text=True)
    assert "is not a valid exact version" in page
    assert count(app, Context) == 1


def test_secret_values_never_reach_a_browser(app, admin_client, viewer_client):
    ids = seed(app)
    with app.extensions["kirby"].database.session() as s:
        global_secret = s.scalar(select(ConfigKey.id).where(ConfigKey.key == "GLOBAL_SECRET"))
    pages = [
        "/admin/config/",
        f"/admin/config/details/?id={global_secret}",
        "/admin/job/",
        f"/admin/job/details/?id={ids['job_id']}",
        f"/admin/context/details/?id={ids['context_id']}",
        "/admin/context/",
    ]
    for client in (admin_client, viewer_client):
        for page in pages:
            text = client.get(page).get_data(as_text=True)
            assert not any(secret in text for secret in SECRET_VALUES), page
    for page in (
        f"/admin/config/edit/?id={global_secret}",
        f"/admin/job/edit/?id={ids['job_id']}",
        f"/admin/context/edit/?id={ids['context_id']}",
    ):
        text = admin_client.get(page).get_data(as_text=True)
        assert not any(secret in text for secret in SECRET_VALUES), page
        assert "leave blank to keep" in text
    assert "https://example.org" in admin_client.get("/admin/config/").get_data(as_text=True)
    document = admin_client.get("/schedule").get_json()  # an admin's session sees the document masked
    assert document["contexts"][0]["config"]["CTX_SECRET"] == "********"


def test_saving_a_secret_blank_keeps_it(app, admin_client):
    seed(app)
    with app.extensions["kirby"].database.session() as s:
        key_id = s.scalar(select(ConfigKey.id).where(ConfigKey.key == "GLOBAL_SECRET"))
    response = admin_client.post(
        f"/admin/config/edit/?id={key_id}", data={"key": "GLOBAL_SECRET", "value": "", "secret": "y"}
    )
    assert response.status_code == 302
    with app.extensions["kirby"].database.session() as s:
        assert s.get(ConfigKey, key_id).value == "hunter2-global"
    admin_client.post(
        f"/admin/config/edit/?id={key_id}", data={"key": "GLOBAL_SECRET", "value": "new-one", "secret": "y"}
    )
    with app.extensions["kirby"].database.session() as s:
        assert s.get(ConfigKey, key_id).value == "new-one"
        assert s.get(ConfigKey, key_id).scope == ConfigScope.GLOBAL


def test_a_secret_too_short_to_mask_is_refused_with_the_reason(app, admin_client):
    seed(app)
    page = admin_client.post("/admin/config/new/", data={"key": "PIN", "value": "12", "secret": "y"})
    assert "secret &#39;PIN&#39; is shorter than 3 characters" in page.get_data(as_text=True)
    form = {"name": "short-secret", "type": "scheduled", "enabled": "y", "module": "", "description": ""}
    form.update({"config-0-key": "PIN", "config-0-value": "1", "config-0-secret": "y"})
    page = admin_client.post("/admin/job/new/", data=form, follow_redirects=True).get_data(as_text=True)
    assert "shorter than 3 characters" in page
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(ConfigKey.id).where(ConfigKey.key == "PIN")) is None  # nothing saved
    assert admin_client.post("/admin/config/new/", data={"key": "PIN", "value": "12"}).status_code == 302  # not secret


def test_run_as_is_an_unprivileged_user_name_set_in_the_job_form(app, admin_client, viewer_client):
    form = {"name": "as-team", "type": "scheduled", "enabled": "y", "module": "", "description": ""}
    for bad in ("root", "bad user;"):
        page = admin_client.post("/admin/job/new/", data=form | {"run_as": bad}).get_data(as_text=True)
        assert "is not an unprivileged user name" in page, bad
    assert admin_client.post("/admin/job/new/", data=form | {"run_as": "kirby-team-a"}).status_code == 302
    from kirby.models import Job

    with app.extensions["kirby"].database.session() as s:
        job = s.scalar(select(Job).where(Job.name == "as-team"))
        assert job.run_as == "kirby-team-a"
    viewer_client.post(f"/admin/job/edit/?id={job.id}", data=form | {"run_as": "kirby-other"})
    with app.extensions["kirby"].database.session() as s:
        assert s.get(Job, job.id).run_as == "kirby-team-a"  # viewers cannot change it


def test_jobs_are_enabled_and_disabled(app, admin_client):
    ids = seed(app)
    admin_client.post("/admin/job/action/", data={"action": "disable", "rowid": str(ids["job_id"])})
    from kirby.models import Job

    with app.extensions["kirby"].database.session() as s:
        assert s.get(Job, ids["job_id"]).enabled is False
    admin_client.post("/admin/job/action/", data={"action": "enable", "rowid": str(ids["job_id"])})
    with app.extensions["kirby"].database.session() as s:
        assert s.get(Job, ids["job_id"]).enabled is True


def bulk_runs(app, n: int) -> None:
    """``n`` runs over 5 jobs, 3 supervisors and every state, generated by the database itself
    (one INSERT ... SELECT over a recursive sequence; seconds instead of a minute of executemany)."""
    engine = app.extensions["kirby"].database.engine
    states = " ".join(f"WHEN {k} THEN '{state.value}'" for k, state in enumerate(RunState))
    if engine.dialect.name == "sqlite":
        when, mod = "datetime('2026-01-02 03:04:05', '+' || i || ' seconds')", "%"
    else:
        when, mod = "TIMESTAMPTZ '2026-01-02 03:04:05+00' + i * INTERVAL '1 second'", "%%"  # psycopg escapes %
    statement = f"""
        INSERT INTO runs (id, slot_id, job_name, environment, package_name, package_version, trigger, attempt,
                          state, supervisor, error, scheduled_at)
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {n - 1})
        SELECT 'job' || (i {mod} 5) || ':prod:' || i, 'job' || (i {mod} 5) || ':prod:' || i, 'job' || (i {mod} 5),
               'prod', 'p', '1', 'schedule', 1, CASE i {mod} {len(RunState)} {states} END, 'sup-' || (i {mod} 3), '',
               {when}
        FROM seq"""
    with engine.begin() as connection:
        connection.exec_driver_sql(statement)


def test_run_history_pages_are_bounded_on_100k_runs(app, viewer_client):
    bulk_runs(app, 100_000)
    assert count(app, Run) == 100_000
    engine = app.extensions["kirby"].database.engine
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        page = viewer_client.get("/admin/run/?flt0_0=job3&flt1_1=failed")
        first = viewer_client.get("/admin/run/")
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert page.status_code == 200 and first.status_code == 200
    runs_queries = [s for s in statements if re.search(r"FROM runs\b", s)]
    assert runs_queries and all("LIMIT" in s for s in runs_queries), runs_queries
    assert not any("count(" in s.lower() for s in runs_queries)  # no count of the whole table
    assert first.get_data(as_text=True).count("/admin/run/details/") == 50
    assert len(first.get_data()) < 300_000
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            for query in runs_queries:
                plan = " ".join(
                    str(row) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + query, _sqlite_params(query))
                )
                assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan


def _sqlite_params(query: str) -> tuple:
    """Placeholder values for EXPLAIN (the plan does not depend on them)."""
    return tuple([1] * query.count("?"))


def test_config_keys_inline_in_a_job_form_get_the_job_scope(app, admin_client):
    form = {
        "name": "with-config",
        "type": "scheduled",
        "enabled": "y",
        "module": "",
        "description": "",
        "config-0-key": "API_KEY",
        "config-0-value": "k-123",
        "config-0-secret": "y",
        "config-1-key": "bad key",
        "config-1-value": "x",
    }
    page = admin_client.post("/admin/job/new/", data=form).get_data(as_text=True)
    assert "is not a valid environment variable name" in page  # refused, nothing saved
    del form["config-1-key"], form["config-1-value"]
    assert admin_client.post("/admin/job/new/", data=form).status_code == 302
    from kirby.models import Job

    with app.extensions["kirby"].database.session() as s:
        job = s.scalar(select(Job).where(Job.name == "with-config"))
        [key] = job.config
        assert (key.scope, key.key, key.value, key.secret, key.context_id) == (
            ConfigScope.JOB,
            "API_KEY",
            "k-123",
            True,
            None,
        )
        job_id = job.id
    assert "k-123" not in admin_client.get(f"/admin/job/edit/?id={job_id}").get_data(as_text=True)


def test_users_are_created_with_a_hashed_password(app, admin_client):
    page = admin_client.post("/admin/user/new/", data={"username": "nopass", "role": "viewer", "active": "y"})
    assert "needs a password" in page.get_data(as_text=True)
    response = admin_client.post(
        "/admin/user/new/",
        data={"username": "carol", "role": "viewer", "active": "y", "new_password": "carol-password"},
    )
    assert response.status_code == 302
    from kirby.models import User

    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.username == "nopass")) == 0
        carol = s.scalar(select(User).where(User.username == "carol"))
        assert "carol-password" not in carol.password_hash and carol.role.value == "viewer"
    client = app.test_client()
    assert client.post("/login", data={"username": "carol", "password": "carol-password"}).status_code == 302


def test_a_celery_job_is_made_in_the_forms_and_bad_tasks_are_refused(app, admin_client):
    ids = seed(app)
    form = {"name": "nightly", "type": "scheduled", "enabled": "y", "module": "", "description": ""}
    for change, message in [
        ({"celery_task": "reports tasks"}, "is not a Celery task name"),
        ({"celery_task": "reports.tasks.nightly", "celery_args": "[1,"}, "the task&#39;s args is not JSON"),
        ({"celery_task": "reports.tasks.nightly", "celery_kwargs": "[1]"}, "must be a JSON object"),
        ({"celery_task": "reports.tasks.nightly", "celery_priority": "300"}, "Number must be between 0 and 255"),
    ]:
        page = admin_client.post("/admin/job/new/", data=form | change).get_data(as_text=True)
        assert message in page, change
    good = form | {"celery_task": "reports.tasks.nightly", "celery_args": "[1, 2]", "celery_kwargs": '{"a":1}'}
    assert admin_client.post("/admin/job/new/", data=good).status_code == 302
    with app.extensions["kirby"].database.session() as s:
        job = s.scalar(select(Job).where(Job.name == "nightly"))
        assert (job.celery_task, job.celery_args, job.celery_kwargs) == ("reports.tasks.nightly", "[1, 2]", '{"a": 1}')
    context = {"job": str(job.id), "environment": str(ids["environment_id"]), "enabled": "y"}
    assert (
        admin_client.post("/admin/context/new/", data=context | {"package_name": "", "package_version": ""}).status_code
        == 302
    )
    page = admin_client.post("/admin/context/new/", data=context | {"job": str(ids["job_id"])}).get_data(as_text=True)
    assert "is not a valid name" in page  # a script job's context still needs its package


def test_the_preview_of_a_celery_job_s_schedule_says_what_each_fire_sends(app, admin_client, viewer_client):
    seed(app)
    with app.extensions["kirby"].database.session() as s:
        schedule = s.scalar(select(Schedule))
        schedule_id = schedule.id
        page = admin_client.get(f"/admin/schedule/edit/?id={schedule_id}").get_data(as_text=True)
        assert "preview-sends" not in page  # a script's schedule
        schedule.context.job.celery_task = "reports.tasks.nightly"
    for client, view in ((admin_client, "edit"), (viewer_client, "details")):
        page = client.get(f"/admin/schedule/{view}/?id={schedule_id}").get_data(as_text=True)
        assert "Each fire sends the Celery task reports.tasks.nightly (task id = the run id)" in page
