"""Capacity in the open: each supervisor's scheduled runs in hand and its --concurrency reach
/metrics and the Supervisors page through its heartbeat; the leader's offer routing (Kafka) spreads
offers over live members with room and avoids members whose heartbeat stopped."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

from test_web_support import admin_client, app, settings, web  # noqa: F401

from kirby.lease.base import SupervisorInfo
from kirby.supervisor.routing import plan_routes

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def member(name: str, partitions: list[int], capacity: int | None = 8, busy: int = 0, age: float = 0.2):
    info = {"offer_partition_ids": partitions, "capacity": capacity, "busy": busy}
    return SupervisorInfo(name, f"i-{name}", NOW - timedelta(seconds=age), info)


def test_busy_and_capacity_show_in_metrics_and_on_the_page(app, admin_client):
    leases = app.extensions["kirby"].lease_store
    leases.register_supervisor("roomy", "i-1", 30, {"capacity": 8, "busy": 3})
    leases.register_supervisor("full", "i-2", 30, {"capacity": 2, "busy": 2})
    leases.register_supervisor("old", "i-3", 30, {})  # a supervisor that does not advertise it
    metrics = admin_client.get("/metrics").get_data(as_text=True)
    assert "# TYPE kirby_supervisor_busy gauge" in metrics and "# TYPE kirby_supervisor_capacity gauge" in metrics
    assert 'kirby_supervisor_busy{supervisor="roomy"} 3' in metrics
    assert 'kirby_supervisor_capacity{supervisor="roomy"} 8' in metrics
    assert 'kirby_supervisor_busy{supervisor="full"} 2' in metrics
    assert 'kirby_supervisor_capacity{supervisor="full"} 2' in metrics
    assert 'supervisor="old"' not in metrics.split("kirby_supervisor_busy", 1)[1]
    page = admin_client.get("/admin/supervisors/").get_data(as_text=True)
    rows = {name: page[page.index(f"<td>{name}</td>") :].split("</tr>")[0] for name in ("roomy", "full", "old")}
    assert "3 / 8" in rows["roomy"] and "full:" not in rows["roomy"]
    assert "2 / 2" in rows["full"] and "leaves offers to others" in rows["full"]
    assert "/ " not in rows["old"].split('class="capacity')[1]


def test_offers_of_one_instant_spread_over_live_members_in_proportion_to_their_room():
    members = [member("a", [0, 1], busy=0), member("b", [2, 3], busy=4), member("c", [4, 5], busy=8)]
    routes = plan_routes(members, NOW, 1.0, 12)
    owner = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "c"}
    per_member = Counter(owner[p] for p in routes)
    assert per_member == {"a": 8, "b": 4}  # c is full: it gets none while others have room
    assert Counter(routes)[0] == Counter(routes)[1] == 4  # a's share round-robin over its partitions


def test_lone_offers_spread_over_members_with_equal_room():
    members = [member(name, [n]) for n, name in enumerate("abc")]
    chosen = Counter(plan_routes(members, NOW, 1.0, 1, random.Random(seed))[0] for seed in range(60))
    assert set(chosen) == {0, 1, 2} and min(chosen.values()) >= 10, chosen  # not always the same member


def test_when_everyone_is_full_offers_spread_evenly_to_wait_for_room():
    members = [member(name, [n], capacity=1, busy=1) for n, name in enumerate("abc")]
    assert Counter(plan_routes(members, NOW, 1.0, 9)) == {0: 3, 1: 3, 2: 3}


def test_a_member_whose_heartbeat_stopped_gets_no_offers():
    members = [member("alive", [0, 1, 2]), member("killed", [3, 4, 5], age=1.6)]
    assert set(plan_routes(members, NOW, 1.0, 10)) <= {0, 1, 2}


def test_no_fresh_advertisement_means_routing_by_key():
    assert plan_routes([], NOW, 1.0, 3) is None
    assert plan_routes([member("killed", [0], age=5)], NOW, 1.0, 3) is None
    assert plan_routes([member("joining", [])], NOW, 1.0, 3) is None
