"""The messages supervisors exchange: job offers, and run events (state changes and log lines).

Both serialize to JSON (``to_json`` / ``from_json``) so every bus backend carries the same bytes.
Datetimes are aware UTC and travel as ISO 8601 strings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from kirby.vocabulary import EventKind, OnLost, Overlap, Trigger


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _decode_times(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    return data


@dataclass(frozen=True)
class Offer:
    """A run to launch: published by the leader (or by "run now"), claimed by one runner.

    ``run_id`` is unique per attempt and deterministic for scheduled slots (``kirby.models``).
    ``epoch`` is the leader's fencing token; ``None`` for manual offers, which are not fenced.
    ``config`` holds the run's environment variables (context over job over global);
    ``secrets`` names those whose values are masked in logs. ``not_after`` is the end of a
    scheduled slot's misfire grace: a runner never starts the offer later than that (it records
    the run ``skipped``, "expired: ..."), whatever the bus redelivers; ``None`` (manual runs,
    retries, offers of older versions) never expires.
    """

    run_id: str
    slot_id: str
    job: str
    environment: str
    package: str
    version: str
    scheduled_at: datetime
    epoch: int | None = None
    context_id: int | None = None
    module: str = ""
    run_as: str | None = None  # the job's run user, instead of the supervisor's KIRBY_RUN_USER
    config: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    timeout_seconds: int | None = None
    overlap: Overlap = Overlap.FORBID
    retries: int = 0
    attempt: int = 1
    trigger: Trigger = Trigger.SCHEDULE
    offered_at: datetime | None = None
    not_after: datetime | None = None
    on_lost: OnLost = OnLost.SKIP  # retry: a started run whose supervisor died is offered again
    # A Celery job's task (``kirby.celery.task.CeleryTask.to_dict``): the run sends it instead of
    # running a package; None for a script.
    celery: dict[str, Any] | None = None

    def __post_init__(self) -> None:  # the policies travel as their enums, whatever a caller passed
        object.__setattr__(self, "overlap", Overlap(self.overlap))
        object.__setattr__(self, "trigger", Trigger(self.trigger))
        object.__setattr__(self, "on_lost", OnLost(self.on_lost))

    def to_json(self) -> bytes:
        data = {f.name: _encode(getattr(self, f.name)) for f in fields(self)}  # asdict deep-copies: slow
        data["secrets"] = list(self.secrets)
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Offer:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["secrets"] = tuple(data.get("secrets", ()))
        return cls(**_decode_times(data, ("scheduled_at", "offered_at", "not_after")))


def offer_data(offer: Offer) -> dict[str, Any]:
    """The ``data`` of an offered/claimed/skipped run event: the offer without config and secrets
    (which are never persisted); policies as their plain values."""
    data = {name: (value.value if isinstance(value, Enum) else value) for name, value in asdict(offer).items()}
    data.pop("config", None)
    data.pop("secrets", None)
    return data


EVENT_KINDS = tuple(kind.value for kind in EventKind)


@dataclass(frozen=True)
class RunEvent:
    """Something that happened to a run, in order per run.

    kinds: ``offered``/``claimed``/``started``/``finished``/``lost``/``skipped`` carry run metadata in
    ``data`` (the offer's fields on ``offered`` and ``claimed``; ``state``, ``exit_code``,
    ``signal``, ``error`` on ``finished``); ``log`` carries ``seq``, ``stream``, ``text`` (already
    masked), or ``texts`` instead of ``text`` for consecutive lines from ``seq`` (``log_texts``).
    Recording the same event twice has the effect of recording it once.
    """

    kind: EventKind
    run_id: str
    time: datetime
    supervisor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))

    def to_json(self) -> bytes:
        payload = {
            "kind": self.kind.value,
            "run_id": self.run_id,
            "time": _encode(self.time),
            "supervisor": self.supervisor,
            "data": {k: _encode(v) for k, v in self.data.items()},
        }
        return json.dumps(payload, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> RunEvent:
        data = json.loads(raw)
        return cls(
            kind=data["kind"],
            run_id=data["run_id"],
            time=datetime.fromisoformat(data["time"]),
            supervisor=data.get("supervisor"),
            data=data.get("data") or {},
        )


def log_texts(event: RunEvent) -> list[str]:
    """The lines of a ``log`` event: its ``texts`` (lines read together), or its one ``text``."""
    texts = event.data.get("texts")
    return list(texts) if texts is not None else [event.data.get("text", "")]
