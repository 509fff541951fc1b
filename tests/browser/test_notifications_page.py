"""Notifications in Chromium against a real `kirby web` (its notifier thread delivering to a real
SMTP server and HTTP receiver on 127.0.0.1): an admin creates a group with an email and a signed
webhook (the secret is never shown again), presses "Send test", and the Notifications page shows
that delivery and those of a failed run, with their outcomes. Saves the README's screenshot."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import log_in, screenshot, start_kirby_web, stop
from sqlalchemy import select

from kirby.db import open_database
from kirby.models import Environment, Job, JobNotification, JobType, NotificationGroup
from kirby.recorder import record
from tests.notify_receivers import SmtpSink, WebhookReceiver, free_port
from tests.notify_scripts import finished_run, offer

pytestmark = pytest.mark.browser
SECRET = "browser-hook-secret-91ab"


@pytest.fixture(scope="module")
def receivers():
    smtp, receiver = SmtpSink().start(), WebhookReceiver().start()
    yield smtp, receiver
    smtp.stop()
    receiver.stop()


@pytest.fixture(scope="module")
def kirby_web(tmp_path_factory, receivers):
    smtp, _ = receivers
    web = start_kirby_web(
        tmp_path_factory.mktemp("kirby-notify"), KIRBY_SMTP_URL=smtp.url, KIRBY_PUBLIC_URL="https://kirby.example.com"
    )
    yield web
    stop(web.process)


def reload_until(page, selector: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not page.locator(selector).count():
        assert time.monotonic() < deadline, f"after {timeout} s: {selector} did not appear on {page.url}"
        page.wait_for_timeout(500)  # the page does not refresh itself: reload, bounded
        page.reload()


def test_send_test_and_the_notifications_page(page, kirby_web, receivers):
    smtp, receiver = receivers
    base = kirby_web.url
    log_in(page, kirby_web, "alice")
    page.goto(f"{base}/admin/notificationgroup/new/")
    page.fill("#name", "oncall")
    page.click("#emails-button")
    page.fill("#emails-0-email", "oncall@example.com")
    page.click("#webhooks-button")
    page.fill("#webhooks-0-url", receiver.url("/kirby"))
    page.select_option("#webhooks-0-format", "json", force=True)
    page.fill("#webhooks-0-secret", SECRET)
    page.click("#webhooks-button")  # a second webhook, whose receiver is down: its failures show
    page.fill("#webhooks-1-url", f"http://127.0.0.1:{free_port()}/down")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(re.compile(r".*/admin/notificationgroup/(\?.*)?$"))
    assert SECRET not in page.content() and "signed ••••••••" in page.inner_text("body")

    page.click("button.send-test")
    page.wait_for_url(re.compile(r".*/admin/notification/(\?.*)?$"))
    page.locator(".alert-success", has_text="Test notification queued").wait_for()
    reload_until(page, "text=email oncall@example.com: ok")
    assert smtp.mails[0].message["Subject"] == "[Kirby] Kirby test notification (oncall)"
    assert receiver.hooks[0].json["event"] == "test"

    # a failed run of a job notifying the group, recorded as the web's consumer would
    database = open_database(kirby_web.settings)
    with database.session() as s:
        group = s.scalar(select(NotificationGroup).where(NotificationGroup.name == "oncall"))
        job = Job(name="nightly", type=JobType.SCHEDULED)
        s.add_all([Environment(name="prod"), job, JobNotification(job=job, group=group)])
    run = offer(at=datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1))
    with database.session() as s:
        record(s, finished_run(run, lines=["about to fail", "kirby-example-fail: something went wrong"]))
    database.dispose()
    reload_until(page, f"a:has-text('{run.run_id}')")
    reload_until(page, "text=email oncall@example.com: ok >> nth=1")  # the failed run's email went too
    body = page.inner_text("body")  # the dead webhook keeps both pending, retried with backoff
    assert page.locator(".state-pending").count() == 2
    assert re.search(r"webhook http://127.0.0.1:\d+/down: failed \(\S+, \d+ attempts\): ConnectionError", body), body
    assert len([h for h in receiver.hooks if h.json["event"] == "failed"]) == 1
    assert page.csp_violations == []
    screenshot(page, "notifications", full_page=True)

    page.click(f"a:has-text('{run.run_id}')")  # the run link of the row
    page.wait_for_url(re.compile(r".*/admin/run/details/.*"))
    assert "kirby-example-fail: something went wrong" in page.inner_text("body")
