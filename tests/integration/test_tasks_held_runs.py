"""Runs spawned ahead of their instant (issue 14): ``LocalExecutor.stage`` starts the reaper, whose
script waits until ``release``; ``abort``, or the supervisor dying first, ends it with no script code
run. The script's own ledger line (kirby-example-hello appends one at import) is the audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.pypi

ROOT = Path(__file__).resolve().parents[2]


def _ledger(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.02)


def test_a_held_run_starts_its_script_only_when_released(executor, collector, spec_for, tmp_path):
    ledger = tmp_path / "ledger"
    spec = spec_for("kirby-example-hello", config={"KIRBY_RUN_LEDGER": str(ledger)})
    executor.prepare(spec.package, spec.version)
    staged = executor.stage(spec, collector.on_line, collector.on_exit)
    assert spec.run_id in executor.running()
    time.sleep(1.0)  # what is being shown is that nothing happens meanwhile: no condition to await
    assert _ledger(ledger) == [] and collector.lines == [] and not collector.done.is_set()
    released = time.time()
    staged.release()
    result = collector.wait()
    assert result.state == "succeeded", collector.texts()
    [line] = _ledger(ledger)
    assert float(line.split()[2]) >= released and result.started_at.timestamp() >= released - 0.01
    assert collector.texts("stdout")[0] == "hello from kirby-example-hello 1.0.0"


def test_an_aborted_held_run_never_runs_its_script_and_reports_nothing(executor, collector, spec_for, tmp_path):
    ledger = tmp_path / "ledger"
    spec = spec_for("kirby-example-hello", config={"KIRBY_RUN_LEDGER": str(ledger)})
    executor.prepare(spec.package, spec.version)
    staged = executor.stage(spec, collector.on_line, collector.on_exit)
    pid = executor._runs[spec.run_id].process.pid
    staged.abort()
    _wait_until(lambda: spec.run_id not in executor.running(), 30, "the aborted run left the executor")
    assert _gone(pid)
    staged.release()  # too late: a no-op
    time.sleep(0.5)  # nothing may happen after the abort: no condition to await
    assert _ledger(ledger) == [] and collector.results == [] and collector.lines == []


HOLDER = r"""
import json, sys, time
from kirby.config import load_settings
from kirby.tasks.base import RunSpec
from kirby.tasks.executor import LocalExecutor
from datetime import datetime, timezone
spec = json.loads(sys.argv[1])
executor = LocalExecutor(load_settings(environ=spec["environ"], cwd=spec["cwd"]), "holder")
run = RunSpec(run_id="held:test:1", job="held", environment="test", package="kirby-example-hello",
              version="1.0.0", scheduled_at=datetime.now(timezone.utc), supervisor="holder",
              config={"KIRBY_RUN_LEDGER": spec["ledger"]})
executor.prepare(run.package, run.version)
executor.stage(run, lambda line: None, lambda result: None)
print(executor._runs[run.run_id].process.pid, flush=True)
time.sleep(600)
"""


def test_a_supervisor_killed_while_holding_a_run_leaves_no_script_running(make_settings, example_index, tmp_path):
    """The fault: SIGKILL of the supervisor process between the spawn and the release. The reaper
    sees its stdin close without GO and exits: the never-started claim may be re-offered safely."""
    ledger = tmp_path / "ledger"
    settings = {
        "KIRBY_PACKAGE_INDEX": example_index,
        "KIRBY_VENV_DIRECTORY": str(tmp_path / "venvs"),
        "KIRBY_RUN_DIRECTORY": str(tmp_path / "runs"),
        "KIRBY_ALLOW_ROOT_RUNS": "true",
    }
    spec = json.dumps({"environ": settings, "cwd": str(tmp_path), "ledger": str(ledger)})
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, spec], stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )
    try:
        reaper = int(holder.stdout.readline())
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the reaper has a session of its own: it survives this
        holder.wait(30)
    _wait_until(lambda: _gone(reaper), 30, "the held reaper exited once its supervisor died")
    time.sleep(0.5)  # a script that ran would have written its line by now
    assert _ledger(ledger) == []
