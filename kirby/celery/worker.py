"""The worker's side: ``kirby.celery.install(app)`` runs each delivery of a Kirby run's task once.

Before the body of a task that Kirby sent (its message carries the ``kirby_scheduled`` header), the
worker claims ``celery:<task id>:<retries>`` in Kirby's lease store (``claim_delivery``: one
``SET NX`` on the same Redis, kept ``DELIVERY_TTL``). The first delivery wins and runs; a second
delivery of the same task id and retry count (a Redis visibility timeout, ``acks_late`` after a
lost worker, a re-published message) is dropped: the body does not run, the message is
acknowledged (Celery's ``Ignore``), a warning is logged and a ``task-kirby-duplicate`` event is sent,
which ``kirby web`` records as a line of the run's log. ``task.retry()`` is a new delivery with a
higher retry count, so retries run. Tasks Kirby did not send (no header) are not touched.

The hook is the task class's ``before_start`` (Celery >= 5.2 calls it inside the traced call,
before the body; raising ``Ignore`` there skips the body), added to every task of the app when the
app is finalized and again at ``worker_init``, so tasks defined with their own ``base=`` get it too.

The claim is taken before the body, so a worker killed mid-task leaves it taken: a redelivery of
that task is dropped (at most once, like a script whose supervisor died). If the lease store cannot
be reached the task fails (it does not run unclaimed) with the store's one-line error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import signals
from celery.exceptions import Ignore

from kirby.celery.task import HEADER_SCHEDULED
from kirby.config import load_settings
from kirby.lease import open_lease_store
from kirby.lease.base import LeaseStore

log = logging.getLogger(__name__)

DELIVERY_TTL = 7 * 24 * 3600.0  # seconds a delivery claim is kept (longer than any redelivery)
DUPLICATE_EVENT = "task-kirby-duplicate"


class DeliveryClaims:
    """The lease store of this worker process, opened on first use (after a prefork fork)."""

    def __init__(self, redis_url: str | None = None):
        self.redis_url = redis_url
        self._store: LeaseStore | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def store(self) -> LeaseStore:
        with self._lock:
            if self._store is None or self._pid != os.getpid():  # never share a connection across fork
                environ = dict(os.environ)
                if self.redis_url:
                    environ["REDIS_URL"] = self.redis_url
                self._store, self._pid = open_lease_store(load_settings(environ)), os.getpid()
            return self._store

    def claim(self, task_id: str, retries: int, owner: str) -> str | None:
        """None when this delivery is the first; else who took it."""
        return self.store().claim_delivery(f"celery:{task_id}:{retries}", owner, DELIVERY_TTL)


def _header(request: Any, name: str) -> Any:
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def _owner(request: Any) -> str:
    return f"{getattr(request, 'hostname', None) or socket.gethostname()}:{os.getpid()}"


def claim_or_drop(task: Any, task_id: str, claims: DeliveryClaims) -> None:
    """Claim this delivery of ``task`` (a bound Celery task); raise ``Ignore`` for a duplicate."""
    request = task.request
    if _header(request, HEADER_SCHEDULED) is None:
        return  # not sent by Kirby
    retries = int(getattr(request, "retries", 0) or 0)
    holder = claims.claim(task_id, retries, _owner(request))
    if holder is None:
        return
    log.warning(
        "kirby: dropped a second delivery of task %s (run %s, retry %d): already run by %s",
        task.name,
        task_id,
        retries,
        holder,
    )
    try:
        task.send_event(DUPLICATE_EVENT, holder=holder, retries=retries)
    except Exception:  # noqa: BLE001 - the drop matters, the record of it is best effort
        log.exception("kirby: could not send the %s event of task %s", DUPLICATE_EVENT, task_id)
    raise Ignore()


def patch_task_class(cls: type, claims: DeliveryClaims) -> None:
    """Give ``cls`` (a task's class) a ``before_start`` that claims the delivery first. Idempotent."""
    if cls.__dict__.get("_kirby_claims") is not None:
        return
    original = cls.before_start

    def before_start(self, task_id, args, kwargs):
        claim_or_drop(self, task_id, claims)
        return original(self, task_id, args, kwargs)

    before_start.__module__ = __name__
    cls.before_start = before_start
    cls._kirby_claims = claims


def patch_tasks(app: Any, claims: DeliveryClaims) -> None:
    for task in list(app.tasks.values()):
        patch_task_class(type(task), claims)


def install(app: Any, redis_url: str | None = None) -> DeliveryClaims:
    """See ``kirby.celery.install``. Returns the claims object (tests use it)."""
    existing = getattr(app, "_kirby_claims", None)
    if existing is not None:
        return existing
    claims = DeliveryClaims(redis_url)
    app._kirby_claims = claims
    app.on_after_finalize.connect(lambda sender=None, **_: patch_tasks(app, claims), weak=False)

    def on_worker_init(sender=None, **_):
        if getattr(sender, "app", app) is app:
            patch_tasks(app, claims)

    signals.worker_init.connect(on_worker_init, weak=False)
    if app.finalized:
        patch_tasks(app, claims)
    return claims
