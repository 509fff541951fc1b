"""The leader's view of the schedule: frozen dataclasses parsed from the schedule document.

``parse_schedule(data)`` validates the JSON of ``build_schedule`` (or of ``/schedule``) and raises
``KirbyError`` naming the first bad field. ``offer_for_slot`` and ``entry_offer`` turn an entry
into the ``Offer`` the runners consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from kirby.celery.task import CeleryTask
from kirby.cron import DstPolicy, FallBack, SpringForward
from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.run_ids import slot_run_id
from kirby.vocabulary import CatchUp, JobType, OnLost, Overlap


@dataclass(frozen=True)
class ScheduleRule:
    """One schedule of a context: when it fires and the policies of its runs."""

    id: int
    cron: str
    timezone: str = "UTC"
    name: str = ""
    misfire_grace_seconds: int = 300
    catchup: str = CatchUp.LATEST.value
    overlap: str = Overlap.FORBID.value
    timeout_seconds: int | None = None
    retries: int = 0
    enabled: bool = True
    dst_fall_back: str = FallBack.AUTO.value
    dst_spring_forward: str = SpringForward.AUTO.value

    @property
    def dst(self) -> DstPolicy:
        """The DST policy the cron functions take (``auto``: by the hour field, see kirby.cron)."""
        return DstPolicy(self.dst_fall_back, self.dst_spring_forward)

    on_lost: str = OnLost.SKIP.value


@dataclass(frozen=True)
class SuspensionWindow:
    """No slot in ``[starts_at, ends_at)`` is offered."""

    id: int
    starts_at: datetime
    ends_at: datetime
    all_jobs: bool = False
    reason: str = ""

    def covers(self, instant: datetime) -> bool:
        return self.starts_at <= instant < self.ends_at


@dataclass(frozen=True)
class ScheduleEntry:
    """An enabled context of an enabled job: what to run, where, and when."""

    context_id: int
    job: str
    job_type: str
    environment: str
    package: str
    version: str
    module: str = ""
    config: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    schedules: tuple[ScheduleRule, ...] = ()
    run_as: str | None = None  # the job's own run user (None: the supervisor's KIRBY_RUN_USER)
    suspensions: tuple[SuspensionWindow, ...] = ()
    celery: CeleryTask | None = None  # a Celery job: the task its runs send (no package)

    @property
    def is_daemon(self) -> bool:
        return self.job_type == JobType.DAEMON.value

    def schedule_key(self, rule: ScheduleRule) -> str:
        """The cursor key of ``rule``: ``<job>:<environment>:<schedule id>``."""
        return f"{self.job}:{self.environment}:{rule.id}"

    def suspension_at(self, instant: datetime) -> SuspensionWindow | None:
        """The suspension window covering ``instant``, or None."""
        return next((s for s in self.suspensions if s.covers(instant)), None)


@dataclass(frozen=True)
class ScheduleSnapshot:
    generated_at: datetime
    entries: tuple[ScheduleEntry, ...] = ()

    # Computed once per snapshot (a snapshot is kept until the schedule changes): the arbiter asks
    # for the daemons every few seconds and every run start for the secrets, at 10,000 entries too.
    @cached_property
    def scheduled(self) -> tuple[ScheduleEntry, ...]:
        return tuple(e for e in self.entries if not e.is_daemon)

    @cached_property
    def daemons(self) -> tuple[ScheduleEntry, ...]:
        return tuple(e for e in self.entries if e.is_daemon)

    @cached_property
    def _secrets(self) -> frozenset[str]:
        return frozenset(e.config[name] for e in self.entries for name in e.secrets if e.config.get(name))

    def secret_values(self) -> frozenset[str]:
        """The values of every entry's secret config keys (a supervisor masks them in every run)."""
        return self._secrets


def entry_offer(
    entry: ScheduleEntry,
    run_id: str,
    scheduled_at: datetime,
    now: datetime,
    rule: ScheduleRule | None = None,
    epoch: int | None = None,
    trigger: str = "schedule",
) -> Offer:
    """An offer (attempt 1) to run ``entry`` as ``run_id``, with ``rule``'s policies (defaults if None)."""
    rule = rule or ScheduleRule(id=0, cron="")
    return Offer(
        run_id=run_id,
        slot_id=run_id,
        job=entry.job,
        environment=entry.environment,
        package=entry.package,
        version=entry.version,
        scheduled_at=scheduled_at,
        epoch=epoch,
        context_id=entry.context_id,
        module=entry.module,
        run_as=entry.run_as,
        celery=entry.celery.to_dict() if entry.celery is not None else None,
        config=dict(entry.config),
        secrets=entry.secrets,
        timeout_seconds=rule.timeout_seconds,
        overlap=rule.overlap,
        retries=rule.retries,
        on_lost=rule.on_lost,
        attempt=1,
        trigger=trigger,
        offered_at=now,
    )


def offer_for_slot(entry: ScheduleEntry, schedule: ScheduleRule, instant: datetime, epoch: int, now: datetime) -> Offer:
    """The offer of slot ``instant`` of ``schedule``: run id ``slot_run_id(job, env, instant)``.

    Its ``not_after`` is the end of the slot's misfire grace (``instant + grace``); a slot
    published later than that on purpose (catch-up ``latest``/``all``) gets ``now + grace``.
    """
    instant = instant.astimezone(timezone.utc)
    offer = entry_offer(entry, slot_run_id(entry.job, entry.environment, instant), instant, now, schedule, epoch)
    grace = timedelta(seconds=schedule.misfire_grace_seconds)
    return replace(offer, not_after=max(instant, now - grace) + grace)


# -- parsing ------------------------------------------------------------------------------------
class _Fields:
    """Typed access to one JSON object, with errors naming the path of the bad field."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise KirbyError(f"schedule document: {path} must be an object, got {type(data).__name__}")
        self.data, self.path = data, path

    def get(self, name: str, kind: type | tuple, default: Any = ...) -> Any:
        if name not in self.data or self.data[name] is None:
            if default is ...:
                raise KirbyError(f"schedule document: {self.path}.{name} is missing")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise KirbyError(f"schedule document: {self.path}.{name}={value!r} has the wrong type")
        return value

    def choice(self, name: str, enum: type, default: str) -> str:
        value = self.get(name, str, default)
        allowed = [m.value for m in enum]
        if value not in allowed:
            raise KirbyError(f"schedule document: {self.path}.{name}={value!r}: use one of {', '.join(allowed)}")
        return value

    def instant(self, name: str) -> datetime:
        raw = self.get(name, str)
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise KirbyError(f"schedule document: {self.path}.{name}={raw!r} is not an ISO 8601 time") from None
        if value.tzinfo is None:
            raise KirbyError(f"schedule document: {self.path}.{name}={raw!r} has no UTC offset")
        return value.astimezone(timezone.utc)


def _rule(data: Any, path: str) -> ScheduleRule:
    f = _Fields(data, path)
    return ScheduleRule(
        id=f.get("id", int),
        cron=f.get("cron", str),
        timezone=f.get("timezone", str, "UTC"),
        name=f.get("name", str, ""),
        misfire_grace_seconds=f.get("misfire_grace_seconds", int, 300),
        catchup=f.choice("catchup", CatchUp, CatchUp.LATEST.value),
        overlap=f.choice("overlap", Overlap, Overlap.FORBID.value),
        timeout_seconds=f.get("timeout_seconds", int, None),
        retries=f.get("retries", int, 0),
        enabled=f.get("enabled", bool, True),
        dst_fall_back=f.choice("dst_fall_back", FallBack, FallBack.AUTO.value),
        dst_spring_forward=f.choice("dst_spring_forward", SpringForward, SpringForward.AUTO.value),
        on_lost=f.choice("on_lost", OnLost, OnLost.SKIP.value),
    )


def _suspension(data: Any, path: str) -> SuspensionWindow:
    f = _Fields(data, path)
    return SuspensionWindow(
        id=f.get("id", int),
        starts_at=f.instant("starts_at"),
        ends_at=f.instant("ends_at"),
        all_jobs=f.get("all_jobs", bool, False),
        reason=f.get("reason", str, ""),
    )


def parse_entry(data: Any, path: str = "contexts[0]") -> ScheduleEntry:
    f = _Fields(data, path)
    config = f.get("config", dict, {})
    task = f.get("celery", dict, None)
    if task is not None and not isinstance(task.get("name"), str):
        raise KirbyError(f"schedule document: {path}.celery.name is missing")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()):
        raise KirbyError(f"schedule document: {path}.config must map names to strings")
    return ScheduleEntry(
        context_id=f.get("context_id", int),
        job=f.get("job", str),
        job_type=f.choice("job_type", JobType, JobType.SCHEDULED.value),
        environment=f.get("environment", str),
        package=f.get("package", str),
        version=f.get("version", str),
        module=f.get("module", str, ""),
        run_as=f.get("run_as", str, None),
        celery=CeleryTask.from_dict(task) if task is not None else None,
        config=dict(config),
        secrets=tuple(str(s) for s in f.get("secrets", list, [])),
        schedules=tuple(_rule(s, f"{path}.schedules[{i}]") for i, s in enumerate(f.get("schedules", list, []))),
        suspensions=tuple(
            _suspension(s, f"{path}.suspensions[{i}]") for i, s in enumerate(f.get("suspensions", list, []))
        ),
    )


def parse_schedule(data: Any) -> ScheduleSnapshot:
    """Parse a schedule document (the dict of ``build_schedule``); KirbyError names a bad field."""
    f = _Fields(data, "schedule")
    contexts = f.get("contexts", list)
    return ScheduleSnapshot(
        generated_at=f.instant("generated_at"),
        entries=tuple(parse_entry(c, f"contexts[{i}]") for i, c in enumerate(contexts)),
    )


def is_delta(data: Any) -> bool:
    """Whether a ``/schedule`` answer is a delta (``?since=``) rather than a full document."""
    return isinstance(data, dict) and "changed" in data and "contexts" not in data


def merge_delta(base: ScheduleSnapshot, data: Any) -> ScheduleSnapshot:
    """``base`` with the delta ``data`` applied (see ``kirby.web.schedule_changes``): the current schedule.

    The entries of ``removed`` go, those of ``changed`` take their place (by context id, in id
    order, as in the document), and the suspensions ended at the delta's ``generated_at`` leave
    every entry (the full document drops them too). KirbyError names a bad field.
    """
    f = _Fields(data, "delta")
    generated_at = f.instant("generated_at")
    changed = [parse_entry(c, f"changed[{i}]") for i, c in enumerate(f.get("changed", list))]
    removed = f.get("removed", list)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in removed):
        raise KirbyError("schedule document: delta.removed must list context ids")
    entries = {entry.context_id: entry for entry in base.entries}
    for context_id in removed:
        entries.pop(context_id, None)
    entries.update((entry.context_id, entry) for entry in changed)
    merged = []
    for context_id in sorted(entries):
        entry = entries[context_id]
        if any(s.ends_at <= generated_at for s in entry.suspensions):
            entry = replace(entry, suspensions=tuple(s for s in entry.suspensions if s.ends_at > generated_at))
        merged.append(entry)
    return ScheduleSnapshot(generated_at=generated_at, entries=tuple(merged))
