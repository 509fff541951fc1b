"""Schedules: cron and time zone validated on save (refused with the reason, nothing saved), and a
preview (live while typing) of the next five fire times in the schedule's zone and in UTC, and of
the zone's next DST transition with the slots the schedule produces around it (kirby.dst)."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import jsonify, request
from flask_admin import expose
from wtforms.validators import NumberRange

from kirby import cron, dst
from kirby.admin.base import KirbyModelView
from kirby.admin.validators import cron_expression, time_zone
from kirby.errors import CronError
from kirby.vocabulary import MIN_MISFIRE_GRACE_REASON, MIN_MISFIRE_GRACE_SECONDS

PREVIEW_COUNT = 5


def preview(
    expression: str, tz: str, now: datetime, count: int = PREVIEW_COUNT, policy: cron.DstPolicy | None = None
) -> list[dict[str, str]]:
    """The next ``count`` fires after ``now``: ``{"zone": local time, "utc": UTC time}``; CronError if invalid."""
    expression = cron.validate(expression)
    zone = cron.zone(tz)
    return [
        {"zone": f"{fire.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}", "utc": f"{fire:%Y-%m-%d %H:%M:%S} UTC"}
        for fire in cron.next_fires(expression, tz, now, count, policy)
    ]


def transition_preview(expression: str, tz: str, now: datetime, policy: cron.DstPolicy | None = None) -> dict | None:
    """The zone's next DST transition after ``now`` and the slots around it (kirby.dst), or None."""
    expression = cron.validate(expression)
    cron.resolve(expression, policy)  # a bad policy value raises CronError
    transition = dst.next_transition(tz, now)
    if transition is None:
        return None
    return {"transition": dst.describe(transition, tz), **dst.around(expression, tz, transition, policy)}


def _policy(fall_back: str | None, spring_forward: str | None) -> cron.DstPolicy:
    return cron.DstPolicy(fall_back or "auto", spring_forward or "auto")


def _value(field) -> str | None:
    return getattr(field, "value", field)


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
        "dst_fall_back",
        "dst_spring_forward",
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
        "dst_fall_back",
        "dst_spring_forward",
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
        "misfire_grace_seconds": {
            "validators": [
                NumberRange(
                    min=MIN_MISFIRE_GRACE_SECONDS,
                    message=f"at least {MIN_MISFIRE_GRACE_SECONDS} seconds: {MIN_MISFIRE_GRACE_REASON}",
                )
            ],
            "default": 300,
        },
        "timeout_seconds": {"validators": [NumberRange(min=1)]},
        "retries": {"validators": [NumberRange(min=0, max=100)]},
        "dst_fall_back": {
            "label": "DST fall back",
            "default": "auto",
            "description": "In a repeated fall-back hour: auto (both passes if the hour field covers every hour, "
            "else the first), first, second or both",
        },
        "dst_spring_forward": {
            "label": "DST spring forward",
            "default": "auto",
            "description": "In a spring-forward gap: auto (skip if the hour field covers every hour, else shift), "
            "shift (run at the end of the gap) or skip",
        },
    }
    create_template = "kirby_admin/schedule_create.html"
    edit_template = "kirby_admin/schedule_edit.html"
    details_template = "kirby_admin/schedule_details.html"

    def preview_of(self, model) -> tuple[list[dict[str, str]], str, dict | None]:
        policy = _policy(_value(model.dst_fall_back), _value(model.dst_spring_forward))
        now = datetime.now(timezone.utc)
        try:
            return (
                preview(model.cron, model.timezone, now, policy=policy),
                "",
                transition_preview(model.cron, model.timezone, now, policy),
            )
        except CronError as exc:
            return [], str(exc), None

    def sends(self, model) -> str:
        """What each fire of ``model`` does, for a Celery job's schedule ("" for a script's)."""
        job = model.context.job if model is not None and model.context is not None else None
        if job is None or not job.celery_task:
            return ""
        grace = model.misfire_grace_seconds or 0
        return (
            f"Each fire sends the Celery task {job.celery_task} (task id = the run id); it expires {grace} s after"
            " its slot, and a task no worker received by then is recorded expired (missed)."
        )

    @expose("/preview")
    def preview_json(self):
        expression = request.args.get("cron", "")
        tz = request.args.get("timezone", "") or "UTC"
        policy = _policy(request.args.get("dst_fall_back"), request.args.get("dst_spring_forward"))
        now = datetime.now(timezone.utc)
        if request.args.get("at"):  # preview as of another instant (e.g. just before a transition)
            try:
                now = datetime.fromisoformat(request.args["at"]).astimezone(timezone.utc)
            except ValueError:
                return jsonify({"error": f"at={request.args['at']!r} is not an ISO 8601 time"}), 400
        try:
            return jsonify(
                {
                    "fires": preview(expression, tz, now, policy=policy),
                    "transition": transition_preview(expression, tz, now, policy),
                    "timezone": tz,
                }
            )
        except CronError as exc:
            return jsonify({"error": str(exc)}), 400
