"""The embedded bus's SQLite file: its tables (prefixed ``bus_``), a thread-safe connection, pruning.

WAL with ``synchronous=NORMAL``: a committed message survives the crash of any process; a power
loss may lose the last transactions. Every sqlite3 error becomes a one-line BusError naming the
file and ``KIRBY_EMBEDDED_PATH``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kirby.errors import BusError

STREAMS = {"offers": "bus_offers", "events": "bus_events"}  # stream -> its message table

SCHEMA = [
    *(
        f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " run_id TEXT NOT NULL, payload BLOB NOT NULL, created_at REAL NOT NULL)"
        for table in STREAMS.values()
    ),
    "CREATE TABLE IF NOT EXISTS bus_groups (stream TEXT NOT NULL, grp TEXT NOT NULL,"
    " cursor INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (stream, grp))",
    "CREATE TABLE IF NOT EXISTS bus_inflight (stream TEXT NOT NULL, grp TEXT NOT NULL,"
    " message_id INTEGER NOT NULL, owner TEXT, delivered_at REAL NOT NULL,"
    " PRIMARY KEY (stream, grp, message_id))",
    "CREATE INDEX IF NOT EXISTS bus_inflight_owner ON bus_inflight (stream, grp, owner)",
    "CREATE TABLE IF NOT EXISTS bus_members (stream TEXT NOT NULL, grp TEXT NOT NULL,"
    " member TEXT NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (stream, grp, member))",
]


class SqliteFile:
    """One connection to the bus file, shared by threads under a lock; errors become BusError."""

    def __init__(self, path: Path, busy_timeout: float):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None
        self._lock = threading.RLock()
        with self._lock, self._translated():
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def _error(self, exc: Exception) -> BusError:
        return BusError(
            f"embedded bus file {self.path} (KIRBY_EMBEDDED_PATH) failed: {exc}; "
            "check that the folder is writable and that no process holds the file locked"
        )

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement (its own transaction) and return its rows."""
        with self._lock, self._translated():
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), committed on success, rolled back on error."""
        with self._lock, self._translated():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def prune(db: SqliteFile, stream: str, now: float, retention: float, max_age: float) -> None:
    """Delete messages every group acknowledged more than ``retention`` s ago, and all older than ``max_age``."""
    table = STREAMS[stream]
    with db.transaction() as c:
        c.execute(
            f"DELETE FROM {table} WHERE created_at < ?"
            " AND id <= (SELECT COALESCE(MIN(cursor), 0) FROM bus_groups WHERE stream = ?)"
            " AND id NOT IN (SELECT message_id FROM bus_inflight WHERE stream = ?)",
            (now - retention, stream, stream),
        )
        c.execute(f"DELETE FROM {table} WHERE created_at < ?", (now - max_age,))
        c.execute(
            f"DELETE FROM bus_inflight WHERE stream = ? AND message_id NOT IN (SELECT id FROM {table})",
            (stream,),
        )
