"""End-to-end harness: a real `kirby web` and real `kirby supervisor` processes on one host.

``cluster`` is parametrized over the backends: ``embedded`` (one SQLite file for the bus and the
leases) and ``kafka-redis`` (the real Kafka and Redis from deploy/services, with topics, consumer
group and Redis keys of the test's own). Scripts come from the real pypiserver. The script
database is a SQLite file the test reads directly to audit the runs.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from kirby.config import load_settings
from kirby.db import Database, open_database
from kirby.lease import open_lease_store
from kirby.models import Context, Environment, Job, JobType, Run, Schedule
from tests.helpers import wait_for
from tests.integration.conftest import example_index, example_wheels, shared_venvs  # noqa: F401 (fixtures)

KIRBY = Path(sys.executable).with_name("kirby")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    """Processes of one test's cluster, its settings, and audits of its script database."""

    workdir: Path
    env: dict[str, str]
    web_port: int
    database: Database
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def settings(self):
        return load_settings(environ=self.env, cwd=self.workdir)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(
            [str(KIRBY), *args],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_web(self, wait: bool = True) -> None:
        self._spawn("web", "web", "--port", str(self.web_port), "--lost-grace", "5")
        if wait:
            wait_for(lambda: self._answers("/healthz"), 60, f"kirby web did not answer; see {self.workdir}/web.log")

    def _answers(self, path: str) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.web_port}{path}", timeout=2).ok
        except requests.RequestException:
            return False

    def start_supervisor(
        self, name: str, window: float = 2.0, wakeup: float = 2.0, grace: float = 5.0, concurrency: int | None = None
    ) -> None:
        extra = ["--concurrency", str(concurrency)] if concurrency else []
        self._spawn(
            name, "supervisor", name, "--window", str(window), "--wakeup", str(wakeup), "--grace", str(grace), *extra
        )

    def private_venvs(self) -> Path:
        """Give this cluster a venv cache of its own (call before starting processes): its venvs are
        built during the test, so ``hold_build`` can hold a build open."""
        self.env["KIRBY_VENV_DIRECTORY"] = str(self.workdir / "venvs")
        return self.workdir / "venvs"

    @contextmanager
    def hold_build(self, package: str, version: str = "1.0.0") -> Iterator[None]:
        """Hold the build lock of ``package==version``'s venv: every supervisor preparing it waits
        (a venv build that takes as long as the test wants)."""
        from filelock import FileLock

        from kirby.tasks.names import venv_name
        from kirby.tasks.venvs import PYTHON_VERSION

        locks = Path(self.env["KIRBY_VENV_DIRECTORY"]) / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{venv_name(package, version, PYTHON_VERSION)}.build")):
            yield

    def log_of(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def signal(self, name: str, signum: int) -> None:
        self.processes[name].send_signal(signum)
        if signum == signal.SIGKILL:
            self.processes[name].wait(10)

    def stop(self, name: str, timeout: float = 60) -> int:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def leader(self) -> tuple[str, int] | None:
        with open_lease_store(self.settings) as store:
            leader = store.leader()
        return (leader.owner, leader.epoch) if leader else None

    def wait_leader(self, timeout: float = 60, other_than: str | None = None) -> tuple[str, int]:
        return wait_for(
            lambda: (lambda held: held if held and held[0] != other_than else None)(self.leader()),
            timeout,
            f"no leader (other than {other_than}) was elected; see {self.workdir}/*.log",
        )

    def runs(self, job: str) -> list[Run]:
        with self.database.session() as session:
            return list(session.query(Run).filter(Run.job_name == job).order_by(Run.scheduled_at))

    def add_job(
        self,
        name: str,
        package: str,
        cron: str | None = None,
        daemon: bool = False,
        config: dict[str, str] | None = None,
        **schedule,
    ) -> None:
        from kirby.models import ConfigKey, ConfigScope

        with self.database.session() as session:
            environment = session.query(Environment).filter_by(name="e2e").one_or_none() or Environment(name="e2e")
            job = Job(name=name, type=JobType.DAEMON if daemon else JobType.SCHEDULED)
            context = Context(job=job, environment=environment, package_name=package, package_version="1.0.0")
            session.add_all([environment, job, context])
            for key, value in (config or {}).items():
                session.add(ConfigKey(scope=ConfigScope.JOB, job=job, key=key, value=value))
            if cron:
                session.add(Schedule(context=context, cron=cron, **schedule))

    def close(self) -> None:
        """SIGTERM every live process at once (they stop in parallel), SIGKILL what is left after 30 s."""
        live = [process for process in self.processes.values() if process.poll() is None]
        for process in live:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.database.dispose()


def cluster_env(
    workdir: Path, web_port: int, index: str, venvs: Path, kafka: str | None = None, redis_url: str | None = None
) -> dict[str, str]:
    """The environment of one test cluster's processes: embedded backends, or the given Kafka and
    Redis with topics, consumer group and Redis keys of the cluster's own."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": "C.UTF-8",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'kirby.db'}",
        "KIRBY_EMBEDDED_PATH": str(workdir / "embedded.db"),
        "KIRBY_PACKAGE_INDEX": index,
        "KIRBY_VENV_DIRECTORY": str(venvs),
        "KIRBY_RUN_DIRECTORY": str(workdir / "runs"),
        "KIRBY_API_TOKEN": secrets.token_urlsafe(16),
        "SECRET_KEY": secrets.token_urlsafe(16),
        "KIRBY_SCHEDULE_ENDPOINT": f"http://127.0.0.1:{web_port}/schedule",
        "EXT_RETRIES": "2",
        "EXT_WAIT_BETWEEN_RETRIES": "0.2",
        "KIRBY_ALLOW_ROOT_RUNS": "true",  # CI runs as root; isolation is tested in tests/e2e/test_isolation.py
    }
    if kafka:
        unique = uuid.uuid4().hex[:10]
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": kafka,
                "KIRBY_TOPIC_JOB_OFFERS": f".kirby.e2e-{unique}.offers",
                "KIRBY_TOPIC_RUN_EVENTS": f".kirby.e2e-{unique}.events",
                "KIRBY_SUPERVISOR_GROUP_ID": f"kirby-e2e-{unique}",
                "REDIS_URL": redis_url,
                "KIRBY_REDIS_PREFIX": f"kirby-e2e-{unique}:",
            }
        )
    return env


def open_cluster(workdir: Path, env: dict[str, str], web_port: int) -> Cluster:
    return Cluster(workdir, env, web_port, open_database(load_settings(environ=env, cwd=workdir)))


def new_cluster(workdir: Path, example_index: str, shared_venvs: Path, kafka: str | None, redis_url: str | None):
    """A Cluster in ``workdir`` on a free port: embedded backends, or the given Kafka and Redis with
    topics, consumer group and Redis keys of its own (fresh names each call)."""
    workdir.mkdir(parents=True, exist_ok=True)
    web_port = free_port()
    return open_cluster(
        workdir, cluster_env(workdir, web_port, example_index, shared_venvs, kafka, redis_url), web_port
    )


@pytest.fixture(params=["embedded", pytest.param("kafka-redis", marks=[pytest.mark.kafka, pytest.mark.redis])])
def cluster(request, tmp_path, example_index, shared_venvs):  # noqa: F811 (fixtures)
    web_port = free_port()
    kafka = redis_url = None
    if request.param == "kafka-redis":
        kafka, redis_url = request.getfixturevalue("kafka_servers"), request.getfixturevalue("redis_url")
    cluster = open_cluster(
        tmp_path, cluster_env(tmp_path, web_port, example_index, shared_venvs, kafka, redis_url), web_port
    )
    yield cluster
    cluster.close()
