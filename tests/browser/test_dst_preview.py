"""The schedule form's preview shows the zone's next DST transition and the slots around it, marked
by the DST policy, live while the policy is changed (Chromium against a real `kirby web`). Saves the
README's "Time zones and DST" screenshot."""

from __future__ import annotations

import re

import pytest
from conftest import log_in, screenshot

from kirby.db import open_database
from kirby.models import Context, Environment, Job, JobType, Schedule

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def seeded(kirby_web):
    database = open_database(kirby_web.settings)
    with database.session() as s:
        job = Job(name="meter-reader", type=JobType.SCHEDULED)
        s.add(
            Context(job=job, environment=Environment(name="prod"), package_name="meter-reader", package_version="1.0")
        )
    database.dispose()


def test_the_preview_marks_the_slots_around_the_next_transition(page, kirby_web):
    log_in(page, kirby_web, "alice")
    page.goto(f"{kirby_web.url}/admin/schedule/new/")
    page.select_option("#context", label="meter-reader:prod", force=True)
    page.fill("#name", "every quarter hour")
    page.fill("#timezone", "Europe/Paris")
    page.fill("#cron", "*/15 * * * *")
    preview = page.locator("#schedule-preview")
    rows = preview.locator(".transition-table tbody tr")
    rows.nth(4).wait_for()
    kind = preview.locator(".transition-kind").inner_text()
    assert kind in ("fall back", "spring forward")
    marks = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())]
    expected = "doubled" if kind == "fall back" else "skipped"
    assert marks.count(expected) == (8 if kind == "fall back" else 4), marks
    assert "dst_fall_back both, dst_spring_forward skip" in preview.locator(".transition-policy").inner_text()

    # Changing the policy refreshes the preview: shift (spring) or first (fall back).
    if kind == "fall back":
        page.select_option("#dst_fall_back", "first", force=True)
        changed = "first pass only"
    else:
        page.select_option("#dst_spring_forward", "shift", force=True)
        changed = "shifted"
    preview.locator(".transition-table td", has_text=changed).first.wait_for()
    assert re.search(
        r"dst_(fall_back|spring_forward) (first|shift)", preview.locator(".transition-policy").inner_text()
    )
    page.select_option("#dst_fall_back", "auto", force=True)
    page.select_option("#dst_spring_forward", "auto", force=True)
    preview.locator(".transition-table td", has_text=expected).first.wait_for()
    screenshot(page, "schedule-dst-preview", full_page=True)

    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/schedule/(\?.*)?$"))
    database = open_database(kirby_web.settings)
    with database.session() as s:
        [schedule] = s.query(Schedule).all()
        assert (schedule.dst_fall_back.value, schedule.dst_spring_forward.value) == ("auto", "auto")
    database.dispose()
