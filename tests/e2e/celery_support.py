"""Celery e2e support: a cluster whose jobs send Celery tasks, and real `celery worker` processes of
``tests/celery_app/kirby_test_celery.py`` (prefork, task events on, ``kirby.celery`` installed)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from kirby.logstore import stored_lines
from kirby.models import (
    Context,
    Environment,
    Job,
    JobNotification,
    JobType,
    NotificationEmail,
    NotificationGroup,
    Run,
    Schedule,
)
from tests.e2e.conftest import Cluster

CELERY = Path(sys.executable).with_name("celery")
APP_DIR = Path(__file__).resolve().parents[1] / "celery_app"
TASK = "kirby_test.ledger"


@dataclass
class CeleryCluster:
    cluster: Cluster
    broker: str
    queue: str
    ledger: Path

    def worker_env(self) -> dict[str, str]:
        return {
            **self.cluster.env,
            "PYTHONPATH": str(APP_DIR),
            "TEST_CELERY_BROKER": self.broker,
            "TEST_CELERY_QUEUE": self.queue,
            "TEST_CELERY_LEDGER": str(self.ledger),
        }

    def start_worker(self, name: str, concurrency: int = 2, **env: str) -> subprocess.Popen:
        log = open(self.cluster.workdir / f"{name}.log", "ab")
        process = subprocess.Popen(
            [
                str(CELERY),
                "-A",
                "kirby_test_celery",
                "worker",
                "-P",
                "prefork",
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "-Q",
                self.queue,
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=self.cluster.workdir,
            env={**self.worker_env(), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.cluster.processes[name] = process  # stopped with the cluster
        return process

    def add_job(self, name: str, cron: str, kwargs: dict | None = None, notify: str | None = None, **schedule) -> None:
        with self.cluster.database.session() as session:
            environment = session.query(Environment).filter_by(name="e2e").one_or_none() or Environment(name="e2e")
            job = Job(
                name=name,
                type=JobType.SCHEDULED,
                celery_task=TASK,
                celery_args="[]",
                celery_kwargs=json.dumps(kwargs or {}),
                celery_queue=self.queue,
            )
            context = Context(job=job, environment=environment, package_name="", package_version="")
            session.add_all([environment, job, context, Schedule(context=context, cron=cron, **schedule)])
            if notify:
                group = NotificationGroup(name=f"{name}-group", emails=[NotificationEmail(email=notify)])
                session.add(JobNotification(job=job, group=group))

    def ledger_ids(self) -> list[str]:
        return [line.split()[0] for line in self.ledger.read_text().splitlines()] if self.ledger.exists() else []

    def runs(self, job: str) -> dict[str, Run]:
        return {run.id: run for run in self.cluster.runs(job)}

    def log_lines(self, run_id: str) -> list[str]:
        with self.cluster.database.session() as session:
            return [line.text for line in stored_lines(session, run_id)]


def celery_cluster(cluster: Cluster, broker: str) -> CeleryCluster:
    """Give ``cluster`` a Celery broker and a queue of its own."""
    cluster.env["KIRBY_CELERY_BROKER_URL"] = broker
    return CeleryCluster(cluster, broker, f"kirby-e2e-{uuid.uuid4().hex[:10]}", cluster.workdir / "ledger")
