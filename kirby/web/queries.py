"""Read-side queries shared by the JSON API, the logs stream and the pages.

Every run listing is ordered by ``scheduled_at`` (newest first) and filtered on indexed columns
(``ix_runs_job_scheduled``, ``ix_runs_state_scheduled``, ``ix_runs_supervisor``,
``ix_runs_scheduled``), with a LIMIT: a page costs the same on 100 or 100,000 runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from kirby.logstore import Line, lines_after
from kirby.models import Run, RunState

MAX_PAGE_SIZE = 500
MAX_PAGE = 1_000_000


class BadQuery(ValueError):
    """A filter value the caller must fix (the message names the parameter)."""


@dataclass(frozen=True)
class RunFilter:
    job: str | None = None
    state: RunState | None = None
    supervisor: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def from_args(cls, args: Any) -> RunFilter:
        state = args.get("state") or None
        if state is not None:
            try:
                state = RunState(state)
            except ValueError:
                raise BadQuery(f"state={state!r}: use one of {', '.join(s.value for s in RunState)}") from None
        return cls(
            job=args.get("job") or None,
            state=state,
            supervisor=args.get("supervisor") or None,
            since=parse_instant("since", args.get("since")),
            until=parse_instant("until", args.get("until")),
        )

    def apply(self, query: Select) -> Select:
        if self.job:
            query = query.where(Run.job_name == self.job)
        if self.state:
            query = query.where(Run.state == self.state)
        if self.supervisor:
            query = query.where(Run.supervisor == self.supervisor)
        if self.since:
            query = query.where(Run.scheduled_at >= self.since)
        if self.until:
            query = query.where(Run.scheduled_at < self.until)
        return query


def parse_instant(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(f"{name}={raw!r} is not an ISO 8601 instant, e.g. 2026-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


MAX_INT = 2**53  # any id, seq or page beyond this is a mistake (and would overflow the database)


def parse_int(name: str, raw: str | None, default: int, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """``raw`` as a whole number in [minimum, maximum]; BadQuery (a 400 naming ``name``) otherwise."""
    if raw in (None, ""):
        return default
    if len(raw) > 20:
        raise BadQuery(f"{name}={raw[:20]!r}... is too long for a whole number")
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name}={raw!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise BadQuery(f"{name}={raw!r} must be between {minimum} and {maximum}")
    return value


def check_paging(args: Any) -> None:
    """Before each request: ``page`` and ``page_size`` (Flask-Admin's lists; ``page`` of the API
    too) are whole numbers in range, or a 400 naming them (a huge page would overflow the
    database's OFFSET: a 500)."""
    parse_int("page", args.get("page"), 0, minimum=0, maximum=MAX_PAGE)
    parse_int("page_size", args.get("page_size"), 1, minimum=1, maximum=MAX_PAGE_SIZE)


def runs_page(session: Session, run_filter: RunFilter, page: int, per_page: int) -> tuple[list[Run], bool]:
    """Page ``page`` (1-based) of matching runs, newest first, and whether a next page exists."""
    query = run_filter.apply(select(Run)).order_by(Run.scheduled_at.desc(), Run.id.desc())
    rows = list(session.scalars(query.offset((page - 1) * per_page).limit(per_page + 1)))
    return rows[:per_page], len(rows) > per_page


def run_dict(run: Run) -> dict[str, Any]:
    """A run as JSON: metadata, and the keys a "run now" overrode (secret values masked)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": run.id,
        "slot_id": run.slot_id,
        "job": run.job_name,
        "environment": run.environment,
        "package": run.package_name,
        "version": run.package_version,
        "trigger": run.trigger,
        "attempt": run.attempt,
        "epoch": run.epoch,
        "state": run.state.value,
        "supervisor": run.supervisor,
        "exit_code": run.exit_code,
        "signal": run.signal,
        "error": run.error,
        "scheduled_at": iso(run.scheduled_at),
        "offered_at": iso(run.offered_at),
        "claimed_at": iso(run.claimed_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "config_overrides": json.loads(run.config_overrides) if run.config_overrides else {},
        "duration_seconds": run.duration_seconds,
    }


def log_lines_after(
    session: Session, run_id: str, after_seq: int, limit: int, max_bytes: int | None = None
) -> tuple[list[Line], bool]:
    """Lines of ``run_id`` with ``seq > after_seq``, in order (``kirby.logstore.lines_after``),
    at most ``limit`` of them and, past the first, at most ``max_bytes`` of text; and whether the
    byte cap cut the page short (ask again after the last line's ``seq``)."""
    lines: list[Line] = []
    size = 0
    for line in lines_after(session, run_id, after_seq, limit):
        size += len(line.text.encode())
        if lines and max_bytes is not None and size > max_bytes:
            return lines, True
        lines.append(line)
    return lines, False


def line_dict(line: Line) -> dict[str, Any]:
    return {
        "run_id": line.run_id,
        "seq": line.seq,
        "time": line.time.isoformat(),
        "stream": line.stream,
        "text": line.text,
    }
