"""A small Celery app for the tests: what a user's ``celery.py`` looks like with Kirby installed.

Its task ``kirby_test.ledger`` appends ``<task id> <retries> <pid> <time>`` to ``TEST_CELERY_LEDGER``
(one line per body run: the tests count runs from it), sleeps ``sleep`` seconds, and fails when
asked. The broker and the queue come from ``TEST_CELERY_BROKER`` and ``TEST_CELERY_QUEUE``;
Kirby's lease store from ``REDIS_URL`` / ``KIRBY_REDIS_PREFIX`` (as a Kirby supervisor's).
"""

from __future__ import annotations

import os
import time

from celery import Celery

import kirby.celery

app = Celery("kirby_test_celery", broker=os.environ["TEST_CELERY_BROKER"])
kirby.celery.install(app)  # the one line
app.conf.update(
    task_default_queue=os.environ.get("TEST_CELERY_QUEUE", "celery"),
    worker_send_task_events=True,
    worker_prefetch_multiplier=1,
    task_acks_late=os.environ.get("TEST_CELERY_ACKS_LATE") == "1",
    broker_transport_options={"visibility_timeout": float(os.environ.get("TEST_CELERY_VISIBILITY", "3600"))},
    broker_connection_retry_on_startup=True,
)


@app.task(name="kirby_test.ledger", bind=True)
def ledger(self, label: str = "", sleep: float = 0.0, fail: bool = False, retry: int = 0):
    with open(os.environ["TEST_CELERY_LEDGER"], "a") as ledger_file:
        ledger_file.write(f"{self.request.id} {self.request.retries} {os.getpid()} {time.time():.6f}\n")
    if sleep:
        time.sleep(sleep)
    if self.request.retries < retry:
        raise self.retry(countdown=0.2, max_retries=retry)
    if fail:
        raise ValueError(f"asked to fail ({label})")
    return {"label": label, "retries": self.request.retries}
