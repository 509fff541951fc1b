"""Notification pieces of the admin: webhooks inline in a group (secret masked), "Send test", the
groups a job notifies (inline in the job form), and the Notifications page (every outbox row, its deliveries and their outcome; read-only).

A webhook's secret is never sent to a browser, like a secret config value: lists show a mask, the
edit form starts empty ("leave blank to keep"), a blank value on save keeps the stored secret.
"""

from __future__ import annotations

from flask import abort, flash, redirect, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import FilterEqual
from flask_admin.form import BaseForm
from flask_admin.model.form import InlineFormAdmin
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape
from sqlalchemy import select
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice

from kirby.admin.base import KirbyModelView, is_admin
from kirby.admin.config import MASK
from kirby.admin.validators import webhook_url
from kirby.models import JobNotification, Notification, NotificationGroup, NotificationWebhook
from kirby.notify.events import FLAGS
from kirby.notify.outbox import enqueue_test

KEEP_HINT = "Secret: leave blank to keep the stored one."
FORMAT_CHOICES = [
    SelectChoice("json", "Kirby JSON"),
    SelectChoice("slack", "Slack"),
    SelectChoice("teams", "Microsoft Teams"),
]
STATES = ("pending", "sent", "failed", "held", "digested")
EVENTS = ("failed", "timed_out", "lost", "missed", "suspended", "crash_loop", "recovered", "test")


class WebhookSecretField(StringField):
    """Keeps the stored secret when submitted blank."""

    def populate_obj(self, obj, name) -> None:
        if not self.data and getattr(obj, "id", None) is not None:
            return
        setattr(obj, name, self.data or "")


class WebhookForm(BaseForm):
    def process(self, formdata=None, obj=None, data=None, extra_filters=None, **kwargs):
        super().process(formdata, obj, data=data, extra_filters=extra_filters, **kwargs)
        if obj is not None and getattr(obj, "secret", "") and "secret" in self._fields:
            if not formdata:
                self.secret.data = ""
            self.secret.render_kw = {"placeholder": KEEP_HINT}


class InlineWebhooks(InlineFormAdmin):
    form_base_class = WebhookForm
    form_columns = ("id", "url", "format", "secret")
    form_args = {"url": {"validators": [webhook_url], "label": "URL"}}

    def __init__(self):
        super().__init__(NotificationWebhook)

    def postprocess_form(self, form_class):
        form_class.format = SelectField("Format", choices=FORMAT_CHOICES, default="json")
        form_class.secret = WebhookSecretField("HMAC secret", description="Signs X-Kirby-Signature-256; optional.")
        return form_class


class InlineNotifications(InlineFormAdmin):
    """The groups a job notifies, and on which events (``notify_on``; kirby.notify.events), in the job form."""

    form_columns = ("id", "group", *FLAGS.values())
    form_label = "Notifications"
    form_args = {flag: {"label": f"on {name}"} for name, flag in FLAGS.items()}

    def __init__(self):
        super().__init__(JobNotification)


def webhooks_summary(view, context, model, name) -> Markup:
    lines = [f"{w.url} ({w.format}{', signed ' + MASK if w.secret else ''})" for w in model.webhooks]
    return Markup("<br>").join(escape(line) for line in lines)


def send_test_button(group: NotificationGroup) -> Markup:
    if not is_admin():
        return Markup("")
    return Markup(
        '<form method="post" action="{action}" class="d-inline">'
        '<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit" class="btn btn-sm btn-outline-primary send-test">Send test</button></form>'
    ).format(action=url_for("notificationgroup.send_test", group_id=group.id), token=generate_csrf())


class SendTest:
    """The "Send test" button (per group) and bulk action of the notification groups view."""

    def _send_tests(self, ids) -> int:
        groups = list(self.session.scalars(select(NotificationGroup).where(NotificationGroup.id.in_(ids))))
        for group in groups:
            enqueue_test(self.session, group, self.state.clock.now())
        self.session.commit()
        return len(groups)

    @action("send_test", "Send test", "Send a test notification to the selected groups?")
    def action_send_test(self, ids) -> None:
        count = self._send_tests([int(i) for i in ids])
        flash(f"Test notification queued for {count} group(s); see Notifications.", "success")

    @expose("/send-test/<int:group_id>", methods=["POST"])
    def send_test(self, group_id: int):
        if not is_admin():
            abort(403)
        if not self._send_tests([group_id]):
            abort(404)
        flash("Test notification queued; its delivery shows below.", "success")
        return redirect(url_for("notification.index_view"))


def _deliveries(view, context, model, name) -> Markup:
    """Every attempt, one per line (details page)."""
    lines = [
        f"{d.time:%H:%M:%S} {d.channel} {d.target}: " + ("ok" if d.ok else f"failed: {d.error}")
        for d in model.deliveries
    ]
    return Markup("<br>").join(escape(line) for line in lines)


def _delivery_summary(view, context, model, name) -> Markup:
    """One line per target: its latest outcome, how many attempts, the last error (list page)."""
    by_target: dict[str, list] = {}
    for delivery in model.deliveries:
        by_target.setdefault(delivery.target, []).append(delivery)
    lines = []
    for target, attempts in by_target.items():
        last = attempts[-1]
        ok = any(d.ok for d in attempts)
        tries = f", {len(attempts)} attempts" if len(attempts) > 1 else ""
        error = "" if ok else ": " + last.error.removeprefix(f"POST {target}: ")
        lines.append(
            Markup('<span class="delivery {cls}">{channel} {target}: {outcome}</span> ({time}{tries}){error}').format(
                cls="text-success" if ok else "text-danger",
                channel=last.channel,
                target=target,
                outcome="ok" if ok else "failed",
                time=f"{last.time:%H:%M:%S}",
                tries=tries,
                error=error,
            )
        )
    return Markup("<br>").join(lines)


def _run_link(view, context, model, name) -> Markup:
    if not model.run_id:
        return Markup("")
    return Markup('<a href="{}">{}</a>').format(url_for("run.details_view", id=model.run_id), model.run_id)


def _state(view, context, model, name) -> Markup:
    extra = f" ({model.digest_count} in digest)" if model.digest_count > 1 else ""
    return Markup('<span class="notification-state state-{0}">{0}</span>{1}').format(model.state, extra)


class NotificationView(KirbyModelView):
    """Every notification and each delivery attempt, newest first; written by Kirby only."""

    can_create = False
    can_edit = False
    can_delete = False
    simple_list_pager = True
    column_list = (
        "created_at",
        "event",
        "job_name",
        "environment",
        "group",
        "run_id",
        "state",
        "attempts",
        "deliveries",
    )
    column_details_list = column_list + ("detail", "sent_at", "next_attempt_at", "last_error", "key")
    column_labels = {"created_at": "Created (UTC)", "job_name": "Job", "run_id": "Run", "sent_at": "Sent (UTC)"}
    column_formatters = {"deliveries": _delivery_summary, "run_id": _run_link, "state": _state}
    column_formatters_detail = {**column_formatters, "deliveries": _deliveries}
    column_sortable_list = ("created_at",)
    column_default_sort = ("created_at", True)
    column_filters = (
        FilterEqual(Notification.state, "State", options=[(s, s) for s in STATES]),
        FilterEqual(Notification.event, "Event", options=[(e, e) for e in EVENTS]),
        FilterEqual(Notification.job_name, "Job"),
    )

    def __init__(self, session, **kwargs):
        super().__init__(Notification, session, name="Notifications", endpoint="notification", **kwargs)
