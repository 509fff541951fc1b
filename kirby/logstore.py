"""A run's log lines in the script database: stored in rows of consecutive lines, read as lines.

Writing (``kirby.recorder``): the lines of one ``log`` event become rows of up to ROW_LINES
consecutive lines of one stream (``rows_of``): ``seq`` of the first, ``line_count``, and the
texts joined by ``\\n``, so storing a million lines is about a thousand rows, not a million. A line
holding a newline itself (a Celery traceback, a lost-run reason) gets a row of its own
(``line_count`` 1, its text as is). The same event always makes the same rows, so a redelivered
event is ignored by the unique ``(run_id, seq)`` index, like a redelivered line.

Reading: every reader goes through the functions here, which expand rows into ``Line``s in
``seq`` order. The rows of a run never overlap (the lines of a run are numbered once, by its
executor), and a row covers ``seq .. seq + line_count - 1`` with ``line_count <= ROW_LINES``, so
the lines after a ``seq`` are found through the ``(run_id, seq)`` index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kirby.models import LogLine

ROW_LINES = 1000  # lines per row at most


@dataclass(frozen=True)
class Line:
    """One stored line; ``id`` is its row's (shared by the lines stored together)."""

    id: int
    run_id: str
    seq: int
    time: datetime
    stream: str
    text: str


def rows_of(run_id: str, first: int, time: Any, stream: str, texts: list[str]) -> list[tuple]:
    """The rows ``(run_id, seq, time, stream, text, line_count)`` of consecutive lines ``texts``
    (the first at ``first``)."""
    if len(texts) == 1:
        return [(run_id, first, time, stream, texts[0], 1)]
    rows = []
    for start in range(0, len(texts), ROW_LINES):
        piece = texts[start : start + ROW_LINES]
        joined = "\n".join(piece)
        if len(piece) == 1 or joined.count("\n") != len(piece) - 1:  # a line holds a newline: one row each
            rows += [(run_id, seq, time, stream, text, 1) for seq, text in enumerate(piece, first + start)]
        else:
            rows.append((run_id, first + start, time, stream, joined, len(piece)))
    return rows


def unstored(session: Session, rows: list[tuple]) -> list[tuple]:
    """``rows`` (as ``rows_of`` makes them) without the lines already stored, or already in an
    earlier row of ``rows``: a line is stored once per ``(run_id, seq)``, the first one wins. A row
    partly stored keeps its other lines (as rows of their own runs of lines). One indexed query per
    run, reading only the rows around the new lines' ``seq`` range."""
    by_run: dict[str, list[tuple]] = {}
    for row in rows:
        by_run.setdefault(row[0], []).append(row)
    kept = []
    for run_id, run_rows in by_run.items():
        low = min(row[1] for row in run_rows)
        high = max(row[1] + row[5] - 1 for row in run_rows)
        stored = session.execute(
            select(LogLine.seq, LogLine.line_count).where(
                LogLine.run_id == run_id, LogLine.seq > low - ROW_LINES, LogLine.seq <= high
            )
        ).all()
        if _disjoint(stored, run_rows, low):  # the usual case: new lines after the stored ones
            kept += run_rows
            continue
        covered: set[int] = set()
        for seq, count in stored:
            covered.update(range(seq, seq + count))
        for row in run_rows:
            span = range(row[1], row[1] + row[5])
            if covered.isdisjoint(span):
                kept.append(row)
            else:  # rare (a line sent twice under another batching): keep the lines not stored
                texts = [row[4]] if row[5] == 1 else row[4].split("\n")
                kept += _runs_of_new_lines(row, texts, covered)
            covered.update(span)
    return kept


def _disjoint(stored: list, rows: list[tuple], low: int) -> bool:
    """Whether ``rows`` (of one run) follow each other without overlapping, and no ``stored`` row
    reaches into them: checked per row, not per line."""
    if any(seq + count > low for seq, count in stored):
        return False
    end = low  # the first row starts at ``low`` or later
    for row in rows:
        if row[1] < end:
            return False
        end = row[1] + row[5]
    return True


def _runs_of_new_lines(row: tuple, texts: list[str], covered: set[int]) -> list[tuple]:
    run_id, first, time, stream = row[:4]
    rows, start = [], None
    for offset in range(len(texts) + 1):
        new = offset < len(texts) and first + offset not in covered
        if new and start is None:
            start = offset
        elif not new and start is not None:
            piece = texts[start:offset]
            rows.append((run_id, first + start, time, stream, "\n".join(piece), len(piece)))
            start = None
    return rows


def expand(row: LogLine) -> list[Line]:
    """The lines of one row."""
    if row.line_count == 1:
        return [Line(row.id, row.run_id, row.seq, row.time, row.stream, row.text)]
    return [
        Line(row.id, row.run_id, seq, row.time, row.stream, text)
        for seq, text in enumerate(row.text.split("\n"), row.seq)
    ]


def _last_seq_of_row():
    return LogLine.seq + (LogLine.line_count - 1)  # never past seq for a single line (no int4 overflow)


def lines_after(session: Session, run_id: str, after: int, limit: int) -> list[Line]:
    """Up to ``limit`` lines of ``run_id`` with ``seq > after``, in order."""
    query = (
        select(LogLine)
        .where(LogLine.run_id == run_id, LogLine.seq > after - ROW_LINES, _last_seq_of_row() > after)
        .order_by(LogLine.seq)
    )
    lines: list[Line] = []
    result = session.scalars(query.execution_options(yield_per=20))
    try:
        for row in result:
            lines += [line for line in expand(row) if line.seq > after]
            if len(lines) >= limit:
                break
    finally:
        result.close()
    return lines[:limit]


def first_lines(session: Session, run_id: str, limit: int) -> list[Line]:
    """The first ``limit`` lines of ``run_id``."""
    return lines_after(session, run_id, -1, limit)


def last_lines(session: Session, run_id: str, limit: int) -> list[Line]:
    """The last ``limit`` lines of ``run_id``, in order."""
    query = select(LogLine).where(LogLine.run_id == run_id).order_by(LogLine.seq.desc())
    lines: list[Line] = []
    result = session.scalars(query.execution_options(yield_per=20))
    try:
        for row in result:
            lines = expand(row) + lines
            if len(lines) >= limit:
                break
    finally:
        result.close()
    return lines[-limit:] if limit > 0 else []


def last_seq(session: Session, run_id: str) -> int | None:
    """The highest ``seq`` stored for ``run_id`` (None: no line)."""
    query = select(_last_seq_of_row()).where(LogLine.run_id == run_id).order_by(LogLine.seq.desc()).limit(1)
    return session.scalar(query)  # rows do not overlap: the last row holds the last line


def count_lines(session: Session, run_id: str | None = None) -> int:
    """How many lines are stored (for ``run_id``, or in all)."""
    query = select(func.coalesce(func.sum(LogLine.line_count), 0))
    if run_id is not None:
        query = query.where(LogLine.run_id == run_id)
    return int(session.scalar(query))


def stored_lines(session: Session, run_id: str | None = None) -> list[Line]:
    """Every line stored (for ``run_id``, or of every run), in ``(run_id, seq)`` order."""
    query = select(LogLine).order_by(LogLine.run_id, LogLine.seq)
    if run_id is not None:
        query = query.where(LogLine.run_id == run_id)
    return [line for row in session.scalars(query) for line in expand(row)]
