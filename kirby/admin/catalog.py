"""Simple lists: environments, notification groups (with their emails), exts, suspensions."""

from __future__ import annotations

from flask_admin.model.form import InlineFormAdmin
from wtforms.validators import ValidationError

from kirby.admin.base import KirbyModelView
from kirby.admin.notifications import InlineWebhooks, SendTest, send_test_button, webhooks_summary
from kirby.admin.validators import email, environment_name
from kirby.models import NotificationEmail


class EnvironmentView(KirbyModelView):
    column_list = ("name", "description")
    column_searchable_list = ("name",)
    form_columns = ("name", "description")
    form_args = {"name": {"validators": [environment_name]}}


class ExtView(KirbyModelView):
    column_list = ("name",)
    column_searchable_list = ("name",)
    form_columns = ("name",)


class NotificationGroupView(SendTest, KirbyModelView):
    column_list = ("name", "emails", "webhooks", "test")
    column_labels = {"test": ""}
    column_formatters = {
        "emails": lambda v, c, m, n: ", ".join(e.email for e in m.emails),
        "webhooks": webhooks_summary,
        "test": lambda v, c, m, n: send_test_button(m),
    }
    column_details_list = ("name", "emails", "webhooks")
    form_columns = ("name", "emails", "webhooks")
    inline_models = (
        InlineFormAdmin(
            NotificationEmail,
            form_columns=("id", "email"),
            form_args={"email": {"validators": [email]}},
        ),
        InlineWebhooks(),
    )


def _window_ordered(form, field) -> None:
    if form.starts_at.data and field.data and field.data <= form.starts_at.data:
        raise ValidationError("the window must end after it starts")


class SuspensionView(KirbyModelView):
    column_list = ("job", "starts_at", "ends_at", "reason")
    column_labels = {"job": "Job (empty: every job)", "starts_at": "Starts (UTC)", "ends_at": "Ends (UTC)"}
    column_default_sort = ("starts_at", True)
    form_columns = ("job", "starts_at", "ends_at", "reason")
    form_args = {"ends_at": {"validators": [_window_ordered]}}

    def on_model_change(self, form, model, is_created) -> None:
        from datetime import timezone

        for name in ("starts_at", "ends_at"):  # the form's naive datetimes are UTC
            value = getattr(model, name)
            if value is not None and value.tzinfo is None:
                setattr(model, name, value.replace(tzinfo=timezone.utc))
