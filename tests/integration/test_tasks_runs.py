"""Runs through LocalExecutor against the real pypiserver: environment, output, timeouts, no leftovers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kirby.errors import PackageError

pytestmark = pytest.mark.pypi


def _alive(pid: int) -> bool:
    """True if ``pid`` exists at all (a zombie counts: it was not reaped)."""
    return Path(f"/proc/{pid}").exists()


def _recorded_pids(pidfile: Path) -> dict[int, str]:
    return {int(pid): role for role, pid in (line.split() for line in pidfile.read_text().splitlines())}


def _wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.02)


def test_hello_prints_its_run_id_and_config_and_succeeds(executor, collector, spec_for):
    spec = spec_for("kirby-example-hello", config={"GREETING": "good morning"})
    executor.start(spec, collector.on_line, collector.on_exit)
    result = collector.wait()
    assert result.state == "succeeded" and result.exit_code == 0 and result.signal is None
    assert collector.texts("stdout") == [
        "hello from kirby-example-hello 1.0.0",
        f"run {spec.run_id} of job test-job",
        "greeting: good morning",
        f"python: {executor.cache.path('kirby-example-hello', '1.0.0')}/bin/python",
        "bye",
    ]
    assert [line.seq for line in collector.lines] == list(range(len(collector.lines)))
    assert result.started_at <= collector.lines[0].time <= result.finished_at
    assert collector.lines_after_exit == 0 and len(collector.results) == 1
    assert executor.running() == []


def test_two_versions_run_side_by_side(executor, make_collector, spec_for):
    runs = {version: make_collector() for version in ("1.0.0", "1.1.0")}
    for version, collector in runs.items():
        executor.start(spec_for("kirby-example-hello", version), collector.on_line, collector.on_exit)
    for version, collector in runs.items():
        assert collector.wait().state == "succeeded"
        assert collector.texts()[0] == f"hello from kirby-example-hello {version}"


def test_a_failing_script_reports_stderr_and_exit_code(executor, collector, spec_for):
    executor.start(spec_for("kirby-example-fail"), collector.on_line, collector.on_exit)
    result = collector.wait()
    assert (result.state, result.exit_code, result.error) == ("failed", 1, "exit code 1")
    assert collector.texts("stderr") == ["kirby-example-fail: something went wrong"]
    assert collector.texts("stdout") == ["about to fail"]


def test_nothing_of_the_supervisors_environment_leaks(executor, collector, spec_for, tmp_path, monkeypatch):
    monkeypatch.setenv("KIRBY_SECRET_X", "leaked-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-2")
    monkeypatch.setenv("PIP_INDEX_URL", "http://leaked.invalid/")
    dump = tmp_path / "env.txt"
    script = f"import os; open({str(dump)!r}, 'w').write(repr(dict(os.environ)))"
    spec = spec_for("kirby-example-hello", module="kirby_example_hello", config={"MY_KEY": "v"})
    # Run a tiny module of our own through the same machinery: the hello venv's python with -c.
    from kirby.tasks import process

    monkeypatch.setattr(
        process,
        "REAPER_SOURCE",
        process.REAPER_SOURCE.replace("runpy._run_module_as_main(module, alter_argv=True)", f"exec({script!r})"),
    )
    executor.start(spec, collector.on_line, collector.on_exit)
    assert collector.wait().state == "succeeded", collector.texts()
    env = eval(dump.read_text())
    venv = executor.cache.path("kirby-example-hello", "1.0.0")
    assert set(env) == {
        "MY_KEY",
        "PATH",
        "HOME",
        "LANG",
        "PYTHONUNBUFFERED",
        "KIRBY_RUN_ID",
        "KIRBY_JOB",
        "KIRBY_ENVIRONMENT",
        "KIRBY_SCHEDULED_AT",
        "KIRBY_SUPERVISOR",
        "TMPDIR",
    }
    assert env["PATH"] == f"{venv}/bin:/usr/local/bin:/usr/bin:/bin"
    workdir = process.run_directory_for(executor.run_directory, spec.run_id)
    assert env["TMPDIR"] == str(workdir / "tmp")
    assert [oct(path.stat().st_mode & 0o777) for path in (workdir, workdir / "tmp")] == ["0o700", "0o700"]
    assert oct(executor.run_directory.stat().st_mode & 0o777) == "0o711"  # enter your own, list none
    assert env["KIRBY_SCHEDULED_AT"] == "2026-01-02T03:04:00+00:00"
    assert (env["KIRBY_RUN_ID"], env["KIRBY_SUPERVISOR"], env["KIRBY_ENVIRONMENT"]) == (
        spec.run_id,
        "test-supervisor",
        "test",
    )
    assert "leaked" not in dump.read_text()


def test_config_values_stay_out_of_proc_environ_and_the_run_is_not_dumpable(
    executor, collector, spec_for, tmp_path, monkeypatch
):
    """The config reaches the script's os.environ through the reaper's stdin, never the exec'd
    environment (/proc/<pid>/environ), and the run is non-dumpable: another process of the run
    user can read neither its environment nor its memory."""
    dump = tmp_path / "proc.txt"
    script = (
        "import ctypes, os; dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0); "
        f"open({str(dump)!r}, 'w').write(repr((os.environ.get('MY_SECRET'), "
        "open('/proc/self/environ', 'rb').read(), open(f'/proc/{os.getppid()}/environ', 'rb').read(), dumpable)))"
    )
    from kirby.tasks import process

    monkeypatch.setattr(
        process,
        "REAPER_SOURCE",
        process.REAPER_SOURCE.replace("runpy._run_module_as_main(module, alter_argv=True)", f"exec({script!r})"),
    )
    spec = spec_for("kirby-example-hello", config={"MY_SECRET": "hunter2-value", "MULTI": "a\nb"})
    executor.start(spec, collector.on_line, collector.on_exit)
    assert collector.wait().state == "succeeded", collector.texts()
    value, own, reaper, dumpable = eval(dump.read_text())
    assert value == "hunter2-value"
    assert b"KIRBY_RUN_ID=" in own and b"KIRBY_RUN_ID=" in reaper  # the environ files were really read
    assert b"hunter2-value" not in own + reaper and b"MY_SECRET" not in own + reaper
    assert dumpable == 0


def test_the_run_has_its_own_working_directory_and_session(executor, collector, spec_for, tmp_path, monkeypatch):
    dump = tmp_path / "where.txt"
    script = f"import os; open({str(dump)!r}, 'w').write(f'{{os.getcwd()}} {{os.getsid(0)}} {{os.getpgid(0)}}')"
    from kirby.tasks import process

    monkeypatch.setattr(
        process,
        "REAPER_SOURCE",
        process.REAPER_SOURCE.replace("runpy._run_module_as_main(module, alter_argv=True)", f"exec({script!r})"),
    )
    spec = spec_for("kirby-example-hello", run_id="../../etc/passwd:2026")
    executor.start(spec, collector.on_line, collector.on_exit)
    assert collector.wait().state == "succeeded", collector.texts()
    cwd, sid, pgid = dump.read_text().split()
    assert Path(cwd).parent == executor.run_directory  # one safe component, not ../../etc
    assert Path(cwd).name.startswith("_.._etc_passwd_2026-")
    assert sid != str(os.getsid(0)) and pgid != str(os.getpgid(0))


def test_secret_values_are_masked_even_mid_line(executor, collector, spec_for):
    spec = spec_for(
        "kirby-example-hello",
        config={"GREETING": "hi s3cr3t-value!", "TOKEN": "s3cr3t-value", "SHORT": "hi"},
        secrets=("TOKEN", "SHORT"),
    )
    executor.start(spec, collector.on_line, collector.on_exit)
    collector.wait()
    assert "greeting: hi ***!" in collector.texts()
    assert not any("s3cr3t-value" in text for text in collector.texts())


def test_a_timeout_kills_the_whole_process_tree(executor, collector, spec_for, tmp_path):
    pidfile = tmp_path / "pids"
    spec = spec_for(
        "kirby-example-forker", config={"FORKER_PIDFILE": str(pidfile), "FORKER_STAY": "1"}, timeout_seconds=2
    )
    executor.start(spec, collector.on_line, collector.on_exit)
    result = collector.wait()
    assert result.state == "timed_out" and result.error == "timed out after 2 s"
    assert result.signal in (15, 9) and result.exit_code is None
    assert 2 <= (result.finished_at - result.started_at).total_seconds() < 6
    pids = _recorded_pids(pidfile)
    assert sorted(pids.values()) == ["child", "child", "daemon"]
    assert [pid for pid in pids if _alive(pid)] == []  # gone, not even zombies
    assert any(line.stream == "system" and "timed out" in line.text for line in collector.lines)


def test_a_forking_script_leaves_nothing_behind(executor, collector, spec_for, tmp_path):
    pidfile = tmp_path / "pids"
    executor.start(
        spec_for("kirby-example-forker", config={"FORKER_PIDFILE": str(pidfile)}), collector.on_line, collector.on_exit
    )
    result = collector.wait()
    assert result.state == "succeeded", collector.texts()
    pids = _recorded_pids(pidfile)
    assert len(pids) == 3 and "daemon" in pids.values()
    assert [pid for pid in pids if _alive(pid)] == []


def test_cancel_stops_a_daemon_gracefully(executor, collector, spec_for, tmp_path):
    pidfile = tmp_path / "daemon.pids"
    spec = spec_for("kirby-example-daemon", config={"KIRBY_DAEMON_PIDFILE": str(pidfile)})
    executor.start(spec, collector.on_line, collector.on_exit)
    _wait_until(lambda: "heartbeat 1" in collector.texts(), 20, "the daemon printed its first heartbeat")
    assert executor.running() == [spec.run_id]
    assert executor.cancel(spec.run_id, grace=5)
    result = collector.wait()
    assert result.state == "cancelled" and result.exit_code == 0  # it handled SIGTERM and exited
    events = [line.split()[0] for line in pidfile.read_text().splitlines()]
    assert events == ["start", "stop"]
    assert "cancelled: SIGTERM to the process group, SIGKILL after 5 s" in collector.texts("system")
    assert [line.seq for line in collector.lines] == list(range(len(collector.lines)))  # delivered in order
    assert collector.texts()[-1] == "daemon stopping" and collector.lines_after_exit == 0
    assert executor.cancel(spec.run_id) is False and executor.running() == []


def test_cancel_escalates_to_sigkill_after_the_grace(executor, collector, spec_for, tmp_path):
    pidfile = tmp_path / "pids"
    spec = spec_for("kirby-example-forker", config={"FORKER_PIDFILE": str(pidfile), "FORKER_STAY": "1"})
    executor.start(spec, collector.on_line, collector.on_exit)
    _wait_until(lambda: collector.texts("stdout"), 20, "the forker reported its children")
    executor.cancel(spec.run_id, grace=0.5)
    result = collector.wait()
    assert result.state == "cancelled"
    assert [pid for pid in _recorded_pids(pidfile) if _alive(pid)] == []


def test_a_script_ignoring_sigterm_is_killed_after_the_grace(executor, collector, spec_for):
    spec = spec_for("kirby-example-sleep", config={"SLEEP_SECONDS": "60", "SLEEP_IGNORE_SIGTERM": "1"})
    executor.start(spec, collector.on_line, collector.on_exit)
    _wait_until(lambda: collector.texts("stdout"), 20, "the sleeper started")
    executor.cancel(spec.run_id, grace=0.5)
    result = collector.wait(10)
    assert (result.state, result.signal, result.exit_code) == ("cancelled", 9, None)
    assert any("grace period over" in text for text in collector.texts("system"))


def test_leftovers_are_killed_even_if_the_reaper_itself_is_killed(executor, collector, spec_for, tmp_path):
    pidfile = tmp_path / "pids"
    spec = spec_for("kirby-example-forker", config={"FORKER_PIDFILE": str(pidfile), "FORKER_STAY": "1"})
    executor.start(spec, collector.on_line, collector.on_exit)
    _wait_until(lambda: collector.texts("stdout"), 20, "the forker reported its children")
    reaper = executor._runs[spec.run_id].process.pid
    os.kill(reaper, 9)  # nothing reaps the orphans now: the executor's last resort must kill them
    result = collector.wait(15)
    assert result.signal == 9
    states = {pid: _state(pid) for pid in _recorded_pids(pidfile)}
    _wait_until(lambda: all(_state(pid) in ("gone", "Z") for pid in states), 5, f"every leftover dead: {states}")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_failing_callback_does_not_stop_the_run(executor, collector, spec_for):
    def explode(line):
        collector.on_line(line)
        raise RuntimeError("callback bug")

    executor.start(spec_for("kirby-example-hello"), explode, collector.on_exit)
    assert collector.wait().state == "succeeded" and len(collector.texts()) == 5


def test_shutdown_cancels_every_run(executor, make_collector, spec_for):
    runs = [make_collector() for _ in range(2)]
    for collector in runs:
        executor.start(
            spec_for("kirby-example-sleep", config={"SLEEP_SECONDS": "60"}), collector.on_line, collector.on_exit
        )
    _wait_until(lambda: all(c.texts() for c in runs), 20, "both sleepers started")
    executor.shutdown(grace=2)
    assert [c.wait(1).state for c in runs] == ["cancelled", "cancelled"]
    assert executor.running() == []


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_huge_output_does_not_grow_the_supervisors_memory(executor, spec_for, make_collector):
    counted = {"lines": 0, "longest": 0, "last": ""}

    def count(line):
        counted["lines"] += 1
        counted["longest"] = max(counted["longest"], len(line.text))
        counted["last"] = line.text

    done = make_collector()
    before = _rss_kib()
    # 50 MB on one line, then 2,000,000 lines (about 60 MB).
    executor.start(
        spec_for("kirby-example-chatty", config={"CHATTY_LINE_BYTES": str(50 * 1024 * 1024)}), count, done.on_exit
    )
    assert done.wait(120).state == "succeeded"
    assert counted["lines"] == 1 and counted["longest"] < 65 * 1024
    assert counted["last"].endswith(f" [... line cut by kirby: {50 * 1024 * 1024 - 64 * 1024} more bytes]")
    done = make_collector()
    executor.start(spec_for("kirby-example-chatty", config={"CHATTY_LINES": "2000000"}), count, done.on_exit)
    assert done.wait(240).state == "succeeded"
    assert counted["lines"] == 1 + 2_000_000 and counted["last"] == "line 1999999 of chatty output"
    grown = _rss_kib() - before
    assert grown < 50 * 1024, f"the test process grew by {grown} KiB while streaming about 110 MB"


def test_an_invalid_module_or_unknown_package_fails_before_starting(executor, collector, spec_for):
    with pytest.raises(PackageError, match="not a valid Python module"):
        executor.start(spec_for("kirby-example-hello", module="os; rm"), collector.on_line, collector.on_exit)
    with pytest.raises(PackageError, match="'kirby-example-nope'==1.0.0 is not on the package index") as error:
        executor.prepare("kirby-example-nope", "1.0.0")
    assert "kirby-example-nope" in error.value.output
    assert executor.running() == [] and not collector.results
