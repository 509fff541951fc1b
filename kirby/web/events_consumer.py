"""The web process's background thread: persist run events from the bus, and mark lost runs.

``EventsConsumer.step(now)`` is one iteration (tested directly, no sleeping): it polls a batch of
run events (group ``kirby-web``), records them in one transaction (``kirby.recorder.record``) and
acknowledges them only after the commit (at most ``KIRBY_MAX_LOG_LINES_PER_RUN`` lines per run), so a crash between the two means a redelivery, which
recording absorbs. A batch that fails to record is not acknowledged: the consumer is closed (its
events go back to the group) and reopened.

Every ``lost_check_every`` seconds it also marks ``lost`` each run ``claimed`` or ``running``
whose supervisor has been missing from the lease store's registry for longer than ``grace``
seconds, with a ``system`` log line saying so (``kirby.recorder.mark_lost``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from kirby.models import Run, RunState
from kirby.recorder import mark_lost, record
from kirby.web.state import WebState

log = logging.getLogger(__name__)


def web_group(settings) -> str:
    """The consumer group of the web processes of one cluster: named after its events topic, so
    clusters sharing a Kafka do not share (and split) each other's events."""
    return f"{settings.topic_run_events}.web"


class EventsConsumer:
    def __init__(
        self,
        state: WebState,
        member: str | None = None,
        batch: int = 500,
        poll_timeout: float = 0.5,
        grace: float = 60.0,
        lost_check_every: float = 10.0,
    ):
        self.state = state
        self.member = member or f"web-{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.poll_timeout = poll_timeout
        self.grace = timedelta(seconds=grace)
        self.lost_check_every = timedelta(seconds=lost_check_every)
        self._consumer = None
        self._missing_since: dict[str, datetime] = {}
        self._last_lost_check: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one iteration ----------------------------------------------------------------------------
    def consume_once(self, timeout: float | None = None) -> int:
        """Poll, record and acknowledge one batch; returns how many events were recorded."""
        if self._consumer is None:
            self._consumer = self.state.bus.event_consumer(group=web_group(self.state.settings), member=self.member)
        deliveries = self._consumer.poll(self.poll_timeout if timeout is None else timeout, self.batch)
        if not deliveries:
            return 0
        try:
            with self.state.database.session() as s:
                record(s, [d.message for d in deliveries], max_lines=self.state.settings.max_log_lines_per_run)
        except Exception:
            log.exception("could not record %d run events; they will be redelivered", len(deliveries))
            self._reopen()
            raise
        for delivery in deliveries:
            self._consumer.ack(delivery)
        return len(deliveries)

    def check_lost(self, now: datetime) -> list[str]:
        """Mark lost the active runs whose supervisor is missing for longer than the grace."""
        alive = {s.name for s in self.state.lease_store.supervisors()}
        with self.state.database.session() as s:
            active = list(s.scalars(select(Run).where(Run.state.in_([RunState.CLAIMED, RunState.RUNNING]))))
            active += self._claimed_but_unrecorded(s, now)
            missing = {run.supervisor for run in active if run.supervisor and run.supervisor not in alive}
            self._missing_since = {name: self._missing_since.get(name, now) for name in missing}
            lost = []
            for run in active:
                since = self._missing_since.get(run.supervisor or "")
                if since is not None and now - since >= self.grace:
                    reason = (
                        f"Kirby: supervisor {run.supervisor} stopped heartbeating at about "
                        f"{since:%Y-%m-%d %H:%M:%S}Z; this run is recorded as lost."
                    )
                    mark_lost(s, run, now, reason)
                    lost.append(run.id)
        for run_id in lost:
            log.warning("run %s marked lost: its supervisor is gone", run_id)
        return lost

    def _claimed_but_unrecorded(self, session, now: datetime) -> list[Run]:
        """Offered runs whose claim (in the lease store) names a supervisor: their ``claimed`` event
        was lost, e.g. with a supervisor killed before it published it. The claim tells who had them."""
        cutoff = now - self.grace
        offered = session.scalars(
            select(Run)
            .where(Run.state == RunState.OFFERED, Run.offered_at < cutoff, Run.offered_at > cutoff - timedelta(hours=1))
            .order_by(Run.offered_at)
            .limit(500)
        )
        found = []
        for run in offered:
            claim = self.state.lease_store.get_claim(run.id)
            if claim is not None:
                run.supervisor = claim.supervisor
                found.append(run)
        return found

    def step(self, now: datetime) -> int:
        count = self.consume_once()
        if self._last_lost_check is None or now - self._last_lost_check >= self.lost_check_every:
            self._last_lost_check = now
            self.check_lost(now)
        return count

    # -- thread -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kirby-web-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(datetime.now(timezone.utc))
            except Exception:  # noqa: BLE001 - keep consuming; the error is logged
                log.exception("run events consumer step failed; retrying")
                self._stop.wait(1.0)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _reopen(self) -> None:
        try:
            if self._consumer is not None:
                self._consumer.close()
        finally:
            self._consumer = None
