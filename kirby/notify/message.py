"""What a notification says: ``build(session, notification, public_url)`` -> :class:`Message`.

Built when it is delivered (so the log tail is complete), from the outbox row, its run and the
run's last ``LOG_TAIL`` log lines. Log lines are stored masked already; the tail and the error
are masked once more against the job's secret config values (defence in depth: a secret added
after the run still never leaves in a notification).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from kirby.logstore import last_lines
from kirby.models import ConfigKey, ConfigScope, Context, Job, Notification, Run
from kirby.tasks.masking import Masker

LOG_TAIL = 20
TITLES = {
    "failed": "failed",
    "timed_out": "timed out",
    "lost": "was lost",
    "missed": "missed a slot",
    "suspended": "skipped a slot (suspended)",
    "crash_loop": "is crash-looping",
    "recovered": "recovered",
    "test": "test notification",
}


@dataclass(frozen=True)
class Message:
    """The facts of one notification; ``as_json()`` is the documented webhook body."""

    key: str
    event: str
    title: str
    job: str
    environment: str
    group: str
    detail: str
    run_id: str | None = None
    state: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_seconds: float | None = None
    supervisor: str | None = None
    scheduled_at: str | None = None
    finished_at: str | None = None
    error: str = ""
    log_tail: list[str] = field(default_factory=list)
    run_url: str | None = None
    logs_url: str | None = None
    digest_count: int = 0
    digest_run_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"kirby_notification": 1, **asdict(self)}

    @property
    def subject(self) -> str:
        more = f" (+{self.digest_count - 1} more)" if self.digest_count > 1 else ""
        return f"[Kirby] {self.title}{more}"

    def text(self) -> str:
        """The plain-text body of emails (and of the Slack and Teams formats)."""
        lines = [self.title, ""]
        if self.detail:
            lines += [self.detail, ""]
        facts = [
            ("Job", self.job),
            ("Environment", self.environment),
            ("Run", self.run_id),
            ("State", self.state),
            ("Exit code", self.exit_code),
            ("Signal", self.signal),
            ("Duration", None if self.duration_seconds is None else f"{self.duration_seconds:.1f} s"),
            ("Supervisor", self.supervisor),
            ("Scheduled", self.scheduled_at),
            ("Finished", self.finished_at),
            ("Error", self.error or None),
            ("Group", self.group),
        ]
        lines += [f"{name}: {value}" for name, value in facts if value not in (None, "")]
        if self.digest_count > 1:
            lines += ["", f"Digest: {self.digest_count} notifications of this event during the cooldown:"]
            lines += [f"  {run_id}" for run_id in self.digest_run_ids]
        if self.log_tail:
            lines += ["", f"Last {len(self.log_tail)} log lines:"] + [f"  {line}" for line in self.log_tail]
        if self.run_url:
            lines += ["", f"Run: {self.run_url}", f"Logs: {self.logs_url}"]
        return "\n".join(lines) + "\n"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def build(session: Session, notification: Notification, public_url: str) -> Message:
    group = notification.group.name if notification.group else ""
    run = session.get(Run, notification.run_id) if notification.run_id else None
    where = f"{notification.job_name} in {notification.environment}"
    title = (
        f"Kirby test notification ({group})"
        if notification.event == "test"
        else f"{where} {TITLES[notification.event]}"
    )
    if run is None:
        return Message(
            notification.key,
            notification.event,
            title,
            notification.job_name,
            notification.environment,
            group,
            notification.detail,
            run_id=notification.run_id,
        )
    mask = _masker(session, run)
    tail = [line.text for line in last_lines(session, run.id, LOG_TAIL)]
    digest = []
    if notification.digest_count > 1:
        digest = list(
            session.scalars(
                select(Notification.run_id)
                .where(or_(Notification.digest_id == notification.id, Notification.id == notification.id))
                .order_by(Notification.id)
            )
        )
    return Message(
        key=notification.key,
        event=notification.event,
        title=title,
        job=run.job_name,
        environment=run.environment,
        group=group,
        detail=mask(notification.detail),
        run_id=run.id,
        state=run.state.value if hasattr(run.state, "value") else str(run.state),
        exit_code=run.exit_code,
        signal=run.signal,
        duration_seconds=run.duration_seconds,
        supervisor=run.supervisor,
        scheduled_at=_iso(run.scheduled_at),
        finished_at=_iso(run.finished_at),
        error=mask(run.error or ""),
        log_tail=[mask(line) for line in tail],
        run_url=f"{public_url}/admin/run/details/?id={quote(run.id, safe='')}",
        logs_url=f"{public_url}/admin/logs/?run={quote(run.id, safe='')}",
        digest_count=notification.digest_count,
        digest_run_ids=[run_id for run_id in digest if run_id],
    )


def _masker(session: Session, run: Run) -> Masker:
    """Masks the secret config values a run of ``run``'s job could see (global, job, its contexts)."""
    job_id = session.scalar(select(Job.id).where(Job.name == run.job_name))
    scopes = [ConfigKey.scope == ConfigScope.GLOBAL]
    if job_id is not None:
        contexts = select(Context.id).where(Context.job_id == job_id)
        scopes += [ConfigKey.job_id == job_id, ConfigKey.context_id.in_(contexts)]
    return Masker(session.scalars(select(ConfigKey.value).where(ConfigKey.secret.is_(True), or_(*scopes))))
