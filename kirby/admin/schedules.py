"""Schedules: cron and time zone validated on save (refused with the reason, nothing saved), and a
preview of the next five fire times in the schedule's zone and in UTC (live while typing)."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import jsonify, request
from flask_admin import expose
from wtforms.validators import NumberRange

from kirby import cron
from kirby.admin.base import KirbyModelView
from kirby.admin.validators import cron_expression, time_zone
from kirby.errors import CronError

PREVIEW_COUNT = 5


def preview(expression: str, tz: str, now: datetime, count: int = PREVIEW_COUNT) -> list[dict[str, str]]:
    """The next ``count`` fires after ``now``: ``{"zone": local time, "utc": UTC time}``; CronError if invalid."""
    expression = cron.validate(expression)
    zone = cron.zone(tz)
    return [
        {"zone": f"{fire.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}", "utc": f"{fire:%Y-%m-%d %H:%M:%S} UTC"}
        for fire in cron.next_fires(expression, tz, now, count)
    ]


class ScheduleView(KirbyModelView):
    column_list = ("context", "name", "cron", "timezone", "enabled", "catchup", "overlap", "retries")
    column_filters = ("enabled", "timezone")
    column_searchable_list = ("name", "cron")
    column_details_list = (
        "context",
        "name",
        "cron",
        "timezone",
        "enabled",
        "misfire_grace_seconds",
        "catchup",
        "overlap",
        "timeout_seconds",
        "retries",
        "on_lost",
    )
    form_columns = (
        "context",
        "name",
        "cron",
        "timezone",
        "enabled",
        "misfire_grace_seconds",
        "catchup",
        "overlap",
        "timeout_seconds",
        "retries",
        "on_lost",
    )
    form_args = {
        "cron": {
            "validators": [cron_expression],
            "description": "5 fields (minute hour day month weekday), or 6 with trailing seconds",
        },
        "timezone": {"validators": [time_zone], "description": "IANA time zone, e.g. Europe/Paris", "default": "UTC"},
        "catchup": {"default": "latest"},  # the model's defaults (a select would start at its first choice)
        "overlap": {"default": "forbid"},
        "on_lost": {"default": "skip", "description": "retry: a run lost with its supervisor runs again"},
        "misfire_grace_seconds": {"validators": [NumberRange(min=0)], "default": 300},
        "timeout_seconds": {"validators": [NumberRange(min=1)]},
        "retries": {"validators": [NumberRange(min=0, max=100)]},
    }
    create_template = "kirby_admin/schedule_create.html"
    edit_template = "kirby_admin/schedule_edit.html"
    details_template = "kirby_admin/schedule_details.html"

    def preview_of(self, model) -> tuple[list[dict[str, str]], str]:
        try:
            return preview(model.cron, model.timezone, datetime.now(timezone.utc)), ""
        except CronError as exc:
            return [], str(exc)

    @expose("/preview")
    def preview_json(self):
        expression = request.args.get("cron", "")
        tz = request.args.get("timezone", "") or "UTC"
        try:
            return jsonify({"fires": preview(expression, tz, datetime.now(timezone.utc)), "timezone": tz})
        except CronError as exc:
            return jsonify({"error": str(exc)}), 400
