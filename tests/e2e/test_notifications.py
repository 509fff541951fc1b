"""Done-when of notifications: a failing script, run by a real `kirby web` and `kirby supervisor`,
sends one email to a real SMTP server (aiosmtpd on 127.0.0.1) and one webhook to a real HTTP
receiver within seconds of its failure, once; both arrive through the durable outbox."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from kirby.models import Job, JobNotification, Notification, NotificationEmail, NotificationGroup, NotificationWebhook
from kirby.notify.webhook import SIGNATURE_HEADER, verify
from tests.helpers import wait_for
from tests.notify_receivers import SmtpSink, WebhookReceiver

SECRET = "e2e-hook-secret"


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["embedded"], indirect=True)
def test_a_failing_script_sends_one_email_and_one_webhook_within_seconds(cluster):
    smtp, receiver = SmtpSink().start(), WebhookReceiver().start()
    try:
        cluster.env.update(KIRBY_SMTP_URL=smtp.url, KIRBY_PUBLIC_URL="http://kirby.test", KIRBY_NOTIFY_COOLDOWN="600")
        cluster.start_web()
        cluster.start_supervisor("s1")
        cluster.wait_leader()
        # one slot, 10 s from now (daily at that second), added while the leader runs: it fails
        due = (datetime.now(timezone.utc) + timedelta(seconds=10)).replace(microsecond=0)
        cluster.add_job("breaks", "kirby-example-fail", cron=f"{due.minute} {due.hour} * * * {due.second}")
        with cluster.database.session() as s:
            group = NotificationGroup(name="oncall")
            group.emails = [NotificationEmail(email="oncall@example.com")]
            group.webhooks = [NotificationWebhook(url=receiver.url("/kirby"), format="json", secret=SECRET)]
            job = s.scalar(select(Job).where(Job.name == "breaks"))
            s.add(JobNotification(job=job, group=group))
        run = wait_for(
            lambda: next((r for r in cluster.runs("breaks") if r.state.value == "failed"), None),
            120,
            f"the failing run was not recorded failed; see {cluster.workdir}/*.log",
        )
        wait_for(lambda: smtp.mails and receiver.hooks, 30, f"no email or webhook; see {cluster.workdir}/web.log")
        received = time.time()
        assert received - run.finished_at.timestamp() < 10, "the notification took more than 10 s"
        # once: the outbox row is sent, and stopping everything (which flushes the supervisor's
        # events and the web's consumer) sends nothing more
        wait_for(lambda: notification_states(cluster) == ["sent"], 30, "the notification was not marked sent")
        cluster.stop("s1")
        cluster.stop("web")
        assert len(smtp.mails) == 1 and len(receiver.hooks) == 1
        mail, hook = smtp.mails[0], receiver.hooks[0]
        assert mail.recipients == ["oncall@example.com"] and mail.message["Subject"] == "[Kirby] breaks in e2e failed"
        assert "kirby-example-fail: something went wrong" in mail.body and "Exit code: 1" in mail.body
        assert "Logs: http://kirby.test/admin/logs/?run=" in mail.body
        assert verify(SECRET, hook.raw, hook.headers[SIGNATURE_HEADER])
        assert (hook.json["run_id"], hook.json["exit_code"], hook.json["supervisor"]) == (run.id, 1, "s1")
        assert "about to fail" in hook.json["log_tail"]
    finally:
        smtp.stop()
        receiver.stop()


def notification_states(cluster) -> list[str]:
    with cluster.database.session() as s:
        return list(s.scalars(select(Notification.state)))
