"""The lean per-run path (issue 14): the reaper as a file in the venv, a readable process list."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from kirby.tasks import process, reaper_file
from kirby.tasks.reaper_file import REAPER_NAME

pytestmark = pytest.mark.pypi


def _process_list() -> list[str]:
    """``ps``'s full command lines of every process (what an operator sees)."""
    return subprocess.run(
        ["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def test_the_process_list_of_a_running_script_shows_its_job_and_run_id(executor, collector, spec_for):
    spec = spec_for("kirby-example-sleep", job="nightly-report", config={"SLEEP_SECONDS": "60"})
    executor.start(spec, collector.on_line, collector.on_exit)
    deadline = time.monotonic() + 30
    while not collector.texts("stdout"):  # the script itself runs (it printed its first line)
        assert time.monotonic() < deadline, f"the script printed nothing within 30 s: {collector.texts()}"
        time.sleep(0.02)
    reaper = executor._runs[spec.run_id].process.pid
    mine = [line for line in _process_list() if spec.run_id in line]
    executor.cancel(spec.run_id, grace=2)
    collector.wait()
    pids = {int(line.split()[0]) for line in mine}
    assert reaper in pids and len(pids) == 2, mine  # the reaper and the script (its fork) both show it
    venv = executor.cache.path("kirby-example-sleep", "1.0.0")
    for line in mine:
        args = line.split()[1:]
        assert args[0] == f"{venv}/bin/python" and args[1].endswith(f"/{REAPER_NAME}"), line
        assert args[2:5] == ["nightly-report", spec.run_id, "kirby_example_sleep"], line
        assert len(line) < 500, line  # no pages of source code any more


def test_the_reaper_file_is_readable_not_writable_by_others_and_holds_no_kirby_package(executor, collector, spec_for):
    spec = spec_for("kirby-example-hello")
    executor.start(spec, collector.on_line, collector.on_exit)
    assert collector.wait().state == "succeeded", collector.texts()
    venv = executor.cache.path("kirby-example-hello", "1.0.0")
    reaper = venv / ".kirby" / reaper_file._compiled(process.REAPER_SOURCE)[0] / REAPER_NAME
    assert reaper.is_file(), "no reaper file in the venv"
    assert oct(reaper.stat().st_mode & 0o777) == "0o644"
    assert [oct(path.stat().st_mode & 0o777) for path in (reaper.parent, reaper.parent.parent)] == ["0o755"] * 2
    assert reaper.stat().st_uid == os.geteuid()
    assert sorted(path.name for path in reaper.parent.iterdir()) == [REAPER_NAME]  # nothing else reachable


def test_a_new_reaper_source_goes_to_its_own_file_and_the_old_one_stays(executor, collector, spec_for, monkeypatch):
    """Supervisors of two Kirby versions sharing a venv never overwrite each other's reaper."""
    spec = spec_for("kirby-example-hello")
    executor.start(spec, collector.on_line, collector.on_exit)
    assert collector.wait().state == "succeeded"
    venv = executor.cache.path("kirby-example-hello", "1.0.0")
    before = {path: path.read_bytes() for path in (venv / ".kirby").glob(f"*/{REAPER_NAME}")}
    monkeypatch.setattr(process, "REAPER_SOURCE", process.REAPER_SOURCE + "\n# another version\n")
    other = type(collector)()
    executor.start(spec_for("kirby-example-hello"), other.on_line, other.on_exit)
    assert other.wait().state == "succeeded", other.texts()
    after = {path: path.read_bytes() for path in (venv / ".kirby").glob(f"*/{REAPER_NAME}")}
    assert len(after) == len(before) + 1 and all(after[path] == data for path, data in before.items())


def test_a_secret_printed_over_two_reads_is_masked(executor, collector, spec_for, monkeypatch):
    """The script writes half of a secret, waits (the reader gets that half alone), then the rest:
    the line is masked once complete, through the batched path the supervisor uses."""
    script = (
        "import sys, time; sys.stdout.write('token s3cr'); sys.stdout.flush(); time.sleep(0.5); "
        "sys.stdout.write('et-value end\\nnext line\\n'); sys.stdout.flush()"
    )
    monkeypatch.setattr(
        process,
        "REAPER_SOURCE",
        process.REAPER_SOURCE.replace("runpy._run_module_as_main(module, alter_argv=True)", f"exec({script!r})"),
    )
    batches = []
    spec = spec_for("kirby-example-hello", config={"TOKEN": "s3cret-value"}, secrets=("TOKEN",))
    executor.start(spec, collector.on_line, collector.on_exit, on_lines=batches.append)
    assert collector.wait().state == "succeeded"
    assert collector.lines == []  # on_lines replaces on_line
    assert [line.text for batch in batches for line in batch.lines()] == ["token *** end", "next line"]
    assert [line.seq for batch in batches for line in batch.lines()] == [0, 1]
