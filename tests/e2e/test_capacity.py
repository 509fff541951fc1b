"""Capacity and fan-out with real supervisors, on both backends (issue 14).

* A supervisor runs at most ``--concurrency`` scheduled runs at once; an offer beyond its room is
  not claimed: it stays on the bus, another supervisor with room runs it, or this one later.
* Offers of one instant spread over the live supervisors (embedded bus: each poll takes a fair
  share; Kafka: the leader routes offers to the partitions of live members with room).

Audited from the runs table (supervisor, started/finished times) and each script's own ledger.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from kirby.lease import open_lease_store
from kirby.models import Overlap, RunState
from tests.helpers import wait_for


def ledger_ids(path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def wait_ready(cluster, names: list[str]) -> None:
    """Every supervisor heartbeats its capacity and (Kafka) holds offer partitions: due offers can
    reach any of them."""

    def ready():
        with open_lease_store(cluster.settings) as store:
            live = {s.name: s.info for s in store.supervisors()}
        kafka = "KAFKA_BOOTSTRAP_SERVERS" in cluster.env
        return all(
            name in live and live[name].get("capacity") and (not kafka or live[name].get("offer_partition_ids"))
            for name in names
        )

    wait_for(ready, 120, f"supervisors {names} did not all join; see {cluster.workdir}/*.log")


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def settled_instant(cluster, jobs: list[str], timeout: float) -> tuple[datetime, dict]:
    """The first scheduled instant at which every job of ``jobs`` has a finished run; its runs by job."""

    def find():
        by_instant: dict[datetime, dict] = {}
        for job in jobs:
            for run in cluster.runs(job):
                by_instant.setdefault(run.scheduled_at, {})[job] = run
        for instant in sorted(by_instant):
            runs = by_instant[instant]
            if len(runs) == len(jobs) and all(r.finished_at is not None for r in runs.values()):
                return instant, runs
        return None

    return wait_for(find, timeout, f"no instant at which all {len(jobs)} jobs finished; see {cluster.workdir}")


@pytest.mark.slow
def test_a_supervisor_at_its_limit_leaves_offers_to_others_and_takes_more_when_it_has_room(cluster):
    cluster.start_web()
    capacity = {"small": 1, "big": 2}
    for name, room in capacity.items():
        cluster.start_supervisor(name, concurrency=room)
    wait_ready(cluster, list(capacity))
    jobs = [f"sleep{n}" for n in range(6)]  # 6 runs due at once, room for 3: two waves at least
    for job in jobs:
        cluster.add_job(
            job, "kirby-example-sleep", cron="* * * * * */30", overlap=Overlap.ALLOW, config={"SLEEP_SECONDS": "4"}
        )
    instant, runs = settled_instant(cluster, jobs, 180)
    assert all(run.state == RunState.SUCCEEDED for run in runs.values()), {j: r.state for j, r in runs.items()}
    by_supervisor: dict[str, list] = {}
    for run in runs.values():
        by_supervisor.setdefault(run.supervisor, []).append((run.started_at, run.finished_at))
    assert set(by_supervisor) == set(capacity), f"runs by supervisor: {by_supervisor}"
    for name, intervals in by_supervisor.items():
        assert most_at_once(intervals) <= capacity[name], f"{name} ran more than --concurrency {capacity[name]}"
    starts = sorted(run.started_at for run in runs.values())
    assert (starts[-1] - starts[0]).total_seconds() >= 3, f"no run waited for room: {starts}"  # taken later
    assert all(run.duplicate_starts == 0 for run in runs.values())


@pytest.mark.slow
def test_three_supervisors_with_room_each_run_some_of_thirty_simultaneous_offers(cluster):
    ledger = cluster.workdir / "ledger"
    cluster.start_web()
    names = ["s1", "s2", "s3"]
    for name in names:
        cluster.start_supervisor(name, concurrency=30)
    wait_ready(cluster, names)
    jobs = [f"hello{n:02d}" for n in range(30)]
    for job in jobs:
        cluster.add_job(job, "kirby-example-hello", cron="* * * * * */20", config={"KIRBY_RUN_LEDGER": str(ledger)})
    instant, runs = settled_instant(cluster, jobs, 180)
    assert all(run.state == RunState.SUCCEEDED for run in runs.values()), {j: r.state for j, r in runs.items()}
    per_supervisor = Counter(run.supervisor for run in runs.values())
    assert set(per_supervisor) == set(names), f"the 30 runs of {instant} by supervisor: {dict(per_supervisor)}"
    ran = Counter(ledger_ids(ledger))
    assert all(ran[run.id] == 1 for run in runs.values()), f"ledger counts: {ran}"
