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
    BUFFER_ONE = "buffer_one"  # at most one slot waits for the running one, then starts


class OnLost(Word):
    """What happens to a started run whose supervisor died (recorded ``lost``)."""

    SKIP = "skip"  # recorded lost, not run again
    RETRY = "retry"  # recorded lost and offered again as a new attempt (for scripts safe to repeat)


class ConfigScope(Word):
    GLOBAL = "global"
    JOB = "job"
    CONTEXT = "context"


class Role(Word):
    ADMIN = "admin"
    VIEWER = "viewer"


class Provider(Word):
    """Where a user's identity comes from: a local password (``kirby adduser``) or outside."""

    LOCAL = "local"
    LDAP = "ldap"
    OIDC = "oidc"


class RunState(Word):
    OFFERED = "offered"
    CLAIMED = "claimed"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    SKIPPED = "skipped"
    # Celery task runs (kirby.celery): sent to the broker, then what the task's events say.
    SENT = "sent"
    RECEIVED = "received"
    RETRIED = "retried"
    REVOKED = "revoked"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.LOST,
        RunState.SKIPPED,
        RunState.REVOKED,
        RunState.EXPIRED,
    }
)


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
    SENT = "sent"  # a Celery task run was handed to its broker (kirby.celery)
    TASK = "task"  # a Celery task event about the run (received, started, succeeded, ...)


# -- the name rule ------------------------------------------------------------------------------
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
"""Job and environment names: letters, digits, ``_ . -``; no ``:`` (it separates run-id parts),
no ``#`` (it marks attempts), no spaces."""


def name_problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` is not a valid job or environment name (``what``: "job name", ...), or None."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"{name!r} is not a valid {what}; use letters, digits, '_', '.' and '-'"
    return None


MIN_MISFIRE_GRACE_SECONDS = 10
MIN_MISFIRE_GRACE_REASON = (
    f"a slot must be published, delivered and claimed within its misfire grace; a failover or a"
    f" consumer rebalance takes seconds, so a grace under {MIN_MISFIRE_GRACE_SECONDS} s skips the slots"
    f" due meanwhile (and 0 with catch-up skip never runs anything)"
)
"""The shortest misfire grace a schedule may have, and why (the admin form and the import say it)."""
