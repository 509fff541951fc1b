"""The script database: SQLAlchemy 2 models. No Flask imports; works on SQLite and PostgreSQL.

Config precedence (documented in the README): a key set on a context overrides the same key on
its job, which overrides the global key. Secret keys are masked everywhere but in the run's
environment.

Run identity (``kirby.run_ids``): each attempt is its own row whose ``id`` is the run id and whose
``slot_id`` is the id shared by its attempts. States, kinds and policies live in
``kirby.vocabulary``, the clock in ``kirby.clock``; this module holds only the tables.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from kirby.clock import utcnow
from kirby.cron import DstPolicy, FallBack, SpringForward

# The vocabulary is re-exported: the web and the admin read it together with the tables.
from kirby.vocabulary import (  # noqa: F401
    FINISHED_STATES,
    CatchUp,
    ConfigScope,
    JobType,
    OnLost,
    Overlap,
    Provider,
    Role,
    RunState,
)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite drops tzinfo; this restores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError(f"naive datetime {value!r}: Kirby stores aware UTC datetimes only")
            value = value.astimezone(timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:  # naive from SQLite; in the session's time zone from PostgreSQL
            value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")

    contexts: Mapped[list[Context]] = relationship(back_populates="environment", cascade="all, delete-orphan")

    def __str__(self) -> str:
        return self.name


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[JobType] = mapped_column(_enum(JobType, "job_type"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Module run with ``python -m``; empty means derived from the package name.
    module: Mapped[str] = mapped_column(String(255), default="")
    # Unprivileged user this job's runs switch to instead of KIRBY_RUN_USER (set by admins only).
    run_as: Mapped[str | None] = mapped_column(String(32), nullable=True, default=None)
    # A Celery job (kirby.celery.task): the task it sends instead of running a package ("" for a
    # script job). args/kwargs are JSON text; queue/routing key empty means the task's defaults.
    celery_task: Mapped[str] = mapped_column(String(255), default="", server_default="")
    celery_args: Mapped[str] = mapped_column(Text, default="", server_default="")
    celery_kwargs: Mapped[str] = mapped_column(Text, default="", server_default="")
    celery_queue: Mapped[str] = mapped_column(String(255), default="", server_default="")
    celery_routing_key: Mapped[str] = mapped_column(String(255), default="", server_default="")
    celery_priority: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)

    contexts: Mapped[list[Context]] = relationship(back_populates="job", cascade="all, delete-orphan")
    config: Mapped[list[ConfigKey]] = relationship(
        back_populates="job", cascade="all, delete-orphan", foreign_keys="ConfigKey.job_id"
    )
    notifications: Mapped[list[JobNotification]] = relationship(back_populates="job", cascade="all, delete-orphan")
    suspensions: Mapped[list[Suspension]] = relationship(back_populates="job", cascade="all, delete-orphan")

    def __str__(self) -> str:
        return self.name


class Context(Base):
    """A job in an environment, with the pinned package version to run there."""

    __tablename__ = "contexts"
    __table_args__ = (UniqueConstraint("job_id", "environment_id", name="uq_context_job_environment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    package_name: Mapped[str] = mapped_column(String(128), default="")  # "" on a Celery job's context
    package_version: Mapped[str] = mapped_column(String(64), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    job: Mapped[Job] = relationship(back_populates="contexts")
    environment: Mapped[Environment] = relationship(back_populates="contexts")
    schedules: Mapped[list[Schedule]] = relationship(back_populates="context", cascade="all, delete-orphan")
    config: Mapped[list[ConfigKey]] = relationship(
        back_populates="context", cascade="all, delete-orphan", foreign_keys="ConfigKey.context_id"
    )

    def __str__(self) -> str:
        return f"{self.job.name}:{self.environment.name}" if self.job and self.environment else f"context {self.id}"


class Schedule(Base):
    """When a scheduled context runs, and the policies of its runs."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    # 5 fields, or 6 with a trailing seconds field (croniter's form).
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    misfire_grace_seconds: Mapped[int] = mapped_column(Integer, default=300)
    catchup: Mapped[CatchUp] = mapped_column(_enum(CatchUp, "catchup_policy"), default=CatchUp.LATEST)
    overlap: Mapped[Overlap] = mapped_column(_enum(Overlap, "overlap_policy"), default=Overlap.FORBID)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    # DST policy (see kirby.cron): "auto" decides by the hour field.
    dst_fall_back: Mapped[FallBack] = mapped_column(_enum(FallBack, "dst_fall_back"), default=FallBack.AUTO)
    dst_spring_forward: Mapped[SpringForward] = mapped_column(
        _enum(SpringForward, "dst_spring_forward"), default=SpringForward.AUTO
    )
    on_lost: Mapped[OnLost] = mapped_column(
        _enum(OnLost, "on_lost_policy"), default=OnLost.SKIP, server_default=OnLost.SKIP.value
    )

    context: Mapped[Context] = relationship(back_populates="schedules")

    @property
    def dst(self) -> DstPolicy:
        """The DST policy to pass to ``kirby.cron`` (unset columns: auto)."""
        return DstPolicy(
            FallBack(self.dst_fall_back or FallBack.AUTO).value,
            SpringForward(self.dst_spring_forward or SpringForward.AUTO).value,
        )


class Suspension(Base):
    """A pause window: no slot of the job (or of every job, when job is null) in [starts_at, ends_at)."""

    __tablename__ = "suspensions"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(255), default="")

    job: Mapped[Job | None] = relationship(back_populates="suspensions")


class ConfigKey(Base):
    """One environment variable given to runs, at global, job or context scope."""

    __tablename__ = "config_keys"
    __table_args__ = (
        # One key per scope owner. Partial indexes: a plain unique constraint would let NULL
        # job/context ids make every global key "distinct".
        Index(
            "uq_config_global_key",
            "key",
            unique=True,
            sqlite_where=text("scope = 'global'"),
            postgresql_where=text("scope = 'global'"),
        ),
        Index(
            "uq_config_job_key",
            "job_id",
            "key",
            unique=True,
            sqlite_where=text("scope = 'job'"),
            postgresql_where=text("scope = 'job'"),
        ),
        Index(
            "uq_config_context_key",
            "context_id",
            "key",
            unique=True,
            sqlite_where=text("scope = 'context'"),
            postgresql_where=text("scope = 'context'"),
        ),
        Index("ix_config_job", "job_id"),
        Index("ix_config_context", "context_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[ConfigScope] = mapped_column(_enum(ConfigScope, "config_scope"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True)
    context_id: Mapped[int | None] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), nullable=True)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text, default="")
    secret: Mapped[bool] = mapped_column(Boolean, default=False)

    job: Mapped[Job | None] = relationship(back_populates="config", foreign_keys=[job_id])
    context: Mapped[Context | None] = relationship(back_populates="config", foreign_keys=[context_id])


class NotificationGroup(Base):
    __tablename__ = "notification_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)

    emails: Mapped[list[NotificationEmail]] = relationship(back_populates="group", cascade="all, delete-orphan")
    webhooks: Mapped[list[NotificationWebhook]] = relationship(back_populates="group", cascade="all, delete-orphan")
    jobs: Mapped[list[JobNotification]] = relationship(back_populates="group", cascade="all, delete-orphan")

    def __str__(self) -> str:
        return self.name


class NotificationEmail(Base):
    __tablename__ = "notification_emails"
    __table_args__ = (UniqueConstraint("group_id", "email", name="uq_notification_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("notification_groups.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(255))

    group: Mapped[NotificationGroup] = relationship(back_populates="emails")


class NotificationWebhook(Base):
    """A URL a group's notifications are POSTed to (``kirby.notify.webhook``); ``secret`` signs them."""

    __tablename__ = "notification_webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("notification_groups.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(1000))
    format: Mapped[str] = mapped_column(String(16), default="json")  # json | slack | teams
    secret: Mapped[str] = mapped_column(String(255), default="")

    group: Mapped[NotificationGroup] = relationship(back_populates="webhooks")


class JobNotification(Base):
    """Which group a job notifies, and on what."""

    __tablename__ = "job_notifications"
    __table_args__ = (UniqueConstraint("job_id", "group_id", name="uq_job_notification"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    group_id: Mapped[int] = mapped_column(ForeignKey("notification_groups.id", ondelete="CASCADE"))
    on_failure: Mapped[bool] = mapped_column(Boolean, default=True)
    on_missed: Mapped[bool] = mapped_column(Boolean, default=True)
    on_lost: Mapped[bool] = mapped_column(Boolean, default=True)
    on_recovery: Mapped[bool] = mapped_column(Boolean, default=True)
    on_daemon: Mapped[bool] = mapped_column(Boolean, default=True)
    on_suspended: Mapped[bool] = mapped_column(Boolean, default=False)  # slots skipped by a suspension

    job: Mapped[Job] = relationship(back_populates="notifications")
    group: Mapped[NotificationGroup] = relationship(back_populates="jobs")


class ScheduleVersion(Base):
    """One row whose ``version`` grows with every write to a table the schedule document reads.

    Database triggers (migration 0013) bump it inside the writing transaction, whoever writes
    (the admin, the REST API, ``kirby demo``, plain SQL): ``/schedule`` derives its ETag from it
    without reading the schedule. ``generation`` is random per database, so a fresh database
    never repeats an old one's ETags.
    """

    __tablename__ = "schedule_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    generation: Mapped[str] = mapped_column(String(32))
    stamp: Mapped[str] = mapped_column(String(16), server_default="")  # random, drawn at every bump (0014)


class ScheduleChange(Base):
    """What one write to a schedule table touched, logged by the triggers of migration 0014.

    ``version``/``stamp``: the schedule version it was written under. The owners touched: a
    context, a job (its contexts), an environment (its contexts), or ``everything``. Read by
    ``kirby.web.schedule_changes`` to answer ``/schedule?since=<tag>`` with only what changed.
    """

    __tablename__ = "schedule_changes"
    __table_args__ = (Index("ix_schedule_changes_version", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    stamp: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(nullable=True)
    context_id: Mapped[int | None] = mapped_column(nullable=True)
    environment_id: Mapped[int | None] = mapped_column(nullable=True)
    everything: Mapped[bool] = mapped_column(Boolean)


class Ext(Base):
    """An external resource the scripts use (a topic, a table), listed in the original's EXTS."""

    __tablename__ = "exts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"), default=Role.VIEWER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bumped by logout and a password change: sessions made under an older generation are void.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where the identity comes from (``kirby.external_users``): local users have no subject; an
    # external one is found by (provider, subject), the provider's stable id, never by its name.
    provider: Mapped[Provider] = mapped_column(
        _enum(Provider, "user_provider"), default=Provider.LOCAL, server_default=Provider.LOCAL.value
    )
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    roles_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_user_provider_subject"),)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class ApiToken(Base):
    """A named API token (``kirby.tokens``): only its SHA-256 is stored; revoked rows are kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "token_role"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Run(Base):
    """One attempt of one run. Written from run events; idempotent on ``id``."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_job_scheduled", "job_name", "scheduled_at"),
        Index("ix_runs_state_scheduled", "state", "scheduled_at"),
        Index("ix_runs_supervisor", "supervisor"),
        Index("ix_runs_scheduled", "scheduled_at"),
        Index("ix_runs_slot", "slot_id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    slot_id: Mapped[str] = mapped_column(String(255))
    context_id: Mapped[int | None] = mapped_column(ForeignKey("contexts.id", ondelete="SET NULL"), nullable=True)
    job_name: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    package_name: Mapped[str] = mapped_column(String(128), default="")
    package_version: Mapped[str] = mapped_column(String(64), default="")
    trigger: Mapped[str] = mapped_column(String(16), default="schedule")  # schedule | manual | retry | daemon
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[RunState] = mapped_column(_enum(RunState, "run_state"), default=RunState.OFFERED)
    supervisor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signal: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    offered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Starts recorded after the first one (another supervisor, another time): a slot that ran twice.
    duplicate_starts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # "Run now" with config overrides: the JSON object of the overridden keys (secret values masked).
    config_overrides: Mapped[str] = mapped_column(Text, default="")
    # A Celery run: the task it sent ("" for a script run), and the task's ``expires`` (the end of
    # its misfire grace): still not received by a worker past it, the run is recorded ``expired``.
    celery_task: Mapped[str] = mapped_column(String(255), default="", server_default="")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class LogLine(Base):
    """Lines a run printed (or a line Kirby wrote about it: stream ``system``): ``line_count``
    consecutive lines of one stream, the first at ``seq``, stored together (``kirby.logstore``).

    ``text`` is the one line of a row of ``line_count == 1`` (which may hold newlines, e.g. a
    Celery traceback), and the lines joined by ``\\n`` otherwise (none of them holds one). Read
    lines through ``kirby.logstore``, never rows.
    """

    __tablename__ = "log_lines"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_log_line_run_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(255), ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    stream: Mapped[str] = mapped_column(String(8))  # stdout | stderr | system
    text: Mapped[str] = mapped_column(Text)
    line_count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class Notification(Base):
    """The notifications outbox (``kirby.notify``): one row per run, event and group, unique on ``key``.

    Written in the transaction that records the run's state change; delivered by ``kirby web``.
    ``state``: pending -> sent | failed (attempts exhausted) | held (in cooldown) -> digested
    (folded into the digest row ``digest_id``).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_state_due", "state", "next_attempt_at"),
        Index("ix_notifications_cooldown", "group_id", "job_name", "event", "sent_at"),
        Index("ix_notifications_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400), unique=True)
    event: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_groups.id", ondelete="CASCADE"), nullable=True
    )
    job_name: Mapped[str] = mapped_column(String(128), default="")
    environment: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    digest_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")

    group: Mapped[NotificationGroup | None] = relationship()
    deliveries: Mapped[list[NotificationDelivery]] = relationship(
        back_populates="notification", cascade="all, delete-orphan", order_by="NotificationDelivery.id"
    )


class NotificationDelivery(Base):
    """One attempt to send a notification through one channel (an email address or a webhook URL)."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # email | webhook
    target: Mapped[str] = mapped_column(String(1000))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    permanent: Mapped[bool] = mapped_column(Boolean, default=False)  # failed for good: not retried
    error: Mapped[str] = mapped_column(Text, default="")

    notification: Mapped[Notification] = relationship(back_populates="deliveries")
