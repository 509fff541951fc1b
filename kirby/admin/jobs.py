"""Jobs and contexts: enable/disable, config keys inline, package validation, run now."""

from __future__ import annotations

from flask import abort, flash, redirect, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape
from sqlalchemy import update
from wtforms.validators import NumberRange, Optional

from kirby.admin.base import KirbyModelView, is_admin
from kirby.admin.config import InlineConfig, config_summary
from kirby.admin.notifications import InlineNotifications
from kirby.admin.validators import (
    celery_args,
    celery_kwargs,
    celery_queue,
    celery_routing_key,
    celery_task,
    job_name,
    package_name,
    package_version,
    run_user,
    unless_celery,
)
from kirby.errors import KirbyError
from kirby.models import ConfigScope, Context, Job, JobType
from kirby.web.run_now import run_now


def run_now_button(context: Context) -> Markup:
    """A POST form (with its CSRF token) that runs ``context`` now; admins only."""
    if not is_admin() or context.job is None or context.job.type != JobType.SCHEDULED:
        return Markup("")
    label = f"Run now ({context.environment.name})" if context.environment else "Run now"
    return Markup(
        '<form method="post" action="{action}" class="d-inline">'
        '<input type="hidden" name="csrf_token" value="{token}">'
        '<button type="submit" class="btn btn-sm btn-outline-primary run-now">{label}</button></form>'
    ).format(action=url_for("context.run_now", context_id=context.id), token=generate_csrf(), label=label)


CELERY_COLUMNS = (
    "celery_task",
    "celery_args",
    "celery_kwargs",
    "celery_queue",
    "celery_routing_key",
    "celery_priority",
)


class JobView(KirbyModelView):
    column_list = ("name", "type", "enabled", "description", "contexts")
    column_searchable_list = ("name",)
    column_filters = ("type", "enabled")
    column_default_sort = "name"
    column_formatters = {
        "contexts": lambda v, c, m, n: Markup(" ").join(run_now_button(ctx) or escape(str(ctx)) for ctx in m.contexts),
        "config": lambda v, c, m, n: config_summary(m.config),
    }
    column_details_list = (
        "name",
        "type",
        "enabled",
        "module",
        "run_as",
        *CELERY_COLUMNS,
        "description",
        "contexts",
        "config",
    )
    form_columns = (
        "name",
        "type",
        "enabled",
        "module",
        "run_as",
        *CELERY_COLUMNS,
        "description",
        "config",
        "notifications",
    )
    column_labels = {
        "celery_task": "Celery task",
        "celery_args": "Task args (JSON list)",
        "celery_kwargs": "Task kwargs (JSON object)",
        "celery_queue": "Queue",
        "celery_routing_key": "Routing key",
        "celery_priority": "Priority",
    }
    form_args = {
        "name": {"validators": [job_name]},
        "celery_task": {
            "validators": [celery_task],
            "description": "A Celery task to send instead of running a package, e.g. reports.tasks.nightly"
            " (its contexts then have no package; see the README's Celery tasks).",
        },
        "celery_args": {"validators": [celery_args]},
        "celery_kwargs": {"validators": [celery_kwargs]},
        "celery_queue": {"validators": [celery_queue]},
        "celery_routing_key": {"validators": [celery_routing_key]},
        "celery_priority": {"validators": [NumberRange(0, 255), Optional()]},
        "run_as": {
            "label": "Run as",
            "validators": [run_user],
            "description": "Unprivileged user this job's scripts run as (empty: the supervisors' KIRBY_RUN_USER).",
        },
    }
    inline_models = (InlineConfig(ConfigScope.JOB), InlineNotifications())

    def _set_enabled(self, ids, enabled: bool) -> None:
        self.session.execute(update(Job).where(Job.id.in_([int(i) for i in ids])).values(enabled=enabled))
        self.session.commit()
        flash(f"{len(ids)} job(s) {'enabled' if enabled else 'disabled'}.", "success")

    @action("enable", "Enable", "Enable the selected jobs?")
    def action_enable(self, ids) -> None:
        self._set_enabled(ids, True)

    @action("disable", "Disable", "Disable the selected jobs? Their schedules stop and their daemons are stopped.")
    def action_disable(self, ids) -> None:
        self._set_enabled(ids, False)


class ContextView(KirbyModelView):
    column_list = ("job", "environment", "package_name", "package_version", "enabled", "run")
    column_labels = {"package_name": "Package", "package_version": "Version", "run": ""}
    column_filters = ("job.name", "environment.name", "enabled")
    column_searchable_list = ("package_name",)
    column_formatters = {
        "run": lambda v, c, m, n: run_now_button(m),
        "config": lambda v, c, m, n: config_summary(m.config),
    }
    column_details_list = ("job", "environment", "package_name", "package_version", "enabled", "config")
    form_columns = ("job", "environment", "package_name", "package_version", "enabled", "config")
    form_args = {
        "package_name": {"validators": [unless_celery(package_name)]},
        "package_version": {"validators": [unless_celery(package_version)]},
    }
    inline_models = (InlineConfig(ConfigScope.CONTEXT),)

    @expose("/run-now/<int:context_id>", methods=["POST"])
    def run_now(self, context_id: int):
        if not is_admin():
            abort(403)
        try:
            offer = run_now(self.state, context_id, self.state.clock.now())
        except KirbyError as exc:
            flash(f"Not run: {exc}", "error")
            return redirect(url_for(".index_view"))
        flash(f"Run {offer.run_id} offered to the supervisors.", "success")
        return redirect(url_for("logs.index", run=offer.run_id))
