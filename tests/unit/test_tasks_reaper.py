"""The reaper (first process of a run) with this interpreter and a module of the test's own."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kirby.tasks.process import REAPER_SOURCE

PS_NAMES = ("test-job", "test-job:manual:1")  # argv[1:3]: the job and run id, shown by ps

DAEMONIZER = """
import os, sys, time
pids = open("pids", "a")
if os.fork() == 0:
    pids.write(f"child {os.getpid()}\\n"); pids.flush()
    time.sleep(60)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        pids.write(f"daemon {os.getpid()}\\n"); pids.flush()
        time.sleep(60)
    os._exit(0)
while len(open("pids").read().splitlines()) < 2:
    time.sleep(0.01)
print("main done", sys.argv[0].endswith("daemonizer.py"), flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def _run(tmp_path: Path, env: dict, timeout: float = 20) -> subprocess.CompletedProcess:
    (tmp_path / "daemonizer.py").write_text(DAEMONIZER)
    return subprocess.run(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "daemonizer", "0.5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _pids(tmp_path: Path) -> list[int]:
    return [int(line.split()[1]) for line in (tmp_path / "pids").read_text().splitlines()]


def test_the_module_runs_like_python_m_and_its_exit_code_is_kept(tmp_path):
    done = _run(tmp_path, {"EXIT_CODE": "3"})
    assert done.returncode == 3, done.stderr
    assert done.stdout == "main done True\n"


def test_children_and_a_double_forked_daemon_are_killed_and_reaped(tmp_path):
    started = time.monotonic()
    done = _run(tmp_path, {})
    assert done.returncode == 0, done.stderr
    pids = _pids(tmp_path)
    assert len(pids) == 2
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []  # not even zombies
    assert time.monotonic() - started < 10


def test_a_signal_that_kills_the_script_kills_the_reaper_the_same_way(tmp_path):
    (tmp_path / "selfkill.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    done = subprocess.run(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "selfkill", "0.5"],
        cwd=tmp_path,
        env={},
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == -signal.SIGTERM


def test_an_uncaught_exception_prints_a_traceback_and_exits_1(tmp_path):
    (tmp_path / "boom.py").write_text("raise ValueError('boom')\n")
    done = subprocess.run(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "boom", "0.5"],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1 and done.stderr.rstrip().endswith("ValueError: boom")


def test_sigusr1_kills_everything_at_once(tmp_path):
    (tmp_path / "stubborn.py").write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "stubborn", "0.5"],
        cwd=tmp_path,
        env={},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline() == "up\n"
    os.killpg(process.pid, signal.SIGTERM)  # ignored by the script; the reaper survives it too
    time.sleep(0.2)
    assert process.poll() is None
    process.send_signal(signal.SIGUSR1)
    assert process.wait(10) == -signal.SIGKILL


SUPERVISOR = """
import subprocess, sys
reaper = subprocess.Popen([sys.executable, "-c", sys.argv[1], "job", "job:manual:1", "stubborn", "0.5"], start_new_session=True)
print(reaper.pid, flush=True)
reaper.wait()
"""


def test_nothing_outlives_a_supervisor_killed_with_sigkill(tmp_path):
    """PR_SET_PDEATHSIG: the reaper stops its script (even one ignoring SIGTERM) when its parent dies."""
    (tmp_path / "stubborn.py").write_text(
        "import os, signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "open('pids', 'a').write(f'script {os.getpid()}\\n')\ntime.sleep(120)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, REAPER_SOURCE], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    reaper = int(supervisor.stdout.readline())
    deadline = time.monotonic() + 20
    while not ((tmp_path / "pids").exists() and _pids(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.02)  # the file is created before its line is written: wait for the line
    assert (tmp_path / "pids").exists() and _pids(tmp_path), "the script never started within 20 s"
    (script,) = _pids(tmp_path)
    supervisor.kill()
    supervisor.wait(10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in (reaper, script)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in (reaper, script) if Path(f"/proc/{pid}").exists()]
    assert left == [], f"still running after their supervisor died: {left}"


def test_a_stale_fence_file_stops_the_script(tmp_path):
    """Self-fencing: a script whose fence file is not touched for fence_after seconds is stopped."""
    (tmp_path / "forever.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    fence = tmp_path / "fence"
    fence.touch()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "forever", "0.5", str(fence), "1.5"],
        cwd=tmp_path,
        env={},
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - started
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert "not refreshed for 1.5 s" in done.stderr
    assert 1.5 <= took < 10


def test_a_touched_fence_file_lets_the_script_run(tmp_path):
    (tmp_path / "short.py").write_text("import time\ntime.sleep(3)\nprint('done', flush=True)\n")
    fence = tmp_path / "fence"
    fence.touch()
    process = subprocess.Popen(
        [sys.executable, "-c", REAPER_SOURCE, *PS_NAMES, "short", "0.5", str(fence), "1.5"],
        cwd=tmp_path,
        env={},
        stdout=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None:
        fence.touch()
        time.sleep(0.2)
    assert (process.returncode, process.stdout.read()) == (0, "done\n")
