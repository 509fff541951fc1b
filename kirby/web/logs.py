"""Live logs over Server-Sent Events, read from the log_lines table.

``GET /logs/stream?run=<run id>``: that run's lines in ``seq`` order; each event's ``id`` is the
line's ``seq``, so a reconnecting browser resumes after the last line it got (``Last-Event-ID``).
The stream sends ``event: end`` and closes once the run is finished and every line was sent.
``GET /logs/stream?job=<name>`` (or no filter): the newest lines of every run (of that job), then
new ones as they are stored; each event's ``id`` is the id of the row the line is stored in (the
lines stored together share it, ``kirby.logstore``, and are sent together), so a reconnecting
browser resumes after the last row it got. Streams close after
``KIRBY_SSE_LIFETIME`` seconds (the browser reconnects and resumes), freeing the server thread.
Open streams are capped per user and in total (``kirby.web.streams``: beyond a cap, 503 with
``Retry-After``); each batch sent between two queries is capped in lines and in bytes.

Each event's data is JSON (``run_id``, ``job``, ``seq``, ``time``, ``stream``, ``text``): the page
inserts ``text`` with ``textContent``, so a line is always shown as text, never as HTML.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, request
from flask_login import current_user
from sqlalchemy import select

from kirby.logstore import expand, lines_after
from kirby.models import LogLine, Run
from kirby.web.queries import parse_int
from kirby.web.security import api_auth, api_error, bearer_token_ok
from kirby.web.state import WebState, web_state
from kirby.web.streams import RETRY_AFTER_SECONDS

blueprint = Blueprint("logstream", __name__)
BACKLOG = 200
BATCH = 200  # lines per query; a line is at most 64 KiB (the executor cuts longer ones)
BATCH_BYTES = 256 * 1024  # and at most this much text is sent before the next query


def _event(event_id: int, data: dict) -> str:
    return f"id: {event_id}\ndata: {json.dumps(data)}\n\n"


def _resume_point() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_id")
    if raw in (None, ""):
        return None
    return parse_int("Last-Event-ID", raw, 0, minimum=-1)


def _idle(state: WebState, deadline: float, beat: list[float], poll: float) -> Iterator[str]:
    """Between polls: a keep-alive every 15 s, then wait ``poll`` s. Returns False when the stream
    must end (its lifetime is over, or the server is stopping)."""
    if time.monotonic() >= deadline or state.stopping.is_set():
        return False
    if time.monotonic() - beat[0] > 15:
        beat[0] = time.monotonic()
        yield ": keep-alive\n\n"
    return not state.stopping.wait(poll)


def run_events(state: WebState, run_id: str, after: int, poll: float, lifetime: float) -> Iterator[str]:
    deadline = time.monotonic() + lifetime
    beat = [time.monotonic()]  # when the last keep-alive was sent
    while True:
        with state.database.session() as s:
            run = s.get(Run, run_id)
            finished = run is not None and run.state.finished
            job = run.job_name if run else ""
            lines = lines_after(s, run_id, after, BATCH)
        size = 0
        for line in lines:
            after = line.seq
            event = _event(
                line.seq,
                {
                    "run_id": run_id,
                    "job": job,
                    "seq": line.seq,
                    "time": line.time.isoformat(),
                    "stream": line.stream,
                    "text": line.text,
                },
            )
            yield event
            size += len(event)
            if size >= BATCH_BYTES:
                break
        if len(lines) == BATCH or size >= BATCH_BYTES:
            continue
        if finished:
            yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'state': run.state.value})}\n\n"
            return
        if not (yield from _idle(state, deadline, beat, poll)):
            return


def _tail_query(job: str | None):
    query = select(LogLine, Run.job_name).join(Run, Run.id == LogLine.run_id)
    return query.where(Run.job_name == job) if job else query


def tail_events(state: WebState, job: str | None, after: int | None, poll: float, lifetime: float) -> Iterator[str]:
    deadline = time.monotonic() + lifetime
    beat = [time.monotonic()]  # when the last keep-alive was sent
    skip = {}  # row id -> lines of it not sent (the start of the backlog's oldest row)
    if after is None:  # start with the newest BACKLOG lines
        with state.database.session() as s:
            newest, count = [], 0
            for row, _ in s.execute(_tail_query(job).order_by(LogLine.id.desc()).limit(BACKLOG)):
                newest.append(row.id)
                count += row.line_count
                if count >= BACKLOG:
                    skip[row.id] = count - BACKLOG
                    break
        after = (newest[-1] - 1) if newest else 0
    while True:
        with state.database.session() as s:
            rows = s.execute(_tail_query(job).where(LogLine.id > after).order_by(LogLine.id).limit(BATCH)).all()
            lines = [(expand(row)[skip.pop(row.id, 0) :], job_name) for row, job_name in rows]
        size = 0
        for row_lines, job_name in lines:  # a row's lines all go, then the byte cap is looked at
            for line in row_lines:
                after = line.id
                event = _event(
                    line.id,
                    {
                        "run_id": line.run_id,
                        "job": job_name,
                        "seq": line.seq,
                        "time": line.time.isoformat(),
                        "stream": line.stream,
                        "text": line.text,
                    },
                )
                yield event
                size += len(event)
            if size >= BATCH_BYTES:
                break
        if len(rows) == BATCH or size >= BATCH_BYTES:
            continue
        if not (yield from _idle(state, deadline, beat, poll)):
            return


def _opened(events: Iterator[str]) -> Iterator[str]:
    """``events`` after an opening comment: the client (and any proxy) gets the response's first
    byte at once rather than with the first line or keep-alive, up to 15 s later."""
    yield ": open\n\n"
    yield from events  # closing this generator closes ``events``


@blueprint.route("/logs/stream")
@api_auth()
def stream():
    state = web_state()
    poll = float(current_app.config["KIRBY_SSE_POLL"])
    lifetime = float(current_app.config["KIRBY_SSE_LIFETIME"])
    after = _resume_point()
    run_id = request.args.get("run") or None
    if run_id:
        with state.database.session() as s:
            if s.get(Run, run_id) is None:
                return api_error(404, f"no run {run_id!r}")
        events = run_events(state, run_id, -1 if after is None else after, poll, lifetime)
    else:
        events = tail_events(state, request.args.get("job") or None, after, poll, lifetime)
    slot = state.streams.acquire(_stream_owner(state))
    if isinstance(slot, str):
        events.close()
        response = api_error(503, f"{slot}: close another live-log tab, or retry in {RETRY_AFTER_SECONDS} s")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    response = Response(_opened(events), mimetype="text/event-stream")
    response.call_on_close(slot)  # the server closes the response when the stream ends or the client goes
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def _stream_owner(state: WebState) -> str:
    """Whose stream cap this stream counts against: the logged-in user, or the API token."""
    if bearer_token_ok(state.settings.api_token):
        return "api-token"
    return f"user:{current_user.id}"
