"""The embedded lease store: one SQLite file shared by the processes of one host (see ``base.py``).

It is the default when REDIS_URL is unset, and it keeps the same promises as the Redis store across
processes: every operation is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock is taken at
the start), so each compare-and-set reads and writes with no other process in between. The file
(``KIRBY_EMBEDDED_PATH``, opened through ``kirby.embedded``) is shared with the embedded bus; this store's tables start with ``lease_``.
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
import time
from datetime import datetime, timezone
from typing import Any

from kirby.config import Settings
from kirby.embedded import EmbeddedFile
from kirby.errors import LeaseError
from kirby.lease.base import (
    CLAIM_RETENTION,
    Claim,
    ClaimRequest,
    ClaimsClosed,
    Leader,
    LeaseHolder,
    LeaseStore,
    StaleEpoch,
    SupervisorInfo,
    as_utc,
    name_taken,
)
from kirby.lease.local_record import RecordMixin
from kirby.lease.local_record import is_open as _is_open

BUSY_TIMEOUT = 10.0  # seconds a call waits for another process's transaction before LeaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS lease_leader (
    id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT, epoch INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_cursor (schedule_key TEXT PRIMARY KEY, instant TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lease_run (
    run_id TEXT PRIMARY KEY, supervisor TEXT NOT NULL, instance TEXT NOT NULL, attempt INTEGER NOT NULL,
    claimed_at REAL NOT NULL, started_at REAL, released INTEGER NOT NULL DEFAULT 0,
    settled INTEGER NOT NULL DEFAULT 0, offer TEXT, expires_at REAL);
CREATE INDEX IF NOT EXISTS lease_run_expiry ON lease_run (expires_at);
CREATE INDEX IF NOT EXISTS lease_run_active ON lease_run (settled, claimed_at);
CREATE TABLE IF NOT EXISTS lease_named (
    name TEXT PRIMARY KEY, space TEXT NOT NULL, owner TEXT, generation INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS lease_named_space ON lease_named (space, expires_at);
CREATE TABLE IF NOT EXISTS lease_cancel (run_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_delivery (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lease_published (
    schedule_key TEXT NOT NULL, instant REAL NOT NULL, PRIMARY KEY (schedule_key, instant));
CREATE TABLE IF NOT EXISTS lease_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1), marker TEXT NOT NULL, open INTEGER NOT NULL, closed_at REAL,
    rebuilt INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lease_supervisor (
    name TEXT PRIMARY KEY, instance TEXT NOT NULL, info TEXT NOT NULL,
    heartbeat REAL NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS lease_supervisor_expiry ON lease_supervisor (expires_at);
"""


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _upgrade(db: sqlite3.Connection) -> None:
    """Files of versions before issue 11: their claims become settled claims of ``lease_run``; their
    daemon leases (``lease_daemon``) are dropped (a one-time reset: holders take them again)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "lease_claim" in tables:
        db.execute(
            "INSERT OR IGNORE INTO lease_run (run_id, supervisor, instance, attempt, claimed_at, settled, expires_at)"
            " SELECT run_id, supervisor, '', attempt, claimed_at, 1, expires_at FROM lease_claim"
        )
        db.execute("DROP TABLE lease_claim")
    if "lease_daemon" in tables:
        db.execute("DROP TABLE lease_daemon")


class LocalLeaseStore(RecordMixin, LeaseStore):
    """The lease store in the SQLite file ``settings.embedded_path``."""

    def __init__(self, settings: Settings):
        self._path = settings.embedded_path
        self._db = EmbeddedFile(self._path, BUSY_TIMEOUT, "the embedded lease store", LeaseError)
        with self._db.transaction() as db:
            for statement in SCHEMA.split(";")[:-1]:  # not executescript: it would commit our transaction
                db.execute(statement)
            _upgrade(db)

    # -- leader lease ---------------------------------------------------------------------------
    def acquire_leader(self, owner: str, ttl: float) -> int | None:
        with self._db.transaction() as db:
            now = time.time()
            row = db.execute("SELECT owner, epoch, expires_at FROM lease_leader WHERE id = 1").fetchone()
            if row and row[0] is not None and row[2] > now:
                return None
            epoch = (row[1] if row else 0) + 1
            db.execute("INSERT OR REPLACE INTO lease_leader VALUES (1, ?, ?, ?)", (owner, epoch, now + ttl))
            return epoch

    def renew_leader(self, owner: str, epoch: int, ttl: float) -> bool:
        with self._db.transaction() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE lease_leader SET expires_at = ? WHERE owner = ? AND epoch = ? AND expires_at > ?",
                (now + ttl, owner, epoch, now),
            )
            return cursor.rowcount == 1

    def release_leader(self, owner: str, epoch: int) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE lease_leader SET owner = NULL, expires_at = 0 WHERE owner = ? AND epoch = ? AND expires_at > ?",
                (owner, epoch, time.time()),
            )
            return cursor.rowcount == 1

    def leader(self) -> Leader | None:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT owner, epoch, expires_at FROM lease_leader WHERE owner IS NOT NULL AND expires_at > ?",
                (time.time(),),
            ).fetchone()
        return Leader(owner=row[0], epoch=row[1], expires_at=_datetime(row[2])) if row else None

    def current_epoch(self) -> int:
        with self._db.transaction() as db:
            row = db.execute("SELECT epoch FROM lease_leader WHERE id = 1").fetchone()
        return row[0] if row else 0

    # -- cursors --------------------------------------------------------------------------------
    def get_cursor(self, schedule_key: str) -> datetime | None:
        return self.get_cursors([schedule_key]).get(schedule_key)

    def set_cursor(self, schedule_key: str, instant: datetime, epoch: int, owner: str | None = None) -> None:
        self.set_cursors({schedule_key: instant}, epoch, owner)

    def get_cursors(self, schedule_keys: list[str]) -> dict[str, datetime]:
        """One transaction."""
        with self._db.transaction() as db:
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
        with self._db.transaction() as db:
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

    # -- run claims, named leases, cancel requests, registry (issue 11) --------------------------
    def claim_run(
        self,
        run_id: str,
        supervisor: str,
        attempt: int = 1,
        instance: str = "",
        offer: str | None = None,
        generation: str | None = None,
    ) -> bool:
        with self._db.transaction() as db:
            now = time.time()
            held = db.execute("SELECT released FROM lease_run WHERE run_id = ?", (run_id,)).fetchone()
            if generation and not (held and not held[0]) and not _is_open(db, generation):
                raise ClaimsClosed(f"run {run_id} not claimed: the lease store's generation is closed or new (amnesia)")
            db.execute("DELETE FROM lease_run WHERE expires_at <= ?", (now,))  # retention; uses the index
            return self._insert_claim(db, run_id, supervisor, instance, attempt, now, offer)

    def claim_runs(self, requests: list[ClaimRequest], generation: str | None = None) -> list[bool | None]:
        """One transaction for all of them (see the contract)."""
        if not requests:
            return []
        with self._db.transaction() as db:
            now = time.time()
            db.execute("DELETE FROM lease_run WHERE expires_at <= ?", (now,))
            is_open = None  # read once, when a request needs it
            outcomes: list[bool | None] = []
            for r in requests:
                held = db.execute("SELECT released FROM lease_run WHERE run_id = ?", (r.run_id,)).fetchone()
                if generation and not (held and not held[0]):
                    if is_open is None:
                        is_open = _is_open(db, generation)
                    if not is_open:
                        outcomes.append(None)
                        continue
                outcomes.append(self._insert_claim(db, r.run_id, r.supervisor, r.instance, r.attempt, now, r.offer))
            return outcomes

    @staticmethod
    def _insert_claim(db, run_id: str, supervisor: str, instance: str, attempt: int, now: float, offer) -> bool:
        cursor = db.execute(
            "INSERT INTO lease_run (run_id, supervisor, instance, attempt, claimed_at, offer)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET supervisor = excluded.supervisor,"
            " instance = excluded.instance, attempt = excluded.attempt, claimed_at = excluded.claimed_at,"
            " offer = excluded.offer, released = 0 WHERE lease_run.released = 1",
            (run_id, supervisor, instance, attempt, now, offer),
        )
        return cursor.rowcount == 1

    def get_claim(self, run_id: str) -> Claim | None:
        claims = self._claims("AND run_id = ?", (run_id,))
        return claims[0] if claims else None

    def list_claims(self) -> list[Claim]:
        return self._claims("", ())

    def active_claims(self) -> list[Claim]:
        return self._claims("AND settled = 0", ())

    def _claims(self, condition: str, parameters: tuple) -> list[Claim]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT run_id, supervisor, attempt, claimed_at, instance, started_at, settled, released, offer"
                f" FROM lease_run WHERE (expires_at IS NULL OR expires_at > ?) {condition} ORDER BY run_id",
                (time.time(), *parameters),
            ).fetchall()
        return [
            Claim(
                run_id=r[0],
                supervisor=r[1],
                attempt=r[2],
                claimed_at=_datetime(r[3]),
                instance=r[4],
                started_at=_datetime(r[5]) if r[5] is not None else None,
                settled=bool(r[6]),
                released=bool(r[7]),
                offer=r[8],
            )
            for r in rows
        ]

    def mark_started(self, run_id: str, instance: str) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE lease_run SET started_at = COALESCE(started_at, ?)"
                " WHERE run_id = ? AND instance = ? AND released = 0 AND settled = 0",
                (time.time(), run_id, instance),
            )
            return cursor.rowcount == 1

    def mark_runs_started(self, run_ids: list[str], instance: str) -> list[bool]:
        """One transaction for all of them."""
        if not run_ids:
            return []
        with self._db.transaction() as db:
            now = time.time()
            return [
                db.execute(
                    "UPDATE lease_run SET started_at = COALESCE(started_at, ?)"
                    " WHERE run_id = ? AND instance = ? AND released = 0 AND settled = 0",
                    (now, run_id, instance),
                ).rowcount
                == 1
                for run_id in run_ids
            ]

    def release_claim(self, run_id: str, instance: str) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE lease_run SET released = 1 WHERE run_id = ? AND instance = ? AND released = 0"
                " AND settled = 0 AND started_at IS NULL",
                (run_id, instance),
            )
            return cursor.rowcount == 1

    def settle_run(self, run_id: str) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE lease_run SET settled = 1, expires_at = ? WHERE run_id = ? AND settled = 0",
                (time.time() + CLAIM_RETENTION, run_id),
            )

    def acquire_lease(
        self, name: str, owner: str, ttl: float, replaces: str | None = None, generation: str | None = None
    ) -> int | None:
        with self._db.transaction() as db:
            now = time.time()
            row = db.execute("SELECT owner, generation, expires_at FROM lease_named WHERE name = ?", (name,)).fetchone()
            held = row[0] if row and row[2] > now else None
            if held is not None and held == owner:
                number = row[1]
            elif held is None or (replaces is not None and held == replaces):
                if generation and not _is_open(db, generation):
                    raise ClaimsClosed(
                        f"lease {name} not acquired: the lease store's generation is closed or new (amnesia)"
                    )
                number = (row[1] if row else _counter_floor(db, now)) + 1
            else:
                return None
            db.execute(
                "INSERT INTO lease_named VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " generation = excluded.generation, expires_at = excluded.expires_at",
                (name, _space(name), owner, number, now + ttl),
            )
            return number

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        with self._db.transaction() as db:
            now = time.time()
            cursor = db.execute(
                "UPDATE lease_named SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
                (now + ttl, name, owner, now),
            )
            return cursor.rowcount == 1

    def renew_leases(self, names: list[str], owner: str, ttl: float) -> dict[str, bool]:
        with self._db.transaction() as db:
            now = time.time()
            return {
                name: db.execute(
                    "UPDATE lease_named SET expires_at = ? WHERE name = ? AND owner = ? AND expires_at > ?",
                    (now + ttl, name, owner, now),
                ).rowcount
                == 1
                for name in names
            }

    def release_lease(self, name: str, owner: str) -> bool:
        with self._db.transaction() as db:
            cursor = db.execute(  # the row stays: it keeps the generation
                "UPDATE lease_named SET owner = NULL, expires_at = 0 WHERE name = ? AND owner = ? AND expires_at > ?",
                (name, owner, time.time()),
            )
            return cursor.rowcount == 1

    def lease_holder(self, name: str) -> LeaseHolder | None:
        return self._holders("name = ?", name).get(name)

    def lease_holders(self, space: str) -> dict[str, LeaseHolder]:
        return self._holders("space = ?", space)

    def _holders(self, condition: str, value: str) -> dict[str, LeaseHolder]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT name, owner, generation, expires_at FROM lease_named"
                f" WHERE {condition} AND owner IS NOT NULL AND expires_at > ?",
                (value, time.time()),
            ).fetchall()
        return {r[0]: LeaseHolder(r[0], r[1], r[2], _datetime(r[3])) for r in rows}

    def claim_delivery(self, key: str, owner: str, ttl: float) -> str | None:
        with self._db.transaction() as db:
            now = time.time()
            db.execute("DELETE FROM lease_delivery WHERE key = ? AND expires_at <= ?", (key, now))
            row = db.execute("SELECT owner FROM lease_delivery WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return row[0]
            db.execute("INSERT INTO lease_delivery VALUES (?, ?, ?)", (key, owner, now + ttl))
        return None

    def request_cancel(self, run_id: str, ttl: float) -> None:
        with self._db.transaction() as db:
            now = time.time()
            db.execute("DELETE FROM lease_cancel WHERE expires_at <= ?", (now,))
            db.execute("INSERT OR REPLACE INTO lease_cancel VALUES (?, ?)", (run_id, now + ttl))

    def cancel_requested(self, run_id: str) -> bool:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT 1 FROM lease_cancel WHERE run_id = ? AND expires_at > ?", (run_id, time.time())
            ).fetchone()
        return row is not None

    def register_supervisor(
        self, name: str, instance: str, ttl: float, info: dict[str, Any] | None = None, replaces: str | None = None
    ) -> None:
        with self._db.transaction() as db:
            now = time.time()
            row = db.execute(
                "SELECT instance, heartbeat, info FROM lease_supervisor WHERE name = ? AND expires_at > ?", (name, now)
            ).fetchone()
            if row and row[0] != instance and row[0] != replaces:
                holder = SupervisorInfo(name, row[0], _datetime(row[1]), json.loads(row[2]))
                raise name_taken(name, holder, _datetime(now))
            db.execute(
                "INSERT OR REPLACE INTO lease_supervisor VALUES (?, ?, ?, ?, ?)",
                (name, instance, json.dumps(info or {}), now, now + ttl),
            )

    def unregister_supervisor(self, name: str, instance: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM lease_supervisor WHERE name = ? AND instance = ?", (name, instance))

    def supervisors(self) -> list[SupervisorInfo]:
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT name, instance, heartbeat, info FROM lease_supervisor WHERE expires_at > ? ORDER BY name",
                (time.time(),),
            ).fetchall()
        return [
            SupervisorInfo(name=r[0], instance=r[1], last_heartbeat=_datetime(r[2]), info=json.loads(r[3]))
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()


def _counter_floor(db: sqlite3.Connection, now: float) -> int:
    """Where a lease's missing generation counter starts: 0, or the time in ms in a file that lost its
    data (its generation closed, or rebuilt), so fence tokens issued after a loss exceed those
    issued before."""
    row = db.execute("SELECT rebuilt, open FROM lease_generation WHERE id = 1").fetchone()
    return int(now * 1000) if row and (row[0] or not row[1]) else 0


def _space(name: str) -> str:
    return name.split(":", 1)[0]
