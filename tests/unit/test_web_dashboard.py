"""The job dashboard and the job page: what a user sees of each job's health, with bounded queries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import event
from test_web_support import admin_client, app, settings, viewer_client, web  # noqa: F401

from kirby.clock import FixedClock
from kirby.models import Context, Environment, Job, JobType, Run, RunState, Schedule, Suspension
from kirby.run_ids import slot_run_id
from kirby.web.dashboard import Filters, dashboard

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _runs(job: str, states: list[RunState], every: timedelta = timedelta(minutes=5)) -> list[Run]:
    runs = []
    for age, state in enumerate(reversed(states), start=1):
        instant = NOW - age * every
        run_id = slot_run_id(job, "prod", instant)
        runs.append(
            Run(
                id=run_id,
                slot_id=run_id,
                job_name=job,
                environment="prod",
                state=state,
                scheduled_at=instant,
                started_at=instant,
                finished_at=instant + timedelta(seconds=age),
            )
        )
    return runs


def populate(app, jobs: int = 3) -> None:
    state = app.extensions["kirby"]
    state.clock = FixedClock(NOW)
    with state.database.session() as s:
        prod = Environment(name="prod")
        for index in range(jobs):
            job = Job(name=f"job-{index:05d}", type=JobType.SCHEDULED)
            context = Context(job=job, environment=prod, package_name="pkg", package_version="1.0")
            s.add(Schedule(context=context, cron="*/5 * * * *", timezone="Europe/Paris"))
        s.flush()
        s.add_all(_runs("job-00000", [RunState.SUCCEEDED] * 40))
        s.add_all(_runs("job-00001", [RunState.SUCCEEDED] * 5 + [RunState.FAILED, RunState.FAILED]))
        paused = s.query(Job).filter_by(name="job-00002").one()
        if jobs > 2:
            paused.enabled = False
        s.commit()


def test_a_failing_job_shows_red_squares_and_the_next_fire_time(app, admin_client):
    populate(app)
    page = admin_client.get("/admin/").get_data(as_text=True)
    failing = page[page.index('data-job="job-00001"') : page.index('data-job="job-00002"')]
    assert 'class="table-danger"' in page[page.rindex("<tr", 0, page.index('data-job="job-00001"')) :][:80]
    assert failing.count("sq state-failed") == 2 and failing.count("sq state-succeeded") == 5
    assert "2026-03-01 13:05:00 CET" in failing and "2026-03-01 12:05:00 UTC" in failing  # next fire, zone and UTC
    assert "71 %" in failing  # 5 of 7 finished runs succeeded in the last 7 days
    healthy = page[page.index('data-job="job-00000"') : page.index('data-job="job-00001"')]
    assert healthy.count("sq state-") == 30  # the strip holds the last 30 runs


def test_filters_state_and_failing_only(app, admin_client):
    populate(app)
    with app.extensions["kirby"].database.session() as s:
        s.add(
            Suspension(
                job=s.query(Job).filter_by(name="job-00000").one(),
                starts_at=NOW - timedelta(hours=1),
                ends_at=NOW + timedelta(hours=1),
            )
        )
        s.commit()
        assert [r.job for r in dashboard(s, NOW, Filters(failing=True)).rows] == ["job-00001"]
        assert [(r.job, r.state) for r in dashboard(s, NOW).rows] == [
            ("job-00000", "suspended"),
            ("job-00001", "enabled"),
            ("job-00002", "paused"),
        ]
        assert [r.job for r in dashboard(s, NOW, Filters(state="paused")).rows] == ["job-00002"]
    page = admin_client.get("/admin/?failing=1&partial=1").get_data(as_text=True)
    assert "job-00001" in page and "job-00000" not in page and "<html" not in page  # just the rows, for the refresh


def test_a_page_of_10000_jobs_takes_a_bounded_number_of_queries(app, admin_client):
    populate(app, jobs=10_000)
    engine = app.extensions["kirby"].database.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        page = admin_client.get("/admin/?page=3")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert page.status_code == 200 and "job-00100" in page.get_data(as_text=True)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    # user, count, the page of contexts, their schedules/jobs/environments (selectin), the runs
    # strip (one UNION ALL), the 7-day counts, the environments list: independent of 10,000.
    assert len(reads) <= 10, reads


def test_the_job_page_shows_schedules_runs_and_the_audit_with_a_missed_slot(app, viewer_client):
    populate(app)
    page = viewer_client.get("/admin/jobpage/job-00001?since=2026-03-01T11:20:00Z&until=2026-03-01T11:59:00Z")
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text
    assert "*/5 * * * *" in text and "2026-03-01 13:05:00 CET" in text  # next fire times in the zone
    assert '<svg class="duration-chart"' in text
    # 11:25 ... 11:55 expected; the runs cover 11:25-11:55 except nothing is missing but the last
    # two failed: all ran. 11:20 is outside (since is exclusive).
    assert 'class="outcome-missed"' not in text and text.count('<td class="outcome-ran">') == 7


def test_the_job_page_refuses_bad_periods_and_unknown_jobs(app, viewer_client):
    populate(app)
    assert viewer_client.get("/admin/jobpage/nope").status_code == 404
    bad = viewer_client.get("/admin/jobpage/job-00001?since=yesterday")
    assert bad.status_code == 400 and "since=&#39;yesterday&#39; is not an ISO 8601 instant" in bad.get_data(
        as_text=True
    )
    assert viewer_client.get("/admin/?page=10000000000").status_code == 400
