"""Where the leader sends the offers of one instant on a partitioned bus (Kafka).

Every supervisor advertises with its registry heartbeat (``Supervisor._info``) the partitions of
the offers topic it holds (``offer_partition_ids``), its ``capacity`` and how many scheduled runs
it has in hand (``busy``). ``plan_routes`` spreads ``count`` offers over the members whose
heartbeat is fresh (at most ``fresh_within`` seconds old), in proportion to their room, each
member's share round-robin over its partitions:

* fan-out: the offers of one instant go to every live member with room, not where their keys hash;
* failover: a SIGKILLed member stops heartbeating at once, so offers published after it died (a
  new leader's, and its re-publications of what the dead leader published and nobody claimed) go
  to live members, instead of waiting in its partitions for the group's session timeout and a
  rebalance.

Routing only picks partitions: a stale advertisement (a rebalance moved the partition, or the
member filled up meanwhile) never loses or duplicates an offer (the partition's current owner
receives it; runs are claimed by id). With no fresh advertisement it returns None (offers go by
key, as without routing). An offer that reaches a member with no room left is handed back by it
(``handback_routes``: re-published, unclaimed, to the partitions of other members with room, then
acknowledged; ``runner``), so it does not wait for that member to have room.
"""

from __future__ import annotations

import random
from datetime import datetime

from kirby.lease.base import SupervisorInfo


def plan_routes(
    members: list[SupervisorInfo], now: datetime, fresh_within: float, count: int, rng: random.Random | None = None
) -> list[int] | None:
    """Partitions for ``count`` offers (one each), or None when no live member advertises any.

    Members with equal room are taken in a random order (``rng``), so lone offers (one script due
    at a time) spread over the members as keys did, instead of all going to one of them."""
    live = []
    shuffled = list(members)
    (rng or random).shuffle(shuffled)
    for member in shuffled:
        partitions = member.info.get("offer_partition_ids") or []
        if partitions and (now - member.last_heartbeat).total_seconds() <= fresh_within:
            capacity, busy = member.info.get("capacity"), member.info.get("busy") or 0
            room = max(0, capacity - busy) if isinstance(capacity, int) else 1
            live.append([room, member.name, list(partitions), 0])
    if not live:
        return None
    with_room = [entry for entry in live if entry[0] > 0]
    routes = []
    for n in range(count):
        if with_room:  # the member with the most room left takes the next offer (ties: shuffled order)
            entry = max(with_room, key=lambda e: e[0])
            entry[0] -= 1
            if entry[0] == 0:
                with_room.remove(entry)
        else:  # every member is full: spread evenly; each takes its share when it has room
            entry = live[n % len(live)]
        partitions = entry[2]
        routes.append(partitions[entry[3] % len(partitions)])
        entry[3] += 1
    return routes


def handback_routes(
    members: list[SupervisorInfo], me: str, now: datetime, fresh_within: float, count: int
) -> list[int] | None:
    """Partitions of members other than ``me`` with room for ``count`` offers a full ``me`` hands
    back, or None when no other live member advertises room (the offers then wait for ``me``)."""
    others = [member for member in members if member.name != me]
    has_room = [
        m
        for m in others
        if m.info.get("offer_partition_ids")
        and (now - m.last_heartbeat).total_seconds() <= fresh_within
        and (not isinstance(m.info.get("capacity"), int) or m.info["capacity"] - (m.info.get("busy") or 0) > 0)
    ]
    return plan_routes(has_room, now, fresh_within, count) if has_room else None
