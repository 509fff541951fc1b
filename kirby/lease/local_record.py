"""The embedded lease store's issue-10 records, mixed into ``LocalLeaseStore`` (``local.py``, which
holds the file): the record of published slots (``lease_published``) and the generation marker
that detects amnesia (``lease_generation``: the file deleted or replaced while processes run).
The embedded store has no server to restart, so its ``boot`` is always empty."""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime, timezone

from kirby.lease.base import CLAIM_RETENTION, Generation, RestoredClaim, as_utc


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def is_open(db: sqlite3.Connection, marker: str) -> bool:
    """Whether ``marker`` is the file's open generation (inside the caller's transaction)."""
    row = db.execute("SELECT marker, open FROM lease_generation WHERE id = 1").fetchone()
    return bool(row and row[0] == marker and row[1])


class RecordMixin:
    """Needs ``_db`` (an ``EmbeddedFile``) from ``LocalLeaseStore``."""

    # -- the record of published slots ----------------------------------------------------------
    def add_published(self, slots: dict[str, list[datetime]], forget_before: datetime) -> None:
        rows = [(key, as_utc(instant).timestamp()) for key, instants in slots.items() for instant in instants]
        if not rows:
            return
        with self._db.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO lease_published VALUES (?, ?)", rows)
            db.executemany(
                "DELETE FROM lease_published WHERE schedule_key = ? AND instant < ?",
                [(key, as_utc(forget_before).timestamp()) for key in slots],
            )

    def published_slots(self, schedule_key: str, after: datetime, until: datetime) -> list[datetime]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT instant FROM lease_published WHERE schedule_key = ? AND instant > ? AND instant <= ?"
                " ORDER BY instant",
                (schedule_key, as_utc(after).timestamp(), as_utc(until).timestamp()),
            ).fetchall()
        return [_datetime(row[0]) for row in rows]

    # -- generation marker ----------------------------------------------------------------------
    def check_generation(self, known: str | None) -> Generation:
        with self._db.transaction() as db:
            now = time.time()
            row = db.execute("SELECT marker, open, closed_at, rebuilt FROM lease_generation WHERE id = 1").fetchone()
            if row is None:
                row = (uuid.uuid4().hex, 0 if known else 1, now if known else None, 0)
                db.execute("INSERT INTO lease_generation VALUES (1, ?, ?, ?, ?)", row)
            elif row[1] and known and row[0] != known and not row[3]:
                row = (row[0], 0, now, 0)
                db.execute("UPDATE lease_generation SET open = 0, closed_at = ?, rebuilt = 0 WHERE id = 1", (now,))
        marker, is_open_, closed_at, rebuilt = row
        return Generation(marker, bool(is_open_), "", _datetime(closed_at) if closed_at else None, bool(rebuilt))

    def open_generation(self, marker: str, epoch: int, owner: str) -> bool:
        with self._db.transaction() as db:
            live = db.execute(
                "SELECT 1 FROM lease_leader WHERE epoch = ? AND owner = ? AND expires_at > ?",
                (epoch, owner, time.time()),
            ).fetchone()
            if not live:
                return False
            cursor = db.execute(
                "UPDATE lease_generation SET open = 1, closed_at = NULL, rebuilt = 1 WHERE id = 1 AND marker = ?",
                (marker,),
            )
            return cursor.rowcount == 1

    def restore_claims(self, claims: list[RestoredClaim]) -> list[str]:
        conflicts: list[str] = []
        with self._db.transaction() as db:
            now = time.time()
            for c in claims:
                held = db.execute("SELECT instance FROM lease_run WHERE run_id = ?", (c.run_id,)).fetchone()
                if held is not None:
                    if held[0] != c.instance:
                        conflicts.append(c.run_id)
                    continue
                db.execute(
                    "INSERT INTO lease_run (run_id, supervisor, instance, attempt, claimed_at, started_at, settled,"
                    " offer, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        c.run_id,
                        c.supervisor,
                        c.instance,
                        c.attempt,
                        now,
                        now if c.started else None,
                        int(c.settled),
                        c.offer,
                        now + CLAIM_RETENTION if c.settled else None,
                    ),
                )
        return conflicts
