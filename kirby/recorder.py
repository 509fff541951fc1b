"""Persist run events in the script database: ``record(session, events)``, idempotent.

The event schema (what supervisors and "run now" publish; ``RunEvent.time`` is when it happened,
aware UTC; ``RunEvent.supervisor`` is the supervisor's name, None for the web's own events):

==========  =====================================================================================
kind        ``data``
==========  =====================================================================================
offered     ``offer_data(offer)``: the offer's fields except ``config`` and ``secrets`` (never
            persisted): run_id, slot_id, job, environment, package, version, scheduled_at,
            epoch, context_id, module, timeout_seconds, overlap, retries, attempt, trigger,
            offered_at. Creates the run (state ``offered``).
claimed     ``offer_data(offer)`` as above. Creates the run if missing; state ``claimed``,
            ``claimed_at`` = event time, ``supervisor`` = event supervisor.
started     ``{}`` (optionally ``{"pid": int}``). State ``running``, ``started_at`` = time. A second
            ``started`` at another time (the run was launched twice) counts ``duplicate_starts``.
log         ``{"seq": int, "stream": "stdout"|"stderr"|"system", "text": str}``: one line,
            already masked, without its newline. ``seq`` counts from 0 per run (per attempt), as
            the executor numbers lines (``kirby.tasks.base.OutputLine``).
finished    ``{"state": "succeeded"|"failed"|"timed_out", "exit_code": int|None,
            "signal": int|None, "error": str}``. ``finished_at`` = time.
lost        ``{"error": str}``: the run's supervisor died. State ``lost``.
skipped     ``offer_data(offer) | {"error": str}``: not run (e.g. overlap ``forbid``).
==========  =====================================================================================

Rules that make recording idempotent and order-proof:

* a log line is stored once per ``(run_id, seq)``; a redelivered line is ignored;
* states only move forward: offered < claimed < running < finished (succeeded, failed,
  timed_out, skipped, lost). A late ``started`` after ``finished`` does not reopen a run; a second
  ``finished`` does not overwrite the first. One exception: a real ``finished`` replaces ``lost``
  (lost is the web's presumption that the supervisor died; the supervisor knows better);
* timestamps are filled when missing and never overwritten;
* an event for an unknown run (its ``claimed`` was lost or not yet seen) creates a placeholder
  row whose job, environment and scheduled instant are parsed from the run id.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kirby.events import Offer, RunEvent, offer_data
from kirby.models import FINISHED_STATES, LogLine, Run, RunState
from kirby.run_ids import MANUAL, parse_run_id

_RANK = {RunState.OFFERED: 0, RunState.CLAIMED: 1, RunState.RUNNING: 2}
_TERMINAL_RANK = 3
_OFFER_KINDS = ("offered", "claimed", "skipped")
_FINISHED_STATES = {"succeeded", "failed", "timed_out"}


def offer_event(kind: str, offer: Offer, time: datetime, supervisor: str | None = None, **extra: Any) -> RunEvent:
    """A ready-made ``offered``/``claimed``/``skipped`` event for ``offer``."""
    return RunEvent(
        kind=kind, run_id=offer.run_id, time=time, supervisor=supervisor, data={**offer_data(offer), **extra}
    )


def _rank(state: RunState) -> int:
    return _TERMINAL_RANK if state in FINISHED_STATES else _RANK[state]


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _new_run(event: RunEvent) -> Run:
    """A run row from an offer-carrying event, or a placeholder parsed from the run id."""
    data = event.data if event.kind in _OFFER_KINDS else {}
    job, environment, scheduled_at, attempt, slot_id = _parse_run_id(event.run_id, event.time)
    return Run(
        id=event.run_id,
        slot_id=data.get("slot_id") or slot_id,
        context_id=data.get("context_id"),
        job_name=data.get("job") or job,
        environment=data.get("environment") or environment,
        package_name=data.get("package") or "",
        package_version=data.get("version") or "",
        trigger=data.get("trigger") or "schedule",
        attempt=int(data.get("attempt") or attempt),
        epoch=data.get("epoch"),
        state=RunState.OFFERED,
        scheduled_at=_time(data.get("scheduled_at")) or scheduled_at,
        offered_at=_time(data.get("offered_at")) or (event.time if event.kind == "offered" else None),
        error="",
    )


def _parse_run_id(run_id: str, fallback: datetime) -> tuple[str, str, datetime, int, str]:
    """(job, environment, scheduled instant, attempt, slot id) of ``run_id``; ``fallback`` stands
    in for the instant of a manual run, and for everything of an id that is not Kirby's."""
    try:
        parsed = parse_run_id(run_id)
    except ValueError:
        return run_id[:128], "?", fallback, 1, run_id
    instant = fallback if parsed.kind == MANUAL else parsed.instant
    return parsed.job, parsed.environment, instant, parsed.attempt, parsed.slot_id


def _advance(run: Run, state: RunState) -> bool:
    """Move ``run`` to ``state`` if that is forward (or a real finish replacing ``lost``)."""
    current = run.state
    if current in FINISHED_STATES:
        if current == RunState.LOST and state in FINISHED_STATES and state != RunState.LOST:
            run.state = state
            return True
        return False
    if _rank(state) > _rank(current):
        run.state = state
        return True
    return False


def _apply(run: Run, event: RunEvent) -> None:
    data, kind = event.data, event.kind
    if kind in _OFFER_KINDS:
        _fill_from_offer(run, data)
    if event.supervisor and not run.supervisor and kind != "offered":
        run.supervisor = event.supervisor
    if kind == "offered":
        run.offered_at = run.offered_at or _time(data.get("offered_at")) or event.time
    elif kind == "claimed":
        _advance(run, RunState.CLAIMED)
        run.claimed_at = run.claimed_at or event.time
    elif kind == "started":
        _advance(run, RunState.RUNNING)
        if run.started_at is not None and run.started_at != event.time:  # a redelivery has the same time
            run.duplicate_starts = (run.duplicate_starts or 0) + 1
        run.started_at = run.started_at or event.time
    elif kind == "finished":
        state = data.get("state", "failed")
        if _advance(run, RunState(state if state in _FINISHED_STATES else "failed")):
            run.finished_at = event.time
            run.exit_code = data.get("exit_code")
            run.signal = data.get("signal")
            run.error = data.get("error") or ""
            if event.supervisor:
                run.supervisor = event.supervisor
    elif kind in ("lost", "skipped"):
        if _advance(run, RunState(kind)):
            run.finished_at = run.finished_at or event.time
            run.error = data.get("error") or run.error or ""


def _fill_from_offer(run: Run, data: dict[str, Any]) -> None:
    """Complete a placeholder row with the offer's fields (fills blanks only)."""
    run.package_name = run.package_name or data.get("package") or ""
    run.package_version = run.package_version or data.get("version") or ""
    run.context_id = run.context_id if run.context_id is not None else data.get("context_id")
    run.epoch = run.epoch if run.epoch is not None else data.get("epoch")
    if data.get("trigger") and run.trigger == "schedule":
        run.trigger = data["trigger"]


def record(session: Session, events: list[RunEvent]) -> None:
    """Apply ``events`` (in order) to the runs and log_lines tables. The caller commits.

    Idempotent: recording a batch twice, or any event again, leaves the same rows.
    """
    if not events:
        return
    run_ids = sorted({e.run_id for e in events})
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
    lines: dict[tuple[str, int], dict[str, Any]] = {}
    for event in events:
        run = runs.get(event.run_id)
        if run is None:
            run = runs[event.run_id] = _new_run(event)
            session.add(run)
        if event.kind == "log":
            seq = int(event.data["seq"])
            lines.setdefault(
                (event.run_id, seq),
                {
                    "run_id": event.run_id,
                    "seq": seq,
                    "time": event.time,
                    "stream": str(event.data.get("stream", "stdout"))[:8],
                    "text": str(event.data.get("text", "")),
                },
            )
        else:
            _apply(run, event)
    session.flush()
    if lines:
        _insert_new_lines(session, list(lines.values()))


def _insert_new_lines(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert log lines, ignoring those already stored (unique on run_id, seq)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # portable fallback: skip what exists
        run_ids = {r["run_id"] for r in rows}
        existing = set(session.execute(select(LogLine.run_id, LogLine.seq).where(LogLine.run_id.in_(run_ids))).all())
        session.add_all(LogLine(**r) for r in rows if (r["run_id"], r["seq"]) not in existing)
        session.flush()
        return
    statement = insert(LogLine).on_conflict_do_nothing(index_elements=["run_id", "seq"])
    session.execute(statement, rows)


def mark_lost(session: Session, run: Run, time: datetime, reason: str) -> None:
    """Record ``run`` as lost (its supervisor died) with a ``system`` log line saying why."""
    last_seq = session.scalar(select(LogLine.seq).where(LogLine.run_id == run.id).order_by(LogLine.seq.desc()).limit(1))
    seq = 0 if last_seq is None else last_seq + 1
    record(
        session,
        [
            RunEvent(kind="log", run_id=run.id, time=time, data={"seq": seq, "stream": "system", "text": reason}),
            RunEvent(kind="lost", run_id=run.id, time=time, data={"error": reason}),
        ],
    )
