"""The leader's side of amnesia (issue 10): hold publication while the lease store's generation is
closed, then rebuild claims and cursors from the durable record of runs before publishing again.

``Recovery.ready(now, epoch, snapshot)`` is called by the scheduler before it publishes (forced at
the start of each epoch, else at most every ``check_every`` seconds). While the generation is open
it answers ``OPEN``. Once closed (see ``kirby.supervisor.amnesia``) it answers ``HOLD`` for
``settle`` seconds (3 x the election window: every live supervisor heartbeats several times, notices
the loss and writes back the claims it remembers; the holder of a daemon lease that vanished fails
its renewal and stops its daemon within ``window``, while nobody may take the lease), then rebuilds, from the runs table read through
the web (``/cluster/runs``), for the slots of the misfire window:

* **claims**: every slot run recorded past ``offered`` gets a settled claim (it was claimed; a
  re-published or redelivered offer of it loses the claim). A run recorded ``claimed`` or
  ``running`` that no supervisor wrote back (its holder is gone, or frozen) cannot be accounted for:
  it is fenced the same way and recorded ``skipped`` with the reason, never run again;
* **the record of published slots**: every recorded slot (the leader re-publishes those unclaimed);
* **cursors**: a schedule without a cursor resumes from its newest recorded slot (in the window, or
  the newest of its job and environment however old), so the slots of the outage run late within
  their grace, or follow the catch-up policy, instead of the schedule restarting from "now";

then opens the generation under its epoch (claims are granted again) and answers ``REBUILT``: the
scheduler starts its epoch over from the rebuilt cursors. A record that cannot be read (the web is
down) raises KirbyError: the leader goes on holding and tries again.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta

from kirby.cron import next_fire
from kirby.errors import CronError
from kirby.lease.base import LeaseStore, RestoredClaim, StaleEpoch
from kirby.schedule.record import RecordedRun, RunRecordSource
from kirby.schedule.snapshot import ScheduleEntry, ScheduleRule, ScheduleSnapshot, offer_for_slot
from kirby.supervisor.amnesia import GenerationWatch
from kirby.supervisor.planning import SINCE_PREFIX, since_key
from kirby.supervisor.reporting import RunReporter

log = logging.getLogger(__name__)

LOOKBACK_MARGIN = 60.0  # seconds read beyond the longest misfire grace
_TICK = timedelta(microseconds=1)
UNACCOUNTED = (
    "lease store amnesia: claimed by {supervisor} before the lease store lost its data, and not written back "
    "by it; it cannot be told whether it ran, so it is not run again"
)


class Readiness(enum.Enum):
    OPEN = "open"
    HOLD = "hold"
    REBUILT = "rebuilt"


def _is_slot(rule: ScheduleRule, instant: datetime) -> bool:
    try:
        return next_fire(rule.cron, rule.timezone, instant - _TICK, rule.dst) == instant
    except CronError:
        return False


class Recovery:
    """Leader ``owner``'s amnesia recovery (one per scheduler)."""

    def __init__(
        self,
        store: LeaseStore,
        record: RunRecordSource,
        watch: GenerationWatch,
        owner: str,
        reporter: RunReporter,
        settle: float,
        check_every: float,
    ):
        self.store, self.record, self.watch, self.owner, self.reporter = store, record, watch, owner, reporter
        self.settle, self.check_every = settle, check_every
        self._checked: datetime | None = None
        self._closed: tuple[str, datetime] | None = None  # (marker, when this leader first saw it closed)

    def ready(self, now: datetime, epoch: int, snapshot: ScheduleSnapshot, force: bool = False) -> Readiness:
        fresh = self._checked is not None and (now - self._checked).total_seconds() < self.check_every
        if not force and fresh and self._closed is None:
            return Readiness.OPEN
        self._checked = now
        generation = self.watch.check()
        if generation.open:
            self._closed = None
            return Readiness.OPEN
        if self._closed is None or self._closed[0] != generation.marker:
            self._closed = (generation.marker, now)
            log.warning(
                "leader %s: holding publication %.0f s while supervisors write back their claims",
                self.owner,
                self.settle,
            )
        if (now - self._closed[1]).total_seconds() < self.settle:
            return Readiness.HOLD
        self.rebuild(now, epoch, snapshot)
        if not self.store.open_generation(generation.marker, epoch, self.owner):
            raise StaleEpoch(f"epoch {epoch} no longer holds the leader lease; the rebuilt store was not opened")
        self._closed = None
        self.watch.check()
        return Readiness.REBUILT

    def rebuild(self, now: datetime, epoch: int, snapshot: ScheduleSnapshot) -> None:
        """Claims, the record of published slots and missing cursors, from the runs table (module doc)."""
        schedules = [(entry, rule) for entry in snapshot.scheduled for rule in entry.schedules if rule.enabled]
        longest = max((rule.misfire_grace_seconds for _, rule in schedules), default=0)
        record = self.record.read(now - timedelta(seconds=longest + LOOKBACK_MARGIN))
        settled = [r for r in record.runs if r.state != "offered"]
        written_back = set(
            self.store.restore_claims([RestoredClaim(r.run_id, r.supervisor or "rebuild") for r in settled])
        )
        unaccounted = [r for r in settled if r.state in ("claimed", "running") and r.run_id not in written_back]
        published: dict[str, list[datetime]] = {}
        cursors: dict[str, datetime] = {}
        keys = [entry.schedule_key(rule) for entry, rule in schedules]
        stored = self.store.get_cursors(keys + [since_key(key) for key in keys])
        for entry, rule in schedules:
            key = entry.schedule_key(rule)
            slots = sorted(r.scheduled_at for r in record.runs if _mine(r, entry) and _is_slot(rule, r.scheduled_at))
            if slots:
                published[key] = slots
            if key not in stored:
                newest = record.latest.get((entry.job, entry.environment))
                cursor = slots[-1] if slots else newest
                if cursor is not None:
                    cursors[key] = cursor
                    if since_key(key) not in stored:
                        cursors[since_key(key)] = (slots[0] if slots else cursor) - _TICK
        self.store.add_published(published, now - timedelta(seconds=longest + LOOKBACK_MARGIN))
        if cursors:
            self.store.set_cursors(cursors, epoch, owner=self.owner)
        for run in unaccounted:
            self._skip(run, schedules, epoch, now)
        log.warning(
            "leader %s rebuilt the lease store from the runs table (%d slot runs since %s): %d claims fenced, "
            "%d written back by supervisors, %d cursors restored, %d unaccounted runs recorded skipped",
            self.owner,
            len(record.runs),
            (now - timedelta(seconds=longest + LOOKBACK_MARGIN)).isoformat(),
            len(settled) - len(written_back),
            len(written_back),
            len([k for k in cursors if not k.startswith(SINCE_PREFIX)]),
            len(unaccounted),
        )

    def _skip(self, run: RecordedRun, schedules: list, epoch: int, now: datetime) -> None:
        for entry, rule in schedules:
            if _mine(run, entry) and _is_slot(rule, run.scheduled_at):
                offer = offer_for_slot(entry, rule, run.scheduled_at, epoch, now)
                self.reporter.skipped(offer, UNACCOUNTED.format(supervisor=run.supervisor or "?"))
                log.warning("run %s: %s", run.run_id, UNACCOUNTED.format(supervisor=run.supervisor or "?"))
                return


def _mine(run: RecordedRun, entry: ScheduleEntry) -> bool:
    return run.job == entry.job and run.environment == entry.environment
