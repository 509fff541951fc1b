"""The supervisor's side of a Celery run: ``CelerySender.send(offer)`` hands the task to its broker.

The task is sent with ``send_task(name, args, kwargs, task_id=<run id>, expires=<offer.not_after>,
headers={"kirby_epoch", "kirby_scheduled"}, queue/routing_key/priority when set)`` from a Celery
app built from the broker URL only (never the user's application), one per broker, reused across
sends. The broker is the run's config key ``KIRBY_CELERY_BROKER_URL`` when set, else the setting.

A broker that refuses or cannot be reached is retried ``EXT_RETRIES`` times,
``EXT_WAIT_BETWEEN_RETRIES`` s apart (kombu's publish retry), then ``send`` raises ``KirbyError``
with one line naming the task, the broker (password masked) and the reason. Celery is imported
on the first send, so a supervisor without ``kirby[celery]`` runs scripts as before.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

from kirby.celery.task import BROKER_KEY, HEADER_EPOCH, HEADER_SCHEDULED, CeleryTask
from kirby.config import Settings
from kirby.errors import KirbyError
from kirby.events import Offer

CONNECT_TIMEOUT = 5.0  # seconds to open a broker connection before the attempt counts as failed


def masked(url: str) -> str:
    """``url`` with its password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class CelerySender:
    """Sends the Celery runs of one supervisor (thread-safe)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._apps: dict[str, Any] = {}
        self._lock = threading.Lock()

    def broker_of(self, offer: Offer) -> str:
        broker = offer.config.get(BROKER_KEY) or self.settings.celery_broker_url
        if not broker:
            raise KirbyError(
                f"run {offer.run_id}: no Celery broker: set KIRBY_CELERY_BROKER_URL on the supervisors,"
                " or as a config key of the job or context"
            )
        return broker

    def _app(self, broker: str) -> Any:
        with self._lock:
            app = self._apps.get(broker)
            if app is None:
                try:
                    from celery import Celery
                except ImportError:
                    raise KirbyError(
                        "Celery is not installed on this supervisor: pip install 'kirby[celery]'"
                    ) from None
                app = Celery("kirby-sender", broker=broker, set_as_current=False)
                app.conf.update(
                    broker_connection_timeout=CONNECT_TIMEOUT,
                    broker_transport_options={"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": 10},
                    task_create_missing_queues=True,
                )
                self._apps[broker] = app
            return app

    def send(self, offer: Offer) -> datetime | None:
        """Send ``offer``'s task; returns its ``expires`` (None: it never expires). Raises KirbyError."""
        task = CeleryTask.from_dict(offer.celery or {})
        broker = self.broker_of(offer)
        app = self._app(broker)
        options: dict[str, Any] = {}
        for name in ("queue", "routing_key", "priority"):
            if getattr(task, name) is not None:
                options[name] = getattr(task, name)
        wait = self.settings.ext_wait_between_retries
        policy = {"max_retries": self.settings.ext_retries, "interval_start": wait, "interval_step": 0}
        policy["interval_max"] = wait
        try:
            app.send_task(
                task.name,
                args=list(task.args),
                kwargs=dict(task.kwargs),
                task_id=offer.run_id,
                expires=offer.not_after,
                headers={
                    HEADER_EPOCH: offer.epoch,
                    HEADER_SCHEDULED: offer.scheduled_at.isoformat(),
                },
                retry=True,
                retry_policy=policy,
                **options,
            )
        except Exception as exc:  # kombu's OperationalError, a socket error, a refused publish, ...
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise KirbyError(
                f"could not send Celery task {task.name} of run {offer.run_id} to {masked(broker)} after"
                f" {self.settings.ext_retries} retries: {reason}; check that the broker is up and"
                " KIRBY_CELERY_BROKER_URL"
            ) from None
        return offer.not_after

    def close(self) -> None:
        with self._lock:
            apps, self._apps = list(self._apps.values()), {}
        for app in apps:
            try:
                app.close()
            except Exception:  # noqa: BLE001 - closing pools at shutdown; nothing to do about it
                pass
