"""Delivering the notifications outbox (kirby.notify.notifier) to a real SMTP server (aiosmtpd on
127.0.0.1) and a real HTTP receiver: every event type, both channels, HMAC signatures, retries
after the receiver was down, deduplication, cooldown and digest, masking (SQLite and PostgreSQL).

``Notifier.step(now)`` is driven directly with ``now`` (no sleeping); the channels are real TCP."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from kirby.events import RunEvent
from kirby.models import Notification, NotificationDelivery, Run
from kirby.notify.events import CRASH_LOOP_RESTARTS
from kirby.notify.notifier import Notifier
from kirby.notify.outbox import enqueue_test
from kirby.notify.webhook import SIGNATURE_HEADER, verify
from kirby.recorder import mark_lost, record
from tests.notify_receivers import SmtpSink, WebhookReceiver
from tests.notify_scripts import T0, add_job, finished_run, offer, skipped

PUBLIC = "https://kirby.example.com"
SECRET = "hook-secret-7f3a"
NOW = T0 + timedelta(hours=1)


@pytest.fixture
def smtp():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.stop()


@pytest.fixture
def notifier(db, make_settings, smtp):
    def build(**variables) -> Notifier:
        settings = make_settings(
            KIRBY_SMTP_URL=smtp.url, KIRBY_PUBLIC_URL=PUBLIC, KIRBY_MAIL_FROM="kirby@example.com", **variables
        )
        return Notifier(settings, db, tries=2, wait=0.01)

    return build


def states(db) -> list[tuple[str, str]]:
    with db.session() as s:
        return [(n.event, n.state) for n in s.scalars(select(Notification).order_by(Notification.id))]


def test_every_event_type_reaches_email_and_a_signed_webhook(db, notifier, smtp, receiver):
    receiver.start()
    hook = ((receiver.url(), "json", SECRET),)
    everything = ("failure", "missed", "lost", "recovery", "daemon", "suspended")
    with db.session() as s:
        add_job(s, "nightly", webhooks=hook, notify_on=everything)
        add_job(s, "slow", notify_on=everything)
        add_job(s, "feeder", daemon=True, notify_on=everything)
    failed, recovered, timed_out = offer(), offer(at=T0 + timedelta(minutes=10)), offer("slow")
    lost, missed, suspended = (
        offer("slow", at=T0 + timedelta(minutes=20)),
        offer(at=T0 - timedelta(days=1)),
        offer(at=T0 - timedelta(days=2)),
    )
    daemon_runs = [offer("feeder", at=T0 + timedelta(minutes=m), trigger="daemon") for m in range(CRASH_LOOP_RESTARTS)]
    with db.session() as s:
        record(s, finished_run(failed, lines=[f"line {i}" for i in range(25)], seconds=4.5))
        record(s, finished_run(recovered, "succeeded", 0))
        record(s, finished_run(timed_out, "timed_out", None))
        record(s, finished_run(lost)[:3])
        mark_lost(s, s.get(Run, lost.run_id), T0 + timedelta(minutes=25), "supervisor sup-a is gone")
        record(s, skipped(missed, "missed by more than its misfire grace (300s); catch-up policy skip"))
        record(s, skipped(suspended, "suspended until 2026-03-03T00:00:00+00:00: maintenance"))
        for run in daemon_runs:
            record(s, finished_run(run, "failed"))
    assert notifier().step(NOW) == 7
    expected = {"failed", "recovered", "timed_out", "lost", "missed", "suspended", "crash_loop"}
    assert {e for e, state in states(db) if state == "sent"} == expected, states(db)
    assert len(smtp.mails) == 7 and {m.recipients[0] for m in smtp.mails} == {"ops@example.com"}
    subjects = {m.message["Subject"] for m in smtp.mails}
    assert "[Kirby] nightly in prod failed" in subjects and "[Kirby] feeder in prod is crash-looping" in subjects
    bodies = {h.json["event"]: h for h in receiver.hooks}  # the three jobs notify one group
    assert set(bodies) == expected and len(receiver.hooks) == 7
    failure = bodies["failed"]
    for hook_ in receiver.hooks:  # signed with the webhook's secret, checked independently too
        own = "sha256=" + hmac.new(SECRET.encode(), hook_.raw, hashlib.sha256).hexdigest()
        assert hook_.headers[SIGNATURE_HEADER] == own and verify(SECRET, hook_.raw, own)
        assert not verify("another-secret", hook_.raw, hook_.headers[SIGNATURE_HEADER])
    body = failure.json
    assert body["job"] == "nightly" and body["environment"] == "prod" and body["run_id"] == failed.run_id
    assert (body["state"], body["exit_code"], body["duration_seconds"], body["supervisor"]) == (
        "failed",
        1,
        4.4,
        "sup-a",
    )
    assert body["log_tail"] == [f"line {i}" for i in range(5, 25)]  # the last 20
    assert body["run_url"].startswith(f"{PUBLIC}/admin/run/details/?id=nightly%3Aprod%3A")
    assert body["logs_url"].startswith(f"{PUBLIC}/admin/logs/?run=nightly%3Aprod%3A")
    assert failure.headers["X-Kirby-Key"] == body["key"]
    mail = next(m for m in smtp.mails if m.message["Subject"] == "[Kirby] nightly in prod failed")
    text = mail.body
    for fact in (
        "Job: nightly",
        "Environment: prod",
        f"Run: {failed.run_id}",
        "Exit code: 1",
        "Duration: 4.4 s",
        "Supervisor: sup-a",
        "  line 24",
        f"Logs: {PUBLIC}/admin/logs/?run=",
    ):
        assert fact in text, (fact, text)
    assert "line 4\n" not in text
    assert mail.sender == "kirby@example.com"
    with db.session() as s:  # each attempt is recorded: one successful delivery per target
        deliveries = s.scalars(select(NotificationDelivery)).all()
        assert len(deliveries) == 7 + 7 and all(d.ok for d in deliveries)


def test_a_webhook_down_is_retried_with_backoff_until_it_answers(db, notifier, smtp, receiver):
    with db.session() as s:
        add_job(s, webhooks=((receiver.url(), "json", ""),))
    with db.session() as s:
        record(s, finished_run(offer()))
    deliver = notifier()
    assert deliver.step(NOW) == 1  # the email goes, the webhook refuses connections
    assert states(db) == [("failed", "pending")] and len(smtp.mails) == 1
    with db.session() as s:
        row = s.scalar(select(Notification))
        assert row.attempts == 1 and row.next_attempt_at == NOW + timedelta(seconds=10)
        assert "ConnectionError" in row.last_error
        attempts = [(d.channel, d.ok) for d in row.deliveries]
        assert attempts == [("email", True), ("webhook", False), ("webhook", False)]  # tries=2 in place
    assert deliver.step(NOW + timedelta(seconds=5)) == 0  # not due yet
    receiver.status = 503  # up, but failing: still transient
    receiver.start()
    assert deliver.step(NOW + timedelta(seconds=10)) == 1 and states(db) == [("failed", "pending")]
    receiver.status = 200
    assert deliver.step(NOW + timedelta(seconds=30)) == 1
    assert states(db) == [("failed", "sent")]
    assert len(receiver.hooks) == 1 and len(smtp.mails) == 1  # the email was not sent again


def test_redelivered_events_and_a_second_notifier_send_nothing_twice(db, notifier, smtp, receiver):
    receiver.start()
    with db.session() as s:
        add_job(s, webhooks=((receiver.url(), "json", ""),))
    events = finished_run(offer())
    with db.session() as s:
        record(s, events)
    first, second = notifier(), notifier()
    assert first.step(NOW) == 1
    with db.session() as s:
        record(s, events)  # the bus redelivers the whole batch
        record(s, [RunEvent("lost", offer().run_id, NOW)])  # and a late presumption changes nothing
    assert second.step(NOW + timedelta(minutes=1)) == 0 and first.step(NOW + timedelta(hours=1)) == 0
    assert len(smtp.mails) == 1 and len(receiver.hooks) == 1
    assert receiver.hooks[0].json["key"] == f"{offer().run_id}:failed:1"


def test_a_flood_sends_one_notification_per_cooldown_then_one_digest(db, notifier, smtp, receiver):
    receiver.start()
    with db.session() as s:
        add_job(s, webhooks=((receiver.url(), "json", ""),))
    runs = [offer(at=T0 + timedelta(minutes=m)) for m in range(6)]
    with db.session() as s:
        for run in runs:
            record(s, finished_run(run))
    deliver = notifier(KIRBY_NOTIFY_COOLDOWN="600")
    deliver.step(NOW)
    assert [state for _, state in states(db)] == ["sent"] + ["held"] * 5
    assert deliver.step(NOW + timedelta(seconds=599)) == 0 and len(receiver.hooks) == 1
    deliver.step(NOW + timedelta(seconds=601))
    assert [state for _, state in states(db)] == ["sent"] + ["digested"] * 4 + ["sent"]
    assert len(receiver.hooks) == 2 and len(smtp.mails) == 2
    digest = receiver.hooks[1].json
    assert digest["digest_count"] == 5 and digest["digest_run_ids"] == [r.run_id for r in runs[1:]]
    assert smtp.mails[1].message["Subject"] == "[Kirby] nightly in prod failed (+4 more)"
    # another event of the same job is not held by the failures' cooldown
    with db.session() as s:
        record(s, finished_run(offer(at=T0 + timedelta(minutes=30)), "succeeded", 0))
    assert deliver.step(NOW + timedelta(seconds=602)) == 1 and receiver.hooks[-1].json["event"] == "recovered"


def test_secrets_never_leave_in_a_notification(db, notifier, smtp, receiver):
    receiver.start()
    with db.session() as s:
        add_job(s, webhooks=((receiver.url(), "slack", SECRET),), secrets={"API_TOKEN": "tok-93b1e7"})
    lines = ["token is ***", "a line printed before the key became secret: tok-93b1e7"]
    with db.session() as s:
        record(s, finished_run(offer(), lines=lines))
    notifier().step(NOW)
    text = smtp.mails[0].body + receiver.hooks[0].raw.decode()
    assert "tok-93b1e7" not in text and SECRET not in text
    assert "a line printed before the key became secret: ***" in smtp.mails[0].body


def test_slack_and_teams_formats(db, notifier, smtp, receiver):
    receiver.start()
    hooks = ((receiver.url("/slack"), "slack", ""), (receiver.url("/teams"), "teams", ""))
    with db.session() as s:
        add_job(s, webhooks=hooks)
    with db.session() as s:
        record(s, finished_run(offer()))
    notifier().step(NOW)
    by_path = {h.path: h.json for h in receiver.hooks}
    assert set(by_path["/slack"]) == {"text"} and "nightly in prod failed" in by_path["/slack"]["text"]
    teams = by_path["/teams"]
    assert teams["@type"] == "MessageCard" and teams["title"] == "[Kirby] nightly in prod failed"
    assert teams["potentialAction"][0]["targets"][0]["uri"].startswith(f"{PUBLIC}/admin/run/details/")


def test_permanent_errors_are_not_retried(db, make_settings, receiver, smtp):
    """HTTP 4xx, an SMTP login refused, no SMTP configured: recorded once, the row ends failed."""
    receiver.status = 404
    receiver.start()
    with db.session() as s:
        add_job(s, webhooks=((receiver.url(), "json", ""),))
    with db.session() as s:
        record(s, finished_run(offer()))
    guarded = SmtpSink(login=("kirby", "right-password")).start()
    try:
        settings = make_settings(KIRBY_SMTP_URL=f"smtp://kirby:wrong@127.0.0.1:{guarded.port}")
        Notifier(settings, db, tries=3, wait=0.01).step(NOW)
    finally:
        guarded.stop()
    assert states(db) == [("failed", "failed")] and set(guarded.logins) == {"kirby"} and not guarded.mails
    with db.session() as s:
        errors = sorted(d.error for d in s.scalars(select(NotificationDelivery)))
    assert len(errors) == 2, errors  # one attempt per target: tries=3 did not retry them
    assert "HTTP 404" in errors[0] and "refused the user and password" in errors[1]
    assert "wrong" not in " ".join(errors)


def test_smtp_login_and_send_test(db, make_settings, receiver):
    receiver.start()
    guarded = SmtpSink(login=("kirby", "p@ss word")).start()
    try:
        with db.session() as s:
            group = add_job(s, webhooks=((receiver.url(), "json", SECRET),)).notifications[0].group
            enqueue_test(s, group, NOW)
        settings = make_settings(KIRBY_SMTP_URL=f"smtp://kirby:p%40ss%20word@127.0.0.1:{guarded.port}")
        assert Notifier(settings, db, tries=1).step(NOW) == 1
    finally:
        guarded.stop()
    assert states(db) == [("test", "sent")]
    assert guarded.mails[0].message["Subject"] == "[Kirby] Kirby test notification (ops)"
    assert receiver.hooks[0].json["event"] == "test" and verify(
        SECRET, receiver.hooks[0].raw, receiver.hooks[0].headers[SIGNATURE_HEADER]
    )
    assert json.loads(receiver.hooks[0].raw)["group"] == "ops"
