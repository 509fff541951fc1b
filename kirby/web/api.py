"""The JSON API: /schedule (for the leader), runs and their logs, /healthz, /metrics (jobs, run now
and the rest of the REST API: ``kirby.web.rest``).

Auth (see ``kirby.web.security``): the API token, or a logged-in session. No response carries a
secret config value, except /schedule to the token holder (the leader needs them to run scripts);
a logged-in admin asking for /schedule sees secret values masked.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user
from sqlalchemy import func, select, text

from kirby.models import Run
from kirby.schedule.document import build_schedule, schedule_version
from kirby.web.metrics import render_metrics
from kirby.web.queries import MAX_PAGE, BadQuery, RunFilter, line_dict, log_lines_after, parse_int, run_dict, runs_page
from kirby.web.schedule_cache import encode, schedule_cache
from kirby.web.schedule_changes import build_delta
from kirby.web.security import api_auth, api_error, bearer_token_ok
from kirby.web.state import web_state

blueprint = Blueprint("api", __name__)
MAX_CLUSTER_PAGE = 5000  # /cluster/runs: runs per page
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
    """The schedule document, with an ETag (its schedule version): ``If-None-Match`` with the
    current one answers ``304 Not Modified`` (no body); ``since=<an earlier ETag>`` answers only
    the changes since then (``kirby.web.schedule_changes``), or the full document when that version
    cannot be a base. Gzipped for clients that accept it."""
    state = web_state()
    token_ok = bearer_token_ok(state.settings.api_token)
    admin_session = current_user.is_authenticated and current_user.is_admin
    if not token_ok and not admin_session:
        if not state.settings.api_token:
            return api_error(503, "the schedule API is disabled: set KIRBY_API_TOKEN for kirby web and the supervisors")
        return api_error(401, "send Authorization: Bearer <KIRBY_API_TOKEN>")
    masked = not token_ok
    with state.database.session() as s:
        now = state.clock.now()
        version = schedule_version(s, now)
        tag = f"{version}-masked" if masked and version else version
        if tag is not None and request.if_none_match.contains_weak(tag):
            response = Response(status=304)
            response.set_etag(tag)
            return response
        since = request.args.get("since")
        delta = build_delta(s, since, now, masked) if since and tag is not None else None
        if delta is not None:
            body = encode(delta, tag, masked)
        else:
            body = schedule_cache().body(tag, masked, lambda: build_schedule(s, now))
    schedule_cache().purge_if_due(state.database)
    gzipped = "gzip" in request.accept_encodings
    response = Response(body.gzipped if gzipped else body.raw, mimetype="application/json")
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding, Authorization"
    response.headers["Cache-Control"] = "no-cache"  # may be kept, but revalidated (If-None-Match) every time
    if body.tag is not None:
        response.set_etag(body.tag)
    return response


@blueprint.route("/cluster/runs")
def cluster_runs():
    """The durable record of slot runs, for a leader rebuilding the lease store after amnesia (issue
    10). Cluster token only (``Authorization: Bearer $KIRBY_API_TOKEN``, as /schedule; no session).

    ``since`` (ISO instant, required): slot runs (first attempts) scheduled at or after it, ordered
    by id, ``limit`` (default and at most 5,000) per page after the id ``after``; ``next`` is the
    ``after`` of the next page, or null. The first page also has ``latest``: per job and
    environment, the newest scheduled instant of any of its slot runs (however old)."""
    state = web_state()
    if not bearer_token_ok(state.settings.api_token):
        if not state.settings.api_token:
            return api_error(503, "the cluster API is disabled: set KIRBY_API_TOKEN for kirby web and the supervisors")
        return api_error(401, "send Authorization: Bearer <KIRBY_API_TOKEN>")
    since = _instant("since", request.args.get("since"))
    after = request.args.get("after", "")
    limit = parse_int("limit", request.args.get("limit"), MAX_CLUSTER_PAGE, minimum=1, maximum=MAX_CLUSTER_PAGE)
    # slot runs, first attempts (ids ``job:env:<instant>``; a placeholder row's trigger says "schedule" too)
    slot_runs = (Run.id == Run.slot_id, Run.id.not_like("%:manual-%"), Run.id.not_like("%:daemon-%"))
    with state.database.session() as s:
        query = select(Run).where(*slot_runs, Run.scheduled_at >= since, Run.id > after).order_by(Run.id)
        rows = s.scalars(query.limit(limit + 1)).all()
        body = {
            "runs": [
                {
                    "id": r.id,
                    "job": r.job_name,
                    "environment": r.environment,
                    "scheduled_at": r.scheduled_at.isoformat(),
                    "state": r.state.value,
                    "supervisor": r.supervisor,
                }
                for r in rows[:limit]
            ],
            "next": rows[limit - 1].id if len(rows) > limit else None,
        }
        if not after:
            newest = select(Run.job_name, Run.environment, func.max(Run.scheduled_at)).where(*slot_runs)
            body["latest"] = [
                {"job": job, "environment": env, "scheduled_at": at.isoformat()}
                for job, env, at in s.execute(newest.group_by(Run.job_name, Run.environment))
            ]
    return jsonify(body)


def _instant(name: str, value: str | None) -> datetime:
    """An aware instant from a query parameter (naive means UTC); BadQuery names the parameter."""
    try:
        parsed = datetime.fromisoformat(value or "")
    except ValueError:
        raise BadQuery(f"{name}={value!r}: give an ISO 8601 instant, e.g. 2026-01-01T00:00:00+00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
