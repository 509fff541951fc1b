"""Kirby's half of bench/celery.py: a real ``kirby web`` + two supervisors on Kafka + Redis sending
``bench.record`` as Celery jobs to the bench's broker, executed by a worker with ``kirby.celery``.

The task id of each run is its run id, which names the slot, so latencies are exact (body start -
scheduled instant) and the failover is audited slot by slot against ``kirby.cron.slots_between``.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from bench._celery import CeleryProcesses, clean_redis, gaps, read_records
from bench._common import Cluster, wait_for
from kirby.cron import slots_between
from kirby.demo.files import apply_checked
from kirby.demo.parse import parse
from kirby.run_ids import parse_run_id

ENVIRONMENT = "bench"
SENT = re.compile(r"sent run (\S+) \(Celery task")


def _cluster(work: Path, name: str, broker: str, queue: str, jobs: dict[str, str]) -> tuple[Cluster, CeleryProcesses]:
    index = os.environ.get("KIRBY_PACKAGE_INDEX") or str(work / "no-index")  # Celery jobs install nothing
    cluster = Cluster(work / name, "kafka-redis", index, work / "venvs")
    cluster.env["KIRBY_CELERY_BROKER_URL"] = broker
    cluster.env["KIRBY_ALLOW_ROOT_RUNS"] = "true"  # a Celery job runs no script on the supervisor
    document = {
        "ENVS": {ENVIRONMENT: "bench/celery.py"},
        "JOBS": {
            job: {
                "type": "scheduled",
                "celery_task": {"name": "bench.record", "args": [job], "queue": queue},
                "environments": [ENVIRONMENT],
                "scheduled_param": {"cron": expression},
            }
            for job, expression in jobs.items()
        },
    }
    apply_checked(cluster.database, cluster.settings, parse(document), prune=False, dry_run=False)
    worker_env = dict(cluster.env)  # kirby.celery claims deliveries in the cluster's lease store
    celery = CeleryProcesses(work / name / "celery", broker, queue, kirby=True, extra_env=worker_env)
    return cluster, celery


def _slot(record) -> datetime | None:
    try:
        return parse_run_id(record.task_id).instant
    except ValueError:
        return None


def kirby_latency(work: Path, broker: str, count: int, first: float, warn_if_late) -> dict:
    queue = f"bench-kirby-{uuid.uuid4().hex[:8]}"
    labels = [f"minute-{i:02d}" for i in range(50)]
    cluster, celery = _cluster(work, "kirby-latency", broker, queue, dict.fromkeys(labels, "* * * * *"))
    try:
        celery.start_worker()
        cluster.start_web()
        for name in ("s1", "s2"):
            cluster.start_supervisor(name, window=5.0)
        wait_for(cluster.leader, 120, "no Kirby leader was elected")
        warn_if_late("kirby", first)  # the leader has its schedule and the first sends connect at first - 60
        boundaries = [datetime.fromtimestamp(first + 60 * i, timezone.utc) for i in range(count)]

        def found() -> dict:
            return {
                (r.label, _slot(r)): r.started - _slot(r).timestamp()
                for r in read_records(celery.ledger)
                if _slot(r) in boundaries
            }

        wait_for(lambda: len(found()) == len(labels) * count, first + 60 * count + 90 - time.time(), "runs missing")
        sent = cluster.stages({"sent": SENT})["sent"]
        sent_latency = [
            when - parse_run_id(run).instant.timestamp()
            for run, when in sent.items()
            if parse_run_id(run).instant in boundaries
        ]
        body = found()
        return {"body": list(body.values()), "sent": sent_latency, "missing": len(labels) * count - len(body)}
    finally:
        celery.close()
        cluster.close()
        clean_redis(broker, queue)


def kirby_failover(work: Path, broker: str, settle: float) -> dict:
    queue = f"bench-kirby-{uuid.uuid4().hex[:8]}"
    labels = [f"second-{i}" for i in range(5)]
    cluster, celery = _cluster(work, "kirby-failover", broker, queue, dict.fromkeys(labels, "* * * * * *"))
    try:
        celery.start_worker()
        cluster.start_web()
        for name in ("s1", "s2"):
            cluster.start_supervisor(name, window=5.0)  # the default window: a 10 s lease, like RedBeat's lock
        leader = wait_for(cluster.leader, 120, "no Kirby leader was elected")
        wait_for(
            lambda: len(read_records(celery.ledger)) >= 5 * len(labels), 120, "the every-second runs did not start"
        )
        time.sleep(settle)
        leader = cluster.leader()
        killed = time.time()
        os.killpg(cluster.processes[leader.owner].pid, signal.SIGKILL)
        cluster.processes[leader.owner].wait(30)
        new = wait_for(lambda: cluster.leader(other_than=leader.owner), 120, "no new Kirby leader")
        took_over = time.time()
        del new
        wait_for(
            lambda: any((_slot(r) or datetime.min.replace(tzinfo=timezone.utc)).timestamp() > took_over
                        for r in read_records(celery.ledger)),
            120,
            "no run of a slot after the takeover",
        )  # fmt: skip
        time.sleep(settle)
        records = read_records(celery.ledger)
        per_task, summary = audit(records, labels, killed, settle)
        return {"killed": killed, "took_over": took_over, "per_task": per_task, "audit": summary}
    finally:
        celery.close()
        cluster.close()
        clean_redis(broker, queue)


def audit(records, labels: list[str], killed: float, settle: float) -> tuple[dict, str]:
    """Every slot from ``settle`` s before the kill to 10 s before the last record, per task: (largest
    interval between body starts, slots that never ran, slots that ran twice); and a summary line."""
    start = datetime.fromtimestamp(killed - settle + 2, timezone.utc).replace(microsecond=0)
    end = datetime.fromtimestamp(max(r.started for r in records) - 10, timezone.utc).replace(microsecond=0)
    expected = list(slots_between("* * * * * *", "UTC", start, end))
    per_task = {}
    for label in labels:
        mine = [r for r in records if r.label == label and _slot(r) and start < _slot(r) <= end]
        seen = Counter(_slot(r) for r in mine)
        gap = gaps([r.started for r in mine])[0]
        per_task[label] = (gap, sum(1 for s in expected if seen[s] == 0), sum(1 for s in expected if seen[s] > 1))
    late = [r.started - _slot(r).timestamp() for r in records if _slot(r) and start < _slot(r) <= end]
    summary = (
        f"{len(expected)} slots x {len(labels)} tasks from {start:%H:%M:%S} to {end:%H:%M:%S} UTC, by run id; "
        f"the latest started {max(late, default=0):.1f} s after its slot (the gap's slots ran late)"
    )
    return per_task, summary
