"""Admin: a group's webhooks (URL validated, secret write-only), "Send test", the Notifications page."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import func, select
from test_web_support import admin_client, app, settings, viewer_client, web  # noqa: F401

from kirby.models import Notification, NotificationDelivery, NotificationGroup, NotificationWebhook

SECRET = "whsec-5d1f0c9a"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def group_form(**overrides) -> dict:
    form = {
        "name": "ops",
        "emails-0-email": "ops@example.com",
        "webhooks-0-url": "https://hooks.example.com/kirby",
        "webhooks-0-format": "slack",
        "webhooks-0-secret": SECRET,
    }
    form.update(overrides)
    return form


def webhooks(app) -> list[tuple[str, str, str]]:
    with app.extensions["kirby"].database.session() as s:
        return [(w.url, w.format, w.secret) for w in s.scalars(select(NotificationWebhook))]


def test_a_group_keeps_webhooks_whose_secret_never_reaches_a_browser(app, admin_client, viewer_client):
    response = admin_client.post("/admin/notificationgroup/new/", data=group_form())
    assert response.status_code == 302, response.get_data(as_text=True)
    assert webhooks(app) == [("https://hooks.example.com/kirby", "slack", SECRET)]
    with app.extensions["kirby"].database.session() as s:
        group_id = s.scalar(select(NotificationGroup.id))
        webhook_id = s.scalar(select(NotificationWebhook.id))
    pages = [
        admin_client.get("/admin/notificationgroup/").get_data(as_text=True),
        admin_client.get(f"/admin/notificationgroup/edit/?id={group_id}").get_data(as_text=True),
        viewer_client.get(f"/admin/notificationgroup/details/?id={group_id}").get_data(as_text=True),
    ]
    assert all(SECRET not in page for page in pages)
    assert "hooks.example.com/kirby (slack, signed ••••••••)" in pages[0]
    assert "leave blank to keep the stored one" in pages[1]
    # saved with the secret left blank: the stored secret stays
    edit = group_form(**{"webhooks-0-id": str(webhook_id), "webhooks-0-secret": "", "webhooks-0-format": "teams"})
    response = admin_client.post(f"/admin/notificationgroup/edit/?id={group_id}", data=edit)
    assert response.status_code == 302
    assert webhooks(app) == [("https://hooks.example.com/kirby", "teams", SECRET)]


def test_a_bad_webhook_url_is_refused_and_nothing_is_saved(app, admin_client):
    page = admin_client.post("/admin/notificationgroup/new/", data=group_form(**{"webhooks-0-url": "ftp://x"}))
    assert page.status_code == 200 and "is not a webhook URL" in page.get_data(as_text=True)
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(func.count()).select_from(NotificationGroup)) == 0


def test_send_test_queues_a_test_notification_for_admins_only(app, admin_client, viewer_client):
    admin_client.post("/admin/notificationgroup/new/", data=group_form())
    with app.extensions["kirby"].database.session() as s:
        group_id = s.scalar(select(NotificationGroup.id))
    assert viewer_client.post(f"/admin/notificationgroup/send-test/{group_id}").status_code == 403
    listing = viewer_client.get("/admin/notificationgroup/").get_data(as_text=True)
    assert "send-test" not in listing
    assert "send-test" in admin_client.get("/admin/notificationgroup/").get_data(as_text=True)
    response = admin_client.post(f"/admin/notificationgroup/send-test/{group_id}")
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/notification/")
    assert admin_client.post("/admin/notificationgroup/send-test/999").status_code == 404
    response = admin_client.post(
        "/admin/notificationgroup/action/", data={"action": "send_test", "rowid": [str(group_id)]}
    )
    assert response.status_code == 302
    with app.extensions["kirby"].database.session() as s:
        rows = s.scalars(select(Notification)).all()
        assert [(n.event, n.group_id, n.state) for n in rows] == [("test", group_id, "pending")] * 2


def test_the_notifications_page_lists_each_delivery_and_its_outcome_escaped(app, admin_client, viewer_client):
    with app.extensions["kirby"].database.session() as s:
        group = NotificationGroup(name="ops")
        row = Notification(
            key="nightly:prod:20260102T030405Z:failed:1",
            event="failed",
            run_id="nightly:prod:20260102T030405Z",
            group=group,
            job_name="nightly",
            environment="prod",
            state="pending",
            attempts=1,
            created_at=T0,
            next_attempt_at=T0,
            last_error="POST http://127.0.0.1:9/hook: ConnectionError",
        )
        row.deliveries = [
            NotificationDelivery(channel="email", target="ops@example.com", time=T0, ok=True),
            NotificationDelivery(
                channel="webhook", target="http://127.0.0.1:9/hook", time=T0, ok=False, error="<b>down</b>"
            ),
        ]
        s.add(row)
    with app.extensions["kirby"].database.session() as s:
        row_id = s.scalar(select(Notification.id))
    for client in (admin_client, viewer_client):
        page = client.get("/admin/notification/").get_data(as_text=True)
        assert '<span class="delivery text-success">email ops@example.com: ok</span> (03:04:05)' in page
        assert "webhook http://127.0.0.1:9/hook: failed</span> (03:04:05): &lt;b&gt;down&lt;/b&gt;" in page
        assert 'class="notification-state state-pending"' in page and "nightly:prod:20260102T030405Z" in page
        details = client.get(f"/admin/notification/details/?id={row_id}").get_data(as_text=True)
        assert "03:04:05 webhook http://127.0.0.1:9/hook: failed: &lt;b&gt;down&lt;/b&gt;" in details
    filtered = admin_client.get("/admin/notification/?flt0_0=sent").get_data(as_text=True)
    assert "ops@example.com: ok" not in filtered
    assert admin_client.get("/admin/notification/new/").status_code in (302, 403, 404)


def test_the_job_form_subscribes_a_job_to_a_group_with_its_events(app, admin_client):
    from kirby.models import Job, JobNotification

    admin_client.post("/admin/notificationgroup/new/", data=group_form())
    with app.extensions["kirby"].database.session() as s:
        group_id = s.scalar(select(NotificationGroup.id))
    form = {
        "name": "nightly",
        "type": "scheduled",
        "enabled": "y",
        "notifications-0-group": str(group_id),
        "notifications-0-on_failure": "y",
        "notifications-0-on_suspended": "y",
    }
    page = admin_client.get("/admin/job/new/").get_data(as_text=True)
    assert "on recovery" in page and "on daemon" in page
    response = admin_client.post("/admin/job/new/", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)
    with app.extensions["kirby"].database.session() as s:
        row = s.scalar(select(JobNotification).join(Job).where(Job.name == "nightly"))
        flags = (row.on_failure, row.on_missed, row.on_lost, row.on_recovery, row.on_daemon, row.on_suspended)
    assert (row.group_id, flags) == (group_id, (True, False, False, False, False, True))
