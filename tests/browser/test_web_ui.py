"""The web UI in Chromium against a real `kirby web`: log in, create a scheduled job (a bad cron
expression is refused with the reason, a good one shows the preview), live logs escaped, a viewer
cannot edit and sees no secret, log out. Saves the README's screenshots."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from conftest import log_in, screenshot

from kirby.bus import open_bus
from kirby.db import open_database
from kirby.events import RunEvent
from kirby.models import ConfigKey, ConfigScope, Environment, Ext, Job, Schedule

pytestmark = pytest.mark.browser
SECRET = "s3cr3t-value-never-shown"
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module", autouse=True)
def seeded(kirby_web):
    database = open_database(kirby_web.settings)
    with database.session() as s:
        s.add(Environment(name="prod", description="Production"))
        s.add(ConfigKey(scope=ConfigScope.GLOBAL, key="API_PASSWORD", value=SECRET, secret=True))
        s.add(ConfigKey(scope=ConfigScope.GLOBAL, key="API_URL", value="https://api.example.org", secret=False))
    database.dispose()


def test_admin_creates_a_scheduled_job_and_sees_the_preview(page, kirby_web):
    base = kirby_web.url
    page.goto(f"{base}/admin/job/")
    assert "/login" in page.url  # not logged in: sent to the login page
    screenshot(page, "login")
    log_in(page, kirby_web, "alice")
    screenshot(page, "home")

    page.goto(f"{base}/admin/job/new/")
    page.fill("#name", "nightly-report")
    page.select_option("#type", "scheduled", force=True)
    page.fill("#description", "Builds the nightly report")
    page.click("#config-button")  # a job-level config key, inline
    page.fill("#config-0-key", "REPORT_TOKEN")
    page.fill("#config-0-value", "job-secret-123")
    page.check("#config-0-secret")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/job/(\?.*)?$"))

    page.goto(f"{base}/admin/context/new/")
    page.select_option("#job", label="nightly-report", force=True)
    page.select_option("#environment", label="prod", force=True)
    page.fill("#package_name", "nightly report!")
    page.fill("#package_version", "1.0.0")
    page.click("input[type=submit][value='Save']")
    assert "is not a valid name: use letters" in page.inner_text("body")  # kirby.validation's rule
    page.fill("#package_name", "nightly-report")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/context/(\?.*)?$"))
    screenshot(page, "contexts")

    page.goto(f"{base}/admin/schedule/new/")
    page.select_option("#context", label="nightly-report:prod", force=True)
    page.fill("#name", "weekdays")
    page.fill("#cron", "61 9 * * mon-fri")
    page.fill("#timezone", "Europe/Paris")
    page.click("input[type=submit][value='Save']")
    assert "'61' is not a valid minute field" in page.inner_text("body")
    preview = page.locator("#schedule-preview")
    preview.locator(".preview-error").wait_for(state="visible")
    assert "minute" in preview.locator(".preview-error").inner_text()

    page.fill("#cron", "30 9 * * mon-fri")
    rows = preview.locator(".preview-table tbody tr")
    rows.nth(4).wait_for()
    assert rows.count() == 5
    first = rows.nth(0).locator("td")
    assert re.search(r" 09:30:00 CES?T$", first.nth(0).inner_text())
    assert re.search(r" 0[78]:30:00 UTC$", first.nth(1).inner_text())
    screenshot(page, "schedule-preview", full_page=True)
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/schedule/(\?.*)?$"))
    assert "30 9 * * mon-fri" in page.inner_text("body")
    screenshot(page, "schedules")

    database = open_database(kirby_web.settings)
    with database.session() as s:
        [schedule] = s.query(Schedule).all()
        assert (schedule.cron, schedule.timezone, schedule.context.job.name) == (
            "30 9 * * mon-fri",
            "Europe/Paris",
            "nightly-report",
        )
        [key] = s.query(Job).filter_by(name="nightly-report").one().config
        assert (key.scope, key.key, key.value, key.secret) == (ConfigScope.JOB, "REPORT_TOKEN", "job-secret-123", True)

    page.goto(f"{base}/admin/job/")
    assert "job-secret-123" not in page.content()
    screenshot(page, "jobs")
    page.check("input.action-checkbox")  # With selected -> Disable (Flask-Admin asks to confirm)
    page.click("text=With selected")
    page.click("a.dropdown-item:has-text('Disable')")
    page.wait_for_load_state()
    page.locator(".alert-success", has_text="disabled").wait_for()
    with database.session() as s:
        assert s.query(Job).filter_by(name="nightly-report").one().enabled is False
    page.goto(f"{base}/admin/ext/new/")
    page.fill("#name", "reports-topic")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/ext/(\?.*)?$"))
    page.click("form.icon button[title='Delete Record']")  # confirmed through the dialog
    page.locator(".alert-success", has_text="deleted").wait_for()
    with database.session() as s:
        assert s.query(Ext).count() == 0
    database.dispose()
    assert any("Disable" in d for d in page.dialogs) and page.csp_violations == []
    page.goto(f"{base}/admin/config/")
    assert SECRET not in page.content() and "https://api.example.org" in page.content()
    screenshot(page, "config")
    page.click("#logout")
    page.wait_for_url(re.compile(r".*/login$"))
    page.goto(f"{base}/admin/job/")
    assert "/login" in page.url


def test_live_logs_show_lines_as_text_and_resume(page, kirby_web):
    run_id = "nightly-report:prod:20260102T030405Z"
    now = datetime.now(timezone.utc)
    with open_bus(kirby_web.settings) as bus:
        bus.publish_event(RunEvent("claimed", run_id, now, "sup-a", {"job": "nightly-report", "environment": "prod"}))
        bus.publish_event(RunEvent("started", run_id, now, "sup-a"))
        bus.publish_event(RunEvent("log", run_id, now, "sup-a", {"seq": 1, "stream": "stdout", "text": "starting"}))
    log_in(page, kirby_web, "alice")
    page.goto(f"{kirby_web.url}/admin/logs/?run={run_id}")
    lines = page.locator("#log-lines .log-text")
    lines.first.wait_for()
    assert lines.first.inner_text().endswith(" starting")
    with open_bus(kirby_web.settings) as bus:  # new lines arrive while the page is open
        bus.publish_event(RunEvent("log", run_id, now, "sup-a", {"seq": 2, "stream": "stdout", "text": XSS}))
        bus.publish_event(RunEvent("log", run_id, now, "sup-a", {"seq": 3, "stream": "stderr", "text": "done"}))
        bus.publish_event(RunEvent("finished", run_id, now, "sup-a", {"state": "succeeded", "exit_code": 0}))
    page.locator("#log-status[data-state=succeeded]").wait_for()
    assert [t.split(" ", 1)[1] for t in lines.all_inner_texts()] == ["starting", XSS, "done"]
    assert page.locator("#log-lines script").count() == 0 and page.dialogs == [] and page.csp_violations == []
    screenshot(page, "logs")
    page.goto(f"{kirby_web.url}/admin/run/")
    assert run_id in page.content()
    screenshot(page, "runs")


def test_a_viewer_cannot_edit_and_sees_no_secret(page, kirby_web):
    base = kirby_web.url
    log_in(page, kirby_web, "victor")
    assert "victor (viewer)" in page.inner_text(".kirby-user")
    for path in ("/admin/job/", "/admin/context/", "/admin/schedule/", "/admin/config/", "/admin/run/"):
        page.goto(base + path)
        content = page.content()
        assert SECRET not in content, path
        assert page.locator("a[href*='/new/']").count() == 0, path
        assert page.locator("a[href*='/edit/']").count() == 0, path
        assert page.locator("button.run-now").count() == 0, path
    page.goto(f"{base}/admin/config/")
    assert "API_PASSWORD" in page.content() and "••••••••" in page.content()
    page.goto(f"{base}/admin/job/new/")
    assert page.url.endswith("/admin/job/")  # no create form for a viewer
    response = page.goto(f"{base}/admin/user/")
    assert response.status == 403
    page.goto(f"{base}/admin/job/")
    page.click("#logout")
    page.wait_for_url(re.compile(r".*/login$"))
