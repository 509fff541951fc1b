"""The serialized ``/schedule`` document, built once per schedule version and served from memory.

``ScheduleCache.body(tag, masked, build)`` returns the JSON bytes (and their gzip) of the newest
version of each variant (``masked``: secret values hidden, for a logged-in admin): at 10,000 jobs
a request that finds its version here costs two small queries and a copy, not a build. Builds
are serialized, so followers asking together after an edit cause one build, not one each.
``encode`` serializes the other answers (deltas: small, never cached). ``purge_if_due`` trims
the change log behind the deltas once per ``PURGE_EVERY`` seconds (``kirby.web.schedule_changes``).
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from kirby.db import Database
from kirby.web.schedule_changes import purge_changes

MASK = "********"
PURGE_EVERY = 60.0  # seconds between two trims of the change log, per web process
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Body:
    tag: str | None  # the schedule version it was built at (None: no version row: not cached)
    raw: bytes
    gzipped: bytes


def mask_secrets(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (or a delta) with every secret config value replaced by ``MASK`` (in place; returned)."""
    for entry in document.get("contexts", document.get("changed", [])):
        entry["config"] = {k: (MASK if k in entry["secrets"] else v) for k, v in entry["config"].items()}
    return document


def encode(document: dict[str, Any], tag: str | None, masked: bool) -> Body:
    """The JSON bytes of ``document`` (secrets masked if ``masked``) and their gzip."""
    raw = json.dumps(mask_secrets(document) if masked else document, separators=(",", ":")).encode()
    return Body(tag, raw, gzip.compress(raw, compresslevel=1))


class ScheduleCache:
    def __init__(self):
        self._lock = threading.Lock()
        self._bodies: dict[bool, Body] = {}
        self._purged_at: float | None = None  # time.monotonic() of the last trim

    def body(self, tag: str | None, masked: bool, build: Callable[[], dict[str, Any]]) -> Body:
        """The body of version ``tag`` (``build()`` makes its document when it is not cached)."""
        with self._lock:
            cached = self._bodies.get(masked)
            if tag is not None and cached is not None and cached.tag == tag:
                return cached
            body = encode(build(), tag, masked)
            if tag is not None:
                self._bodies[masked] = body
            return body

    def purge_if_due(self, database: Database) -> None:
        """Trim the change log if ``PURGE_EVERY`` seconds passed since the last trim (a failure is logged)."""
        with self._lock:
            if self._purged_at is not None and time.monotonic() - self._purged_at < PURGE_EVERY:
                return
            self._purged_at = time.monotonic()
        try:
            with database.session() as session:
                purged = purge_changes(session)
        except SQLAlchemyError as exc:
            log.warning(
                "cannot trim the schedule change log: %s", str(getattr(exc, "orig", None) or exc).splitlines()[0]
            )
            return
        if purged:
            log.info("trimmed %d old rows of the schedule change log", purged)


def schedule_cache() -> ScheduleCache:
    """The app's cache (one per ``kirby web`` process)."""
    return current_app.extensions.setdefault("kirby_schedule_cache", ScheduleCache())
