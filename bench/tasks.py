"""Benchmarks of the execution layer (not a test). Prints figures and ratios against baselines.

    .venv/bin/python bench/tasks.py [cold] [warm] [logs]   (default: all three)

1. cold venv + install of one example package: uv against python -m venv + pip (folder index);
2. warm start: LocalExecutor.start -> first output line of kirby-example-daemon (prints at once),
   against a bare subprocess of the same venv's ``python -m kirby_example_daemon`` -> first line
   (target <= 1.2),
   and a bare ``python -c pass`` for reference;
3. log capture: a script printing 1,000,000 lines through the executor (split, timestamp, callback
   per line) against ``cat`` of the same text into a pipe read in chunks.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import load  # noqa: E402
from kirby.config import load_settings  # noqa: E402
from kirby.tasks.base import RunSpec  # noqa: E402
from kirby.tasks.executor import LocalExecutor  # noqa: E402
from kirby.tasks.install import Installer, find_uv  # noqa: E402

LINES = 1_000_000


def _builder():
    spec = importlib.util.spec_from_file_location("kirby_examples_build", ROOT / "examples" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_time(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_cold_install(wheels: Path, work: Path) -> None:
    def build(installer):
        installer.build(work / uuid.uuid4().hex, "kirby-example-hello", "1.0.0")

    uv = median_time(lambda: build(Installer(index=str(wheels), uv=find_uv())), 5)
    pip = median_time(lambda: build(Installer(index=str(wheels), uv=None)), 3)
    print(f"cold venv + install: uv {uv * 1000:.0f} ms, venv + pip {pip * 1000:.0f} ms: pip/uv = {pip / uv:.1f}x")


def _spec(**fields) -> RunSpec:
    return RunSpec(
        run_id=uuid.uuid4().hex,
        job="bench",
        environment="bench",
        version="1.0.0",
        scheduled_at=datetime.now(timezone.utc),
        supervisor="bench",
        **fields,
    )


def _first_line_of_run(executor: LocalExecutor, package: str) -> float:
    """Seconds from start() to the first line of a daemon (cancelled once it has printed)."""
    first, done = threading.Event(), threading.Event()
    started = time.perf_counter()
    stamp = []

    def on_line(line):
        if not first.is_set():
            stamp.append(time.perf_counter())
            first.set()

    spec = _spec(package=package)
    executor.start(spec, on_line, lambda result: done.set())
    first.wait(60)
    executor.cancel(spec.run_id, grace=5)
    done.wait(60)
    return stamp[0] - started


def _first_line_of_subprocess(command: list[str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env={"PYTHONUNBUFFERED": "1"})
    process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.terminate()
    process.communicate()
    return elapsed


def bench_warm_start(executor: LocalExecutor) -> None:
    venv = executor.prepare("kirby-example-daemon", "1.0.0")
    python = str(venv / "bin" / "python")
    for _ in range(3):  # warm the page cache
        _first_line_of_run(executor, "kirby-example-daemon")
    kirby, bare, empty = [], [], []
    for _ in range(30):  # interleaved, so that the machine's load weighs on both alike
        kirby.append(_first_line_of_run(executor, "kirby-example-daemon"))
        bare.append(_first_line_of_subprocess([python, "-m", "kirby_example_daemon"]))
        empty.append(median_time(lambda: subprocess.run([python, "-c", "pass"], check=True), 1))
    kirby, bare, empty = (statistics.median(times) for times in (kirby, bare, empty))
    print(
        f"warm start (start -> first line): kirby {kirby * 1000:.1f} ms, bare python -m {bare * 1000:.1f} ms: "
        f"ratio {kirby / bare:.2f} (target <= 1.2); bare python -c pass {empty * 1000:.1f} ms: "
        f"ratio {kirby / empty:.2f} ({load()})"
    )


def _capture(executor: LocalExecutor, batched: bool) -> float:
    """Seconds for a run printing LINES lines, counted per line (``on_line``) or per batch (``on_lines``)."""
    count = [0]
    done = threading.Event()

    def on_line(line):
        count[0] += 1

    def on_lines(batch):
        count[0] += len(batch.texts)

    started = time.perf_counter()
    executor.start(
        _spec(package="kirby-example-chatty", config={"CHATTY_LINES": str(LINES)}),
        on_line,
        lambda result: done.set(),
        on_lines=on_lines if batched else None,
    )
    done.wait(600)
    assert count[0] == LINES, count[0]
    return time.perf_counter() - started


def bench_log_capture(executor: LocalExecutor, work: Path) -> None:
    executor.prepare("kirby-example-chatty", "1.0.0")
    per_line, kirby = _capture(executor, False), _capture(executor, True)
    text = work / "lines.txt"
    text.write_text("".join(f"line {n} of chatty output\n" for n in range(LINES)))

    def cat():
        process = subprocess.Popen(["cat", str(text)], stdout=subprocess.PIPE)
        while process.stdout.read(256 * 1024):
            pass
        process.wait()

    baseline = median_time(cat, 3)
    print(
        f"log capture of {LINES:,} lines: kirby (on_lines, the supervisor's path) {kirby:.2f} s "
        f"({LINES / kirby:,.0f} lines/s), per line (on_line) {per_line:.2f} s ({LINES / per_line:,.0f} lines/s); "
        f"cat {baseline:.3f} s: ratio {kirby / baseline:.0f}x ({load()})"
    )


def main() -> None:
    print(f"bench/tasks.py: {os.cpu_count()} cores, {load()}")
    with tempfile.TemporaryDirectory(prefix="kirby-bench-") as temp:
        work = Path(temp)
        wheels = work / "wheels"
        _builder().build_examples(wheels)
        settings = load_settings(
            environ={
                **({"KIRBY_ALLOW_ROOT_RUNS": "true"} if os.geteuid() == 0 else {}),  # as CI does
                "KIRBY_PACKAGE_INDEX": str(wheels),
                "KIRBY_VENV_DIRECTORY": str(work / "venvs"),
                "KIRBY_RUN_DIRECTORY": str(work / "runs"),
            },
            cwd=work,
        )
        parts = sys.argv[1:] or ["cold", "warm", "logs"]
        if "cold" in parts:
            bench_cold_install(wheels, work / "cold")
        executor = LocalExecutor(settings, "bench")
        if "warm" in parts:
            bench_warm_start(executor)
        if "logs" in parts:
            bench_log_capture(executor, work)
        executor.shutdown()


if __name__ == "__main__":
    main()
