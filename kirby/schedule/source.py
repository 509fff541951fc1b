"""Where the leader gets its schedule: ``fetch(now) -> ScheduleSnapshot``.

* ``ScheduleClient``: the web server's ``/schedule`` (``KIRBY_SCHEDULE_ENDPOINT``, bearer token
  ``KIRBY_API_TOKEN``), retried ``EXT_RETRIES`` times ``EXT_WAIT_BETWEEN_RETRIES`` apart. When the
  web server is down it returns its last good copy and says so once per outage; with no good
  copy yet it raises ``KirbyError``.
* ``DatabaseScheduleSource`` (in ``document``, beside the ORM): the script database directly.
* ``StaticScheduleSource``: a given snapshot (benchmarks, tests).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from datetime import datetime

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from kirby.config import Settings
from kirby.errors import KirbyError
from kirby.schedule.snapshot import ScheduleSnapshot, parse_schedule

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


class ScheduleClient(ScheduleSource):
    """Fetches ``/schedule`` over HTTP and keeps the last good copy."""

    def __init__(self, settings: Settings, timeout: float = 10.0):
        self.url = settings.schedule_endpoint
        self.timeout = timeout
        self.attempts = settings.ext_retries + 1
        self._http = requests.Session()
        if settings.api_token:
            self._http.headers["Authorization"] = f"Bearer {settings.api_token}"
        self._retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_fixed(settings.ext_wait_between_retries),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        self.last_good: ScheduleSnapshot | None = None
        self.last_good_at: datetime | None = None
        self.in_outage = False
        self._lock = threading.Lock()  # one fetch at a time (the leader and the arbiter share a client)

    def fetch(self, now: datetime) -> ScheduleSnapshot:
        with self._lock:
            try:
                snapshot = self._retrying(self._get)
            except (_Transient, KirbyError) as exc:
                return self._fall_back(str(exc))
            if self.in_outage:
                log.info("schedule endpoint %s is reachable again", self.url)
            self.in_outage = False
            self.last_good, self.last_good_at = snapshot, now
            return snapshot

    def _fall_back(self, reason: str) -> ScheduleSnapshot:
        if self.last_good is None:
            raise KirbyError(
                f"schedule endpoint {self.url} unreachable after {self.attempts} attempts: {reason}; "
                "start `kirby web` there or fix KIRBY_SCHEDULE_ENDPOINT"
            )
        if not self.in_outage:
            log.warning(
                "schedule endpoint %s unreachable: %s; scheduling from the copy fetched at %s",
                self.url,
                reason,
                self.last_good_at.isoformat(),
            )
        self.in_outage = True
        return self.last_good

    def _get(self) -> ScheduleSnapshot:
        try:
            response = self._http.get(self.url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
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
        return parse_schedule(data)

    def close(self) -> None:
        self._http.close()
