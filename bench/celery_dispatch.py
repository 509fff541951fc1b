"""Kirby sending Celery tasks: due instant -> task body running, on a real cluster (not a test).

Run: eval "$(deploy/services env)"; .venv/bin/python bench/celery_dispatch.py [--jobs 10] [--seconds 60]

A real ``kirby web`` and 2 ``kirby supervisor`` processes on Kafka + Redis (topics, group and key
prefix of their own), and a prefork ``celery worker`` (``-c 4``) of ``tests/celery_app`` with
``kirby.celery`` installed, on the same Redis as broker. ``--jobs`` Celery jobs are due together
every 5 seconds (``* * * * * */5``) for ``--seconds``. Latency = the task body's own start time
(its ledger line) - the scheduled instant, p50/p99, split at the supervisor's "sent" log line.
The side-by-side with celery beat + RedBeat is ``bench/celery.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Cluster, load, ms, wait_for  # noqa: E402

from kirby.models import Context, Environment, Job, JobType, Schedule  # noqa: E402
from kirby.run_ids import parse_run_id  # noqa: E402

SENT = re.compile(r"sent run (\S+) \(Celery task")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kirby-bench-celery-"))
    cluster = Cluster(work / "cluster", "kafka-redis", str(work / "no-index"), work / "venvs")
    queue = f"kirby-bench-{uuid.uuid4().hex[:8]}"
    broker = os.environ["REDIS_URL"]
    cluster.env["KIRBY_CELERY_BROKER_URL"] = broker
    cluster.env.setdefault("KIRBY_ALLOW_ROOT_RUNS", "true")  # as root on a bench machine: no script runs here
    ledger = cluster.workdir / "ledger"
    with cluster.database.session() as session:
        environment = Environment(name="bench")
        for i in range(args.jobs):
            job = Job(
                name=f"task{i}",
                type=JobType.SCHEDULED,
                celery_task="kirby_test.ledger",
                celery_args="[]",
                celery_kwargs=json.dumps({"label": str(i)}),
                celery_queue=queue,
            )
            context = Context(job=job, environment=environment)
            session.add_all([job, context, Schedule(context=context, cron="* * * * * */5", misfire_grace_seconds=60)])
    try:
        cluster.start_web()
        for name in ("s1", "s2"):
            cluster.start_supervisor(name, window=2.0)
        worker_log = open(cluster.workdir / "worker.log", "ab")
        cluster.processes["worker"] = subprocess.Popen(
            [str(Path(sys.executable).with_name("celery")), "-A", "kirby_test_celery", "worker", "-P", "prefork"]
            + ["-c", "4", "-Q", queue, "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=cluster.workdir,
            env={
                **cluster.env,
                "PYTHONPATH": str(ROOT / "tests" / "celery_app"),
                "TEST_CELERY_BROKER": broker,
                "TEST_CELERY_QUEUE": queue,
                "TEST_CELERY_LEDGER": str(ledger),
            },
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: ledger.exists() and ledger.read_text(), 180, "no task body ran")
        start = time.time() + 1
        time.sleep(args.seconds)
        end = time.time()
        time.sleep(5)
        rows = [line.split() for line in ledger.read_text().splitlines()]
        ran = {}
        for run_id, _, _, when in rows:
            ran.setdefault(run_id, float(when))
        due = {run_id: parse_run_id(run_id).instant.timestamp() for run_id in ran}
        measured = [run_id for run_id in ran if start <= due[run_id] <= end]
        sent = cluster.stages({"sent": SENT})["sent"]
        total = [ran[r] - due[r] for r in measured]
        to_sent = [sent[r] - due[r] for r in measured if r in sent]
        to_body = [ran[r] - sent[r] for r in measured if r in sent]
        twice = len(rows) - len(ran)
        print(f"Kirby -> Celery, {args.jobs} tasks due together every 5 s for {args.seconds:.0f} s ({load()})")
        print(f"  due -> task body running: {ms(total)}")
        print(f"  due -> sent (supervisor): {ms(to_sent)}")
        print(f"  sent -> task body:        {ms(to_body)}")
        print(f"  bodies run twice: {twice}")
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
