"""The validated content of an import file, as plain dataclasses (no database objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kirby.celery.task import CeleryTask
from kirby.vocabulary import JobType


@dataclass(frozen=True)
class ConfigValue:
    """One config key. ``value`` is None for ``{"secret": true}`` without a value: "keep the stored
    secret" (``kirby apply`` and the REST API; the import refuses it). ``path`` is where it was read."""

    key: str
    value: str | None
    secret: bool = False
    path: str = field(default="", compare=False)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    cron: str
    timezone: str
    enabled: bool
    # Only the policies the file gives (misfire_grace_seconds, catchup, overlap, timeout_seconds,
    # retries, dst_fall_back, dst_spring_forward); the others keep the model's defaults.
    policies: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ContextSpec:
    environment: str
    package_version: str
    config: tuple[ConfigValue, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    path: str
    name: str
    description: str
    type: JobType
    enabled: bool
    package_name: str
    module: str
    contexts: tuple[ContextSpec, ...]
    schedule: ScheduleSpec | None
    config: tuple[ConfigValue, ...]
    notification_group: str | None
    notify_on_failure: bool = True
    notify_on_missed: bool = True
    notify_on_lost: bool = True
    notify_on_recovery: bool = True
    notify_on_daemon: bool = True
    notify_on_suspended: bool = False
    celery: CeleryTask | None = None  # a Celery job: its contexts have no package version


# notify_on word -> the JobSpec attribute -> the JobNotification column: one table for the import,
# export and apply.
NOTIFY_FLAGS = (
    ("failure", "notify_on_failure", "on_failure"),
    ("missed", "notify_on_missed", "on_missed"),
    ("lost", "notify_on_lost", "on_lost"),
    ("recovery", "notify_on_recovery", "on_recovery"),
    ("daemon", "notify_on_daemon", "on_daemon"),
    ("suspended", "notify_on_suspended", "on_suspended"),
)


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    format: str = "json"  # json | slack | teams (kirby.notify.webhook)
    secret: str = ""


@dataclass(frozen=True)
class UserSpec:
    path: str
    username: str
    password: str
    admin: bool


@dataclass(frozen=True)
class SuspensionSpec:
    path: str
    job: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str


@dataclass
class DemoData:
    environments: dict[str, str]  # declared in ENVS: name -> description
    global_config: tuple[ConfigValue, ...]
    jobs: tuple[JobSpec, ...]
    exts: tuple[str, ...]
    users: tuple[UserSpec, ...]
    groups: dict[str, tuple[str, ...]]
    suspensions: tuple[SuspensionSpec, ...]
    notes: list[str] = field(default_factory=list)
    webhooks: dict[str, tuple[WebhookSpec, ...]] = field(default_factory=dict)  # group name -> webhooks

    def used_environments(self) -> list[str]:
        """Every environment a job runs in, in order of first appearance."""
        seen: dict[str, None] = {}
        for job in self.jobs:
            for context in job.contexts:
                seen.setdefault(context.environment)
        return list(seen)
