"""Retention of run history: ``prune_runs(database, now, days)`` deletes old finished runs and their logs.

A run is deleted when it is finished (succeeded, failed, timed out, lost, skipped), was scheduled
more than ``days`` days before ``now`` and did not finish within them either; its log lines go
with it. Runs still offered, claimed or running are never deleted, however old. Deletes go in
batches of ``batch`` runs, one transaction each, so a large backlog never holds a long lock.
``days == 0`` keeps everything. Applied by ``kirby web`` once a day (``RetentionLoop``) and by
``kirby gc``; ``KIRBY_RUN_RETENTION_DAYS`` sets ``days``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, or_, select

from kirby.db import Database
from kirby.models import FINISHED_STATES, LogLine, Run

log = logging.getLogger(__name__)
DAY = 24 * 3600.0


@dataclass(frozen=True)
class Pruned:
    runs: int = 0
    lines: int = 0


def prune_runs(database: Database, now: datetime, days: int, batch: int = 500) -> Pruned:
    """Delete the finished runs older than ``days`` days (and their log lines); returns the counts."""
    if days <= 0:
        return Pruned()
    cutoff = now - timedelta(days=days)
    runs = lines = 0
    while True:
        with database.session() as s:
            ids = list(
                s.scalars(
                    select(Run.id)
                    .where(
                        Run.scheduled_at < cutoff,
                        Run.state.in_(FINISHED_STATES),
                        or_(Run.finished_at.is_(None), Run.finished_at < cutoff),
                    )
                    .limit(batch)
                )
            )
            if not ids:
                return Pruned(runs, lines)
            stored = select(func.coalesce(func.sum(LogLine.line_count), 0)).where(LogLine.run_id.in_(ids))
            lines += int(s.scalar(stored))  # lines, not rows (kirby.logstore)
            s.execute(delete(LogLine).where(LogLine.run_id.in_(ids)))
            runs += s.execute(delete(Run).where(Run.id.in_(ids))).rowcount


class RetentionLoop:
    """``kirby web``'s daily pruning thread: ``tick(now)`` prunes if a day has passed since the last."""

    def __init__(self, database: Database, days: int, clock: Callable[[], datetime] | None = None):
        self.database, self.days = database, days
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.last: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime) -> Pruned | None:
        if self.days <= 0 or (self.last is not None and now - self.last < timedelta(days=1)):
            return None
        self.last = now
        pruned = prune_runs(self.database, now, self.days)
        if pruned.runs:
            log.info(
                "retention: deleted %d runs and %d log lines older than %d days", pruned.runs, pruned.lines, self.days
            )
        return pruned

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kirby-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
            except Exception:  # noqa: BLE001 - a failed prune is retried at the next check
                log.exception("retention: pruning old runs failed; trying again in an hour")
                self.last = None
            self._stop.wait(3600.0)
