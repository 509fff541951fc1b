"""Run history: read-only, filtered by job, state, supervisor and date, paginated.

Fast on 100,000+ runs: filters are equalities and ranges on indexed columns, the only sort is
``scheduled_at`` (newest first, ``ix_runs_scheduled`` / ``ix_runs_job_scheduled``), each page is one
LIMIT query, and the pager does not count the whole table (``simple_list_pager``).
"""

from __future__ import annotations

from datetime import timezone

from flask import url_for
from flask_admin.contrib.sqla.filters import (
    DateTimeBetweenFilter,
    DateTimeGreaterFilter,
    DateTimeSmallerFilter,
    FilterEqual,
)
from markupsafe import Markup

from kirby.admin.base import KirbyModelView
from kirby.logstore import Line, first_lines
from kirby.models import Run, RunState

DETAIL_LINES = 1000


def _utc(value):
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class _UTCGreater(DateTimeGreaterFilter):
    def clean(self, value):
        return _utc(super().clean(value))


class _UTCSmaller(DateTimeSmallerFilter):
    def clean(self, value):
        return _utc(super().clean(value))


class _UTCBetween(DateTimeBetweenFilter):
    def clean(self, value):
        return [_utc(v) for v in super().clean(value)]


def _logs_link(view, context, model, name) -> Markup:
    return Markup('<a href="{}">logs</a>').format(url_for("logs.index", run=model.id))


class RunView(KirbyModelView):
    can_view_details = True
    simple_list_pager = True
    page_size = 50
    column_list = (
        "scheduled_at",
        "job_name",
        "environment",
        "state",
        "celery_task",
        "supervisor",
        "attempt",
        "trigger",
        "started_at",
        "duration",
        "exit_code",
        "logs",
    )
    column_labels = {
        "job_name": "Job",
        "celery_task": "Celery task",
        "scheduled_at": "Scheduled (UTC)",
        "started_at": "Started (UTC)",
        "duration": "Duration (s)",
        "logs": "",
    }
    column_formatters = {
        "logs": _logs_link,
        "duration": lambda v, c, m, n: "" if m.duration_seconds is None else f"{m.duration_seconds:.1f}",
    }
    column_sortable_list = ("scheduled_at",)
    column_default_sort = ("scheduled_at", True)
    column_searchable_list = ()
    column_filters = (
        FilterEqual(Run.job_name, "Job"),
        FilterEqual(Run.state, "State", options=[(s.value, s.value) for s in RunState]),
        FilterEqual(Run.supervisor, "Supervisor"),
        _UTCBetween(Run.scheduled_at, "Scheduled (UTC)"),
        _UTCGreater(Run.scheduled_at, "Scheduled (UTC)"),
        _UTCSmaller(Run.scheduled_at, "Scheduled (UTC)"),
    )
    details_template = "kirby_admin/run_details.html"

    def __init__(self, session, **kwargs):
        super().__init__(Run, session, name="Runs", endpoint="run", **kwargs)

    @property
    def can_create(self) -> bool:  # history is written by run events only
        return False

    @property
    def can_edit(self) -> bool:
        return False

    @property
    def can_delete(self) -> bool:
        return False

    def log_lines(self, run: Run) -> list[Line]:
        """The run's first ``DETAIL_LINES`` lines (the logs tab streams them all)."""
        return first_lines(self.session, run.id, DETAIL_LINES)
