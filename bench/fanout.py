"""Fan-out: N scripts due at one instant on three supervisors, next to N bare spawns launched at once
(not a test). Prints figures next to the baseline of the same run, with the machine's load.

Run: .venv/bin/python bench/fanout.py [--backend embedded|kafka-redis|both] [--scripts 50,500]
         [--concurrency N] [--ahead SECONDS] [--rounds R] [--keep DIR]
(``eval "$(deploy/services env)"`` first for kafka-redis.)

Per backend and N: a real ``kirby web`` and 3 ``kirby supervisor`` processes (``--window 5``, the
default; at ``--window 1`` a leader publishing 500 offers on an overloaded machine can lose its
2 s lease before the publish returns, and the next leader too);
N jobs of kirby-example-hello (warm venv) whose one daily schedule fires at the same instant T;
the script appends ``<run id> <pid> <time.time()>`` to a ledger at import. Figures: T -> script
running, p50/p99/max, and how many runs each supervisor ran; then the physical floor on this
machine: N ``Popen([venv python, -m, kirby_example_hello])`` (own session, like a run) launched
at once, Popen -> script running. ``--concurrency`` (default: N, so capacity does not bind and
the figures show the dispatch path; give e.g. 8 to see capacity-forced queueing) is passed to
every supervisor; ``--ahead`` sets KIRBY_PUBLISH_AHEAD (default: the product's default, 1 s; 0
publishes at the instant); ``--rounds R`` repeats the instant R times on the same cluster, each
next to a floor of its own, and prints the medians (one round's p99 on a 2-core machine moves by
hundreds of ms from one round to the next). A profile from the supervisors' logs splits the latency: due -> offered
(the leader's publish acknowledged; negative: published ahead) -> claimed -> released (the run's
script allowed to start: "started run") -> script running.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median

from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import MODULE, Cluster, load, pct, read_ledger, wait_for, warm_workspace  # noqa: E402
from bench.dispatch import add_jobs, spawn_baseline  # noqa: E402
from kirby.models import Schedule  # noqa: E402
from kirby.run_ids import slot_run_id  # noqa: E402

NAMES = ("s1", "s2", "s3")
STAGES = {  # profile stage -> the log message that marks it
    "offered": re.compile(r"^offered run (\S+) \(epoch"),
    "claimed": re.compile(r"^claimed run (\S+)$"),
    "released": re.compile(r"^started run (\S+) "),
}


def figures(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 0.5) * 1000:7.1f} ms  p99 {pct(values, 0.99) * 1000:7.1f} ms  "
        f"max {max(values, default=float('nan')) * 1000:7.1f} ms  (n={len(values)})"
    )


def floor(python: Path, count: int, ledger: Path) -> list[float]:
    """``count`` bare spawns launched at once: Popen -> the script's own ledger line, in seconds."""
    spawned, processes = {}, []
    for n in range(count):
        spawned[f"base-{n}"], process = spawn_baseline(python, f"base-{n}", ledger)
        processes.append(process)
    for process in processes:
        process.wait()
    return [when - spawned[run_id] for run_id, when in read_ledger(ledger) if run_id in spawned]


def bench_fanout(cluster: Cluster, scripts: int, concurrency: int, python: Path, window: float, rounds: int) -> None:
    keys = add_jobs(cluster, scripts, 1)  # schedules that never fire in the bench, until set below
    cluster.start_web()
    for name in NAMES:
        cluster.spawn(
            name,
            "supervisor",
            name,
            "--window",
            str(window),
            "--wakeup",
            "5",
            "--grace",
            "5",
            "--concurrency",
            str(concurrency),
        )
    cursor_keys = [f"{job}:bench:{sid}" for job, sid in keys]
    wait_for(  # every supervisor heartbeats its capacity; the leader follows every schedule
        lambda: (
            len([s for s in cluster.store.supervisors() if s.info.get("capacity")]) == len(NAMES)
            and len(cluster.store.get_cursors(cursor_keys)) == len(cursor_keys)
        ),
        180,
        f"the cluster did not come up ({load()})",
        interval=0.5,
    )
    time.sleep(3)  # Kafka: the last member's join settles the group
    over = [one_round(cluster, keys, scripts, concurrency, python, window, n) for n in range(rounds)]
    if rounds > 1:
        p50s, p99s = median(o[0] for o in over), median(o[1] for o in over)
        print(
            f"  => over {rounds} rounds, over the floor: p50 median {p50s * 1000:+.0f} ms, p99 median "
            f"{p99s * 1000:+.0f} ms (each round's p99: " + ", ".join(f"{o[1] * 1000:+.0f}" for o in over) + " ms); "
            f"target p99 within +100 ms: {'met' if p99s <= 0.1 else 'NOT met'}"
        )


def one_round(cluster: Cluster, keys, scripts: int, concurrency: int, python: Path, window: float, n: int):
    """One instant of ``scripts`` due runs, then the floor; (p50, p99) over the floor, in seconds."""
    at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=12 + scripts // 50)
    with cluster.database.session() as session:  # an edit takes effect within --wakeup (5 s)
        session.execute(update(Schedule), [{"id": sid, "cron": f"{at:%M %H} * * * {at:%S}"} for _, sid in keys])
    expected = {slot_run_id(job, "bench", at) for job, _ in keys}
    print(
        f"  round {n + 1}: {scripts} scripts due at {at:%H:%M:%S}, 3 supervisors --concurrency {concurrency} "
        f"--window {window:g} ({load()})"
    )
    wait_for(
        lambda: time.time() > at.timestamp() + 120 or expected <= {r for r, _ in read_ledger(cluster.ledger)},
        200,
        "",
        interval=0.2,
    )
    print(f"  {load()} after the runs")
    ledger = read_ledger(cluster.ledger)
    started = {run_id: when for run_id, when in ledger if run_id in expected}
    twice = sum(1 for count in Counter(r for r, _ in ledger if r in expected).values() if count > 1)
    latency = [when - at.timestamp() for when in started.values()]
    per = Counter(  # who started each run, from the supervisors' own logs (the runs table may lag)
        name
        for name in NAMES
        for _, message in cluster.log_events(name)
        if (match := STAGES["released"].match(message)) and match.group(1) in expected
    )
    time.sleep(2)  # let the cluster go idle before the floor
    base = floor(python, scripts, cluster.workdir / f"floor-ledger-{n}")
    print(f"  kirby fan-out (due -> script running): {figures(latency)}")
    profile(cluster, at.timestamp(), started)
    print(f"  bare spawns launched at once:          {figures(base)}  ({load()})")
    p50, p99, b50, b99 = pct(latency, 0.5), pct(latency, 0.99), pct(base, 0.5), pct(base, 0.99)
    print(
        f"  => p50 {(p50 - b50) * 1000:+.0f} ms, p99 {(p99 - b99) * 1000:+.0f} ms "
        f"({p99 / b99:.2f}x), max {(max(latency, default=math.nan) - max(base)) * 1000:+.0f} ms over the floor; "
        "target p99 within "
        f"+100 ms: {'met' if p99 - b99 <= 0.1 else 'NOT met'}; per supervisor "
        + ", ".join(f"{name} {per.get(name, 0)}" for name in NAMES)
        + f"; not started within 120 s {len(expected) - len(started)}, ran twice {twice}"
    )
    time.sleep(2)  # the floor's processes are gone before the next instant
    return p50 - b50, p99 - b99


def profile(cluster: Cluster, due: float, running: dict[str, float]) -> None:
    """Per stage, ms after the due instant, p50/p99 over the runs logged at every stage."""
    marks = {**cluster.stages(STAGES), "running": running}
    complete = [r for r in running if all(r in found for found in marks.values())]
    parts = [
        f"{stage} {pct([found[r] - due for r in complete], 0.5) * 1000:.0f}/"
        f"{pct([found[r] - due for r in complete], 0.99) * 1000:.0f}"
        for stage, found in marks.items()
    ]
    print(f"  profile, ms after the due instant, p50/p99 over {len(complete)} runs: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["embedded", "kafka-redis", "both"], default="both")
    parser.add_argument("--scripts", default="50,500", help="comma-separated script counts")
    parser.add_argument("--concurrency", type=int, help="every supervisor's --concurrency (default: N)")
    parser.add_argument("--window", type=float, default=5.0, help="every supervisor's --window (default 5)")
    parser.add_argument("--ahead", type=float, help="KIRBY_PUBLISH_AHEAD of the cluster (default: unset, 1 s)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="instants per cluster, each next to its floor (default 1)"
    )
    parser.add_argument("--keep", type=Path, help="keep the clusters' folders (logs, ledgers) under this folder")
    args = parser.parse_args()
    backends = ["embedded", "kafka-redis"] if args.backend == "both" else [args.backend]
    if "kafka-redis" in backends and not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL")):
        raise SystemExit('kafka-redis needs KAFKA_BOOTSTRAP_SERVERS and REDIS_URL: eval "$(deploy/services env)" first')
    print(f"bench/fanout.py: {os.cpu_count()} cores, {load()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="kirby-bench-fanout-") as temp:
        workspace = warm_workspace(args.keep.resolve() if args.keep else Path(temp))
        python = workspace.python
        environ = {"KIRBY_PUBLISH_AHEAD": f"{args.ahead:g}"} if args.ahead is not None else {}
        print(f"package index {workspace.index}; warm venv {python.parent.parent}; module {MODULE}; {environ}")
        for backend in backends:
            for scripts in (int(n) for n in args.scripts.split(",")):
                print(f"[{backend}] fan-out, {scripts} scripts ({load()})")
                cluster = Cluster.of(workspace, f"{backend}-{scripts}", backend, environ)
                try:
                    bench_fanout(cluster, scripts, args.concurrency or scripts, python, args.window, args.rounds)
                finally:
                    cluster.close()
        print(f"done ({load()})")


if __name__ == "__main__":
    main()
