"""Shared by bench/celery.py: the benchmark's Celery app, its worker and beat processes, and the audit.

The app (written to the work folder as ``benchapp.py``) has one task, ``bench.record(label)``,
whose body appends ``<label> <task id> <time.time()>`` to the ledger as its first act: a task's
start time is the task's own record. With ``BENCH_KIRBY=1`` the app installs ``kirby.celery``
(the worker-side dedupe); the peer's worker runs the same app without it. Celery processes log
with Kirby's LOG_FORMAT, so their logs carry ``time.time()`` stamps too.
"""

from __future__ import annotations

import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench._common import LOG_FORMAT, Processes, wait_for

CELERY = Path(sys.executable).with_name("celery")

APP = textwrap.dedent(
    '''
    """The benchmark's Celery app (written by bench/_celery.py)."""
    import os
    import time

    from celery import Celery

    app = Celery("benchapp", broker=os.environ["BENCH_BROKER"])
    app.conf.update(
        timezone="UTC",
        task_default_queue=os.environ["BENCH_QUEUE"],
        worker_log_format=os.environ["LOG_FORMAT"],
        worker_task_log_format=os.environ["LOG_FORMAT"],
        worker_hijack_root_logger=True,
        broker_connection_retry_on_startup=True,
        redbeat_redis_url=os.environ["BENCH_BROKER"],
        redbeat_key_prefix=os.environ["BENCH_QUEUE"] + ":redbeat",
        redbeat_lock_timeout=int(os.environ.get("BENCH_LOCK_TIMEOUT", "10")),
        beat_max_loop_interval=float(os.environ.get("BENCH_MAX_LOOP", "2")),
        beat_schedule={},
    )
    LEDGER = os.environ["BENCH_LEDGER"]

    if os.environ.get("BENCH_KIRBY") == "1":
        import kirby.celery

        kirby.celery.install(app)

    if os.environ.get("BENCH_BEAT"):
        import json

        from celery.schedules import crontab

        for name, every in json.loads(os.environ["BENCH_BEAT"]).items():
            schedule = crontab() if every == "minute" else float(every)
            app.conf.beat_schedule[name] = {"task": "bench.record", "schedule": schedule, "args": [name]}


    @app.task(name="bench.record", bind=True)
    def record(self, label, *args, **kwargs):
        started = time.time()
        with open(LEDGER, "a") as ledger:
            ledger.write(f"{label} {self.request.id} {started:.6f}\\n")
    '''
)


def broker_url(redis_url: str, db: int) -> str:
    """``redis_url`` (deploy/services' Redis) on database ``db``: the same server, keys of its own."""
    parts = urlsplit(redis_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@dataclass(frozen=True)
class Record:
    label: str
    task_id: str
    started: float


def read_records(path: Path) -> list[Record]:
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines())
    return [Record(r[0], r[1], float(r[2])) for r in rows if len(r) == 3]


class CeleryProcesses(Processes):
    """Celery worker and beat processes of the bench app in ``workdir`` (logs: ``<name>.log``)."""

    def __init__(self, workdir: Path, broker: str, queue: str, kirby: bool, extra_env: dict | None = None):
        super().__init__(workdir)
        (workdir / "benchapp.py").write_text(APP)
        self.ledger = workdir / "ledger"
        self.env = {
            **os.environ,
            "BENCH_BROKER": broker,
            "BENCH_QUEUE": queue,
            "BENCH_LEDGER": str(self.ledger),
            "BENCH_KIRBY": "1" if kirby else "0",
            "LOG_FORMAT": LOG_FORMAT,
            "PYTHONPATH": str(workdir),
            **(extra_env or {}),
        }

    def spawn(self, name: str, *args: str, env: dict | None = None) -> None:
        """``celery -A benchapp <args>`` as process ``name``."""
        self.start(name, [str(CELERY), "-A", "benchapp", *args], {**self.env, **(env or {})})

    def logged(self, name: str, text: str) -> float | None:
        return next((when for when, message in self.log_events(name) if text in message), None)

    def start_worker(self, concurrency: int = 4) -> None:
        self.spawn(
            "worker",
            "worker",
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "-l",
            "info",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"bench-{os.getpid()}@%h",
        )
        wait_for(
            lambda: self.logged("worker", "ready."), 120, f"the celery worker did not start: {self.workdir}/worker.log"
        )

    def start_beat(self, name: str, entries: dict[str, str]) -> None:
        """A ``celery beat`` with RedBeat's scheduler; ``entries``: label -> "minute" or seconds."""
        import json

        self.spawn(
            name, "beat", "-S", "redbeat.RedBeatScheduler", "-l", "info", env={"BENCH_BEAT": json.dumps(entries)}
        )

    def close(self) -> None:
        self.stop_all()


def clean_redis(url: str, prefix: str) -> None:
    """Delete the keys of one bench run (its queue, RedBeat's entries and lock) from the broker's database."""
    import redis  # the bench cleans up after itself; product code uses redis only in kirby/lease/redis.py

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        client.delete(key)
    client.close()


def gaps(starts: list[float]) -> tuple[float, int, int]:
    """(largest interval, missed one-second slots, duplicate slots) of one every-second task's body starts.

    Interval-based, for a peer whose task ids say nothing of the slot: an interval of ``n`` seconds
    (rounded) hides ``n - 1`` missed slots; one under half a second is a duplicate."""
    ordered = sorted(starts)
    deltas = [b - a for a, b in zip(ordered, ordered[1:])]
    if not deltas:
        return float("nan"), 0, 0
    return max(deltas), sum(max(0, round(d) - 1) for d in deltas), sum(1 for d in deltas if d < 0.5)
