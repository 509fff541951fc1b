"""The web process's background thread: persist run events from the bus, and mark lost runs.

``EventsConsumer.step(now)`` is one iteration (tested directly, no sleeping): it polls a batch of
run events (group ``kirby-web``), records them (``kirby.recorder.record``; one transaction per
``lines_per_transaction`` log lines or so) and acknowledges them only after the commits (at most
``KIRBY_MAX_LOG_LINES_PER_RUN`` lines per run), so a crash between the two means a redelivery,
which recording absorbs. A batch that fails to record is not acknowledged: the consumer is closed (its
events go back to the group) and reopened.

Every ``lost_check_every`` seconds it also settles the runs of dead supervisor instances
(``kirby.supervisor.settling``): a claim whose instance is gone from the registry is re-offered
under the same run id if it never started, and recorded ``lost`` (with a ``system`` log line naming
the holder and when it was last seen, ``kirby.recorder.mark_lost``) if it did, whatever name comes
back and however old it is. Runs ``claimed`` or ``running`` in the database whose claim names no
instance (made before instances were recorded, or forgotten by the store) are marked lost once
their supervisor's name has been missing from the registry for longer than ``grace`` seconds.

``ready`` is set once the bus consumer is open (``kirby web`` waits for it before serving, so no
run starts before its events can be recorded). ``health()`` (any thread) says whether the consumer is open and how many partitions of the events
topic it holds: 0 means new run events are not recorded (``/healthz`` says ``degraded``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from kirby.events import RunEvent
from kirby.lease.base import Claim
from kirby.models import Run, RunState
from kirby.recorder import mark_lost, record
from kirby.supervisor.identity import live_instances
from kirby.supervisor.settling import Settler
from kirby.web.state import WebState

log = logging.getLogger(__name__)


def web_group(settings) -> str:
    """The consumer group of the web processes of one cluster: named after its events topic, so
    clusters sharing a Kafka do not share (and split) each other's events."""
    return f"{settings.topic_run_events}.web"


def _parts(events: list[RunEvent], lines: int) -> list[list[RunEvent]]:
    """``events`` in order, cut into parts of about ``lines`` log lines at most (an event is never
    split): each part is one transaction, so a backlog of log lines is stored (and streamed live)
    as it goes rather than in one long transaction."""
    parts, current, count = [], [], 0
    for event in events:
        size = len(event.data.get("texts") or ()) or 1
        if current and count + size > lines:
            parts.append(current)
            current, count = [], 0
        current.append(event)
        count += size
    return [*parts, current] if current else parts


class EventsConsumer:
    def __init__(
        self,
        state: WebState,
        member: str | None = None,
        batch: int = 500,
        lines_per_transaction: int = 20_000,
        poll_timeout: float = 0.5,
        grace: float = 60.0,
        lost_check_every: float = 10.0,
    ):
        self.state = state
        self.member = member or f"web-{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.lines_per_transaction = lines_per_transaction
        self.poll_timeout = poll_timeout
        self.grace = timedelta(seconds=grace)
        self.lost_check_every = timedelta(seconds=lost_check_every)
        self._consumer = None
        self._missing_since: dict[str, datetime] = {}
        self._settler: Settler | None = None
        self._last_lost_check: datetime | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once the bus consumer is open (on Kafka: holding partitions)
        self._thread: threading.Thread | None = None

    # -- one iteration ----------------------------------------------------------------------------
    def consume_once(self, timeout: float | None = None) -> int:
        """Poll, record and acknowledge one batch; returns how many events were recorded."""
        if self._consumer is None:
            self._consumer = self.state.bus.event_consumer(group=web_group(self.state.settings), member=self.member)
            self.ready.set()
        deliveries = self._consumer.poll(self.poll_timeout if timeout is None else timeout, self.batch)
        if not deliveries:
            return 0
        try:
            for part in _parts([d.message for d in deliveries], self.lines_per_transaction):
                with self.state.database.session() as s:
                    record(s, part, max_lines=self.state.settings.max_log_lines_per_run)
        except Exception:
            log.exception("could not record %d run events; they will be redelivered", len(deliveries))
            self._reopen()
            raise
        self._consumer.ack_all(deliveries)  # one round trip on Kafka, not one per event
        return len(deliveries)

    def health(self) -> dict:
        """``topic``; ``open`` (False while joining the group); ``partitions`` held (None: not open
        yet, or a bus without partitions)."""
        consumer = self._consumer
        return {
            "topic": self.state.settings.topic_run_events,
            "open": consumer is not None,
            "partitions": consumer.partitions() if consumer is not None else None,
        }

    def check_lost(self, now: datetime) -> list[str]:
        """Settle the runs of dead instances; mark lost the unsettled runs of long-missing names."""
        lost: list[str] = []

        def record_lost(claim: Claim, reason: str) -> None:
            with self.state.database.session() as s:
                run = s.get(Run, claim.run_id)
                if run is None:  # its events never arrived: a row made from the run id
                    event = RunEvent("lost", claim.run_id, now, claim.supervisor, {"error": reason})
                    record(s, [event])
                elif not run.state.finished:
                    run.supervisor = run.supervisor or claim.supervisor
                    mark_lost(s, run, now, reason)
                else:
                    return
            lost.append(claim.run_id)

        if self._settler is None:
            self._settler = Settler(self.state.lease_store, self.state.bus, clock=lambda: now)
        self._settler.clock, self._settler.record_lost = (lambda: now), record_lost
        self._settler.settle()
        lost += self._lost_by_name(now)
        for run_id in lost:
            log.warning("run %s marked lost: its supervisor is gone", run_id)
        return lost

    def _lost_by_name(self, now: datetime) -> list[str]:
        """Active runs the settler does not decide about, lost once missing for ``grace``: those whose
        claim names no instance (by supervisor name), and those whose claim was settled by an instance
        now dead while the database still shows them active (their result died with it)."""
        registrations = self.state.lease_store.supervisors()
        alive, live = {s.name for s in registrations}, live_instances(registrations)
        lost, keys = [], {}  # run id -> what must stay missing for the grace (a name, or the run)
        with self.state.database.session() as s:
            # A Celery run runs on a Celery worker, not on its supervisor: only its send can be lost.
            active = list(
                s.scalars(
                    select(Run).where(
                        Run.state.in_([RunState.CLAIMED, RunState.RUNNING]),
                        (Run.celery_task == "") | (Run.state == RunState.CLAIMED),
                    )
                )
            )
            for run in active:
                claim = self.state.lease_store.get_claim(run.id)
                if claim is not None and claim.instance:
                    if claim.settled and claim.instance not in live:
                        keys[run.id] = f"run:{run.id}"
                elif run.supervisor and run.supervisor not in alive:
                    keys[run.id] = run.supervisor
            self._missing_since = {key: self._missing_since.get(key, now) for key in keys.values()}
            for run in active:
                since = self._missing_since.get(keys.get(run.id, ""))
                if since is not None and now - since >= self.grace:
                    reason = (
                        f"Kirby: supervisor {run.supervisor} stopped heartbeating at about "
                        f"{since:%Y-%m-%d %H:%M:%S}Z; this run is recorded as lost."
                    )
                    mark_lost(s, run, now, reason)
                    lost.append(run.id)
        return lost

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
        try:  # open the lease store before joining the group: its first use takes a while
            self.state.lease_store.supervisors()
        except Exception:  # noqa: BLE001 - check_lost reports it; consuming must not wait for it
            log.exception("the lease store did not answer; marking lost runs will retry")
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
