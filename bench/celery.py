"""Celery: Kirby scheduling Celery tasks beside celery beat + RedBeat, on the same Redis, in the same run (not a test).

Run: eval "$(deploy/services env)"; .venv/bin/python bench/celery.py [--only latency|failover]
         [--side peer|kirby|both] [--boundaries 3] [--keep DIR]
(needs ``pip install -e '.[test,bench]'`` for Celery and celery-redbeat; Kafka and Redis of deploy/services.)

Both sides send the same task (``bench.record``, bench/_celery.py) to a queue of their own on
deploy/services' Redis (database 7, the same server as Kirby's lease store), executed by a real
``celery worker`` (prefork, 4 processes) whose task body records its own start time. The peer is
``celery beat -S redbeat.RedBeatScheduler`` (lock timeout 10 s, max loop interval 2 s: the setup
of the issue's measurement; RedBeat's defaults make a standby wait up to 25 minutes). Kirby is a
real ``kirby web`` + two ``kirby supervisor`` processes on Kafka + Redis sending the same task as
Celery jobs (``KIRBY_CELERY_BROKER_URL``), the worker's app with ``kirby.celery`` installed.

(a) Latency: 50 tasks every minute (crontab() / ``* * * * *``), both sides at the same three minute
    boundaries (so under the same machine load), after one warm-up boundary that is not counted (a Kirby supervisor imports Celery and connects to the
    broker on its first send; beat did at its start): due instant -> task body running, p50/p99
    (and due -> sent, from the scheduler's log).
(b) Failover: five every-second tasks (``schedule(1.0)`` / ``* * * * * *``); the leader (RedBeat:
    the beat holding the lock; Kirby: the leader supervisor) is SIGKILLed with a standby running;
    per task: the gap (largest interval between body starts), missed one-second slots and
    duplicate slots, from the bodies' own records. Kirby's slots are also audited exactly (its
    task id is the run id, which names the slot).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._celery import CeleryProcesses, broker_url, clean_redis, gaps, read_records  # noqa: E402
from bench._common import load, ms, pct, wait_for  # noqa: E402

TASKS_AT_A_MINUTE, EVERY_SECOND_TASKS, BROKER_DB = 50, 5, 7


def boundary_latencies(records, labels: set[str], boundaries: list[float]) -> tuple[list[float], int]:
    """Body start - due minute of every record of ``labels`` due at one of ``boundaries``; and how many are missing."""
    found: dict[tuple[str, float], float] = {}
    for record in records:
        if record.label in labels:
            due = max((b for b in boundaries if b <= record.started + 0.001), default=None)
            if due is not None and (record.label, due) not in found and record.started - due < 55:
                found[(record.label, due)] = record.started - due
    return list(found.values()), len(labels) * len(boundaries) - len(found)


def wait_boundaries(first: float, count: int, done) -> list[float]:
    boundaries = [first + 60 * i for i in range(count)]
    wait_for(done(boundaries), boundaries[-1] - time.time() + 90, "the tasks of the last minute did not all run")
    return boundaries


def next_minute(after: float, margin: float = 8.0) -> float:
    return (int(after + margin) // 60 + 1) * 60


# --- the peer: celery beat + RedBeat --------------------------------------------------------------


def peer_latency(work: Path, broker: str, count: int, first: float) -> dict:
    queue = f"bench-beat-{uuid.uuid4().hex[:8]}"
    celery = CeleryProcesses(work / "peer-latency", broker, queue, kirby=False)
    labels = {f"minute-{i:02d}" for i in range(TASKS_AT_A_MINUTE)}
    try:
        celery.start_worker()
        celery.start_beat("beat", dict.fromkeys(labels, "minute"))
        wait_for(lambda: celery.logged("beat", "beat: Acquired lock"), 60, "celery beat did not take RedBeat's lock")
        warn_if_late("peer", first)
        boundaries = wait_boundaries(
            first,
            count,
            lambda b: lambda: boundary_latencies(read_records(celery.ledger), labels, b)[1] == 0,
        )
        latencies, missing = boundary_latencies(read_records(celery.ledger), labels, boundaries)
        sent = [
            w - max(b for b in boundaries if b <= w + 0.001)
            for w, m in celery.log_events("beat")
            if "Sending due task" in m and w + 0.001 >= boundaries[0]
        ]
        return {"body": latencies, "sent": sent, "missing": missing}
    finally:
        celery.close()
        clean_redis(broker, queue)


def peer_failover(work: Path, broker: str, settle: float) -> dict:
    queue = f"bench-beat-{uuid.uuid4().hex[:8]}"
    celery = CeleryProcesses(work / "peer-failover", broker, queue, kirby=False)
    labels = [f"second-{i}" for i in range(EVERY_SECOND_TASKS)]
    try:
        celery.start_worker()
        celery.start_beat("beat-a", dict.fromkeys(labels, "1"))
        wait_for(lambda: celery.logged("beat-a", "beat: Acquired lock"), 60, "beat-a did not take RedBeat's lock")
        celery.start_beat("beat-b", dict.fromkeys(labels, "1"))  # the standby: blocks on the lock
        time.sleep(settle)  # steady state before the fault, measured in the records
        killed = celery.kill("beat-a")
        wait_for(lambda: celery.logged("beat-b", "beat: Acquired lock"), 120, "beat-b never took over the lock")
        took_over = celery.logged("beat-b", "beat: Acquired lock")
        time.sleep(settle)
        return {
            "killed": killed,
            "took_over": took_over,
            "per_task": per_task(read_records(celery.ledger), labels, killed),
        }
    finally:
        celery.close()
        clean_redis(broker, queue)


def per_task(records, labels, killed: float) -> dict[str, tuple[float, int, int]]:
    return {label: gaps([r.started for r in records if r.label == label]) for label in labels}


# --- Kirby --------------------------------------------------------------------------------------


def kirby_ready() -> str | None:
    """Why Kirby's half cannot run on this tree (the Celery job kind or its sending is missing), or None."""
    import importlib.util

    for module in ("kirby.celery.sender", "kirby.celery.worker"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is missing on this tree (the sending side of issue 16 is not merged yet)"
    return None


def kirby_latency(work: Path, broker: str, count: int, first: float) -> dict:
    from bench._kirby_celery import kirby_latency as measure

    return measure(work, broker, count, first, warn_if_late)


def warn_if_late(side: str, first: float) -> None:
    if time.time() > first - 60:
        print(f"  warning: {side} was ready {time.time() - first + 60:.0f} s after the warm-up boundary")


def kirby_failover(work: Path, broker: str, settle: float) -> dict:
    from bench._kirby_celery import kirby_failover as measure

    return measure(work, broker, settle)


# --- report -------------------------------------------------------------------------------------


def ratio(kirby: float, peer: float) -> str:
    return f"{kirby / peer:.2f}x" if peer else "n/a"


def report_latency(results: dict) -> None:
    for side, figures in results.items():
        print(f"  {side:6} due -> task body running: {ms(figures['body'])}  missing {figures['missing']}")
        print(f"  {side:6} due -> sent:              {ms(figures['sent'])}")
    if len(results) == 2:
        kirby, peer = results["kirby"]["body"], results["peer"]["body"]
        print(
            f"  ratio kirby/peer: p50 {ratio(pct(kirby, 0.5), pct(peer, 0.5))}  p99 {ratio(pct(kirby, 0.99), pct(peer, 0.99))}"
        )


def report_failover(results: dict) -> None:
    print(
        "  missed / twice: Kirby's by slot (its task id is the run id, which names the slot); the peer's from"
        " the intervals (beat never sends a missed slot late: an interval of n s hides n - 1 slots)"
    )
    for side, figures in results.items():
        rows = figures["per_task"]
        print(f"  {side:6} leader SIGKILLed; the standby led {figures['took_over'] - figures['killed']:.1f} s later")
        for label, (gap, missed, duplicates) in rows.items():
            print(f"  {side:6} {label}: gap {gap:5.1f} s  missed {missed:3d}  duplicates {duplicates}")
        if "audit" in figures:
            print(f"  {side:6} slot audit: {figures['audit']}")
    if len(results) == 2:
        for what, index in (("gap", 0), ("missed", 1)):
            kirby = max(v[index] for v in results["kirby"]["per_task"].values())
            peer = max(v[index] for v in results["peer"]["per_task"].values())
            print(f"  worst {what}: kirby {kirby:g}, peer {peer:g}, ratio {ratio(kirby, peer)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["latency", "failover"], help="run one of the two benchmarks")
    parser.add_argument("--side", choices=["peer", "kirby", "both"], default="both")
    parser.add_argument("--boundaries", type=int, default=3, help="minute boundaries of the latency benchmark")
    parser.add_argument("--settle", type=float, default=12.0, help="seconds of steady state before and after the kill")
    parser.add_argument("--keep", type=Path, help="keep the work folder (logs, ledgers) under this folder")
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        raise SystemExit('bench/celery.py needs the Redis of deploy/services: eval "$(deploy/services env)" first')
    broker = broker_url(os.environ["REDIS_URL"], BROKER_DB)
    sides = ["peer", "kirby"] if args.side == "both" else [args.side]
    not_ready = kirby_ready() if "kirby" in sides else None
    if not_ready:
        print(f"Kirby's half: NOT MEASURED: {not_ready}")
        sides.remove("kirby")
    print(f"bench/celery.py: {os.cpu_count()} cores, {load()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"broker {broker}")
    with tempfile.TemporaryDirectory(prefix="kirby-bench-celery-") as temp:
        work = args.keep.resolve() if args.keep else Path(temp)
        if args.only != "failover":
            print(f"(a) latency: {TASKS_AT_A_MINUTE} tasks due at each of {args.boundaries} minute boundaries")
            first = next_minute(time.time() + 120)  # both sides start, then one warm-up boundary each
            measures = {"peer": peer_latency, "kirby": kirby_latency}
            with ThreadPoolExecutor(len(sides)) as pool:  # the same boundaries: the same machine load
                futures = {side: pool.submit(measures[side], work, broker, args.boundaries, first) for side in sides}
                results = {side: future.result() for side, future in futures.items()}
            print(f"  [measured; {load()}]")
            report_latency(results)
        if args.only != "latency":
            print(f"(b) failover: {EVERY_SECOND_TASKS} every-second tasks, the leader SIGKILLed")
            results = {}
            for side in sides:
                measure = peer_failover if side == "peer" else kirby_failover
                results[side] = measure(work, broker, args.settle)
                print(f"  [{side} measured; {load()}]")
            report_failover(results)
    print(f"done ({load()})")


if __name__ == "__main__":
    main()
