"""Kirby's shared vocabulary: the states, kinds and policies every layer speaks, and the name rule.

No dependencies (standard library only): the ORM (``kirby.models``), the supervisor, the bus,
the lease store and the web all import it, and it imports none of them. Members are ``str``
enums, so they compare equal to, and serialize as, their values in offers, events and rows.
"""

from __future__ import annotations

import enum
import re


class Word(str, enum.Enum):
    """A member that is its value everywhere: ``==``, ``str()``, f-strings and JSON."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class JobType(Word):
    SCHEDULED = "scheduled"
    DAEMON = "daemon"


class CatchUp(Word):
    """What a new leader does with slots older than the misfire grace."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Overlap(Word):
    """What happens when a slot is due while the previous run of the same context still runs."""

    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"


class ConfigScope(Word):
    GLOBAL = "global"
    JOB = "job"
    CONTEXT = "context"


class Role(Word):
    ADMIN = "admin"
    VIEWER = "viewer"


class RunState(Word):
    OFFERED = "offered"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.LOST, RunState.SKIPPED})


class Trigger(Word):
    """Why a run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    DAEMON = "daemon"


class EventKind(Word):
    """The kinds of run events (``kirby.events.RunEvent``; their data: ``kirby.recorder``)."""

    OFFERED = "offered"
    CLAIMED = "claimed"
    STARTED = "started"
    LOG = "log"
    FINISHED = "finished"
    LOST = "lost"
    SKIPPED = "skipped"


# -- the name rule ------------------------------------------------------------------------------
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
"""Job and environment names: letters, digits, ``_ . -``; no ``:`` (it separates run-id parts),
no ``#`` (it marks attempts), no spaces."""


def name_problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` is not a valid job or environment name (``what``: "job name", ...), or None."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"{name!r} is not a valid {what}; use letters, digits, '_', '.' and '-'"
    return None
