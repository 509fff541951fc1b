"""The leader loop on the embedded lease store and bus (real product code), with ``now`` passed in."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from kirby.bus import open_bus
from kirby.cron import slots_between
from kirby.lease import open_lease_store
from kirby.run_ids import slot_run_id
from kirby.schedule import ScheduleEntry, ScheduleRule, ScheduleSnapshot, StaticScheduleSource, SuspensionWindow
from kirby.supervisor.election import Election
from kirby.supervisor.scheduler import ALIVE_KEY, Scheduler

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(*rules: ScheduleRule, job="report", suspensions=()) -> ScheduleEntry:
    return ScheduleEntry(
        context_id=1,
        job=job,
        job_type="scheduled",
        environment="prod",
        package="report-pkg",
        version="1.0",
        module="report.main",
        config={"TOKEN": "t", "LEVEL": "debug"},
        secrets=("TOKEN",),
        schedules=rules,
        suspensions=tuple(suspensions),
    )


def snapshot(*entries: ScheduleEntry) -> ScheduleSnapshot:
    return ScheduleSnapshot(generated_at=T0, entries=entries)


EVERY_10S = ScheduleRule(
    id=1, cron="* * * * * */10", misfire_grace_seconds=30, timeout_seconds=20, retries=1, overlap="allow"
)


class Cluster:
    """A lease store and a bus on one embedded file, and a reader of what the leaders published."""

    def __init__(self, settings):
        self.settings = settings
        self.store = open_lease_store(settings)
        self.bus = open_bus(settings)
        self.offers = self.bus.offer_consumer("reader")
        self.events = self.bus.event_consumer("recorder", "reader")
        self.schedulers: list[Scheduler] = []

    def leader(self, name: str, source, window: float = 60.0, wakeup: float = 60.0, **options) -> Scheduler:
        election = Election(self.store, name, window=window)
        scheduler = Scheduler(source, self.store, self.bus, election, wakeup=wakeup, **options)
        self.schedulers.append(scheduler)
        return scheduler

    def recorded(self, kind: str):
        """The run events of ``kind`` the leaders published (their reporters are flushed first)."""
        for scheduler in self.schedulers:
            scheduler.close()
        return [event for event in self.drain(self.events) if event.kind == kind]

    def drain(self, consumer):
        received = []
        while batch := consumer.poll(0.05, 1000):
            for delivery in batch:
                consumer.ack(delivery)
            received.extend(d.message for d in batch)
        return received

    def published(self):
        return self.drain(self.offers)

    def close(self):
        for scheduler in self.schedulers:
            scheduler.close()
        self.offers.close()
        self.events.close()
        self.bus.close()
        self.store.close()


@pytest.fixture
def cluster(make_settings):
    c = Cluster(make_settings())
    yield c
    c.close()


def lead(scheduler: Scheduler) -> int:
    state = scheduler.election.tick(datetime.now(UTC))
    assert state.is_leader, "expected to become leader"
    return state.epoch


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def test_each_slot_is_published_once_at_its_instant_and_tick_returns_the_exact_delay(cluster):
    scheduler = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S))))
    epoch = lead(scheduler)
    start = T0 + timedelta(milliseconds=500)
    assert scheduler.tick(start) == pytest.approx(9.5)  # first sight: starts from now, the past is not run
    assert cluster.store.get_cursor("report:prod:1") == start
    assert cluster.published() == []
    # Drive the loop as run() does: wake exactly when tick says, for ten minutes of slots.
    now, end = start, T0 + timedelta(minutes=10)
    while now < end:
        delay = scheduler.tick(now)
        assert 0 < delay <= 10
        now += timedelta(seconds=delay)
    offers = cluster.published()
    expected = list(slots_between(EVERY_10S.cron, "UTC", start, end - timedelta(microseconds=1)))
    assert [o.scheduled_at for o in offers] == expected and len(expected) == 59
    assert all(o.offered_at == o.scheduled_at for o in offers)  # published at the due instant, not later
    first = offers[0]
    assert first.run_id == first.slot_id == slot_run_id("report", "prod", T0 + timedelta(seconds=10))
    assert (first.epoch, first.attempt, first.trigger) == (epoch, 1, "schedule")
    assert (first.package, first.version, first.module) == ("report-pkg", "1.0", "report.main")
    assert (first.timeout_seconds, first.overlap, first.retries) == (20, "allow", 1)
    assert first.config == {"TOKEN": "t", "LEVEL": "debug"} and first.secrets == ("TOKEN",)
    # Ticking again at the same instants publishes nothing more.
    assert scheduler.tick(end - timedelta(seconds=5)) == pytest.approx(5)
    assert cluster.published() == []
    # Every offer is recorded as an ``offered`` run event (without config or secrets).
    offered = cluster.recorded("offered")
    assert [e.run_id for e in offered] == [o.run_id for o in offers]
    assert offered[0].supervisor == "alpha" and offered[0].data["epoch"] == epoch
    assert "config" not in offered[0].data and "secrets" not in offered[0].data


def test_failover_republishes_unclaimed_slots_within_grace_under_the_new_epoch(cluster):
    source = StaticScheduleSource(snapshot(entry(EVERY_10S)))
    alpha = cluster.leader("alpha", source, window=0.5)  # lease TTL 1 s of real time
    beta = cluster.leader("beta", source, window=0.5)
    assert lead(alpha) == 1
    for seconds in (0, 10, 20, 30, 40):
        alpha.election.tick(datetime.now(UTC))  # renews when due (real time): a slow machine keeps the lease
        alpha.tick(T0 + timedelta(seconds=seconds))
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 20, 30, 40]
    cluster.store.claim_run(slot_run_id("report", "prod", T0 + timedelta(seconds=10)), "runner")
    # alpha crashes (stops ticking); beta takes over once its lease expires.
    wait_for(lambda: beta.election.tick(datetime.now(UTC)).is_leader, 5, "beta to lead")
    assert beta.election.epoch == 2
    assert beta.tick(T0 + timedelta(seconds=55)) == pytest.approx(5)
    offers = cluster.published()
    # :30 and :40 (unclaimed, within the 30 s grace) again, then :50 that fell into the gap.
    # :10 is claimed and :20 is older than the grace: not re-published.
    assert [(o.scheduled_at.second, o.epoch) for o in offers] == [(30, 2), (40, 2), (50, 2)]
    assert cluster.store.get_cursor("report:prod:1") == T0 + timedelta(seconds=50)


def test_a_deposed_leader_stops_publishing_at_once(cluster, caplog):
    source = StaticScheduleSource(snapshot(entry(EVERY_10S)))
    alpha = cluster.leader("alpha", source, window=0.5)
    beta = cluster.leader("beta", source, window=0.5)
    lead(alpha)
    alpha.tick(T0)
    wait_for(lambda: beta.election.tick(datetime.now(UTC)).is_leader, 5, "beta to lead")
    caplog.set_level(logging.INFO)
    # alpha was frozen: it has not noticed, and a slot is due. The cursor write is refused first.
    assert alpha.election.is_leader
    alpha.tick(T0 + timedelta(seconds=10))
    assert not alpha.election.is_leader and alpha.published == 0
    assert cluster.published() == []
    assert cluster.store.get_cursor("report:prod:1") == T0
    assert "supervisor alpha stopped being leader (epoch 1)" in caplog.messages


@pytest.mark.parametrize(
    "policy, published_minutes, skipped",
    [
        ("skip", [60], 54),
        ("latest", [59, 60], 53),
        ("all", list(range(6, 61)), 0),
    ],
)
def test_catch_up_policies_after_an_outage(cluster, policy, published_minutes, skipped):
    rule = ScheduleRule(id=2, cron="* * * * *", misfire_grace_seconds=60, catchup=policy)
    source = StaticScheduleSource(snapshot(entry(rule)))
    alpha = cluster.leader("alpha", source)
    lead(alpha)
    for minute in range(6):
        alpha.tick(T0 + timedelta(minutes=minute))
    assert len(cluster.published()) == 5
    alpha.election.release()  # the cluster is down for an hour
    beta = cluster.leader("beta", source)
    lead(beta)
    beta.tick(T0 + timedelta(minutes=60, seconds=30))
    minutes = [round((o.scheduled_at - T0).total_seconds() / 60) for o in cluster.published()]
    assert minutes == published_minutes
    recorded = cluster.recorded("skipped")
    skips = [e for e in recorded if "catch-up policy" in e.data["error"]]
    assert len(skips) == skipped
    if skips:
        assert skips[0].data["job"] == "report"
        assert skips[0].run_id == slot_run_id("report", "prod", T0 + timedelta(minutes=6))
    # Published before the outage, never claimed, now past their grace: recorded, not left offered
    # (the record of published slots keeps grace + wakeup = 2 minutes of them: minutes 3 to 5).
    expired = [e for e in recorded if e not in skips]
    assert [e.run_id for e in expired] == [slot_run_id("report", "prod", T0 + timedelta(minutes=m)) for m in (3, 4, 5)]
    assert all(e.data["error"].startswith("expired: ") for e in expired)


def test_catch_up_all_is_bounded(cluster, caplog):
    rule = ScheduleRule(id=2, cron="* * * * * *", misfire_grace_seconds=5, catchup="all")
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(rule))), max_publish=10)
    lead(alpha)
    alpha.tick(T0)
    caplog.set_level(logging.WARNING)
    alpha.tick(T0 + timedelta(days=7))  # a week of every-second slots: cheap, bounded
    offers = cluster.published()
    assert len(offers) == 10 and offers[-1].scheduled_at == T0 + timedelta(days=7)
    assert any("missed more than" in m for m in caplog.messages)


def test_suspended_slots_are_skipped_and_recorded(cluster):
    window = SuspensionWindow(
        id=1, starts_at=T0 + timedelta(seconds=15), ends_at=T0 + timedelta(seconds=35), reason="db upgrade"
    )
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S, suspensions=[window]))))
    lead(alpha)
    for seconds in (0, 10, 20, 30, 40):
        alpha.tick(T0 + timedelta(seconds=seconds))
        if seconds == 30:  # the cursor moves past skipped slots too
            assert cluster.store.get_cursor("report:prod:1") == T0 + timedelta(seconds=30)
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 40]
    skips = cluster.recorded("skipped")
    assert [e.run_id[-3:-1] for e in skips] == ["20", "30"]
    assert skips[0].data["error"] == f"suspended until {window.ends_at.isoformat()}: db upgrade"


def test_dst_spring_forward_in_paris(cluster):
    half_hourly = entry(ScheduleRule(id=3, cron="*/30 * * * *", timezone="Europe/Paris"), job="half")
    nightly = entry(
        ScheduleRule(id=4, cron="30 2 * * *", timezone="Europe/Paris"), job="nightly"
    )  # 02:30 is skipped over
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(half_hourly, nightly)), wakeup=3600)
    lead(alpha)
    now = datetime(2026, 3, 28, 23, 50, tzinfo=UTC)  # 00:50 CET on the 29th
    assert alpha.tick(now) == pytest.approx(600)
    while now < datetime(2026, 3, 29, 2, 0, tzinfo=UTC):
        now += timedelta(seconds=alpha.tick(now))
    assert now == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    alpha.tick(now)
    runs = [(o.run_id, o.offered_at == o.scheduled_at) for o in cluster.published()]
    # 01:00 CET, 01:30 CET, then the gap's 02:00 and 02:30 do not exist (every half hour: skipped)
    # and 03:00 CEST = 01:00 UTC runs; the nightly 02:30 shifts to 03:00 CEST; 03:30, 04:00 follow.
    assert runs == [
        ("half:prod:20260329T000000Z", True),
        ("half:prod:20260329T003000Z", True),
        ("half:prod:20260329T010000Z", True),
        ("nightly:prod:20260329T010000Z", True),
        ("half:prod:20260329T013000Z", True),
        ("half:prod:20260329T020000Z", True),
    ]


def test_a_re_enabled_job_does_not_catch_up_the_disabled_period(cluster):
    rule = ScheduleRule(id=5, cron="* * * * *", misfire_grace_seconds=60, catchup="all")
    source = StaticScheduleSource(snapshot(entry(rule)))
    alpha = cluster.leader("alpha", source)
    lead(alpha)
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(minutes=1))
    source.snapshot = snapshot()  # disabled: absent from the schedule
    for minute in range(2, 11):
        alpha.refresh(T0 + timedelta(minutes=minute))
        alpha.tick(T0 + timedelta(minutes=minute))
    assert cluster.store.get_cursor(ALIVE_KEY) == T0 + timedelta(minutes=10)
    source.snapshot = snapshot(entry(rule))  # enabled again
    alpha.refresh(T0 + timedelta(minutes=10, seconds=30))
    alpha.tick(T0 + timedelta(minutes=10, seconds=30))
    alpha.tick(T0 + timedelta(minutes=11))
    minutes = [round((o.scheduled_at - T0).total_seconds() / 60) for o in cluster.published()]
    assert minutes == [1, 11]


def test_followers_publish_nothing(cluster):
    source = StaticScheduleSource(snapshot(entry(EVERY_10S)))
    alpha = cluster.leader("alpha", source)
    beta = cluster.leader("beta", source)
    lead(alpha)
    assert not beta.election.tick(datetime.now(UTC)).is_leader
    assert beta.tick(T0) == 60.0  # a follower waits a wakeup
    alpha.tick(T0)
    beta.tick(T0 + timedelta(seconds=10))
    assert cluster.published() == []


def test_run_publishes_in_real_time_and_releases_the_lease(cluster):
    every_second = ScheduleRule(id=6, cron="* * * * * *")
    scheduler = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(every_second))), window=1, wakeup=5)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    received = []
    deadline = time.monotonic() + 10
    while len(received) < 3 and time.monotonic() < deadline:
        received.extend(cluster.published())
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "run() did not stop"
    assert len(received) >= 3, received
    assert len({o.run_id for o in received}) == len(received)
    lateness = [(o.offered_at - o.scheduled_at).total_seconds() for o in received]
    assert all(0 <= late < 1.0 for late in lateness), lateness  # at the due instant, not on a 5 s poll
    assert cluster.store.leader() is None  # released on the way out


def test_skipped_events_are_capped_for_long_outages(cluster):
    rule = ScheduleRule(id=7, cron="* * * * * *", misfire_grace_seconds=5, catchup="skip")
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(rule))), max_skipped=20)
    lead(alpha)
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(days=1))
    offers = cluster.published()
    assert [o.scheduled_at for o in offers] == [
        T0 + timedelta(days=1, seconds=-s) for s in range(5, -1, -1)
    ]  # 5 s late is in time
    skips = cluster.recorded("skipped")
    assert len(skips) == 21  # the latest max_skipped + 1 missed slots, not 86,000 of them
    assert skips[-1].run_id == slot_run_id("report", "prod", T0 + timedelta(days=1, seconds=-6))
    assert skips[0].run_id == slot_run_id("report", "prod", T0 + timedelta(days=1, seconds=-26))
    assert cluster.store.get_cursor("report:prod:7") == T0 + timedelta(days=1)


def test_edits_take_effect_at_the_next_refresh(cluster):
    source = StaticScheduleSource(snapshot(entry(EVERY_10S)))
    alpha = cluster.leader("alpha", source)
    lead(alpha)
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(seconds=10))
    # A new version, and the schedule moved to every 30 seconds.
    every_30s = ScheduleRule(id=1, cron="* * * * * */30", misfire_grace_seconds=30)
    source.snapshot = snapshot(ScheduleEntry(**{**entry(every_30s).__dict__, "version": "2.0"}))
    alpha.refresh(T0 + timedelta(seconds=12))
    assert alpha.tick(T0 + timedelta(seconds=12)) == pytest.approx(18)  # next slot :30, not :20
    alpha.tick(T0 + timedelta(seconds=30))
    assert [(o.scheduled_at.second, o.version) for o in cluster.published()] == [(10, "1.0"), (30, "2.0")]
    # A disabled schedule stops at once; the rest of the entry keeps running.
    source.snapshot = snapshot(entry(ScheduleRule(id=1, cron="* * * * * */30", enabled=False)))
    alpha.refresh(T0 + timedelta(seconds=40))
    assert alpha.tick(T0 + timedelta(seconds=60)) == 60.0
    assert cluster.published() == []


def test_a_bad_cron_in_the_schedule_is_logged_and_skipped(cluster, caplog):
    bad = ScheduleRule(id=9, cron="99 * * * *")
    source = StaticScheduleSource(snapshot(entry(bad, EVERY_10S)))
    alpha = cluster.leader("alpha", source)
    lead(alpha)
    caplog.set_level(logging.ERROR)
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(seconds=10))
    assert [o.scheduled_at.second for o in cluster.published()] == [10]
    assert any(m.startswith("schedule report:prod:9 is not scheduled: ") for m in caplog.messages)


def test_dst_fall_back_in_new_york_runs_the_repeated_hour_by_each_policy(cluster):
    half_hourly = entry(ScheduleRule(id=10, cron="*/30 * * * *", timezone="America/New_York"), job="half")
    nightly = entry(ScheduleRule(id=11, cron="30 1 * * *", timezone="America/New_York"), job="nightly")
    late = entry(
        ScheduleRule(id=12, cron="30 1 * * *", timezone="America/New_York", dst_fall_back="second"), job="late"
    )
    source = StaticScheduleSource(snapshot(half_hourly, nightly, late))
    alpha = cluster.leader("alpha", source, wakeup=3600)
    lead(alpha)
    now = datetime(2026, 11, 1, 4, 50, tzinfo=UTC)  # 00:50 EDT; at 02:00 EDT clocks go back to 01:00 EST
    alpha.tick(now)
    for minutes in range(10, 140, 10):  # a tick every ten minutes, including inside the repeated hour
        alpha.tick(now + timedelta(minutes=minutes))
    runs = [o.run_id for o in cluster.published()]
    assert runs == [
        "half:prod:20261101T050000Z",  # 01:00 EDT
        "half:prod:20261101T053000Z",  # 01:30 EDT
        "nightly:prod:20261101T053000Z",  # 01:30 EDT, once (a time of day): not again at 01:30 EST
        "half:prod:20261101T060000Z",  # 01:00 EST: every half hour means both passes
        "half:prod:20261101T063000Z",  # 01:30 EST
        "late:prod:20261101T063000Z",  # dst_fall_back "second": 01:30 EST only
        "half:prod:20261101T070000Z",  # 02:00 EST
    ]


def test_a_takeover_does_not_publish_slots_before_the_schedule_was_first_seen(cluster):
    rule = ScheduleRule(id=12, cron="* * * * * */10", misfire_grace_seconds=60)
    source = StaticScheduleSource(snapshot(entry(rule)))
    alpha = cluster.leader("alpha", source)
    lead(alpha)
    alpha.tick(T0 + timedelta(seconds=35))  # first sight: :00 .. :30 are the past
    alpha.tick(T0 + timedelta(seconds=40))
    alpha.election.release()
    beta = cluster.leader("beta", source)
    lead(beta)
    beta.tick(T0 + timedelta(seconds=45))  # :40 is unclaimed and within the grace; :00 .. :30 never existed
    assert [(o.scheduled_at.second, o.epoch) for o in cluster.published()] == [(40, 1), (40, 2)]


def test_a_takeover_does_not_publish_the_slots_of_a_disabled_period(cluster):
    rule = ScheduleRule(id=13, cron="* * * * * */10", misfire_grace_seconds=120, catchup="all")
    source = StaticScheduleSource(snapshot(entry(rule)))
    alpha = cluster.leader("alpha", source, wakeup=10)
    lead(alpha)
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(seconds=10))
    source.snapshot = snapshot()  # disabled for 40 seconds
    for seconds in (20, 30, 40, 50):
        alpha.refresh(T0 + timedelta(seconds=seconds))
        alpha.tick(T0 + timedelta(seconds=seconds))
    source.snapshot = snapshot(entry(rule))
    alpha.refresh(T0 + timedelta(seconds=60))
    alpha.tick(T0 + timedelta(seconds=60))
    alpha.election.release()
    beta = cluster.leader("beta", source)
    lead(beta)
    beta.tick(T0 + timedelta(seconds=65))
    # alpha: +10, then +60 after re-enabling (+20 .. +50 were disabled). beta re-publishes the
    # unclaimed +60 (re-enabled at the alive mark +50), but neither +10 (before the disabled period,
    # a different run of publications) nor the disabled period itself.
    published = [(round((o.scheduled_at - T0).total_seconds()), o.epoch) for o in cluster.published()]
    assert published == [(10, 1), (60, 1), (60, 2)]


def take_over(cluster, alpha, beta) -> None:
    """alpha stops (crashes); beta leads once alpha's 1 s lease expired."""
    wait_for(lambda: beta.election.tick(datetime.now(UTC)).is_leader, 5, "beta to lead")
    assert beta.election.epoch > alpha.election.epoch


def test_a_cron_edit_then_a_failover_re_publishes_the_old_rules_slots_not_phantoms(cluster):
    """Issue 10, scenario 5: re-publication replays the record, it does not recompute the past."""
    old_rule, new_rule = EVERY_10S, replace(EVERY_10S, cron="* * * * * */7")
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(old_rule))), window=0.5)
    beta = cluster.leader("beta", StaticScheduleSource(snapshot(entry(new_rule))), window=0.5)
    lead(alpha)
    for seconds in (0, 10, 20):
        alpha.election.tick(datetime.now(UTC))
        alpha.tick(T0 + timedelta(seconds=seconds))
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 20]
    take_over(cluster, alpha, beta)  # beta already sees the edited rule (every 7 s)
    beta.tick(T0 + timedelta(seconds=20.5))
    offers = cluster.published()
    # :10 and :20 of the old rule again (unclaimed, within the grace); no :07 or :14 phantom of the new one.
    assert [o.scheduled_at.second for o in offers] == [10, 20]
    beta.tick(T0 + timedelta(seconds=21))  # after the cursor, the new rule is in force
    assert [o.scheduled_at.second for o in cluster.published()] == [21]


def test_a_deleted_suspension_then_a_failover_does_not_run_a_slot_recorded_skipped(cluster):
    window = SuspensionWindow(id=1, starts_at=T0 + timedelta(seconds=15), ends_at=T0 + timedelta(seconds=25))
    alpha = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S, suspensions=[window]))), window=0.5)
    beta = cluster.leader("beta", StaticScheduleSource(snapshot(entry(EVERY_10S))), window=0.5)  # deleted
    lead(alpha)
    for seconds in (0, 10, 20, 30):
        alpha.election.tick(datetime.now(UTC))
        alpha.tick(T0 + timedelta(seconds=seconds))
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 30]
    take_over(cluster, alpha, beta)
    beta.tick(T0 + timedelta(seconds=35))
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 30]  # :20 stays skipped
