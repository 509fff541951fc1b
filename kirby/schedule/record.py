"""The durable record of slot runs (the script database's runs table, served by ``kirby web`` at
``/cluster/runs``), read by a leader rebuilding the lease store after amnesia (issue 10).

* ``RunRecordClient``: over HTTP with the cluster token, at the schedule endpoint's sibling
  (``KIRBY_SCHEDULE_ENDPOINT`` with ``/schedule`` replaced by ``/cluster/runs``), each page
  bounded in time like the schedule fetch; raises ``KirbyError`` when it cannot be read.
* ``StaticRunRecord``: a given record (tests, tools).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests

from kirby.config import Settings
from kirby.errors import KirbyError

MAX_PAGES = 200  # 1,000,000 runs: a bound, not a target


@dataclass(frozen=True)
class RecordedRun:
    run_id: str
    job: str
    environment: str
    scheduled_at: datetime
    state: str
    supervisor: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """Slot runs scheduled since the asked instant, and per (job, environment) its newest slot run."""

    runs: list[RecordedRun] = field(default_factory=list)
    latest: dict[tuple[str, str], datetime] = field(default_factory=dict)


class RunRecordSource(ABC):
    @abstractmethod
    def read(self, since: datetime) -> RunRecord:
        """The record of slot runs scheduled at or after ``since``; raises KirbyError if unreadable."""


class StaticRunRecord(RunRecordSource):
    def __init__(self, record: RunRecord | None = None):
        self.record = record or RunRecord()

    def read(self, since: datetime) -> RunRecord:
        return RunRecord([r for r in self.record.runs if r.scheduled_at >= since], dict(self.record.latest))


def _aware(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def record_url(schedule_endpoint: str) -> str:
    base = schedule_endpoint.rstrip("/")
    return (base[: -len("/schedule")] if base.endswith("/schedule") else base) + "/cluster/runs"


class RunRecordClient(RunRecordSource):
    def __init__(self, settings: Settings, timeout: float = 10.0):
        self.url, self.timeout = record_url(settings.schedule_endpoint), timeout
        self._http = requests.Session()
        if settings.api_token:
            self._http.headers["Authorization"] = f"Bearer {settings.api_token}"

    def read(self, since: datetime) -> RunRecord:
        record, after = RunRecord(), ""
        for _ in range(MAX_PAGES):
            page = self._page(since, after)
            record.runs.extend(
                RecordedRun(r["id"], r["job"], r["environment"], _aware(r["scheduled_at"]), r["state"], r["supervisor"])
                for r in page["runs"]
            )
            for item in page.get("latest", []):
                record.latest[(item["job"], item["environment"])] = _aware(item["scheduled_at"])
            after = page.get("next")
            if not after:
                return record
        raise KirbyError(f"the run record at {self.url} has more than {MAX_PAGES} pages since {since.isoformat()}")

    def _page(self, since: datetime, after: str) -> dict:
        try:
            response = self._http.get(
                self.url, params={"since": since.isoformat(), "after": after}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise KirbyError(
                f"cannot read the run record at {self.url}: {type(exc).__name__}; is `kirby web` up?"
            ) from None
        if response.status_code != 200:
            raise KirbyError(
                f"the run record at {self.url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError:
            raise KirbyError(f"the run record at {self.url} is not JSON") from None

    def close(self) -> None:
        self._http.close()
