"""Delivering the outbox: ``Notifier.step(now)`` sends what is due; ``kirby web`` runs it in a thread.

Contract of one step (tested directly, with ``now`` passed in):

1. **Digests**: for each group, job and event with ``held`` rows whose cooldown has ended, the
   newest held row becomes a pending digest (``digest_count`` = how many were held) and the others
   ``digested`` into it.
2. **Claim**: due ``pending`` rows are claimed by a compare-and-set on ``locked_until`` (two web
   processes never send the same row at once).
3. **Cooldown**: a row (not a test, not a digest) whose group, job and event already sent a
   notification less than ``KIRBY_NOTIFY_COOLDOWN`` seconds ago is ``held`` instead.
4. **Send**: to each email address (``KIRBY_SMTP_URL``) and webhook of the group not yet served,
   retried in place (tenacity: ``tries`` attempts, exponential wait) on transient errors; every
   attempt is a ``notification_deliveries`` row. Sending happens outside any transaction.
5. **Outcome**: all targets served -> ``sent`` (``sent_at`` is the first success); targets left
   with transient errors -> retried from ``now + backoff(attempts)`` (durable: survives a restart),
   until ``max_attempts`` -> ``failed``. Permanent errors (no SMTP configured, HTTP 4xx) are not retried.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from kirby.clock import SYSTEM_CLOCK, Clock
from kirby.config import Settings
from kirby.db import Database
from kirby.models import Notification, NotificationDelivery
from kirby.notify import email, webhook
from kirby.notify.errors import DeliveryError, PermanentError, TransientError
from kirby.notify.message import Message, build

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    channel: str  # email | webhook
    address: str  # the email address or the webhook URL
    format: str = "json"
    secret: str = ""


def backoff(attempts: int) -> timedelta:
    """Wait before the next pass over a row that failed ``attempts`` times: 10 s doubling, at most 10 min."""
    return timedelta(seconds=min(600, 10 * 2 ** max(0, attempts - 1)))


class Notifier:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        clock: Clock = SYSTEM_CLOCK,
        poll: float = 1.0,
        tries: int = 3,
        wait: float = 0.5,
        max_attempts: int = 8,
        batch: int = 20,
        lock_seconds: float = 300.0,
    ):
        self.settings, self.database, self.clock = settings, database, clock
        self.poll, self.tries, self.wait = poll, tries, wait
        self.max_attempts, self.batch = max_attempts, batch
        self.lock = timedelta(seconds=lock_seconds)
        self.cooldown = timedelta(seconds=settings.notify_cooldown)
        self.smtp = email.parse_smtp_url(settings.smtp_url) if settings.smtp_url else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one step ---------------------------------------------------------------------------------
    def step(self, now: datetime) -> int:
        """Release digests, then deliver the due rows; returns how many rows were handled."""
        self.release_digests(now)
        claimed = self._claim_due(now)
        for notification_id in claimed:
            self._handle(notification_id, now)
        return len(claimed)

    def release_digests(self, now: datetime) -> int:
        released = 0
        with self.database.session() as s:
            held = s.execute(
                select(
                    Notification.group_id,
                    Notification.job_name,
                    Notification.event,
                    func.count(),
                    func.max(Notification.id),
                )
                .where(Notification.state == "held")
                .group_by(Notification.group_id, Notification.job_name, Notification.event)
            ).all()
            for group_id, job_name, event, count, newest in held:
                if self._recently_sent(s, group_id, job_name, event, now):
                    continue
                same = (
                    Notification.group_id == group_id,
                    Notification.job_name == job_name,
                    Notification.event == event,
                )
                s.execute(
                    update(Notification)
                    .where(*same, Notification.state == "held", Notification.id != newest)
                    .values(state="digested", digest_id=newest)
                )
                s.execute(
                    update(Notification)
                    .where(Notification.id == newest)
                    .values(state="pending", digest_count=count, next_attempt_at=now)
                )
                released += 1
        return released

    def _recently_sent(self, s, group_id, job_name, event, now: datetime, other_than: int | None = None) -> bool:
        query = select(Notification.id).where(
            Notification.group_id == group_id,
            Notification.job_name == job_name,
            Notification.event == event,
            Notification.sent_at > now - self.cooldown,
        )
        if other_than is not None:
            query = query.where(Notification.id != other_than)
        return s.scalar(query.limit(1)) is not None

    def _claim_due(self, now: datetime) -> list[int]:
        free = or_(Notification.locked_until.is_(None), Notification.locked_until < now)
        with self.database.session() as s:
            due = list(
                s.scalars(
                    select(Notification.id)
                    .where(Notification.state == "pending", Notification.next_attempt_at <= now, free)
                    .order_by(Notification.next_attempt_at, Notification.id)
                    .limit(self.batch)
                )
            )
            claimed = []
            for notification_id in due:
                result = s.execute(
                    update(Notification)
                    .where(Notification.id == notification_id, Notification.state == "pending", free)
                    .values(locked_until=now + self.lock)
                )
                if result.rowcount == 1:
                    claimed.append(notification_id)
        return claimed

    def _handle(self, notification_id: int, now: datetime) -> None:
        with self.database.session() as s:
            row = s.get(Notification, notification_id)
            if row is None:
                return
            if (
                row.event != "test"
                and row.digest_count == 0
                and self._recently_sent(s, row.group_id, row.job_name, row.event, now, other_than=row.id)
            ):
                row.state, row.locked_until = "held", None
                return
            message = build(s, row, self.settings.public_url)
            served = {d.target for d in row.deliveries if d.ok or d.permanent}
            targets = [t for t in self._targets(row) if t.address not in served]
            nothing = not row.deliveries and not targets
        attempts = [] if nothing else [a for target in targets for a in self._send(target, message)]
        with self.database.session() as s:
            row = s.get(Notification, notification_id)
            if row is None:  # its group was deleted meanwhile
                return
            s.add_all(NotificationDelivery(notification_id=row.id, **attempt) for attempt in attempts)
            s.flush()
            row.attempts += 1
            row.locked_until = None
            ok = [d for d in row.deliveries if d.ok]
            if ok and row.sent_at is None:
                row.sent_at = now
            left = {d.target for d in row.deliveries if not d.ok and not d.permanent} - {d.target for d in ok}
            failures = [d for d in attempts if not d["ok"]]
            row.last_error = failures[-1]["error"] if failures else ""
            if nothing:
                row.state, row.last_error = "failed", "the group has no email address and no webhook"
            elif not left:
                row.state = "sent" if ok else "failed"
            elif row.attempts >= self.max_attempts:
                row.state = "failed"
            else:
                row.next_attempt_at = now + backoff(row.attempts)
            outcome = row.state
        log.info("notification %s (%s of %s): %s", notification_id, message.event, message.run_id or "test", outcome)

    def _targets(self, row: Notification) -> list[Target]:
        group = row.group
        if group is None:
            return []
        return [Target("email", e.email) for e in group.emails] + [
            Target("webhook", w.url, w.format, w.secret) for w in group.webhooks
        ]

    def _send(self, target: Target, message: Message) -> list[dict]:
        """Send to one target, retrying transient errors in place; one record per attempt."""
        attempts: list[dict] = []

        def once() -> None:
            try:
                if target.channel == "email":
                    if self.smtp is None:
                        raise PermanentError("KIRBY_SMTP_URL is not set: Kirby cannot send emails")
                    email.send(self.smtp, self.settings.mail_from, target.address, message)
                else:
                    webhook.send(target.address, target.format, target.secret, message)
            except DeliveryError as exc:
                attempts.append(self._attempt(target, False, str(exc), isinstance(exc, PermanentError)))
                raise
            attempts.append(self._attempt(target, True, "", False))

        retrying = Retrying(
            stop=stop_after_attempt(self.tries),
            wait=wait_exponential(multiplier=self.wait, max=self.wait * 4),
            retry=retry_if_exception_type(TransientError),
            sleep=self._stop.wait,
            reraise=True,
        )
        try:
            retrying(once)
        except DeliveryError:
            pass
        return attempts

    def _attempt(self, target: Target, ok: bool, error: str, permanent: bool) -> dict:
        return {
            "channel": target.channel,
            "target": target.address,
            "time": self.clock.now(),
            "ok": ok,
            "error": error,
            "permanent": permanent,
        }

    # -- thread -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kirby-notifier", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.step(self.clock.now())
            except Exception:  # noqa: BLE001 - keep delivering; the error is logged
                log.exception("notifier step failed; retrying")
                handled = 0
            if not handled:
                self._stop.wait(self.poll)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
