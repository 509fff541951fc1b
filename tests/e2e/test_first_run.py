"""README command 1, as a new user runs it: `scripts/quickstart` on a fresh folder with the short demo.

First run, with bounded waits: the printed credentials log in; a scheduled demo run succeeds and
its log lines (with its config) come back through the web API; the demo daemon runs exactly once
in the cluster. Ctrl-C (SIGINT to the foreground process group) stops everything (the supervisors
gracefully, within honcho's 5 s) and nothing started is left running. Second run on the same
folder: it keeps .env and the scripts, says so calmly, both supervisors start again under the same
names (their leases were released), and it stops as cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
# Settings of the caller (CI exports the real services' variables) must not leak into the demo.
SCRUBBED_PREFIXES = (
    "KIRBY_",
    "KAFKA_",
    "REDIS_",
    "SQLALCHEMY_",
    "SECRET_KEY",
    "SECURITY_PASSWORD_SALT",
    "EXT_",
    "LOG_FORMAT",
)
SUPERVISORS = ("supervisor-1", "supervisor-2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_under(folder: Path, session: int) -> list[str]:
    """Live processes of ``session``, or whose working directory or command line is under ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if fields[0] == "Z":
            continue
        if int(fields[3]) == session or cwd.startswith(str(folder)) or str(folder) in cmdline:
            found.append(f"pid {entry.name} cwd {cwd}: {cmdline}")
    return found


class Quickstart:
    """One `scripts/quickstart` process in its own session, its output in a file."""

    def __init__(self, env: dict[str, str], folder: Path, output_path: Path, web_port: int) -> None:
        self.folder, self.output_path = folder, output_path
        self.base = f"http://127.0.0.1:{web_port}"
        with output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [str(REPO / "scripts" / "quickstart")],
                cwd=REPO,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def tail(self) -> str:
        return f"\n--- {self.output_path.name} (tail) ---\n" + "\n".join(self.output().splitlines()[-40:])

    def wait(self, condition, timeout: float, what: str, interval: float = 0.5):
        def check():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"scripts/quickstart exited with {self.process.returncode} while waiting: {what}{self.tail()}"
                )
            return condition()

        return wait_for(check, timeout, f"{what}{self.tail()}", interval)

    def wait_ready(self, timeout: float) -> None:
        def ready():
            try:
                return requests.get(f"{self.base}/healthz", timeout=2).ok
            except requests.RequestException:
                return False

        self.wait(ready, timeout, f"the web UI never answered on {self.base}/healthz")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the foreground process group; the exit status (SIGKILL after 30 s)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(f"scripts/quickstart did not stop within 30 s of SIGINT{self.tail()}") from None

    def assert_stopped_cleanly(self, code: int) -> None:
        left = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # processes that are exiting get a few seconds
            left = processes_under(self.folder, self.process.pid)
            if not left:
                break
            time.sleep(0.2)
        assert not left, "left running after Ctrl-C:\n" + "\n".join(left)
        assert code == 130, f"honcho should exit 130 after SIGINT, got {code}{self.tail()}"
        printed = self.output()
        for name in SUPERVISORS:  # released their leases within honcho's 5 s
            assert f"sending SIGKILL to {name}" not in printed, f"{name} had to be killed{self.tail()}"
            assert f"supervisor {name} stopped" in printed, f"{name} did not shut down gracefully{self.tail()}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quickstart_runs_the_demo_stops_cleanly_and_starts_again(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    web_port, index_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update(
        KIRBY_QUICKSTART_DIR=str(folder),
        KIRBY_DEMO_FILE="short_demo.json",
        KIRBY_WEB_PORT=str(web_port),
        KIRBY_INDEX_PORT=str(index_port),
        KIRBY_ALLOW_ROOT_RUNS="true",  # CI runs as root; isolation is tested in tests/e2e/test_isolation.py
    )

    first = Quickstart(env, folder, tmp_path / "first-run.out", web_port)
    try:
        first.wait_ready(120)
        printed = first.output()
        assert f"web UI at http://127.0.0.1:{web_port}/" in printed, first.tail()
        user, password = re.search(r"\(user (\S+), password (\S+)\)", printed).groups()
        token = re.search(r"^KIRBY_API_TOKEN=(\S+)$", (folder / ".env").read_text(), re.M).group(1)
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {token}"

        def succeeded_run():
            runs = api.get(f"{first.base}/api/runs", params={"job": "hello", "state": "succeeded"}, timeout=5).json()[
                "runs"
            ]
            return runs[0] if runs else None

        run = first.wait(succeeded_run, 75, "no run of the demo job 'hello' succeeded", interval=1)
        logs = api.get(f"{first.base}/api/runs/{run['id']}/logs", timeout=5)
        assert logs.status_code == 200, logs.text
        texts = [line["text"] for line in logs.json()["lines"]]
        assert "greeting: hello from the short demo" in texts, texts  # the job's config reached the script

        daemons = api.get(f"{first.base}/api/runs", params={"job": "heartbeat", "state": "running"}, timeout=5).json()[
            "runs"
        ]
        assert len(daemons) == 1, f"the demo daemon should run once in the cluster: {daemons}"

        browser = requests.Session()
        form = browser.get(f"{first.base}/login", timeout=5).text
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"', form)
        login = browser.post(
            f"{first.base}/login",
            data={"username": user, "password": password, "csrf_token": csrf.group(1) or csrf.group(2)},
            allow_redirects=False,
            timeout=5,
        )
        assert login.status_code == 302 and "/login" not in login.headers["Location"], (
            f"the printed credentials {user}/{password} did not log in: {login.status_code}"
        )
    finally:
        code = first.interrupt()
    first.assert_stopped_cleanly(code)

    second = Quickstart(env, folder, tmp_path / "second-run.out", web_port)
    try:
        second.wait_ready(90)
        for name in SUPERVISORS:  # the same names again: refused if a lease of the first run were left
            second.wait(lambda: f"supervisor {name} started" in second.output(), 60, f"{name} did not start again")
        printed = second.output()
        assert "quickstart: reusing the scripts already in" in printed, second.tail()
        assert "wrote" not in printed and "Error" not in printed, second.tail()
        assert f"KIRBY_API_TOKEN={token}\n" in (folder / ".env").read_text(), ".env was rewritten"
    finally:
        code = second.interrupt()
    second.assert_stopped_cleanly(code)
