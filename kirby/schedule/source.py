"""Where the leader gets its schedule: ``fetch(now) -> ScheduleSnapshot``.

* ``ScheduleClient``: the web server's ``/schedule`` (``KIRBY_SCHEDULE_ENDPOINT``, bearer token
  ``KIRBY_API_TOKEN``), retried ``EXT_RETRIES`` times ``EXT_WAIT_BETWEEN_RETRIES`` apart, within
  ``total_timeout`` seconds in all (a hanging web server cannot hold a fetch longer); when it
  fails it raises ``KirbyError``. It sends the ETag of its last copy as ``If-None-Match``; on
  ``304 Not Modified`` it returns that same snapshot object (so a leader does not even re-read
  it). It also asks for the changes since that copy (``?since=<its ETag>``): a delta answer
  (``kirby.web.schedule_changes``) is merged into the copy, a full document (too old a copy, or a
  server that ignores ``since``: any plain URL serving the document) replaces it. Keeping the
  last good copy through an outage is the caller's job (``Scheduler.refresh``: the one place
  that does it).
* ``DatabaseScheduleSource`` (in ``document``, beside the ORM): the script database directly.
* ``StaticScheduleSource``: a given snapshot (benchmarks, tests).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from datetime import datetime

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_fixed

from kirby.config import Settings
from kirby.errors import KirbyError
from kirby.schedule.snapshot import ScheduleSnapshot, is_delta, merge_delta, parse_schedule

log = logging.getLogger(__name__)


class ScheduleSource(ABC):
    @abstractmethod
    def fetch(self, now: datetime) -> ScheduleSnapshot:
        """The schedule as of ``now``; raises KirbyError when none can be had."""


class StaticScheduleSource(ScheduleSource):
    """Always the snapshot it holds; replace ``snapshot`` to change the schedule."""

    def __init__(self, snapshot: ScheduleSnapshot):
        self.snapshot = snapshot

    def fetch(self, now: datetime) -> ScheduleSnapshot:
        return self.snapshot


class _Transient(Exception):
    """A failure worth retrying (connection refused, timeout, HTTP 5xx)."""


def _detail(response: requests.Response) -> str:
    """`` (<the server's error message>)`` when it sent one as JSON (``{"error": ...}``), else ``""``."""
    try:
        message = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({message})" if isinstance(message, str) and message else ""


def _bare(etag: str) -> str:
    """An ETag header's value without ``W/`` and quotes: what ``?since=`` carries."""
    return etag.strip().removeprefix("W/").strip('"')


class ScheduleClient(ScheduleSource):
    """Fetches ``/schedule`` over HTTP, each fetch bounded by ``total_timeout`` seconds."""

    def __init__(self, settings: Settings, timeout: float = 10.0, total_timeout: float = 20.0):
        self.url = settings.schedule_endpoint
        self.timeout, self.total_timeout = timeout, total_timeout
        self.attempts = settings.ext_retries + 1
        self._http = requests.Session()
        if settings.api_token:
            self._http.headers["Authorization"] = f"Bearer {settings.api_token}"
        self._retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(total_timeout),
            wait=wait_fixed(settings.ext_wait_between_retries),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        self._deadline, self._tried = 0.0, 0
        self._lock = threading.Lock()  # one fetch at a time
        self._etag: str | None = None  # the ETag of ``_snapshot``, sent as If-None-Match
        self._snapshot: ScheduleSnapshot | None = None
        self.not_modified = 0  # fetches answered 304 (the copy kept)
        self.deltas = 0  # fetches answered with the changes since the copy (merged into it)
        self.full = 0  # fetches answered with the full document

    def fetch(self, now: datetime) -> ScheduleSnapshot:
        with self._lock:
            self._deadline, self._tried = time.monotonic() + self.total_timeout, 0
            try:
                return self._retrying(self._get)
            except _Transient as exc:
                raise KirbyError(
                    f"schedule endpoint {self.url} unreachable after {self._tried} attempt(s): {exc}; "
                    "start `kirby web` there or fix KIRBY_SCHEDULE_ENDPOINT"
                ) from None

    def _get(self) -> ScheduleSnapshot:
        self._tried += 1
        try:
            timeout = min(self.timeout, max(0.1, self._deadline - time.monotonic()))
            held = self._etag if self._snapshot is not None else None
            headers = {"If-None-Match": held} if held else {}
            since = _bare(held) if held else None
            response = self._http.get(
                self.url, timeout=timeout, headers=headers, params={"since": since} if since else None
            )
        except requests.Timeout:
            raise _Transient(f"no answer within {timeout:.1f} s") from None
        except requests.ConnectionError as exc:  # the web server not (yet) listening, most often
            reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
            raise _Transient(reason) from None
        except requests.RequestException as exc:
            raise _Transient(str(exc)) from None
        if response.status_code == 304 and self._snapshot is not None:
            self.not_modified += 1
            return self._snapshot  # the same object: the scheduler sees nothing changed
        status = f"HTTP {response.status_code}{_detail(response)}"
        if response.status_code >= 500:
            raise _Transient(status)
        if response.status_code in (401, 403):
            raise KirbyError(f"{status}: the token was refused; set KIRBY_API_TOKEN to the web server's token")
        if response.status_code != 200:
            raise KirbyError(status)
        try:
            data = response.json()
        except ValueError:
            raise KirbyError("the response is not JSON") from None
        if is_delta(data):
            if self._snapshot is None or data.get("since") != since:  # not for this copy: never merged
                self._etag = None  # the next attempt asks for the full document
                raise _Transient(f"a delta for another copy (since {data.get('since')!r}, holding {since!r})")
            snapshot = merge_delta(self._snapshot, data)
            self.deltas += 1
            log.info(
                "schedule: merged the changes since %s (%d entries changed, %d removed)",
                since,
                len(data["changed"]),
                len(data["removed"]),
            )
        else:
            snapshot = parse_schedule(data)
            self.full += 1
        self._snapshot, self._etag = snapshot, response.headers.get("ETag")
        return snapshot

    def close(self) -> None:
        self._http.close()
