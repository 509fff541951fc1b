"""The embedded lease store: one SQLite file shared by the processes of one host (see ``base.py``).

It is the default when REDIS_URL is unset, and it keeps the same promises as the Redis store across
processes: every operation is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock is taken at
the start), so each compare-and-set reads and writes with no other process in between. The file
(``KIRBY_EMBEDDED_PATH``) is shared with the embedded bus; this store's tables start with ``lease_``.
WAL mode lets readers proceed during writes; a process killed mid-transaction leaves the file
consistent (its uncommitted changes are discarded and its lock is released by the kernel).

Expiry uses this host's clock (``time.time()``), the one clock all users of the file share.
A cursor write is accepted only while the leader lease is live under the writer's epoch (as on
Redis). A process frozen *inside* a transaction (SIGSTOP at the wrong microsecond) holds the write
lock; the others then fail with LeaseError after ``BUSY_TIMEOUT`` seconds rather than hang.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from kirby.config import Settings
from kirby.errors import LeaseError, SupervisorNameTaken
from kirby.lease.base import CLAIM_RETENTION, Claim, Leader, LeaseStore, StaleEpoch, SupervisorInfo, as_utc

BUSY_TIMEOUT = 10.0  # seconds a call waits for another process's transaction before LeaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS lease_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT, epoch INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_cursor (schedule_key TEXT PRIMARY KEY, instant TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lease_claim (
    run_id TEXT PRIMARY KEY, supervisor TEXT NOT NULL, attempt INTEGER NOT NULL,
    claimed_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS lease_claim_expiry ON lease_claim (expires_at);
CREATE TABLE IF NOT EXISTS lease_published (
    schedule_key TEXT NOT NULL, instant REAL NOT NULL, PRIMARY KEY (schedule_key, instant));
CREATE TABLE IF NOT EXISTS lease_daemon (daemon TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_supervisor (
    name TEXT PRIMARY KEY, instance TEXT NOT NULL, info TEXT NOT NULL,
    heartbeat REAL NOT NULL, expires_at REAL NOT NULL);
"""


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


class LocalLeaseStore(LeaseStore):
    """The lease store in the SQLite file ``settings.embedded_path``."""

    def __init__(self, settings: Settings):
        self._path = settings.embedded_path
        self._lock = threading.Lock()  # one connection, used by one thread at a time
        with self._errors():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as db:
            for statement in SCHEMA.split(";")[:-1]:  # not executescript: it would commit our transaction
                db.execute(statement)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite and file errors into one LeaseError line naming the file and its variable."""
        where = f"the embedded lease store {self._path} (KIRBY_EMBEDDED_PATH)"
        try:
            yield
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise LeaseError(
                    f"{where} stayed locked by another process for {BUSY_TIMEOUT:.0f} s; "
                    "stop the stuck process or point KIRBY_EMBEDDED_PATH at another file"
                ) from None
            raise LeaseError(f"{where} failed: {error}") from None
        except (OSError, sqlite3.Error) as error:
            raise LeaseError(f"{where} failed: {error}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction: committed on success, rolled back on any error."""
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- leader lease ---------------------------------------------------------------------------
    def acquire_leader(self, owner: str, ttl: float) -> int | None:
        with self._transaction() as db:
            now = time.time()
            row = db.execute("SELECT owner, epoch, expires_at FROM lease_leader WHERE id = 1").fetchone()
            if row and row[0] is not None and row[2] > now:
                return None
            epoch = (row[1] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO lease_leader VALUES (1, ?, ?, ?)", (owner, epoch, now + ttl))
            return epoch

    def renew_leader(self, owner: str, epoch: int, ttl: float) -> bool:
        with self._transaction() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE lease_leader SET expires_at = ? WHERE owner = ? AND epoch = ? AND expires_at > ?",
                (now + ttl, owner, epoch, now),
            )
            return cursor.rowcount == 1

    def release_leader(self, owner: str, epoch: int) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE lease_leader SET owner = NULL, expires_at = 0 WHERE owner = ? AND epoch = ? AND expires_at > ?",
                (owner, epoch, time.time()),
            )
            return cursor.rowcount == 1

    def leader(self) -> Leader | None:
        with self._transaction() as db:
            row = db.execute(
                "SELECT owner, epoch, expires_at FROM lease_leader WHERE owner IS NOT NULL AND expires_at > ?",
                (time.time(),),
            ).fetchone()
        return Leader(owner=row[0], epoch=row[1], expires_at=_datetime(row[2])) if row else None

    def current_epoch(self) -> int:
        with self._transaction() as db:
            row = db.execute("SELECT epoch FROM lease_leader WHERE id = 1").fetchone()
        return row[0] if row else 0

    # -- cursors --------------------------------------------------------------------------------
    def get_cursor(self, schedule_key: str) -> datetime | None:
        return self.get_cursors([schedule_key]).get(schedule_key)

    def set_cursor(self, schedule_key: str, instant: datetime, epoch: int, owner: str | None = None) -> None:
        self.set_cursors({schedule_key: instant}, epoch, owner)

    def get_cursors(self, schedule_keys: list[str]) -> dict[str, datetime]:
        """One transaction."""
        with self._transaction() as db:
            rows = [
                db.execute("SELECT schedule_key, instant FROM lease_cursor WHERE schedule_key = ?", (key,)).fetchone()
                for key in schedule_keys
            ]
        return {row[0]: datetime.fromisoformat(row[1]) for row in rows if row}

    def set_cursors(self, cursors: dict[str, datetime], epoch: int, owner: str | None = None) -> None:
        """One transaction: all written, or none (StaleEpoch)."""
        rows = [(key, as_utc(instant).isoformat()) for key, instant in cursors.items()]
        if not rows:
            return
        with self._transaction() as db:
            live = db.execute(
                "SELECT 1 FROM lease_leader WHERE epoch = ? AND owner IS NOT NULL AND expires_at > ?"
                " AND (? IS NULL OR owner = ?)",
                (epoch, time.time(), owner, owner),
            ).fetchone()
            if not live:
                raise StaleEpoch(
                    f"epoch {epoch} no longer holds the leader lease; cursors {sorted(cursors)} not written"
                )
            db.executemany("INSERT OR REPLACE INTO lease_cursor VALUES (?, ?)", rows)

    # -- run claims -----------------------------------------------------------------------------
    def claim_run(self, run_id: str, supervisor: str, attempt: int = 1) -> bool:
        with self._transaction() as db:
            now = time.time()
            db.execute("DELETE FROM lease_claim WHERE expires_at <= ?", (now,))  # retention; uses the index
            cursor = db.execute(
                "INSERT OR IGNORE INTO lease_claim VALUES (?, ?, ?, ?, ?)",
                (run_id, supervisor, attempt, now, now + CLAIM_RETENTION),
            )
            return cursor.rowcount == 1

    def get_claim(self, run_id: str) -> Claim | None:
        claims = self._claims("AND run_id = ?", (run_id,))
        return claims[0] if claims else None

    def list_claims(self) -> list[Claim]:
        return self._claims("", ())

    def _claims(self, condition: str, parameters: tuple) -> list[Claim]:
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT run_id, supervisor, attempt, claimed_at FROM lease_claim WHERE expires_at > ? {condition}"
                " ORDER BY run_id",
                (time.time(), *parameters),
            ).fetchall()
        return [Claim(run_id=r[0], supervisor=r[1], attempt=r[2], claimed_at=_datetime(r[3])) for r in rows]

    # -- daemon leases --------------------------------------------------------------------------
    def acquire_daemon(self, daemon: str, owner: str, ttl: float) -> bool:
        with self._transaction() as db:
            now = time.time()
            cursor = db.execute(
                "INSERT INTO lease_daemon VALUES (?, ?, ?) ON CONFLICT (daemon) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE lease_daemon.owner = excluded.owner OR lease_daemon.expires_at <= ?",
                (daemon, owner, now + ttl, now),
            )
            return cursor.rowcount == 1

    def renew_daemon(self, daemon: str, owner: str, ttl: float) -> bool:
        with self._transaction() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE lease_daemon SET expires_at = ? WHERE daemon = ? AND owner = ? AND expires_at > ?",
                (now + ttl, daemon, owner, now),
            )
            return cursor.rowcount == 1

    def release_daemon(self, daemon: str, owner: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM lease_daemon WHERE daemon = ? AND owner = ? AND expires_at > ?",
                (daemon, owner, time.time()),
            )
            return cursor.rowcount == 1

    def daemon_holders(self) -> dict[str, str]:
        with self._transaction() as db:
            rows = db.execute("SELECT daemon, owner FROM lease_daemon WHERE expires_at > ?", (time.time(),)).fetchall()
        return dict(rows)

    # -- supervisor registry --------------------------------------------------------------------
    def register_supervisor(self, name: str, instance: str, ttl: float, info: dict[str, Any] | None = None) -> None:
        with self._transaction() as db:
            now = time.time()
            row = db.execute(
                "SELECT instance, heartbeat FROM lease_supervisor WHERE name = ? AND expires_at > ?", (name, now)
            ).fetchone()
            if row and row[0] != instance:
                raise SupervisorNameTaken(
                    f"a supervisor named {name!r} is already running (last heartbeat {now - row[1]:.0f} s ago); "
                    "choose another name or stop it"
                )
            db.execute(
                "INSERT OR REPLACE INTO lease_supervisor VALUES (?, ?, ?, ?, ?)",
                (name, instance, json.dumps(info or {}), now, now + ttl),
            )

    def unregister_supervisor(self, name: str, instance: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM lease_supervisor WHERE name = ? AND instance = ?", (name, instance))

    def supervisors(self) -> list[SupervisorInfo]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT name, instance, heartbeat, info FROM lease_supervisor WHERE expires_at > ? ORDER BY name",
                (time.time(),),
            ).fetchall()
        return [
            SupervisorInfo(name=r[0], instance=r[1], last_heartbeat=_datetime(r[2]), info=json.loads(r[3]))
            for r in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- the record of published slots (issue 10) -------------------------------------------------
    def add_published(self, slots: dict[str, list[datetime]], forget_before: datetime) -> None:
        rows = [(key, as_utc(instant).timestamp()) for key, instants in slots.items() for instant in instants]
        if not rows:
            return
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO lease_published VALUES (?, ?)", rows)
            db.executemany(
                "DELETE FROM lease_published WHERE schedule_key = ? AND instant < ?",
                [(key, as_utc(forget_before).timestamp()) for key in slots],
            )

    def published_slots(self, schedule_key: str, after: datetime, until: datetime) -> list[datetime]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT instant FROM lease_published WHERE schedule_key = ? AND instant > ? AND instant <= ?"
                " ORDER BY instant",
                (schedule_key, as_utc(after).timestamp(), as_utc(until).timestamp()),
            ).fetchall()
        return [_datetime(row[0]) for row in rows]
