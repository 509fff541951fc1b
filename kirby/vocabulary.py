"""Kirby's shared vocabulary: the states, kinds and policies every layer speaks, and the name rule.

No dependencies (standard library only): the ORM (``kirby.models``), the supervisor, the bus,
the lease store and the web all import it, and it imports none of them. Members are ``str``
enums, so they compare equal to, and serialize as, their values in offers, events and rows.
"""

from __future__ import annotations

import enum
import re


class JobType(str, enum.Enum):
    SCHEDULED = "scheduled"
    DAEMON = "daemon"


class CatchUp(str, enum.Enum):
    """What a new leader does with slots older than the misfire grace."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Overlap(str, enum.Enum):
    """What happens when a slot is due while the previous run of the same context still runs."""

    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"
    BUFFER_ONE = "buffer_one"  # at most one slot waits for the running one, then starts


class OnLost(str, enum.Enum):
    """What happens to a started run whose supervisor died (recorded ``lost``)."""

    SKIP = "skip"  # recorded lost, not run again
    RETRY = "retry"  # recorded lost and offered again as a new attempt (for scripts safe to repeat)


class ConfigScope(str, enum.Enum):
    GLOBAL = "global"
    JOB = "job"
    CONTEXT = "context"


class Role(str, enum.Enum):
    ADMIN = "admin"
    VIEWER = "viewer"


class RunState(str, enum.Enum):
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


class Trigger(str, enum.Enum):
    """Why a run exists."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    RETRY = "retry"
    DAEMON = "daemon"


class EventKind(str, enum.Enum):
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
    """Why ``name`` is not a valid job or environment name, or None when it is."""
    if not isinstance(name, str) or not name:
        return f"{what} must be a non-empty string"
    if not NAME_PATTERN.match(name):
        return f"{what} {name!r} may use only letters, digits, '_', '.' and '-' (no ':', '#' or spaces), and must start with a letter or digit"
    return None
