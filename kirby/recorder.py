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
            the executor numbers lines (``kirby.tasks.base.OutputLine``). Or, for lines read
            together, ``{"seq": int, "stream": ..., "texts": [str, ...]}``: consecutive lines,
            the first at ``seq`` (``kirby.tasks.base.OutputLines``), all at the event's time.
finished    ``{"state": "succeeded"|"failed"|"timed_out", "exit_code": int|None,
            "signal": int|None, "error": str}``. ``finished_at`` = time.
lost        ``{"error": str}``: the run's supervisor died. State ``lost``.
skipped     ``offer_data(offer) | {"error": str}``: not run (e.g. overlap ``forbid``).
sent        ``{"task": str, "expires_at": ISO|None}``: a Celery run was handed to its broker (the
            supervisor). State ``sent``, ``celery_task``, ``expires_at``.
task        ``{"state": "received"|"started"|"retried"|"succeeded"|"failed"|"revoked"|"expired",
            "text": str}``: what a Celery task event says (``kirby web``'s receiver). ``received``,
            ``started`` (``started_at``), ``retried`` move the run; the others finish it (``error``
            = ``text`` for failed/retried/revoked/expired). ``text`` (a result's repr, an exception
            and its traceback: already truncated and masked) is stored as one ``system`` log line
            whose ``seq`` is derived from the event's time, so the same event is stored once.
==========  =====================================================================================

Rules that make recording idempotent and order-proof:

* a log line is stored once per ``(run_id, seq)``; a redelivered line is ignored;
* states only move forward: offered < claimed < [sent < received <] running < finished (succeeded,
  failed, timed_out, skipped, lost, revoked, expired); a Celery run goes between running and
  retried (and received again) as its task is retried. A late ``started`` after ``finished``
  does not reopen a run; a second ``finished`` does not overwrite the first. One exception: a real
  outcome replaces ``lost`` (the web's presumption that the supervisor died; the supervisor knows
  better) and ``expired`` (its presumption that no Celery worker received the task in time);
* timestamps are filled when missing and never overwritten;
* the notifications of the runs whose state changed are added to the outbox in the same
  transaction (``kirby.notify.outbox.enqueue``), once per run, event and group;
* an event for an unknown run (its ``claimed`` was lost or not yet seen) creates a placeholder
  row whose job, environment and scheduled instant are parsed from the run id;
* with ``max_lines`` (``KIRBY_MAX_LOG_LINES_PER_RUN``), lines ``seq < max_lines`` are stored and
  any later line becomes one ``system`` line at ``seq == max_lines`` saying the log was truncated
  (stored once, like any line): a run cannot fill the database with its output;
* log lines are stored in rows of consecutive lines (``kirby.logstore.rows_of``: a thousand lines
  are one row), inserted in bulk in the caller's transaction: on SQLite straight to the driver
  (each event's time converted once), on PostgreSQL through SQLAlchemy's multi-row inserts
  (``insertmanyvalues``).
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from itertools import chain
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kirby.events import Offer, RunEvent, offer_data
from kirby.logstore import last_seq, rows_of, unstored
from kirby.models import FINISHED_STATES, LogLine, Run, RunState
from kirby.notify.outbox import enqueue as enqueue_notifications
from kirby.run_ids import MANUAL, parse_run_id

_RANK = {
    RunState.OFFERED: 0,
    RunState.CLAIMED: 1,
    RunState.SENT: 2,
    RunState.RECEIVED: 3,
    RunState.RUNNING: 4,
    RunState.RETRIED: 4,
}
_TERMINAL_RANK = 5
_RETRY_MOVES = {(RunState.RUNNING, RunState.RETRIED), (RunState.RETRIED, RunState.RUNNING)}
_TASK_STATES = {
    "received": RunState.RECEIVED,
    "started": RunState.RUNNING,
    "retried": RunState.RETRIED,
    "succeeded": RunState.SUCCEEDED,
    "failed": RunState.FAILED,
    "revoked": RunState.REVOKED,
    "expired": RunState.EXPIRED,
}
_TASK_ERRORS = ("failed", "retried", "revoked", "expired")
_PRESUMED = (RunState.LOST, RunState.EXPIRED)
MAX_SEQ = 2**31 - 1
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
        package_name=data.get("package") or (data.get("celery") or {}).get("name", "")[:128],
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
    if current in FINISHED_STATES:  # lost and expired are presumptions a real outcome replaces
        if current in _PRESUMED and state in FINISHED_STATES and state not in _PRESUMED:
            run.state = state
            return True
        return False
    if _rank(state) > _rank(current) or (current, state) in _RETRY_MOVES:
        run.state = state
        return True
    if current == RunState.RETRIED and state == RunState.RECEIVED:  # the retry's delivery
        run.state = state
        return True
    return False


def _apply(run: Run, event: RunEvent) -> None:
    data, kind = event.data, event.kind
    if kind in _OFFER_KINDS:
        _fill_from_offer(run, data)
    if event.supervisor and kind != "offered":
        if not run.supervisor or (kind in ("claimed", "started") and run.started_at is None and not run.state.finished):
            run.supervisor = event.supervisor  # a re-offered run belongs to whoever claims and starts it
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
    elif kind == "sent":
        _advance(run, RunState.SENT)
        run.celery_task = run.celery_task or str(data.get("task") or "")[:255]
        run.expires_at = run.expires_at or _time(data.get("expires_at"))
    elif kind == "task":
        _apply_task(run, event)


def _apply_task(run: Run, event: RunEvent) -> None:
    """A Celery task event (``data["state"]``): move the run; failures and retries say why."""
    word = event.data.get("state")
    state = _TASK_STATES.get(word)
    if state == RunState.RUNNING:  # Celery may send a fast task's started after its succeeded
        run.started_at = run.started_at or event.time
    if state is None or not _advance(run, state):
        return
    if state in FINISHED_STATES:
        run.finished_at = event.time
    if word in _TASK_ERRORS:
        text = str(event.data.get("text") or "").strip()
        run.error = (text.splitlines()[-1] if text else word)[:1000]  # the exception: a traceback's last line


def task_line(run: Run, event: RunEvent) -> dict[str, Any] | None:
    """The ``system`` log line of a ``task`` event's ``text`` (None without text); its ``seq`` is the
    event's milliseconds since the run was scheduled, plus a digit per state, so it is stable."""
    text = event.data.get("text")
    if not text:
        return None
    order = list(_TASK_STATES).index(event.data.get("state")) if event.data.get("state") in _TASK_STATES else 9
    millis = int(max((event.time - run.scheduled_at).total_seconds(), 0) * 1000)
    prefix = f"[celery {event.data.get('state')}] "
    return {
        "run_id": run.id,
        "seq": min(millis * 10 + order, MAX_SEQ),
        "time": event.time,
        "stream": "system",
        "text": prefix + str(text),
    }


def _fill_from_offer(run: Run, data: dict[str, Any]) -> None:
    """Complete a placeholder row with the offer's fields (fills blanks only)."""
    run.package_name = run.package_name or data.get("package") or (data.get("celery") or {}).get("name", "")[:128]
    run.celery_task = run.celery_task or (data.get("celery") or {}).get("name", "")
    run.package_version = run.package_version or data.get("version") or ""
    run.context_id = run.context_id if run.context_id is not None else data.get("context_id")
    run.epoch = run.epoch if run.epoch is not None else data.get("epoch")
    if data.get("trigger") and run.trigger == "schedule":
        run.trigger = data["trigger"]


def truncated_text(max_lines: int) -> str:
    return f"[kirby] log truncated: this run printed more than {max_lines} lines; the rest was not stored"


def record(session: Session, events: list[RunEvent], max_lines: int | None = None) -> None:
    """Apply ``events`` (in order) to the runs and log_lines tables. The caller commits.

    Idempotent: recording a batch twice, or any event again, leaves the same rows. Log lines past
    ``max_lines`` per run are replaced by one final "truncated" line (see the module docstring).
    """
    if not events:
        return
    run_ids = sorted({e.run_id for e in events})
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
    states_before = {run_id: run.state for run_id, run in runs.items()}
    rows: list[tuple] = []  # (run_id, seq, time, stream, text, line_count)
    stamp = _time_column(session)
    for event in events:
        run = runs.get(event.run_id)
        if run is None:
            run = runs[event.run_id] = _new_run(event)
            session.add(run)
        if event.kind == "log":
            rows += _log_rows(event, max_lines, stamp(event.time))
        else:
            _apply(run, event)
            if event.kind == "task" and (line := task_line(run, event)) is not None:
                rows.append((run.id, line["seq"], stamp(line["time"]), line["stream"], line["text"], 1))
    session.flush()
    rows = unstored(session, rows) if rows else rows
    if rows:
        _insert_new_lines(session, rows)
    # The notifications of the state changes, in the same transaction (kirby.notify.outbox).
    enqueue_notifications(session, [run for run_id, run in runs.items() if run.state != states_before.get(run_id)])


def _time_column(session: Session):
    """datetime -> the value the driver gets for ``log_lines.time`` (on SQLite, the very text
    SQLAlchemy would write: rows go straight to the driver there, see ``_insert_new_lines``)."""
    dialect = session.get_bind().dialect
    if dialect.name != "sqlite":
        return lambda time: time
    return LogLine.__table__.c.time.type.dialect_impl(dialect).bind_processor(dialect)


def _log_rows(event: RunEvent, max_lines: int | None, time: Any) -> list[tuple]:
    """The rows of a ``log`` event (one line, or ``texts``), capped at ``max_lines`` per run."""
    data, run_id = event.data, event.run_id
    first, stream = int(data["seq"]), str(data.get("stream", "stdout"))[:8]
    texts = data.get("texts")
    if texts is None:
        texts = [str(data.get("text", ""))]
    if max_lines is not None and first + len(texts) > max_lines:
        kept = texts[: max(0, max_lines - first)]
        return [
            *(rows_of(run_id, first, time, stream, kept) if kept else []),
            (run_id, max_lines, time, "system", truncated_text(max_lines), 1),
        ]
    return rows_of(run_id, first, time, stream, texts)


_COLUMNS = ("run_id", "seq", "time", "stream", "text", "line_count")
_ROWS_PER_INSERT = 100  # rows per multi-row INSERT on SQLite: ~1.4x cheaper than executemany; 600 parameters


@functools.lru_cache(maxsize=4)
def _sqlite_insert(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (
        f"INSERT INTO log_lines (run_id, seq, time, stream, text, line_count) VALUES {values}"
        " ON CONFLICT (run_id, seq) DO NOTHING"
    )


def _insert_new_lines(session: Session, rows: list[tuple]) -> None:
    """Insert log rows in bulk, ignoring those already stored (unique on run_id, seq)."""
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":  # straight to the driver (times converted by _time_column): no per-row processing
        cursor = session.connection().connection.cursor()  # the session's connection, in its transaction
        try:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                cursor.execute(_sqlite_insert(len(chunk)), tuple(chain.from_iterable(chunk)))
        finally:
            cursor.close()
        return
    dicts = [dict(zip(_COLUMNS, row)) for row in rows]
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        session.execute(insert(LogLine).on_conflict_do_nothing(index_elements=["run_id", "seq"]), dicts)
        return
    unique = {(row["run_id"], row["seq"]): row for row in reversed(dicts)}  # portable: the first wins
    existing = set(
        session.execute(select(LogLine.run_id, LogLine.seq).where(LogLine.run_id.in_({r[0] for r in unique}))).all()
    )
    session.add_all(LogLine(**row) for key, row in unique.items() if key not in existing)
    session.flush()


def mark_lost(session: Session, run: Run, time: datetime, reason: str) -> None:
    """Record ``run`` as lost (its supervisor died) with a ``system`` log line saying why."""
    last = last_seq(session, run.id)
    seq = 0 if last is None else last + 1
    record(
        session,
        [
            RunEvent(kind="log", run_id=run.id, time=time, data={"seq": seq, "stream": "system", "text": reason}),
            RunEvent(kind="lost", run_id=run.id, time=time, data={"error": reason}),
        ],
    )
