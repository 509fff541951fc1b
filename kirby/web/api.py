"""The JSON API: /schedule (for the leader), runs and their logs, /healthz, /metrics (jobs, run now
and the rest of the REST API: ``kirby.web.rest``).

Auth (see ``kirby.web.security``): the API token, or a logged-in session. No response carries a
secret config value, except /schedule to the token holder (the leader needs them to run scripts);
a logged-in admin asking for /schedule sees secret values masked.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user
from sqlalchemy import text

from kirby.models import Run
from kirby.schedule.document import build_schedule
from kirby.web.metrics import render_metrics
from kirby.web.queries import MAX_PAGE, BadQuery, RunFilter, line_dict, log_lines_after, parse_int, run_dict, runs_page
from kirby.web.security import api_auth, api_error, bearer_token_ok
from kirby.web.state import web_state

blueprint = Blueprint("api", __name__)
MASK = "********"
MAX_LOG_BYTES = 1024 * 1024  # /api/runs/<id>/logs: one answer carries at most ~1 MiB of log text


@blueprint.app_errorhandler(BadQuery)
def _bad_query(exc: BadQuery):
    """A bad filter or cursor value, anywhere in the app: 400 naming the parameter."""
    return api_error(400, str(exc))


@blueprint.route("/healthz")
def healthz():
    """503 when the database does not answer; else 200 with ``status`` ``ok``, or ``degraded`` (and a
    ``reason``) when the run events consumer holds no partition of its topic (events not recorded)."""
    state = web_state()
    try:
        with state.database.session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return api_error(503, f"database unreachable: {type(exc).__name__}")
    body = {"status": "ok"}
    if state.events_consumer is not None:
        body["events_consumer"] = health = state.events_consumer.health()
        if health["partitions"] == 0:
            body["status"] = "degraded"
            body["reason"] = f"the run events consumer holds no partition of {health['topic']}: new events wait"
    return jsonify(body)


@blueprint.route("/schedule")
def schedule():
    state = web_state()
    token_ok = bearer_token_ok(state.settings.api_token)
    admin_session = current_user.is_authenticated and current_user.is_admin
    if not token_ok and not admin_session:
        if not state.settings.api_token:
            return api_error(503, "the schedule API is disabled: set KIRBY_API_TOKEN for kirby web and the supervisors")
        return api_error(401, "send Authorization: Bearer <KIRBY_API_TOKEN>")
    with state.database.session() as s:
        document = build_schedule(s, state.clock.now())
    if not token_ok:
        for entry in document["contexts"]:
            entry["config"] = {k: (MASK if k in entry["secrets"] else v) for k, v in entry["config"].items()}
    return jsonify(document)


@blueprint.route("/api/runs")
@api_auth()
def runs():
    run_filter = RunFilter.from_args(request.args)
    page = parse_int("page", request.args.get("page"), 1, minimum=1, maximum=MAX_PAGE)
    per_page = parse_int("per_page", request.args.get("per_page"), 50, minimum=1, maximum=500)
    with web_state().database.session() as s:
        rows, more = runs_page(s, run_filter, page, per_page)
        return jsonify({"runs": [run_dict(r) for r in rows], "page": page, "per_page": per_page, "has_next": more})


@blueprint.route("/api/runs/<path:run_id>/logs")
@api_auth()
def run_logs(run_id: str):
    after = parse_int("after", request.args.get("after"), -1, minimum=-1)  # seq counts from 0
    limit = parse_int("limit", request.args.get("limit"), 1000, minimum=1, maximum=10_000)
    with web_state().database.session() as s:
        if s.get(Run, run_id) is None:
            return api_error(404, f"no run {run_id!r}")
        lines, truncated = log_lines_after(s, run_id, after, limit, MAX_LOG_BYTES)
        # truncated: the byte cap ended this page early; ask again with after=<last seq>
        return jsonify({"run_id": run_id, "lines": [line_dict(line) for line in lines], "truncated": truncated})


@blueprint.route("/api/runs/<path:run_id>")
@api_auth()
def run_detail(run_id: str):
    with web_state().database.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            return api_error(404, f"no run {run_id!r}")
        return jsonify(run_dict(run))


@blueprint.route("/metrics")
@api_auth()
def metrics():
    state = web_state()
    events = state.events_consumer.health()["partitions"] if state.events_consumer is not None else None
    with state.database.session() as s:
        body = render_metrics(s, state.lease_store, state.clock.now(), events_partitions=events)
    body += (
        "# HELP kirby_web_log_streams_open Live-log streams this kirby web serves now.\n"
        "# TYPE kirby_web_log_streams_open gauge\n"
        f"kirby_web_log_streams_open {state.streams.open_count()}\n"
    )
    return Response(body, mimetype="text/plain; version=0.0.4")
