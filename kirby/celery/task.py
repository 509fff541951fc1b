"""What a Celery job sends: ``CeleryTask`` (no Celery import; the schedule, offers and forms use it).

A job is a Celery job when it names a task. Its ``args`` are a JSON list, its ``kwargs`` a JSON
object; ``queue``, ``routing_key`` and ``priority`` are passed to ``send_task`` when set. The
broker is not part of the task: it is the run's config key ``KIRBY_CELERY_BROKER_URL`` when set
(context over job over global, so per environment on a context), else the supervisor's setting
``KIRBY_CELERY_BROKER_URL``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

BROKER_KEY = "KIRBY_CELERY_BROKER_URL"
"""The config key (and setting) naming the Celery broker of a run."""

HEADER_EPOCH = "kirby_epoch"
HEADER_SCHEDULED = "kirby_scheduled"


@dataclass(frozen=True)
class CeleryTask:
    """A task to send: ``name`` (dotted), ``args`` (list), ``kwargs`` (object), routing options."""

    name: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    queue: str | None = None
    routing_key: str | None = None
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "args": list(self.args),
            "kwargs": dict(self.kwargs),
            "queue": self.queue,
            "routing_key": self.routing_key,
            "priority": self.priority,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CeleryTask:
        return cls(
            name=data["name"],
            args=list(data.get("args") or []),
            kwargs=dict(data.get("kwargs") or {}),
            queue=data.get("queue") or None,
            routing_key=data.get("routing_key") or None,
            priority=data.get("priority"),
        )

    @classmethod
    def of_job(cls, job: Any) -> CeleryTask | None:
        """The task of a ``kirby.models.Job`` row (None: a script job)."""
        if not job.celery_task:
            return None
        return cls(
            name=job.celery_task,
            args=json.loads(job.celery_args or "[]"),
            kwargs=json.loads(job.celery_kwargs or "{}"),
            queue=job.celery_queue or None,
            routing_key=job.celery_routing_key or None,
            priority=job.celery_priority,
        )

    def columns(self) -> dict[str, Any]:
        """The ``Job`` columns holding this task."""
        return {
            "celery_task": self.name,
            "celery_args": json.dumps(list(self.args)),
            "celery_kwargs": json.dumps(dict(self.kwargs), sort_keys=True),
            "celery_queue": self.queue or "",
            "celery_routing_key": self.routing_key or "",
            "celery_priority": self.priority,
        }


NO_TASK_COLUMNS = {
    "celery_task": "",
    "celery_args": "",
    "celery_kwargs": "",
    "celery_queue": "",
    "celery_routing_key": "",
    "celery_priority": None,
}
"""The ``Job`` columns of a script job."""
