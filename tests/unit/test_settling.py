"""Settling the runs of dead supervisor instances, on the embedded store and bus (issue 11, item 3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from kirby.bus import open_bus
from kirby.events import Offer
from kirby.lease import open_lease_store
from kirby.run_ids import slot_run_id
from kirby.supervisor.settling import Settler
from tests.helpers import wait_for

T0 = datetime(2026, 12, 1, 5, 28, 40, tzinfo=timezone.utc)


@pytest.fixture
def parts(make_settings):
    settings = make_settings()
    store, bus = open_lease_store(settings), open_bus(settings)
    yield store, bus
    bus.close()
    store.close()


def offer(second: int, **fields) -> Offer:
    run_id = slot_run_id("probe", "audit", T0.replace(second=second))
    return Offer(run_id, run_id, "probe", "audit", "p", "1.0.0", T0.replace(second=second), **fields)


def offers_on(bus, timeout: float = 10.0) -> list[Offer]:
    consumer = bus.offer_consumer("watcher")
    try:
        return [d.message for d in wait_for(lambda: consumer.poll(0.5), timeout, "nothing was offered")]
    finally:
        consumer.close()


def test_only_dead_instances_runs_are_settled_and_each_once(parts):
    store, bus = parts
    store.register_supervisor("alive", "live-instance", 60)
    never, started, live = offer(41), offer(42), offer(43)
    store.claim_run(never.run_id, "ghost", instance="dead", offer=never.to_json().decode())
    store.claim_run(started.run_id, "ghost", instance="dead", offer=started.to_json().decode())
    store.mark_started(started.run_id, "dead")
    store.claim_run(live.run_id, "alive", instance="live-instance", offer=live.to_json().decode())
    recorded = []
    settler = Settler(
        store, bus, clock=lambda: T0, record_lost=lambda claim, reason: recorded.append((claim.run_id, reason))
    )
    done = settler.settle()
    assert (done.reoffered, done.lost, done.retried) == ([never.run_id], [started.run_id], [])
    assert [r for r, _ in recorded] == [started.run_id] and "supervisor ghost" in recorded[0][1]
    assert [o.run_id for o in offers_on(bus)] == [never.run_id]  # same id; the started one is not re-run
    assert [c.run_id for c in store.active_claims()] == [never.run_id, live.run_id]  # released, awaiting a claim
    again = settler.settle()
    assert (again.reoffered, again.lost) == ([], [])


def test_a_lost_run_whose_schedule_says_retry_is_offered_as_its_next_attempt(parts):
    store, bus = parts
    lost = offer(44, on_lost="retry", retries=0)
    store.claim_run(lost.run_id, "ghost", instance="dead", offer=replace(lost, epoch=3).to_json().decode())
    store.mark_started(lost.run_id, "dead")
    done = Settler(store, bus, clock=lambda: T0, record_lost=lambda claim, reason: None).settle()
    assert done.lost == [lost.run_id] and done.retried == [f"{lost.run_id}#2"]
    [retry] = offers_on(bus)
    assert (retry.run_id, retry.attempt, retry.trigger, retry.epoch) == (f"{lost.run_id}#2", 2, "retry", None)
