"""The leader loop: publishes each due slot as an offer at its due instant, fenced by the epoch.

Why it never runs a slot twice and never misses one (DESIGN.md, "Semantics"):

* **Cursor before offer.** Before publishing the slots due at a tick, the leader writes each
  schedule's cursor (``<job>:<env>:<schedule id>``) to its last due slot, in one call under its
  epoch. The store refuses the write (``StaleEpoch``) unless that epoch still holds a live leader
  lease; the leader then publishes nothing and becomes a follower at once. So a deposed leader
  cannot publish new slots; whatever it published before noticing carries its old epoch, and
  runners drop offers of a stale epoch. Runs are claimed by their deterministic id, so a slot
  published twice still runs once.
* **Re-publish on takeover.** The cursor write and the publication are not atomic: a leader that
  dies between them loses those slots, and offers it published that no runner consumed before the failover
  are dropped as stale. So a leader starting a new epoch re-publishes, under its own epoch, every
  recent slot ``(now - misfire grace, cursor]`` that nobody has claimed yet, but none from before
  the schedule's *since* mark (cursor ``kirby:since:<key>``: when it was first seen, or re-enabled),
  which were never published. Duplicates are harmless (claims); a slot older than its grace is
  not re-run.
* **Resume from the cursor.** Slots after the cursor that fell into the failover gap are
  published late if within the misfire grace; older ones follow the catch-up policy (``planning``).
  A schedule seen for the first time starts from now (the past is not run).
* **Disabled is not an outage.** With its cursors (and at least every ``wakeup``), the leader
  writes an *alive mark* (cursor ``kirby:leader-alive``), which also fences re-publications. Slots of a schedule at or before the
  mark were not published while a leader was running, because the job, context or schedule was
  disabled: re-enabling it does not catch them up.
* Suspended slots and slots skipped by policy are published as ``skipped`` run events (bounded),
  and every offer as an ``offered`` event, so the runs table shows them.

``tick(now)`` does one pass and returns the seconds until the next due slot (at most ``wakeup``);
``run(stop_event)`` ticks the election and this, sleeping exactly until the next due instant,
while a background thread refreshes the schedule every ``wakeup`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from kirby.bus.base import OfferBus
from kirby.clock import utcnow
from kirby.cron import next_fire
from kirby.errors import CronError, KirbyError
from kirby.lease.base import LeaseStore, StaleEpoch
from kirby.run_ids import slot_run_id
from kirby.schedule.snapshot import ScheduleRule, ScheduleSnapshot, offer_for_slot
from kirby.schedule.source import ScheduleSource
from kirby.supervisor.election import MIN_WAIT, Election
from kirby.supervisor.planning import Batch, Track, plan_slots
from kirby.supervisor.reporting import RunReporter

log = logging.getLogger(__name__)

ALIVE_KEY = "kirby:leader-alive"
SINCE_PREFIX = "kirby:since:"  # + schedule key: where the schedule's published slots begin
NEVER = datetime.max.replace(tzinfo=timezone.utc)


def since_key(schedule_key: str) -> str:
    return SINCE_PREFIX + schedule_key


class Scheduler:
    """Publishes due slots of ``source``'s schedule while ``election`` says this supervisor leads."""

    def __init__(
        self,
        source: ScheduleSource,
        lease_store: LeaseStore,
        bus: OfferBus,
        election: Election,
        wakeup: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
        max_publish: int = 1000,
        max_skipped: int = 100,
        reporter: RunReporter | None = None,
    ):
        self.source, self.store, self.bus, self.election = source, lease_store, bus, election
        self.wakeup, self.clock = wakeup, clock
        self.max_publish, self.max_skipped = max_publish, max_skipped
        self.published = 0  # offers published (counts re-publications)
        self._latest: ScheduleSnapshot | None = None  # newest fetched snapshot
        self._fetched_at: datetime | None = None
        self._synced: ScheduleSnapshot | None = None  # the snapshot _tracks reflect
        self._tracks: dict[str, Track] = {}
        self._epoch: int | None = None
        self._alive: datetime | None = None
        self._alive_written: datetime | None = None
        self._background = False
        self._bad: set[tuple[str, str, str]] = set()
        self._wake = threading.Event()
        self._own_reporter = reporter is None
        self.reporter = reporter or RunReporter(bus, election.owner)

    # -- schedule -------------------------------------------------------------------------------
    def refresh(self, now: datetime) -> None:
        """Fetch the schedule; on failure keep the previous one (the source logs outages)."""
        try:
            self._latest, self._fetched_at = self.source.fetch(now), now
        except KirbyError as exc:  # before the first copy this is usually `kirby web` still starting
            log.log(
                logging.WARNING if self._latest is None else logging.ERROR,
                "cannot read the schedule%s: %s",
                " yet" if self._latest is None else "",
                exc,
            )

    def _stale(self, now: datetime) -> bool:
        limit = self.wakeup * (2 if self._background else 1)
        return self._fetched_at is None or (now - self._fetched_at).total_seconds() >= limit

    # -- one pass -------------------------------------------------------------------------------
    def tick(self, now: datetime) -> float:
        """Publish everything due at ``now`` if leader; seconds until the next due slot (<= wakeup)."""
        epoch = self.election.epoch
        if epoch is None:
            self._epoch = None
            return self.wakeup
        if self._latest is None or self._stale(now):
            self.refresh(now)
        if self._latest is None:
            return min(self.wakeup, self.election.window)
        batch = Batch()
        try:
            if epoch != self._epoch:
                self._begin_epoch(epoch)
            if self._synced is not self._latest:
                self._sync(now, epoch, batch)
            due = [track for track in self._tracks.values() if track.next_due <= now]
            for track in due:
                self._plan(track, now, epoch, batch)
            self._commit(batch, now, epoch)
        except StaleEpoch as exc:
            self._epoch = None
            self.election.step_down(f"stopped publishing: {exc}")
            return MIN_WAIT
        except KirbyError as exc:  # the store or the bus failed after its retries: start over from the cursors
            log.error("leader could not publish (will re-read the cursors and re-publish): %s", exc)
            self._epoch = None
            return min(self.wakeup, self.election.window / 2)
        for track in due:
            track.done_until = now
            track.next_due = self._next(track.rule, track.key, now) or NEVER
        return self._delay(now)

    def _commit(self, batch: Batch, now: datetime, epoch: int) -> None:
        """Cursors (fenced by the epoch, with the alive mark) first, then the offers, then their events."""
        if (
            batch.offers
            or batch.cursors
            or self._alive_written is None
            or (now - self._alive_written).total_seconds() >= self.wakeup
        ):
            self.store.set_cursors({**batch.cursors, ALIVE_KEY: now}, epoch)
            self._alive = self._alive_written = now
        if batch.offers:
            self.bus.publish_offers(batch.offers)
            self.published += len(batch.offers)
        for offer in batch.offers:
            log.info("offered run %s (epoch %d)", offer.run_id, epoch)
            self.reporter.offered(offer)
        for offer, reason in batch.skipped:
            self.reporter.skipped(offer, reason)

    def _delay(self, now: datetime) -> float:
        soonest = min((t.next_due for t in self._tracks.values()), default=NEVER)
        return max(0.0, min(self.wakeup, (soonest - now).total_seconds()))

    def _begin_epoch(self, epoch: int) -> None:
        self._tracks, self._synced, self._epoch = {}, None, epoch
        self._alive = self.store.get_cursor(ALIVE_KEY)
        self._alive_written = None

    def _sync(self, now: datetime, epoch: int, batch: Batch) -> None:
        """Follow the schedules of the newest snapshot; new ones start from their stored cursor or now."""
        snapshot, tracks, new = self._latest, {}, []
        for entry in snapshot.scheduled:
            for rule in entry.schedules:
                key = entry.schedule_key(rule)
                track = self._tracks.get(key)
                if not rule.enabled:
                    continue
                if track is None:
                    new.append((entry, rule, key))
                    continue
                if track.rule != rule:  # new cron, time zone or grace: recompute from where it is
                    next_due = self._next(rule, key, track.done_until)
                    track = Track(entry, rule, key, track.done_until, next_due, track.since) if next_due else None
                else:
                    track.entry = entry  # new version, config...: the next offers carry it
                if track is not None:
                    tracks[key] = track
        cursors = self.store.get_cursors([k for _, _, key in new for k in (key, since_key(key))]) if new else {}
        for entry, rule, key in new:
            cursor = cursors.get(key)
            next_due = self._next(rule, key, cursor or now)
            if next_due is None:
                continue
            since = cursors.get(since_key(key)) if cursor else now
            tracks[key] = Track(entry, rule, key, cursor or now, next_due, since)
            if cursor is None:  # a new schedule starts from now: the past is not run
                batch.cursors[key] = batch.cursors[since_key(key)] = now
            elif self._synced is None:  # first sync of this epoch: offers of older epochs are void
                self._republish(tracks[key], now, epoch, batch)
        self._tracks, self._synced = tracks, snapshot

    def _next(self, rule: ScheduleRule, key: str, after: datetime) -> datetime | None:
        try:
            return next_fire(rule.cron, rule.timezone, after, rule.dst)
        except CronError as exc:
            if (key, rule.cron, rule.timezone) not in self._bad:
                self._bad.add((key, rule.cron, rule.timezone))
                log.error("schedule %s is not scheduled: %s", key, exc)
            return None

    def _republish(self, track: Track, now: datetime, epoch: int, batch: Batch) -> None:
        """Re-offer, under ``epoch``, the recent slots up to the cursor that nobody has claimed."""
        start = now - timedelta(seconds=track.rule.misfire_grace_seconds, microseconds=1)
        if track.since is not None:  # never before the schedule was first seen or re-enabled
            start = max(start, track.since)
        end = min(track.done_until, now)
        if end <= start:
            return
        for slot in plan_slots(track.entry, track.rule, start, None, end, self.max_publish, 0).slots:
            if (
                slot.publish
                and self.store.get_claim(slot_run_id(track.entry.job, track.entry.environment, slot.instant)) is None
            ):
                batch.offers.append(offer_for_slot(track.entry, track.rule, slot.instant, epoch, now))
                log.info(
                    "re-publishing unclaimed slot %s of %s under epoch %d", slot.instant.isoformat(), track.key, epoch
                )

    def _plan(self, track: Track, now: datetime, epoch: int, batch: Batch) -> None:
        """Add every slot of ``track`` in (done_until, now] to ``batch``, with the cursor at the last one."""
        plan = plan_slots(
            track.entry, track.rule, track.done_until, self._alive, now, self.max_publish, self.max_skipped
        )
        if plan.missed or plan.more_missed:
            log.warning(
                "schedule %s missed %s%d slot(s) beyond its misfire grace; catch-up policy %s",
                track.key,
                "more than " if plan.more_missed else "",
                plan.missed,
                track.rule.catchup,
            )
        for slot in plan.slots:
            offer = offer_for_slot(track.entry, track.rule, slot.instant, epoch, now)
            if slot.publish:
                batch.offers.append(offer)
            else:
                batch.skipped.append((offer, slot.skip_reason))
        if plan.slots:
            batch.cursors[track.key] = plan.slots[-1].instant
            if self._alive is not None and track.next_due <= self._alive:  # slots up to the mark were inactive
                track.since = batch.cursors[since_key(track.key)] = self._alive

    # -- loop -----------------------------------------------------------------------------------
    def run(self, stop_event: threading.Event) -> None:
        """Lead or follow until ``stop_event`` is set; then release the leader lease.

        Due slots are published first (the cursor write fences them), then the election ticks;
        the loop sleeps exactly until the next due slot or election action, at most ``wakeup``.
        """
        self._background = True
        refresher = threading.Thread(
            target=self._refresh_loop, args=(stop_event,), name="schedule-refresh", daemon=True
        )
        refresher.start()
        try:
            while not stop_event.is_set():
                started = time.monotonic()
                wait = self._loop_once()
                self._wake.wait(max(0.0, wait - (time.monotonic() - started)))
                self._wake.clear()
        finally:
            self.election.release()
            refresher.join(timeout=self.wakeup)
            self.close()

    def _loop_once(self) -> float:
        try:
            wait = self.tick(self.clock()) if self.election.is_leader else self.wakeup
            state = self.election.tick(self.clock())
            if state.is_leader and state.epoch != self._epoch:
                return 0.0  # just elected: publish at once
            return min(wait, state.wait)
        except Exception:  # a bug must not leave the cluster without a leader: hand the lease over
            log.exception("leader loop failed; giving up the leader lease")
            self.election.release()
            self._epoch = None
            return self.election.window

    def close(self) -> None:
        """Publish the queued run events (when the reporter is this scheduler's own)."""
        if self._own_reporter:
            self.reporter.close()

    def _refresh_loop(self, stop_event: threading.Event) -> None:
        """Keep a fresh copy on followers too: a new leader publishes at once, without fetching a
        (possibly large) schedule in the thread that must renew its lease; the arbiter reads it too."""
        self.refresh(self.clock())
        while not stop_event.wait(self.wakeup):
            self.refresh(self.clock())
            self._wake.set()
        self._wake.set()

    @property
    def snapshot(self) -> ScheduleSnapshot | None:
        """The newest schedule fetched (None before the first good fetch)."""
        return self._latest
