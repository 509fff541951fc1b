"""The leader loop: publishes each due slot as an offer at its due instant, fenced by the epoch.

Why it never runs a slot twice and never misses one (DESIGN.md, "Semantics"):

* **Offer, then cursor.** A cursor never moves past a slot whose offer was not durably
  published: the leader first publishes the slots due at a tick (``publish_offers`` returns once
  the bus stored them), then writes each schedule's cursor (``<job>:<env>:<schedule id>``) to
  its last published slot, in one call under its epoch. When the bus fails (Kafka down for
  minutes), no cursor moves: after the outage the slots still within their misfire grace are
  published late and older ones follow the catch-up policy (recorded ``skipped`` with the reason).
  Right before publishing, the leader checks that it still holds the lease under its epoch (its
  election's own reckoning of the lease's life, then the store's ``holds_leader``), and the store
  refuses the cursor write (``StaleEpoch``, a compare-and-set of epoch, owner and token) unless
  that epoch still holds a live leader lease; either way the leader then becomes a follower at once. Offers a deposed leader published before
  noticing carry its old epoch, and runners drop offers of a stale epoch; runs are claimed by
  their deterministic id, so a slot published twice (published, then the cursor write failed)
  still runs once. Every offer carries ``not_after`` (the end of its grace): no runner starts it
  later, whatever the bus redelivers.
* **Re-publish on a new epoch, from the record.** Offers published that no runner consumed before
  a failover are dropped as stale. So after publishing, the leader records the slots it published
  in the lease store (``add_published``, kept for the misfire grace), and a leader starting an
  epoch (a takeover, or resuming after a store or bus error) re-publishes, under its own epoch,
  every recorded slot ``(now - misfire grace, cursor]`` that nobody has claimed yet: what was
  published under the rule in force then (a cron edit or a deleted suspension does not rewrite
  the past), but none from before the schedule's *since* mark (cursor
  ``kirby:since:<key>``: when it was first seen, or re-enabled), which were never published.
  Duplicates are harmless (claims); a slot older than its grace is not re-run.
* **Resume from the cursor.** Slots after the cursor that fell into the failover gap are
  published late if within the misfire grace; older ones follow the catch-up policy (``planning``).
  A schedule seen for the first time starts from now (the past is not run).
* **Disabled is not an outage.** With its cursors (and at least every ``wakeup``), the leader
  writes an *alive mark* (cursor ``kirby:leader-alive``), which also fences re-publications. Slots of a schedule at or before the
  mark were not published while a leader was running, because the job, context or schedule was
  disabled: re-enabling it does not catch them up.
* **Amnesia.** Before publishing (at each epoch's start, then every few seconds) the leader checks
  the store's generation marker; while it is closed (the store lost its data) it publishes
  nothing, then rebuilds claims and cursors from the runs table (``rebuild.Recovery``) and starts
  its epoch over from them.
* Suspended slots and slots skipped by policy are published as ``skipped`` run events (bounded),
  and every offer as an ``offered`` event, so the runs table shows them.

``tick(now)`` does one pass and returns the seconds until the next due slot (at most ``wakeup``).
It costs O(slots due), not O(schedules): the tracks wait in a heap by next due instant
(``DueQueue``), rebuilt only when a new snapshot arrives (the schedule changed; a ``304`` returns
the same snapshot), so a tick with none due looks at no schedule at all. Schedules it meets for
the first time (all of them, at a takeover) it adopts ``max_adopt`` per tick, ticks back to back
with the election's turn (the lease renewal) between them.
``run(stop_event)`` ticks this, sleeping until the next due instant (woken when elected), while
the election renews the lease in a thread of its own (``Election.run``) and another thread
refreshes the schedule every ``wakeup`` seconds: no fetch and no publish ever delays a renewal
(a dead broker costs no lease; nor do 500 offers due at once). A publish holds this at most
``publish_timeout`` seconds (``publishing``). With the web server down or hanging, the leader
publishes from its last good copy for as long as the outage lasts (and says so once).
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
from kirby.supervisor.planning import Batch, DueQueue, Track, plan_slots, since_key
from kirby.supervisor.publishing import PUBLISH_TIMEOUT, BoundedPublisher
from kirby.supervisor.rebuild import Readiness, Recovery
from kirby.supervisor.reporting import RunReporter

log = logging.getLogger(__name__)

ALIVE_KEY = "kirby:leader-alive"
NEVER = datetime.max.replace(tzinfo=timezone.utc)


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
        max_adopt: int = 500,
        recovery: Recovery | None = None,
        ahead: float = 0.0,
        publish_timeout: float = PUBLISH_TIMEOUT,
    ):
        """``ahead``: seconds before its due instant a slot is published (runners wait for the
        instant, ``runner``), so the publish, the claim and the venv check are not on the path from
        the instant to the script running; misfire graces still count from the due instant."""
        self.source, self.store, self.bus, self.election = source, lease_store, bus, election
        self.recovery = recovery  # amnesia: hold publication until the store is rebuilt (None: never checked)
        self.wakeup, self.clock = wakeup, clock
        self.ahead = timedelta(seconds=ahead)
        self.max_publish, self.max_skipped = max_publish, max_skipped
        self.max_adopt = max_adopt  # new schedules followed per tick (the rest at the next ticks)
        self._first_sync = True  # until the epoch's first snapshot is fully followed: re-publish
        self.published = 0  # offers published (counts re-publications)
        self._latest: ScheduleSnapshot | None = None  # newest fetched snapshot
        self._fetched_at: datetime | None = None
        self._outage_since: datetime | None = None  # the first failed fetch of the current outage
        self._synced: ScheduleSnapshot | None = None  # the snapshot _tracks reflect
        self._tracks: dict[str, Track] = {}
        self._due = DueQueue()  # the tracks by next due instant: a tick looks only at those due
        self._grace = 0.0  # the longest misfire grace of the tracks (kept with them)
        self._epoch: int | None = None
        self._alive: datetime | None = None
        self._alive_written: datetime | None = None
        self._background = False
        self._bad: set[tuple[str, str, str]] = set()
        self._wake = threading.Event()
        self.publisher = BoundedPublisher(bus, publish_timeout)  # a hung bus holds this at most the timeout
        self._own_reporter = reporter is None
        self.reporter = reporter or RunReporter(bus, election.owner)

    # -- schedule -------------------------------------------------------------------------------
    def refresh(self, now: datetime) -> None:
        """Fetch the schedule; on failure keep the last good copy, saying so once per outage.

        This is the one place that keeps a last good copy: with the web server down or hanging,
        the leader goes on publishing from it for as long as the outage lasts. Under ``run`` it is
        called only by the refresh thread, never by the one that renews the lease and publishes.
        """
        try:
            snapshot = self.source.fetch(now)
        except KirbyError as exc:  # before the first copy this is usually `kirby web` still starting
            if self._latest is None:
                log.warning("cannot read the schedule yet: %s", exc)
            elif self._outage_since is None:
                self._outage_since = now
                log.warning(
                    "cannot read the schedule: %s; scheduling from the copy fetched at %s until it can",
                    exc,
                    self._fetched_at.isoformat(),
                )
            return
        if self._outage_since is not None:
            log.info("the schedule can be read again (it could not since %s)", self._outage_since.isoformat())
        self._latest, self._fetched_at, self._outage_since = snapshot, now, None

    def _stale(self, now: datetime) -> bool:
        return self._fetched_at is None or (now - self._fetched_at).total_seconds() >= self.wakeup

    # -- one pass -------------------------------------------------------------------------------
    def tick(self, now: datetime) -> float:
        """Publish everything due at ``now`` if leader; seconds until the next due slot (<= wakeup)."""
        epoch = self.election.epoch
        if epoch is None:
            self._epoch = None
            return self.wakeup
        if self.publisher.busy:  # a publish outlived its timeout: nothing more until it ended
            return min(self.wakeup, self.election.window / 2)
        if not self._background and (self._latest is None or self._stale(now)):
            self.refresh(now)  # called directly (tests, tools): under ``run`` the refresh thread fetches
        if self._latest is None:
            return min(self.wakeup, self.election.window)
        batch = Batch()
        try:
            started = epoch != self._epoch
            if started:
                self._begin_epoch(epoch)
            if self.recovery is not None:
                readiness = self.recovery.ready(now, epoch, self._latest, force=started)
                if readiness is Readiness.HOLD:
                    return min(self.wakeup, self.election.window / 4)
                if readiness is Readiness.REBUILT:
                    self._begin_epoch(epoch)  # start over from the rebuilt cursors (and re-publish)
            if self._synced is not self._latest:
                self._sync(now, epoch, batch)
            horizon = now + self.ahead  # slots up to it are published now, ahead of their instant
            due = self._due.pop_due(horizon)
            for track in due:
                self._plan(track, now, horizon, epoch, batch)
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
            track.done_until = horizon
            track.next_due = self._next(track.rule, track.key, horizon) or NEVER
            self._due.push(track)
        return self._delay(now)

    def _commit(self, batch: Batch, now: datetime, epoch: int) -> None:
        """Offers first (durably stored when ``publish_offers`` returns), then the cursors (fenced by
        the epoch, with the alive mark), then the run events. A bus error leaves every cursor put."""
        if batch.offers:
            self._check_lease(epoch, f"{len(batch.offers)} offer(s) not published")
            self.publisher.publish(batch.offers)
            self.published += len(batch.offers)
            self.store.add_published(batch.published, now - timedelta(seconds=self._longest_grace() + self.wakeup))
        if (
            batch.offers
            or batch.cursors
            or self._alive_written is None
            or (now - self._alive_written).total_seconds() >= self.wakeup
        ):
            if not self.election.holds(epoch, self.clock()):  # e.g. frozen (SIGSTOP) while publishing
                raise StaleEpoch(f"epoch {epoch}: the leader lease ran out; the cursors were not written")
            self.store.set_cursors({**batch.cursors, ALIVE_KEY: now}, epoch, owner=self.election.owner)
            self._alive = self._alive_written = now
        for offer in batch.offers:
            log.info("offered run %s (epoch %d)", offer.run_id, epoch)
            self.reporter.offered(offer)
        for offer, reason in batch.skipped:
            self.reporter.skipped(offer, reason)

    def _check_lease(self, epoch: int, what: str) -> None:
        """StaleEpoch unless ``epoch`` holds a live lease: by the election's own reckoning (no I/O),
        then by the store (a read; the cursor write's compare-and-set remains the fence)."""
        if not self.election.holds(epoch, self.clock()) or not self.store.holds_leader(self.election.owner, epoch):
            raise StaleEpoch(f"epoch {epoch} no longer holds the leader lease; {what}")

    def _longest_grace(self) -> float:
        return self._grace

    def _delay(self, now: datetime) -> float:
        if self._synced is not self._latest:
            return 0.0  # new schedules left to adopt: at once, after the election's turn (lease renewal)
        return max(0.0, min(self.wakeup, (self._due.soonest() - self.ahead - now).total_seconds()))

    def _begin_epoch(self, epoch: int) -> None:
        self._tracks, self._synced, self._epoch = {}, None, epoch
        self._due = DueQueue()
        self._first_sync = True
        self._alive = self.store.get_cursor(ALIVE_KEY)
        self._alive_written = None

    def _sync(self, now: datetime, epoch: int, batch: Batch) -> None:
        """Follow the schedules of the newest snapshot; new ones start from their stored cursor or now.

        At most ``max_adopt`` new schedules are adopted per tick (a cron evaluation and a cursor
        each, re-publication at a takeover): a leader meeting 10,000 at once adopts them over
        back-to-back ticks, renewing its lease between them, instead of losing it in one long tick.
        """
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
        pending = len(new) - self.max_adopt
        new = new[: self.max_adopt]
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
            elif self._first_sync:  # first sync of this epoch: offers of older epochs are void
                self._republish(tracks[key], now, epoch, batch)
        for order, track in enumerate(tracks.values()):
            track.order = order
        self._tracks, self._synced = tracks, (snapshot if pending <= 0 else None)
        if pending > 0:
            log.info("following %d schedules; %d new ones left to adopt at the next ticks", len(tracks), pending)
        else:
            self._first_sync = False
        self._due = DueQueue(tracks.values())
        self._grace = max((track.rule.misfire_grace_seconds for track in tracks.values()), default=0)

    def _next(self, rule: ScheduleRule, key: str, after: datetime) -> datetime | None:
        try:
            return next_fire(rule.cron, rule.timezone, after, rule.dst)
        except CronError as exc:
            if (key, rule.cron, rule.timezone) not in self._bad:
                self._bad.add((key, rule.cron, rule.timezone))
                log.error("schedule %s is not scheduled: %s", key, exc)
            return None

    def _republish(self, track: Track, now: datetime, epoch: int, batch: Batch) -> None:
        """Re-offer, under ``epoch``, the recorded published slots up to the cursor that nobody has
        claimed: what was published under the rule in force then, never a re-computation of the past
        with today's rule (a cron edit, a deleted suspension). A recorded slot unclaimed past its
        grace (its offers were dropped as stale while leaders changed, e.g. during a broker outage)
        is claimed here, so that no runner starts it, and recorded ``skipped`` with the reason."""
        grace_start = now - timedelta(seconds=track.rule.misfire_grace_seconds, microseconds=1)
        start = track.since if track.since is not None else grace_start  # never before first seen or re-enabled
        end = min(track.done_until, now + self.ahead)  # a slot published ahead of its instant too
        if end <= start:
            return
        for instant in self.store.published_slots(track.key, start, end):
            run_id = slot_run_id(track.entry.job, track.entry.environment, instant)
            if self.store.get_claim(run_id) is not None:
                continue
            offer = offer_for_slot(track.entry, track.rule, instant, epoch, now)
            if instant > grace_start:
                batch.offers.append(offer)
                log.info("re-publishing unclaimed slot %s of %s under epoch %d", instant.isoformat(), track.key, epoch)
            elif self.store.claim_run(run_id, self.election.owner, offer.attempt, "", offer.to_json().decode()):
                self.store.settle_run(run_id)
                reason = (
                    f"expired: published before {now.isoformat()} and not claimed within its misfire grace "
                    f"({track.rule.misfire_grace_seconds}s), its offers dropped as stale while the leader changed"
                )
                log.warning("run %s: %s", run_id, reason)
                self.reporter.skipped(offer, reason)

    def _plan(self, track: Track, now: datetime, horizon: datetime, epoch: int, batch: Batch) -> None:
        """Add every slot of ``track`` in (done_until, horizon] to ``batch``, with the cursor at the last one."""
        plan = plan_slots(
            track.entry, track.rule, track.done_until, self._alive, now, self.max_publish, self.max_skipped, horizon
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
                batch.published.setdefault(track.key, []).append(slot.instant)
            else:
                batch.skipped.append((offer, slot.skip_reason))
        if plan.slots:
            batch.cursors[track.key] = plan.slots[-1].instant
            if self._alive is not None and track.next_due <= self._alive:  # slots up to the mark were inactive
                track.since = batch.cursors[since_key(track.key)] = self._alive

    # -- loop -----------------------------------------------------------------------------------
    def run(self, stop_event: threading.Event) -> None:
        """Lead or follow until ``stop_event`` is set; then release the leader lease.

        The election ticks in its own thread (``Election.run``) and wakes this loop when the
        leadership changes; this loop publishes the due slots (the cursor write fences them) and
        sleeps exactly until the next due slot, at most ``wakeup``.
        """
        self._background = True
        self.election.on_change = self._wake.set
        refresher = threading.Thread(
            target=self._refresh_loop, args=(stop_event,), name="schedule-refresh", daemon=True
        )
        election = threading.Thread(target=self.election.run, args=(stop_event, self.clock), name="election")
        refresher.start()
        election.start()
        try:
            while not stop_event.is_set():
                started = time.monotonic()
                wait = self._loop_once()
                self._wake.wait(max(0.0, wait - (time.monotonic() - started)))
                self._wake.clear()
        finally:
            self.election.wake()  # the election thread sees the stop at once
            election.join()
            self.election.release()
            refresher.join(timeout=self.wakeup)
            self.close()

    def _loop_once(self) -> float:
        try:
            return self.tick(self.clock()) if self.election.is_leader else self.wakeup
        except Exception:  # a bug must not leave the cluster without a leader: hand the lease over
            log.exception("leader loop failed; giving up the leader lease")
            self.election.release()
            self._epoch = None
            return self.election.window

    def close(self) -> None:
        """Stop the publisher thread (without waiting for a hung publish); publish the queued run
        events (when the reporter is this scheduler's own)."""
        self.publisher.close()
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
