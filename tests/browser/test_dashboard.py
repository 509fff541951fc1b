"""The dashboard and the job page in Chromium against a real `kirby web`: a failing job shows red
squares and its next fire time, the rows refresh without a reload, and the audit of the job page
shows a slot missed on purpose as missed. Saves the README's screenshots."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import log_in, screenshot, start_kirby_web, stop
from playwright.sync_api import expect

from kirby.db import open_database
from kirby.events import Offer, RunEvent
from kirby.models import Context, Environment, Job, JobType, Schedule
from kirby.recorder import offer_event, record
from kirby.run_ids import slot_run_id

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def dashboard_web(tmp_path_factory):
    web = start_kirby_web(tmp_path_factory.mktemp("kirby-dashboard"))
    yield web
    stop(web.process)


def _minute(now: datetime, minutes_ago: int) -> datetime:
    return now.replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)


def _run_events(job: str, instant: datetime, state: str) -> list[RunEvent]:
    run_id = slot_run_id(job, "prod", instant)
    offer = Offer(run_id, run_id, job, "prod", "pkg", "1.0", instant, epoch=1, offered_at=instant)
    started = instant + timedelta(milliseconds=400)
    return [
        offer_event("claimed", offer, started, "sup-a"),
        RunEvent("started", run_id, started, "sup-a"),
        RunEvent("finished", run_id, started + timedelta(seconds=1.5), "sup-a", {"state": state, "exit_code": 1}),
    ]


def _record(web, events: list[RunEvent]) -> None:
    database = open_database(web.settings)
    with database.session() as s:
        record(s, events)
        s.commit()
    database.dispose()


def test_dashboard_and_audit(page, dashboard_web):
    now = datetime.now(timezone.utc)
    database = open_database(dashboard_web.settings)
    with database.session() as s:
        prod = Environment(name="prod")
        for name, cron in (("nightly-export", "0 2 * * *"), ("minutely-sync", "* * * * *")):
            context = Context(
                job=Job(name=name, type=JobType.SCHEDULED), environment=prod, package_name="pkg", package_version="1.0"
            )
            s.add(Schedule(context=context, cron=cron, timezone="Europe/Paris", misfire_grace_seconds=60))
    database.dispose()
    events = []
    for minutes_ago in range(12, 2, -1):
        events += _run_events(
            "nightly-export", _minute(now, minutes_ago), "failed" if minutes_ago <= 4 else "succeeded"
        )
        if minutes_ago != 7:  # the 7-minutes-ago slot of minutely-sync never ran: missed
            events += _run_events("minutely-sync", _minute(now, minutes_ago), "succeeded")
    _record(dashboard_web, events)

    log_in(page, dashboard_web, "victor")
    row = page.locator('tr[data-job="nightly-export"]')
    assert row.locator(".sq.state-failed").count() == 2 and row.locator(".sq.state-succeeded").count() == 8
    assert "table-danger" in (row.get_attribute("class") or "")
    assert "02:00:00 CE" in row.locator(".next-fire").inner_text()  # next 02:00 Paris time (CET or CEST)
    screenshot(page, "dashboard")

    _record(dashboard_web, _run_events("nightly-export", _minute(now, 2), "failed"))  # arrives while the page is open
    expect(row.locator(".sq.state-failed")).to_have_count(3, timeout=40_000)  # the next refresh (15 s)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # refreshed in place, no reload

    page.click('tr[data-job="minutely-sync"] a')
    since, until = _minute(now, 13), _minute(now, 3)
    page.fill("#since", since.isoformat())
    page.fill("#until", until.isoformat())
    page.click("#audit-period button")
    missed = page.locator("#audit tr.outcome-missed")
    assert missed.count() == 1 and _minute(now, 7).strftime("%H:%M:00") in missed.inner_text()
    assert page.locator("#audit tr.outcome-ran").count() == 9
    assert "slots missed or run twice" in page.locator("#audit-summary").inner_text()
    screenshot(page, "job-audit", full_page=True)
