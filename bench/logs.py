"""Log throughput end to end on a real cluster (not a test). Prints figures next to baselines of the same run.

Run: .venv/bin/python bench/logs.py [--backend embedded|kafka-redis|both] [--lines 1000000]
(``eval "$(deploy/services env)"`` first for kafka-redis.)

A real ``kirby web`` (SQLite script database, ``KIRBY_MAX_LOG_LINES_PER_RUN`` above the line count)
and one ``kirby supervisor`` run kirby-example-chatty once (a daily schedule due a few seconds
after a leader is elected), printing ``--lines`` lines of ~25 bytes as fast as Python writes them. Measured:
script started (``runs.started_at``) -> every line stored in ``log_lines`` (polled by its highest
``seq``, then counted), in lines per second (target >= 200,000 on the embedded backends). Next to:
the same script alone printing into a pipe read in 256 KiB chunks (the script's own floor on this
machine at this load), ``cat`` of the same text into a pipe (the pipe's floor), and one sqlite3
``executemany`` of as many rows, a row per line, into a fresh Kirby database's ``log_lines`` (the
floor of the row-per-line storage Kirby had before storing lines in rows of up to 1,000,
``kirby.logstore``). ``bench/log_stages.py`` times each stage alone.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import Cluster, example_index, load, wait_for  # noqa: E402
from kirby.config import load_settings  # noqa: E402
from kirby.db import open_database  # noqa: E402
from kirby.events import RunEvent  # noqa: E402
from kirby.logstore import count_lines, last_seq  # noqa: E402
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, JobType, Run, Schedule  # noqa: E402
from kirby.recorder import record  # noqa: E402
from kirby.tasks.executor import LocalExecutor  # noqa: E402

PACKAGE, VERSION = "kirby-example-chatty", "1.0.0"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def text_of(lines: int) -> str:
    return "".join(f"line {n} of chatty output\n" for n in range(lines))


def bench_cluster(cluster: Cluster, lines: int) -> None:
    cluster.env["KIRBY_MAX_LOG_LINES_PER_RUN"] = str(lines + 10)
    cluster.start_web()
    cluster.start_supervisor("s1", window=5.0, wakeup=5.0)
    wait_for(lambda: cluster.leader(), 300, "no leader within 300 s", interval=0.5)
    due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
    with cluster.database.session() as session:
        job = Job(name="chatty", type=JobType.SCHEDULED)
        context = Context(job=job, environment=Environment(name="bench"), package_name=PACKAGE, package_version=VERSION)
        config = ConfigKey(scope=ConfigScope.CONTEXT, context=context, key="CHATTY_LINES", value=str(lines))
        session.add_all([job, context, config, Schedule(context=context, cron=f"{due:%M %H} * * * {due:%S}")])

    def run_started():
        with cluster.database.session() as session:
            return session.scalars(select(Run).where(Run.job_name == "chatty", Run.started_at.is_not(None))).first()

    run = wait_for(run_started, 300, "the chatty run did not start within 300 s (see the supervisor's log)")
    run_id, started = run.id, run.started_at.timestamp()
    cpu_before = {name: cpu_seconds(cluster.processes[name].pid) for name in ("web", "s1")}

    def stored_all():
        with cluster.database.session() as session:
            top = last_seq(session, run_id)
        return top is not None and top >= lines - 1 and time.time()

    done = wait_for(stored_all, 600, f"not every line of {run_id} was stored within 600 s", interval=0.1)
    cpu = {name: cpu_seconds(cluster.processes[name].pid) - before for name, before in cpu_before.items()}
    with cluster.database.session() as session:
        count = count_lines(session, run_id)
        finished = session.get(Run, run_id).finished_at
    wall = done - started
    script = (finished.timestamp() - started) if finished else float("nan")
    print(
        f"  kirby: {count:,} lines stored {wall:.2f} s after the script started: {lines / wall:,.0f} lines/s "
        f"(target >= 200,000 embedded: {'met' if lines / wall >= 200_000 else 'NOT met'}); "
        f"the script itself ran {script:.2f} s; {load()}"
    )
    busiest = max(cpu.values())
    print(
        f"  CPU time meanwhile: kirby web {cpu['web']:.2f} s, supervisor {cpu['s1']:.2f} s (its reaper and script "
        f"not counted): {lines / busiest:,.0f} lines per CPU-second of the busier one (an estimate of the rate on two otherwise idle cores)"
    )
    assert count == lines, f"{count:,} lines stored, {lines:,} printed"


def bench_pipe(work: Path, lines: int) -> float:
    path = work / "lines.txt"
    path.write_text(text_of(lines))
    times = []
    for _ in range(3):
        started = time.perf_counter()
        process = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
        while process.stdout.read(256 * 1024):
            pass
        process.wait()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_script(lines: int) -> float:
    """The chatty script alone (same interpreter, unbuffered as a run), into a pipe read in chunks."""
    source = ROOT / "examples" / "packages" / "kirby-example-chatty"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(source), "PYTHONUNBUFFERED": "1"}
    env["CHATTY_LINES"] = str(lines)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "kirby_example_chatty"], stdout=subprocess.PIPE, env=env)
        while process.stdout.read(256 * 1024):
            pass
        process.wait()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_database(work: Path, lines: int) -> float:
    """One executemany of ``lines`` rows into a fresh Kirby database's log_lines, one transaction."""
    uri = f"sqlite:///{work / 'floor.db'}"
    database = open_database(load_settings(environ={"SQLALCHEMY_DATABASE_URI": uri}, cwd=work))
    with database.session() as session:  # the run the lines belong to
        record(session, [RunEvent("started", "r", datetime.now(timezone.utc), "bench")])
    database.dispose()
    connection = sqlite3.connect(work / "floor.db")
    connection.execute("PRAGMA journal_mode=WAL")
    rows = [("r", n, "2026-01-01 00:00:00.000000", "stdout", f"line {n} of chatty output") for n in range(lines)]
    started = time.perf_counter()
    with connection:
        connection.executemany(
            "INSERT INTO log_lines (run_id, seq, time, stream, text) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, seq) DO NOTHING",
            rows,
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["embedded", "kafka-redis", "both"], default="both")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the clusters' folders (logs, databases) under this folder")
    args = parser.parse_args()
    backends = ["embedded", "kafka-redis"] if args.backend == "both" else [args.backend]
    if "kafka-redis" in backends and not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL")):
        raise SystemExit('kafka-redis needs KAFKA_BOOTSTRAP_SERVERS and REDIS_URL: eval "$(deploy/services env)" first')
    print(f"bench/logs.py: {os.cpu_count()} cores, {load()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    with tempfile.TemporaryDirectory(prefix="kirby-bench-logs-") as temp:
        work = args.keep.resolve() if args.keep else Path(temp)
        index = example_index(work)
        environ = {"KIRBY_PACKAGE_INDEX": index, "KIRBY_VENV_DIRECTORY": str(work / "venvs")}
        if os.geteuid() == 0:
            environ["KIRBY_ALLOW_ROOT_RUNS"] = "true"
        LocalExecutor(load_settings(environ=environ, cwd=work), "bench").prepare(PACKAGE, VERSION)
        for backend in backends:
            print(f"[{backend}] {args.lines:,} lines, one run ({load()})")
            cluster = Cluster(work / backend, backend, index, work / "venvs")
            if os.geteuid() == 0:
                cluster.env["KIRBY_ALLOW_ROOT_RUNS"] = "true"
            try:
                bench_cluster(cluster, args.lines)
            finally:
                cluster.close()
        script, pipe, floor = bench_script(args.lines), bench_pipe(work, args.lines), bench_database(work, args.lines)
        print(f"  baseline: the script alone into a pipe {script:.2f} s ({args.lines / script:,.0f} lines/s)")
        print(f"  baseline: cat into a pipe {pipe:.3f} s ({args.lines / pipe:,.0f} lines/s)")
        print(f"  baseline: one sqlite3 executemany into log_lines {floor:.2f} s ({args.lines / floor:,.0f} rows/s)")
        print(f"done ({load()})")


if __name__ == "__main__":
    main()
