"""Run ids: the one place that makes and parses them. Standard library only.

Every form is ``<job>:<environment>:<part>[#<attempt>]`` (names follow ``vocabulary.NAME_PATTERN``,
so they hold no ``:`` or ``#``):

=========  =====================================  ===================================================
kind       ``<part>``                             example
=========  =====================================  ===================================================
slot       the scheduled instant, UTC             ``backup:prod:20261201T020000Z``
manual     ``manual-<token>``                     ``backup:prod:manual-3f2a...``
daemon     ``daemon-<start instant>-<token>``     ``feed:prod:daemon-20261201T020000Z-a1b2c3``
=========  =====================================  ===================================================

Attempt N > 1 of any run adds ``#N`` (``backup:prod:20261201T020000Z#2``); the id without it is
the run's *slot id*, shared by its attempts. A slot's id is deterministic (job, environment,
instant), so publishing the same slot twice names the same run, and a claim makes it run once.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

SLOT = "slot"
MANUAL = "manual"
DAEMON = "daemon"

_INSTANT = "%Y%m%dT%H%M%SZ"
_PATTERN = re.compile(
    r"^(?P<job>[^:#]+):(?P<environment>[^:#]+):"
    r"(?:(?P<slot>\d{8}T\d{6}Z)|manual-(?P<manual>[^:#]+)|daemon-(?P<daemon>\d{8}T\d{6}Z)-(?P<daemon_token>[^:#]+))"
    r"(?:#(?P<attempt>[1-9]\d*))?$"
)


def _stamp(instant: datetime) -> str:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: run ids are made from aware datetimes")
    return f"{instant.astimezone(timezone.utc):{_INSTANT}}"


@dataclass(frozen=True)
class RunId:
    """A parsed run id. ``instant`` is the scheduled instant (slot) or the start (daemon)."""

    job: str
    environment: str
    kind: str  # SLOT | MANUAL | DAEMON
    instant: datetime | None = None
    token: str = ""
    attempt: int = 1

    @property
    def slot_id(self) -> str:
        """The id shared by every attempt (this id without ``#N``)."""
        if self.kind == SLOT:
            part = _stamp(self.instant)
        elif self.kind == MANUAL:
            part = f"manual-{self.token}"
        else:
            part = f"daemon-{_stamp(self.instant)}-{self.token}"
        return f"{self.job}:{self.environment}:{part}"

    def __str__(self) -> str:
        return self.slot_id if self.attempt <= 1 else f"{self.slot_id}#{self.attempt}"


def parse_run_id(text: str) -> RunId:
    """The parts of run id ``text``; ValueError naming it when it is no run id of Kirby's."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a Kirby run id (job:environment:<instant|manual-…|daemon-…>[#attempt])")
    attempt = int(match["attempt"] or 1)
    job, environment = match["job"], match["environment"]
    if match["slot"]:
        instant = datetime.strptime(match["slot"], _INSTANT).replace(tzinfo=timezone.utc)
        return RunId(job, environment, SLOT, instant, attempt=attempt)
    if match["manual"]:
        return RunId(job, environment, MANUAL, token=match["manual"], attempt=attempt)
    instant = datetime.strptime(match["daemon"], _INSTANT).replace(tzinfo=timezone.utc)
    return RunId(job, environment, DAEMON, instant, match["daemon_token"], attempt)


def slot_run_id(job: str, environment: str, scheduled_at: datetime) -> str:
    """The deterministic id of a scheduled slot: ``job:environment:YYYYmmddTHHMMSSZ`` (UTC)."""
    return str(RunId(job, environment, SLOT, scheduled_at))


def manual_run_id(job: str, environment: str, token: str | None = None) -> str:
    """A new "run now" id: ``job:environment:manual-<token>`` (a random uuid4 hex by default)."""
    return str(RunId(job, environment, MANUAL, token=token or uuid.uuid4().hex))


def daemon_run_id(job: str, environment: str, started_at: datetime, token: str | None = None) -> str:
    """A new id for one start of a daemon: ``job:environment:daemon-<start>-<token>``."""
    return str(RunId(job, environment, DAEMON, started_at, token or uuid.uuid4().hex[:6]))


def attempt_run_id(slot_id: str, attempt: int) -> str:
    """The id of attempt ``attempt`` (1-based) of ``slot_id``: the slot id itself, then ``slot#N``."""
    return slot_id if attempt <= 1 else f"{slot_id}#{attempt}"
