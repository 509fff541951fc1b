"""``kirby web``'s Celery tracker: task events in, run events out, and the expiry of unreceived tasks.

One ``kirby.celery.receiver.EventsReceiver`` per broker in use (``KIRBY_CELERY_BROKER_URL`` and the
values of the config keys of that name, looked at every ``brokers_every`` seconds) turns the task
events of Kirby's runs into ``task`` run events (``kirby.celery.events``, texts masked with every
secret config value) and publishes them on the bus, so the one events consumer of ``kirby web``
records them in order with the supervisors' events: one writer, no duplicate records.

Every ``sweep_every`` seconds, a Celery run still ``sent`` (no worker received it) more than
``margin`` seconds after its ``expires`` is recorded ``expired`` (counted as missed, notified):
its message may still sit in the broker, but a worker that takes it now revokes it unrun.
Without Celery installed, the tracker only sweeps (and says once that events are not received).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from kirby.celery.events import run_event
from kirby.celery.task import BROKER_KEY
from kirby.events import RunEvent
from kirby.models import ConfigKey, Run, RunState
from kirby.tasks.masking import Masker
from kirby.web.state import WebState

log = logging.getLogger(__name__)


class CeleryTracker:
    def __init__(self, state: WebState, margin: float = 5.0, sweep_every: float = 2.0, brokers_every: float = 30.0):
        self.state = state
        self.margin = timedelta(seconds=margin)
        self.sweep_every = sweep_every
        self.brokers_every = brokers_every
        self.masker = Masker()
        self.receivers: dict[str, object] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_no_celery = False

    # -- one step each (tested directly) ------------------------------------------------------------
    def brokers(self) -> set[str]:
        """The brokers in use; refreshes the masker with every secret config value."""
        with self.state.database.session() as s:
            urls = set(s.scalars(select(ConfigKey.value).where(ConfigKey.key == BROKER_KEY)))
            secrets = list(s.scalars(select(ConfigKey.value).where(ConfigKey.secret.is_(True))))
        self.masker = Masker(secrets)
        if self.state.settings.celery_broker_url:
            urls.add(self.state.settings.celery_broker_url)
        return {url for url in urls if url}

    def on_event(self, celery_event: dict) -> None:
        event = run_event(celery_event, self.masker)
        if event is not None:
            self.state.bus.publish_events([event])

    def sweep(self, now: datetime) -> list[str]:
        """Record ``expired`` the Celery runs still sent past their expires (+ margin); their ids."""
        with self.state.database.session() as s:
            rows = s.execute(
                select(Run.id, Run.expires_at).where(
                    Run.state == RunState.SENT, Run.expires_at.is_not(None), Run.expires_at < now - self.margin
                )
            ).all()
        events = [
            RunEvent(
                kind="task",
                run_id=run_id,
                time=now,
                data={
                    "state": "expired",
                    "text": f"expired: no Celery worker received the task before its expires ({expires.isoformat()})",
                },
            )
            for run_id, expires in rows
        ]
        if events:
            self.state.bus.publish_events(events)
            for event in events:
                log.warning("Celery run %s expired: no worker received it in time", event.run_id)
        return [event.run_id for event in events]

    def sync_receivers(self) -> None:
        """Start a receiver for each broker in use (stop those no longer used)."""
        wanted = self.brokers()
        if wanted and not self.receivers:
            if importlib.util.find_spec("celery") is None:
                if not self._said_no_celery:
                    log.warning("Celery jobs exist but Celery is not installed: pip install 'kirby[celery]'")
                    self._said_no_celery = True
                return
        from kirby.celery.receiver import EventsReceiver

        for url in wanted - set(self.receivers):
            receiver = self.receivers[url] = EventsReceiver(url, self.on_event)
            receiver.start()
        for url in set(self.receivers) - wanted:
            self.receivers.pop(url).stop()

    # -- thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kirby-celery-tracker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_sync = None
        while not self._stop.is_set():
            now = datetime.now(timezone.utc)
            try:
                if last_sync is None or (now - last_sync).total_seconds() >= self.brokers_every:
                    last_sync = now
                    self.sync_receivers()
                self.sweep(now)
            except Exception:  # noqa: BLE001 - keep tracking; the error is logged
                log.exception("Celery tracker step failed; retrying")
            self._stop.wait(self.sweep_every)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for receiver in self.receivers.values():
            receiver.stop(timeout)
