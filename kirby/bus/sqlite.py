"""The embedded bus's tables (prefixed ``bus_``) in the embedded file (``kirby.embedded``), and pruning."""

from __future__ import annotations

from pathlib import Path

from kirby.embedded import EmbeddedFile
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


def bus_file(path: Path, busy_timeout: float) -> EmbeddedFile:
    """The embedded file, opened for the bus (errors are BusError)."""
    return EmbeddedFile(path, busy_timeout, "embedded bus file", BusError)


def prune(db: EmbeddedFile, stream: str, now: float, retention: float, max_age: float) -> None:
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
