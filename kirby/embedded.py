"""The embedded backends' SQLite file (``KIRBY_EMBEDDED_PATH``), shared by the bus (tables ``bus_``)
and the lease store (tables ``lease_``): one connection per opener, shared by its threads under a
lock, in WAL mode, every write a ``BEGIN IMMEDIATE`` transaction.

WAL with ``synchronous=NORMAL``: a committed write survives the crash of any process; a power loss
may lose the last transactions. A process killed mid-transaction leaves the file consistent (its
uncommitted changes are discarded and the kernel releases its lock). Every sqlite3 or file error
becomes one line of the opener's error type (``BusError``, ``LeaseError``) naming the file and
``KIRBY_EMBEDDED_PATH``; a lock held longer than ``busy_timeout`` (a process frozen inside a
transaction) fails instead of hanging.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kirby.errors import KirbyError


class EmbeddedFile:
    """One connection to the embedded file; ``what`` names its user in errors ("embedded bus file")."""

    def __init__(self, path: Path, busy_timeout: float, what: str, error: type[KirbyError]):
        self.path = path
        self.busy_timeout = busy_timeout
        self._what, self._error_type = what, error
        self._lock = threading.RLock()
        with self._translated():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def _error(self, exc: Exception) -> KirbyError:
        where = f"{self._what} {self.path} (KIRBY_EMBEDDED_PATH)"
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return self._error_type(
                f"{where} stayed locked by another process for {self.busy_timeout:.0f} s; "
                "stop the stuck process or point KIRBY_EMBEDDED_PATH at another file"
            )
        return self._error_type(
            f"{where} failed: {exc}; check that the folder is writable and that no process holds the file locked"
        )

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from None

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement (its own transaction) and return its rows."""
        with self._lock, self._translated():
            return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), committed on success, rolled back on any error."""
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
