"""A schedule of 10,000 scripts, and an idle supervisor (not a test). Prints figures next to their targets.

Run: .venv/bin/python bench/schedule.py [--backend embedded|kafka-redis] [--scripts 10000] [--rate 3]
         [--seconds 30] [--only scale|idle|fetch] [--keep DIR]
(``eval "$(deploy/services env)"`` first for kafka-redis and for the pypiserver.)

1. Scale: a real ``kirby web`` (SQLite) and one ``kirby supervisor`` (the leader; it also runs the
   scripts), N scripts of one daily 6-field schedule each; ``--rate`` of them fall due each second
   for ``--seconds`` (the others 12 hours later). ``GET /schedule``: the full document (plain and
   gzipped) and a ``304`` to ``If-None-Match``, time and size, 5 of each; then one edit (one
   schedule's misfire grace) and the changes since the copy held before it (``?since=<ETag>``:
   the delta, plain and gzipped; 5 of each) beside the first full fetch after the edit (it
   rebuilds the document). ``--only fetch``: these fetch figures alone. Offers: due instant ->
   the leader's "offered run" log line (the bus acknowledged the publish), p50/p99/max, target p99
   within 1 s. Leader CPU (the supervisor process, from /proc; its children excluded): while it
   follows the N schedules with none due, and during the window (with the runs it starts).
2. Idle: 100 scheduled scripts (none due) and 10 daemons (kirby-example-daemon) on one supervisor
   at the default ``--window``/``--wakeup``, measured for 60 s once every daemon runs: CPU of the
   supervisor process (its children excluded; target < 1 % of a core) and its RSS (target < 100 MB),
   its wake-ups per second (context switches of its threads, from /proc), and the RSS of its per-run
   reapers beside it; ``kirby web``'s CPU over the same time. A baseline of another checkout: run
   this file with that checkout's interpreter (``/work/main/.venv/bin/python bench/schedule.py``):
   the cluster runs the ``kirby`` beside the interpreter.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from sqlalchemy import update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import PACKAGE, VERSION, Cluster, load, pct, wait_for, warm_workspace  # noqa: E402
from bench.dispatch import add_jobs, slot_instant  # noqa: E402
from kirby.config import load_settings  # noqa: E402
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, JobType, Schedule  # noqa: E402

OFFERED = re.compile(r"^offered run (\S+) \(epoch")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def context_switches(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far (voluntary + not): ~ its wake-ups."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            pass
    return total


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core process ``pid`` used over the next ``seconds``."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def fetch(
    cluster: Cluster, headers: dict[str, str], params: dict | None = None
) -> tuple[float, requests.Response, bytes]:
    started = time.perf_counter()
    response = requests.get(
        f"http://127.0.0.1:{cluster.port}/schedule",
        headers={"Authorization": f"Bearer {cluster.env['KIRBY_API_TOKEN']}", **headers},
        params=params,
        timeout=120,
        stream=True,
    )
    raw = response.raw.read()  # as sent (gzipped or not), without decoding
    return time.perf_counter() - started, response, raw


def fetch_figures(cluster: Cluster, edited: int) -> None:
    """Full, 304, and (after editing schedule ``edited``) the delta since the copy held before the edit."""
    first, response, raw = fetch(cluster, {"Accept-Encoding": "identity"})
    etag = response.headers.get("ETag")
    print(f"  GET /schedule, first (builds the document): {first * 1000:.0f} ms, {len(raw) / 1e6:.2f} MB ({load()})")

    def five(label: str, headers: dict[str, str], params: dict | None = None) -> None:
        times, size, status = [], 0, 0
        for _ in range(5):
            took, response, raw = fetch(cluster, headers, params)
            times.append(took)
            size, status = len(raw), response.status_code
        print(
            f"  GET /schedule, {label:21s} HTTP {status}: p50 {pct(times, 0.5) * 1000:7.1f} ms  "
            f"max {max(times) * 1000:7.1f} ms, {size:,} bytes"
        )

    five("full", {"Accept-Encoding": "identity"})
    five("full, gzip", {"Accept-Encoding": "gzip"})
    five("If-None-Match -> 304", {"If-None-Match": etag})
    with cluster.database.session() as session:  # one edit (a schedule due 12 h later: no offer moves)
        session.execute(update(Schedule).where(Schedule.id == edited).values(misfire_grace_seconds=301))
    since = {"since": etag.strip('"')}
    five("since=<ETag> -> delta", {"Accept-Encoding": "identity"}, since)
    five("since, delta, gzip", {"Accept-Encoding": "gzip"}, since)
    took, response, raw = fetch(cluster, {"Accept-Encoding": "identity"})
    print(
        f"  GET /schedule, full after the edit (rebuilds) HTTP {response.status_code}: {took * 1000:.1f} ms, "
        f"{len(raw):,} bytes ({load()})"
    )
    client_figures(cluster, edited)


def client_figures(cluster: Cluster, edited: int, rounds: int = 3) -> None:
    """What a supervisor pays per fetch after an edit (``ScheduleClient.fetch``, parse included):
    the delta merged into its copy, against a full fetch parsed (a client without a copy)."""
    from kirby.schedule import ScheduleClient

    environ = {"KIRBY_SCHEDULE_ENDPOINT": f"http://127.0.0.1:{cluster.port}/schedule", **cluster.env}
    settings = load_settings(environ=environ, cwd=cluster.workdir)
    held, now = ScheduleClient(settings), datetime.now(timezone.utc)
    held.fetch(now)
    timings = {"delta": [], "full": []}
    for n in range(rounds):
        with cluster.database.session() as session:
            session.execute(update(Schedule).where(Schedule.id == edited).values(misfire_grace_seconds=310 + n))
        started = time.perf_counter()
        held.fetch(now)
        timings["delta"].append(time.perf_counter() - started)
        fresh = ScheduleClient(settings)
        started = time.perf_counter()
        fresh.fetch(now)
        timings["full"].append(time.perf_counter() - started)
        fresh.close()
    held.close()
    delta, full = pct(timings["delta"], 0.5), pct(timings["full"], 0.5)
    print(
        f"  supervisor's fetch after one edit, parse/merge included, p50 of {rounds}: delta {delta * 1000:.1f} ms "
        f"({held.deltas} deltas) against full {full * 1000:.1f} ms ({full / delta:.0f}x) ({load()})"
    )


def orm_document(session, now: datetime) -> dict:
    """The baseline: the document as ``build_schedule`` made it before, one ORM object per row."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from kirby.schedule.document import merge_config

    contexts = session.scalars(
        select(Context)
        .join(Context.job)
        .where(Context.enabled.is_(True), Job.enabled.is_(True))
        .options(selectinload(Context.job), selectinload(Context.environment), selectinload(Context.schedules))
        .order_by(Context.id)
    ).all()
    layers = {}
    for key in session.scalars(select(ConfigKey).order_by(ConfigKey.id)):
        owner = (
            key.job_id if key.scope == ConfigScope.JOB else key.context_id if key.scope == ConfigScope.CONTEXT else None
        )
        layers.setdefault((key.scope, owner), []).append(key)
    entries = []
    for c in contexts:
        values, secrets = merge_config(
            layers.get((ConfigScope.GLOBAL, None), []),
            layers.get((ConfigScope.JOB, c.job_id), []),
            layers.get((ConfigScope.CONTEXT, c.id), []),
        )
        schedules = [
            {
                "id": s.id, "name": s.name or "", "cron": s.cron, "timezone": s.timezone or "UTC",
                "misfire_grace_seconds": s.misfire_grace_seconds, "catchup": s.catchup.value,
                "overlap": s.overlap.value, "timeout_seconds": s.timeout_seconds, "retries": s.retries,
                "on_lost": s.on_lost.value if s.on_lost else "skip", "enabled": bool(s.enabled),
                "dst_fall_back": s.dst_fall_back.value, "dst_spring_forward": s.dst_spring_forward.value,
            }
            for s in sorted(c.schedules, key=lambda s: s.id)
        ]  # fmt: skip
        entries.append(
            {
                "context_id": c.id, "job": c.job.name, "job_type": c.job.type.value,
                "environment": c.environment.name, "package": c.package_name, "version": c.package_version,
                "module": c.job.module or "", "run_as": c.job.run_as or None, "config": values,
                "secrets": list(secrets), "schedules": schedules, "suspensions": [],
            }
        )  # fmt: skip
    return {"generated_at": now.isoformat(), "contexts": entries}


def build_figures(cluster: Cluster, rounds: int = 3) -> None:
    """build_schedule (plain rows) against the ORM baseline, interleaved in this process, + json.dumps."""
    import json

    from kirby.schedule.document import build_schedule

    now = datetime.now(timezone.utc)
    timings = {"rows": [], "orm": []}
    for _ in range(rounds):
        for name, build in (("rows", build_schedule), ("orm", orm_document)):
            with cluster.database.session() as session:
                started = time.perf_counter()
                document = build(session, now)
                json.dumps(document, separators=(",", ":"))
                timings[name].append(time.perf_counter() - started)
                results = timings.setdefault("documents", {})
                results[name] = document["contexts"]
    same = timings["documents"]["rows"] == timings["documents"]["orm"]
    rows, orm = pct(timings["rows"], 0.5), pct(timings["orm"], 0.5)
    print(
        f"  build + serialize the document, p50 of {rounds}: plain rows {rows * 1000:.0f} ms against the ORM "
        f"baseline {orm * 1000:.0f} ms ({rows / orm:.2f}x; same document: {same}) ({load()})"
    )


def bench_scale(cluster: Cluster, scripts: int, rate: int, seconds: int) -> None:
    measured = rate * seconds
    keys = add_jobs(cluster, scripts, 1)
    lead = 60 + scripts / 80  # web start, the fetch figures, first fetch, adoption of every schedule
    t0 = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=math.ceil(lead))
    instants = [t0 + timedelta(seconds=i // rate + (0 if i < measured else 12 * 3600)) for i in range(scripts)]
    with cluster.database.session() as session:
        session.execute(
            update(Schedule),
            [{"id": sid, "cron": f"{at:%M %H} * * * {at:%S}"} for (_, sid), at in zip(keys, instants)],
        )
    cluster.start_web()
    fetch_figures(cluster, keys[-1][1])
    cluster.start_supervisor("s1", window=5.0)
    pid = cluster.processes["s1"].pid
    cursor_keys = [f"{job}:bench:{sid}" for job, sid in keys]
    synced = wait_for(
        lambda: len(cluster.store.get_cursors(cursor_keys)) == len(cursor_keys) and time.time(),
        lead + 120,
        f"the leader did not follow all {scripts:,} schedules",
        interval=0.5,
    )
    idle_for = t0.timestamp() - 2 - time.time()
    print(f"  {scripts:,} schedules followed {t0.timestamp() - synced:.1f} s before the first slot ({load()})")
    if idle_for > 3:
        print(f"  leader CPU, {scripts:,} schedules, none due: {cpu_share(pid, idle_for) * 100:.1f} % of a core")
    time.sleep(max(0.0, t0.timestamp() - time.time()))
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds + 3)
    window_cpu = (cpu_seconds(pid) - before) / (time.monotonic() - started)
    expected = {f"j{i:05d}": instants[i] for i in range(measured)}
    offered = {}
    for when, message in cluster.log_events("s1"):
        match = OFFERED.match(message)
        if match and match.group(1).split(":")[0] in expected and match.group(1) not in offered:
            offered[match.group(1)] = when - slot_instant(match.group(1)).timestamp()
    late = sorted(offered.values())
    print(
        f"  offers: {len(late)} of {measured} published; due -> offered p50 {pct(late, 0.5) * 1000:.1f} ms  "
        f"p99 {pct(late, 0.99) * 1000:.1f} ms  max {max(late, default=float('nan')) * 1000:.1f} ms; "
        f"target p99 within 1 s: {'met' if late and pct(late, 0.99) <= 1.0 and len(late) == measured else 'NOT met'}"
    )
    print(f"  leader CPU during the window ({rate} slots/s, runs included): {window_cpu * 100:.1f} % of a core")
    build_figures(cluster)


def bench_idle(cluster: Cluster, scheduled: int, daemons: int, seconds: float, py_spy: str | None = None) -> None:
    pidfile = cluster.workdir / "daemon-pids"
    with cluster.database.session() as session:
        environment = Environment(name="bench")
        session.add(environment)
        session.add(ConfigKey(scope=ConfigScope.GLOBAL, key="KIRBY_DAEMON_PIDFILE", value=str(pidfile)))
        for n in range(scheduled):
            job = Job(name=f"j{n:05d}", type=JobType.SCHEDULED)
            context = Context(job=job, environment=environment, package_name=PACKAGE, package_version=VERSION)
            session.add_all([job, context, Schedule(context=context, cron="0 0 1 1 * 0")])
        for n in range(daemons):
            job = Job(name=f"d{n:02d}", type=JobType.DAEMON)
            session.add_all(
                [job, Context(job=job, environment=environment, package_name=DAEMON, package_version=VERSION)]
            )
    cluster.start_web()
    cluster.spawn("s1", "supervisor", "s1")  # the default --window and --wakeup
    pid = cluster.processes["s1"].pid

    def daemons_started() -> int:
        lines = pidfile.read_text().splitlines() if pidfile.exists() else []
        return len([line for line in lines if line.startswith("start")])

    wait_for(lambda: daemons_started() >= daemons, 180, f"the {daemons} daemons did not all start")
    time.sleep(10)  # past the start-up
    web = cluster.processes["web"].pid
    web_before, before, started = cpu_seconds(web), cpu_seconds(pid), time.monotonic()
    switches = context_switches(pid)
    if py_spy:  # where the supervisor's time goes (py-spy samples it from outside; diagnosis only)
        subprocess.Popen(
            [
                py_spy,
                "record",
                "--nonblocking",
                "-t",
                "-d",
                str(int(seconds)),
                "-f",
                "raw",
                "-o",
                str(cluster.workdir / "s1.py-spy.txt"),
                "-p",
                str(pid),
            ]
        )
        print(f"  py-spy profile of s1: {cluster.workdir / 's1.py-spy.txt'}")
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu, web_cpu = (cpu_seconds(pid) - before) / elapsed, (cpu_seconds(web) - web_before) / elapsed
    wakeups = (context_switches(pid) - switches) / elapsed
    rss, reapers = rss_mb(pid), [rss_mb(child) for child in children(pid)]
    print(
        f"  idle supervisor, {scheduled} schedules + {daemons} daemons, over {elapsed:.0f} s: "
        f"CPU {cpu * 100:.2f} % of a core (target < 1 %: {'met' if cpu < 0.01 else 'NOT met'}), "
        f"RSS {rss:.0f} MB (target < 100 MB: {'met' if rss < 100 else 'NOT met'}); "
        f"{wakeups:.0f} wake-ups/s (context switches of its threads); "
        f"its {len(reapers)} reapers {sum(reapers):.0f} MB in all; kirby web CPU {web_cpu * 100:.2f} % ({load()})"
    )


DAEMON = "kirby-example-daemon"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["embedded", "kafka-redis"], default="embedded")
    parser.add_argument("--scripts", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=3, help="slots due per second in the window")
    parser.add_argument("--seconds", type=int, default=30, help="length of the window of due slots")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--only", choices=["scale", "idle", "fetch"])
    parser.add_argument("--daemons", type=int, default=10, help="daemons of the idle supervisor")
    parser.add_argument("--py-spy", help="path of py-spy: profile the idle supervisor (diagnosis)")
    parser.add_argument("--keep", type=Path, help="keep the clusters' folders (logs, ledgers) under this folder")
    args = parser.parse_args()
    if args.backend == "kafka-redis" and not (
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL")
    ):
        raise SystemExit('kafka-redis needs KAFKA_BOOTSTRAP_SERVERS and REDIS_URL: eval "$(deploy/services env)" first')
    print(f"bench/schedule.py: {os.cpu_count()} cores, {load()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="kirby-bench-schedule-") as temp:
        packages = () if args.only == "fetch" else (PACKAGE, DAEMON)
        workspace = warm_workspace(args.keep.resolve() if args.keep else Path(temp), packages)
        if args.only == "fetch":  # the /schedule figures alone: full, 304, delta after one edit
            print(f"[{args.backend}] /schedule fetch, {args.scripts:,} scripts ({load()})")
            cluster = Cluster.of(workspace, f"{args.backend}-fetch", args.backend)
            try:
                keys = add_jobs(cluster, args.scripts, 1)
                cluster.start_web()
                fetch_figures(cluster, keys[-1][1])
            finally:
                cluster.close()
        elif args.only != "idle":
            print(f"[{args.backend}] scale, {args.scripts:,} scripts, {args.rate} due per second ({load()})")
            cluster = Cluster.of(workspace, f"{args.backend}-scale", args.backend)
            try:
                bench_scale(cluster, args.scripts, args.rate, args.seconds)
            finally:
                cluster.close()
        if args.only not in ("scale", "fetch"):
            print(f"[{args.backend}] idle supervisor ({load()})")
            cluster = Cluster.of(workspace, f"{args.backend}-idle", args.backend)
            try:
                bench_idle(cluster, 100, args.daemons, args.idle_seconds, args.py_spy)
            finally:
                cluster.close()
        print(f"done ({load()})")


if __name__ == "__main__":
    main()
