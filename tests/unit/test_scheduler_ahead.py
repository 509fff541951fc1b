"""Publishing ahead of the due instant (issue 14, ``Scheduler(ahead=...)``): slots go out ``ahead``
seconds early (runners wait for the instant), cursors move to them, a failover re-publishes them,
and misfire graces still count from the due instant."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from kirby.run_ids import slot_run_id
from kirby.schedule import StaticScheduleSource
from kirby.supervisor.planning import plan_slots
from tests.unit.test_scheduler import EVERY_10S, T0, UTC, cluster, entry, lead, snapshot, wait_for  # noqa: F401


def test_slots_are_published_ahead_of_their_instant_and_each_once(cluster):
    scheduler = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S))), ahead=1.0)
    epoch = lead(scheduler)
    assert scheduler.tick(T0 + timedelta(milliseconds=500)) == pytest.approx(8.5)  # wakes 1 s before T0+10
    assert cluster.published() == []
    assert scheduler.tick(T0 + timedelta(seconds=9)) == pytest.approx(10.0)  # next: T0+20, published at T0+19
    [offer] = cluster.published()
    assert offer.scheduled_at == T0 + timedelta(seconds=10) and offer.offered_at == T0 + timedelta(seconds=9)
    assert offer.epoch == epoch and offer.not_after == offer.scheduled_at + timedelta(seconds=30)
    assert cluster.store.get_cursor("report:prod:1") == T0 + timedelta(seconds=10)
    assert scheduler.tick(T0 + timedelta(seconds=10)) == pytest.approx(9.0)  # the instant itself: nothing again
    assert cluster.published() == []


def test_a_slot_published_ahead_and_unclaimed_is_re_published_by_a_new_leader_before_its_instant(cluster):
    source = StaticScheduleSource(snapshot(entry(EVERY_10S)))
    alpha = cluster.leader("alpha", source, window=0.5, ahead=1.0)  # lease TTL 1 s of real time
    beta = cluster.leader("beta", source, window=0.5, ahead=1.0)
    assert lead(alpha) == 1
    alpha.tick(T0)
    alpha.tick(T0 + timedelta(seconds=9, milliseconds=200))
    assert [o.scheduled_at for o in cluster.published()] == [T0 + timedelta(seconds=10)]
    wait_for(lambda: beta.election.tick(datetime.now(UTC)).is_leader, 5, "beta to lead")  # alpha died
    beta.tick(T0 + timedelta(seconds=9, milliseconds=600))  # still before the instant
    [again] = cluster.published()
    assert again.run_id == slot_run_id("report", "prod", T0 + timedelta(seconds=10)) and again.epoch == 2


def test_the_misfire_grace_counts_from_the_due_instant_not_from_the_publish_horizon():
    rule = EVERY_10S  # grace 30 s
    late = plan_slots(entry(rule), rule, T0, None, T0 + timedelta(seconds=40), until=T0 + timedelta(seconds=45))
    assert [(s.instant - T0).seconds for s in late.slots if s.publish] == [10, 20, 30, 40]  # 10 is exactly 30 s late
    assert late.missed == 0
    plain = plan_slots(entry(rule), rule, T0, None, T0 + timedelta(seconds=40))
    assert [s.instant for s in plain.slots] == [s.instant for s in late.slots]
