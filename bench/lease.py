"""Run-claim latency (p50/p99) and throughput on both lease stores, next to raw baselines of the same run.

Run: .venv/bin/python bench/lease.py [--count N] [--rounds R]      (not a test)
Redis is measured when REDIS_URL is set (``eval "$(deploy/services env)"``), under a fresh key
prefix that is deleted afterwards. Each figure is the best round (by p50) of R rounds, kirby and
baseline alternating, after a warm-up. One caller claims fresh run ids one after another, so
throughput is 1 / mean latency.

* Redis: ``RedisLeaseStore.claim_run`` (one EVALSHA: HGET, TIME, HSET, PEXPIRE) against a bare
  redis-py ``SET key value NX PX`` loop on the same server, and ``redis-benchmark -t set -c 1``
  (one client, like-for-like; its own C client, no Python) when the binary is there.
* Embedded: ``LocalLeaseStore.claim_run`` (BEGIN IMMEDIATE, purge of expired claims, INSERT OR
  IGNORE, COMMIT) against a bare sqlite3 ``INSERT OR IGNORE`` loop (autocommit, one transaction
  per row) on a WAL file of its own.
* Both: ``claim_run(..., generation=marker)``, the supervisors' call since issue 10 (the claim is
  refused unless the store's generation marker is the caller's and open: one more hash read).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from statistics import mean
from urllib.parse import urlparse

import redis

from kirby.config import load_settings
from kirby.lease.local import LocalLeaseStore
from kirby.lease.redis import RedisLeaseStore

WARMUP = 200


def measure(count: int, claim: Callable[[str], object]) -> dict[str, float]:
    """Latencies of ``count`` calls on fresh run ids: p50 and p99 in microseconds, claims per second."""
    prefix = uuid.uuid4().hex[:8]
    latencies = []
    for n in range(count):
        run_id = f"job:prod:{prefix}-{n}"
        begin = time.perf_counter_ns()
        claim(run_id)
        latencies.append((time.perf_counter_ns() - begin) / 1000)
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rate": 1e6 / mean(latencies),
    }


def best_of(rounds: int, count: int, contenders: dict[str, Callable[[str], object]]) -> dict[str, dict[str, float]]:
    for claim in contenders.values():
        measure(WARMUP, claim)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, claim in contenders.items():
            results[name].append(measure(count, claim))
    return {name: min(figures, key=lambda figure: figure["p50"]) for name, figures in results.items()}


def redis_benchmark(url: str, count: int) -> dict[str, float] | None:
    """``redis-benchmark -t set -c 1`` on the server of ``url`` (None without the binary or over TLS)."""
    parsed = urlparse(url)
    if not shutil.which("redis-benchmark") or parsed.scheme != "redis":
        return None
    command = ["redis-benchmark", "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)]
    if parsed.password:
        command += ["-a", parsed.password]
    output = subprocess.run(
        command + ["-t", "set", "-n", str(count), "-c", "1", "--csv"], capture_output=True, text=True, check=True
    ).stdout
    row = next(row for row in csv.DictReader(output.splitlines()) if row["test"] == "SET")
    milliseconds = {"p50": float(row["p50_latency_ms"]), "p99": float(row["p99_latency_ms"])}
    return {**{name: value * 1000 for name, value in milliseconds.items()}, "rate": float(row["rps"])}


def bench_redis(url: str, count: int, rounds: int) -> list[tuple[str, dict[str, float]]]:
    settings = load_settings(environ={"REDIS_URL": url})
    prefix = f"kirby-bench:{uuid.uuid4().hex[:8]}:"
    store = RedisLeaseStore(settings, prefix=prefix)
    raw = redis.Redis.from_url(url)
    week_ms = 7 * 24 * 3600 * 1000
    marker = store.check_generation(None).marker
    try:
        figures = best_of(
            rounds,
            count,
            {
                "kirby claim_run": lambda run_id: store.claim_run(run_id, "bench"),
                "kirby claim_run, generation checked": lambda run_id: store.claim_run(
                    f"g{run_id}", "bench", generation=marker
                ),
                "redis-py SET NX PX": lambda run_id: raw.set(f"{prefix}raw:{run_id}", "bench|1|0", nx=True, px=week_ms),
            },
        )
        rows = list(figures.items())
        native = redis_benchmark(url, count * rounds)
        if native:
            rows.append(("redis-benchmark -t set -c 1", native))
        return rows
    finally:
        keys = list(raw.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            raw.delete(*keys[start : start + 1000])
        raw.close()
        store.close()


def bench_local(count: int, rounds: int) -> list[tuple[str, dict[str, float]]]:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(environ={"KIRBY_EMBEDDED_PATH": str(Path(folder) / "embedded.db")}, cwd=Path(folder))
        store = LocalLeaseStore(settings)
        raw = sqlite3.connect(Path(folder) / "raw.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE claim (run_id TEXT PRIMARY KEY, supervisor TEXT, attempt INTEGER, at REAL)")
        marker = store.check_generation(None).marker
        try:
            figures = best_of(
                rounds,
                count,
                {
                    "kirby claim_run": lambda run_id: store.claim_run(run_id, "bench"),
                    "kirby claim_run, generation checked": lambda run_id: store.claim_run(
                        f"g{run_id}", "bench", generation=marker
                    ),
                    "sqlite3 INSERT OR IGNORE": lambda run_id: raw.execute(
                        "INSERT OR IGNORE INTO claim VALUES (?, 'bench', 1, ?)", (run_id, time.time())
                    ),
                },
            )
            return list(figures.items())
        finally:
            raw.close()
            store.close()


def report(backend: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    kirby = rows[0][1]
    for name, figure in rows:
        ratio = f"{kirby['p50'] / figure['p50']:.2f}x" if figure is not kirby else ""
        print(f"{backend:8} {name:30} {figure['p50']:9.0f} {figure['p99']:9.0f} {figure['rate']:10.0f}  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="claims per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds, kirby and baseline alternating")
    arguments = parser.parse_args()
    settings = load_settings()
    print(f"{'backend':8} {'what':30} {'p50 us':>9} {'p99 us':>9} {'claims/s':>10}  kirby p50 / this p50")
    if settings.redis_url:
        report("redis", bench_redis(settings.redis_url, arguments.count, arguments.rounds))
    else:
        print('redis    (skipped: REDIS_URL is unset; eval "$(deploy/services env)" first)')
    report("embedded", bench_local(arguments.count, arguments.rounds))


if __name__ == "__main__":
    main()
