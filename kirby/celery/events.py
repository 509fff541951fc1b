"""Celery task events -> Kirby run events (pure; no Celery import).

``run_event(celery_event, masker)`` turns one event dict of Celery's event stream (``task-received``,
``task-started``, ``task-succeeded``, ``task-failed``, ``task-retried``, ``task-revoked``, and
``kirby.celery.worker``'s ``task-kirby-duplicate``) into a ``task`` ``RunEvent`` for the run whose
id is the task id, or None for other events and for tasks Kirby did not send (ids that are not
run ids). Texts are masked and cut to ``MAX_TEXT`` characters.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kirby.events import RunEvent
from kirby.run_ids import parse_run_id

MAX_TEXT = 4000
_STATES = {
    "task-received": "received",
    "task-started": "started",
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-revoked": "revoked",
    "task-kirby-duplicate": "duplicate",
}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f" ... [{len(text) - MAX_TEXT} characters cut]"


def _text(kind: str, event: dict[str, Any]) -> str:
    host = event.get("hostname") or "?"
    if kind == "task-received":
        return f"received by worker {host}"
    if kind == "task-started":
        return f"started on worker {host} (pid {event.get('pid', '?')})"
    if kind == "task-succeeded":
        return f"succeeded in {float(event.get('runtime') or 0):.3f} s; result: {event.get('result')}"
    if kind in ("task-failed", "task-retried"):
        traceback = str(event.get("traceback") or "").rstrip()
        return (traceback + "\n" if traceback else "") + str(event.get("exception") or "")
    if kind == "task-revoked":
        if event.get("expired"):
            return f"expired: worker {host} received it after its expires; not run"
        signal = f" (terminated by signal {event.get('signum')})" if event.get("terminated") else ""
        return f"revoked{signal}"
    return f"a second delivery was dropped by worker {host}: already run by {event.get('holder')} (kirby.celery)"


def run_event(event: dict[str, Any], masker=None) -> RunEvent | None:
    kind = event.get("type", "")
    state = _STATES.get(kind)
    task_id = event.get("uuid")
    if state is None or not isinstance(task_id, str):
        return None
    try:
        parse_run_id(task_id)
    except ValueError:
        return None  # not a Kirby run
    if kind == "task-revoked" and event.get("expired"):
        state = "expired"
    stamp = event.get("timestamp")
    when = datetime.fromtimestamp(stamp, timezone.utc) if isinstance(stamp, int | float) else datetime.now(timezone.utc)
    text = _text(kind, event)
    text = _cut(masker(text) if masker is not None else text)
    return RunEvent(kind="task", run_id=task_id, time=when, data={"state": state, "text": text})
