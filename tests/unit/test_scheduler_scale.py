"""The leader's tick costs O(slots due), not O(schedules): counted, not timed.

With 10,000 schedules and none due, a tick evaluates no cron expression and executes as many
Python lines as with 10 schedules (``sys.settrace`` counts every line run, in every module, by
the tick); with one slot due among 10,000, it evaluates a handful and publishes that one.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pytest
from test_scheduler import T0, Cluster, entry, lead, snapshot

import kirby.supervisor.planning as planning
import kirby.supervisor.scheduler as scheduler_module
from kirby.schedule import ScheduleRule, StaticScheduleSource

DAILY = "0 3 * * *"  # never due around T0 (12:00)
AT_12_00_30 = "0 12 * * * 30"  # 6 fields: seconds last


class Counted:
    """Counts the calls of the cron functions the scheduler and the planner use."""

    def __init__(self, monkeypatch):
        self.calls = 0
        for module, name in ((scheduler_module, "next_fire"), (planning, "previous_fire")):
            original = getattr(module, name)
            monkeypatch.setattr(module, name, self._wrap(original))

    def _wrap(self, function):
        def counted(*args, **kwargs):
            self.calls += 1
            return function(*args, **kwargs)

        return counted


def lines_run(call) -> int:
    """The number of Python lines ``call()`` executes (every frame, every module)."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def leader_of(make_settings, tmp_path, schedules: int, due_one: bool = False):
    cluster = Cluster(make_settings(KIRBY_EMBEDDED_PATH=str(tmp_path / f"embedded-{schedules}.db")))
    entries = [entry(ScheduleRule(id=i, cron=DAILY), job=f"job{i}") for i in range(schedules)]
    if due_one:
        entries[-1] = entry(ScheduleRule(id=schedules, cron=AT_12_00_30), job="due")
    scheduler = cluster.leader(f"leader-{schedules}", StaticScheduleSource(snapshot(*entries)))
    lead(scheduler)
    for _ in range(schedules // scheduler.max_adopt + 1):  # first sight: adopts them, max_adopt per tick
        if scheduler.tick(T0) > 0:
            return cluster, scheduler
    raise AssertionError(f"the leader did not adopt {schedules} schedules")


@pytest.mark.slow
def test_an_idle_tick_does_no_per_schedule_work(make_settings, tmp_path, monkeypatch):
    small_cluster, small = leader_of(make_settings, tmp_path, 10)
    big_cluster, big = leader_of(make_settings, tmp_path, 10_000)
    try:
        counted = Counted(monkeypatch)
        idle = T0 + timedelta(seconds=10)
        small_lines = lines_run(lambda: small.tick(idle))
        big_lines = lines_run(lambda: big.tick(idle))
        assert counted.calls == 0, f"an idle tick evaluated {counted.calls} cron expression(s)"
        assert big_lines - small_lines < 50, (
            f"an idle tick ran {big_lines} lines with 10,000 schedules against {small_lines} with 10: "
            "it does work per schedule"
        )
        assert big.published == 0 and big_cluster.published() == []
    finally:
        small_cluster.close()
        big_cluster.close()


@pytest.mark.slow
def test_a_tick_with_one_slot_due_among_10000_evaluates_only_that_schedule(make_settings, tmp_path, monkeypatch):
    cluster, scheduler = leader_of(make_settings, tmp_path, 10_000, due_one=True)
    try:
        counted = Counted(monkeypatch)
        delay = scheduler.tick(T0 + timedelta(seconds=10))
        assert delay == pytest.approx(20)  # sleeps exactly until the one due slot
        assert scheduler.tick(T0 + timedelta(seconds=30)) > 0
        assert 0 < counted.calls <= 6, f"{counted.calls} cron evaluations for one due slot"
        assert [offer.run_id for offer in cluster.published()] == ["due:prod:20260301T120030Z"]
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_leader_adopts_10000_new_schedules_over_bounded_ticks(make_settings, tmp_path, monkeypatch):
    """Each tick evaluates at most ``max_adopt`` crons, so the lease is renewed between ticks; all
    are followed in the end, each from now (its cursor written)."""
    cluster = Cluster(make_settings())
    entries = [entry(ScheduleRule(id=i, cron=DAILY), job=f"job{i}") for i in range(10_000)]
    scheduler = cluster.leader("adopter", StaticScheduleSource(snapshot(*entries)), max_adopt=2_000)
    lead(scheduler)
    try:
        counted = Counted(monkeypatch)
        evaluations = []
        delays = []
        for _ in range(6):
            before = counted.calls
            delays.append(scheduler.tick(T0))
            evaluations.append(counted.calls - before)
        assert delays[:4] == [0.0] * 4  # more to adopt: at once, after the election's turn
        assert delays[4] > 0 and delays[5] > 0  # all followed: sleeps until the next slot
        assert evaluations == [2_000] * 5 + [0]
        keys = [f"job{i}:prod:{i}" for i in range(10_000)]
        assert set(cluster.store.get_cursors(keys).values()) == {T0}
    finally:
        cluster.close()
