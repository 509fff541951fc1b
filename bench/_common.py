"""Shared by the cluster benchmarks: a warm workspace (the example package index, settings and the
prepared venvs: ``warm_workspace``), processes logging time-stamped lines (``Processes``), a real
``kirby web`` + ``kirby supervisor`` cluster on one backend (``Cluster``), script ledgers, and
percentiles. Not a test; no pytest fixtures.

Supervisors log with LOG_FORMAT (``<time.time()> LEVEL logger message``), so a benchmark can read
when each step of a run happened from their logs (``Cluster.log_events``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from kirby.config import Settings, load_settings
from kirby.db import open_database
from kirby.lease import open_lease_store

ROOT = Path(__file__).resolve().parents[1]
KIRBY = Path(sys.executable).with_name("kirby")
LOG_FORMAT = "%(created).6f %(levelname)s %(name)s %(message)s"
LOG_LINE = re.compile(r"^(\d+\.\d+) \S+ \S+ (.*)$")
PACKAGE, VERSION, MODULE = "kirby-example-hello", "1.0.0", "kirby_example_hello"  # the benchmarks' script


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5) * 1000:7.1f} ms  p99 {pct(values, 0.99) * 1000:7.1f} ms  (n={len(values)})"


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def read_ledger(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    return [
        (parts[0], float(parts[2]))
        for parts in (line.split() for line in path.read_text().splitlines())
        if len(parts) == 3
    ]


def run_user() -> dict[str, str]:
    """KIRBY_RUN_USER (or KIRBY_ALLOW_ROOT_RUNS) from the caller's environment; as root without
    either, root runs allowed (a benchmark, e.g. in a container)."""
    if os.environ.get("KIRBY_RUN_USER"):
        return {"KIRBY_RUN_USER": os.environ["KIRBY_RUN_USER"]}
    if os.environ.get("KIRBY_ALLOW_ROOT_RUNS"):
        return {"KIRBY_ALLOW_ROOT_RUNS": os.environ["KIRBY_ALLOW_ROOT_RUNS"]}
    return {"KIRBY_ALLOW_ROOT_RUNS": "true"} if os.geteuid() == 0 else {}


@dataclass(frozen=True)
class Workspace:
    """What every cluster benchmark starts from: the example package index, settings pointing at
    the work folder, and ready venvs (``pythons``: package -> its venv's interpreter)."""

    work: Path
    index: str
    settings: Settings
    pythons: dict[str, Path]

    @property
    def python(self) -> Path:
        """The interpreter of the benchmarks' script (PACKAGE)."""
        return self.pythons[PACKAGE]

    @property
    def venvs(self) -> Path:
        return self.work / "venvs"


def warm_workspace(work: Path, packages: tuple[str, ...] = (PACKAGE,)) -> Workspace:
    """Build the example index in (or serve it from) ``work`` and prepare a venv of each of
    ``packages`` (VERSION) there: the figures are not about installs."""
    from kirby.tasks.executor import LocalExecutor

    index = example_index(work)
    settings = load_settings(
        environ={
            "KIRBY_PACKAGE_INDEX": index,
            "KIRBY_VENV_DIRECTORY": str(work / "venvs"),
            "KIRBY_RUN_DIRECTORY": str(work / "runs"),
            **run_user(),
        },
        cwd=work,
    )
    executor = LocalExecutor(settings, "bench")
    pythons = {package: executor.prepare(package, VERSION) / "bin" / "python" for package in packages}
    return Workspace(work, index, settings, pythons)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Processes started in ``workdir``, each in a session of its own, logging to ``<name>.log``
    there (lines stamped with LOG_FORMAT's ``time.time()``); ``close`` stops them all."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log_events(self, name: str) -> list[tuple[float, str]]:
        path = self.workdir / f"{name}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return [(float(m.group(1)), m.group(2)) for m in map(LOG_LINE.match, lines) if m]

    def kill(self, name: str) -> float:
        """SIGKILL ``name``'s process group; returns when it was sent."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        killed_at = time.time()
        self.processes[name].wait(30)
        return killed_at

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


class Cluster(Processes):
    """A real ``kirby web`` and supervisors in ``workdir`` on one backend; logs are ``<name>.log`` there."""

    def __init__(self, workdir: Path, backend: str, index: str, venvs: Path, environ: dict[str, str] | None = None):
        """``environ``: more variables for every process (e.g. KIRBY_PUBLISH_AHEAD)."""
        if workdir.exists():
            raise SystemExit(f"{workdir} exists: give --keep an empty folder")
        super().__init__(workdir)
        self.backend, self.port = backend, free_port()
        self.ledger = workdir / "ledger"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(workdir)),
            "LANG": "C.UTF-8",
            "LOG_FORMAT": LOG_FORMAT,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'kirby.db'}",
            "KIRBY_EMBEDDED_PATH": str(workdir / "embedded.db"),
            "KIRBY_PACKAGE_INDEX": index,
            "KIRBY_VENV_DIRECTORY": str(venvs),
            "KIRBY_RUN_DIRECTORY": str(workdir / "runs"),
            "KIRBY_API_TOKEN": secrets.token_urlsafe(16),
            "SECRET_KEY": secrets.token_urlsafe(16),
            "KIRBY_SCHEDULE_ENDPOINT": f"http://127.0.0.1:{self.port}/schedule",
            "EXT_RETRIES": "2",
            "EXT_WAIT_BETWEEN_RETRIES": "0.2",
            **run_user(),
            **(environ or {}),
        }
        if backend == "kafka-redis":
            unique = uuid.uuid4().hex[:10]
            self.env.update(
                {
                    "KAFKA_BOOTSTRAP_SERVERS": os.environ["KAFKA_BOOTSTRAP_SERVERS"],
                    "REDIS_URL": os.environ["REDIS_URL"],
                    "KIRBY_TOPIC_JOB_OFFERS": f".kirby.bench-{unique}.offers",
                    "KIRBY_TOPIC_RUN_EVENTS": f".kirby.bench-{unique}.events",
                    "KIRBY_SUPERVISOR_GROUP_ID": f"kirby-bench-{unique}",
                    "KIRBY_REDIS_PREFIX": f"kirby-bench-{unique}:",
                }
            )
        self.settings = load_settings(environ=self.env, cwd=workdir)
        self.database = open_database(self.settings)
        self.store = open_lease_store(self.settings)

    @classmethod
    def of(cls, workspace: Workspace, name: str, backend: str, environ: dict[str, str] | None = None) -> Cluster:
        """A cluster in ``workspace.work / name`` on the workspace's index and venvs."""
        return cls(workspace.work / name, backend, workspace.index, workspace.venvs, environ)

    def spawn(self, name: str, *args: str) -> None:
        """``kirby <args>`` as process ``name``."""
        self.start(name, [str(KIRBY), *args], self.env)

    def start_web(self) -> None:
        self.spawn("web", "web", "--port", str(self.port))
        wait_for(lambda: self.get("/healthz", 2) is not None, 90, "kirby web did not answer")

    def get(self, path: str, timeout: float):
        try:
            response = requests.get(
                f"http://127.0.0.1:{self.port}{path}",
                timeout=timeout,
                headers={"Authorization": f"Bearer {self.env['KIRBY_API_TOKEN']}"},
            )
            return response if response.ok else None
        except requests.RequestException:
            return None

    def start_supervisor(self, name: str, window: float, wakeup: float = 30.0) -> None:
        self.spawn(name, "supervisor", name, "--window", str(window), "--wakeup", str(wakeup), "--grace", "5")

    def leader(self, other_than: str | None = None):
        leader = self.store.leader()
        return leader if leader and leader.owner != other_than else None

    def stages(self, events: dict[str, re.Pattern]) -> dict[str, dict[str, float]]:
        """Per stage of ``events`` (a pattern whose group 1 is a run id), run id -> earliest time any process logged it."""
        found: dict[str, dict[str, float]] = {stage: {} for stage in events}
        for name in self.processes:
            for when, message in self.log_events(name):
                for stage, pattern in events.items():
                    match = pattern.match(message)
                    if match and match.group(1) not in found[stage]:
                        found[stage][match.group(1)] = when
        return found

    def close(self) -> None:
        self.stop_all()
        self.store.close()
        self.database.dispose()
        if self.backend == "kafka-redis":
            import redis  # the bench cleans up after itself; product code uses redis only in kirby/lease/redis.py

            from kirby.bus.kafka_topics import delete_topics

            delete_topics(self.settings)
            client = redis.Redis.from_url(self.env["REDIS_URL"])
            for key in client.scan_iter(match=self.env["KIRBY_REDIS_PREFIX"] + "*", count=1000):
                client.delete(key)
            client.close()


def wait_for(condition, timeout: float, message: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise SystemExit(f"after {timeout:g} s: {message}")
        time.sleep(interval)


def example_index(work: Path) -> str:
    spec = importlib.util.spec_from_file_location("kirby_examples_build", ROOT / "examples" / "build.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    wheelhouse = os.environ.get("KIRBY_WHEELHOUSE")
    if os.environ.get("KIRBY_PACKAGE_INDEX") and wheelhouse:
        builder.build_examples(Path(wheelhouse))
        return os.environ["KIRBY_PACKAGE_INDEX"]
    builder.build_examples(work / "wheels")
    return str(work / "wheels")
