"""Changes since a version: what ``/schedule?since=<tag>`` answers instead of the whole document.

``build_delta(session, since, now)`` returns the delta, or None when ``since`` cannot be its base
(the caller then sends the full document)::

    {"generated_at": "<ISO UTC>", "since": "<the tag given>",
     "changed": [<context entries, exactly as in the document>], "removed": [<context ids>]}

It lives beside the endpoint (``kirby.web.api``); the client's half is ``merge_delta`` in
``kirby.schedule.snapshot`` (no ORM there). A client holding the document of tag ``since`` gets
the current one (``merge_delta``): drop the
entries of ``removed``, put those of ``changed`` in their place (by ``context_id``, in id order),
drop from every entry the suspensions ended at ``generated_at``.

Why that is the current document: the triggers of migration 0014 log, under the version they
bump, every owner a write touches (old and new row: a context, a job, an environment, or
everything). A copy tagged V holds every change up to V (its tag was read before its content).
The changes after V name every context whose entry may differ now; those are read now: the ones
in the document are ``changed``, the others (deleted, disabled, their job disabled) ``removed``.
Suspensions leave the document with time alone: the merge drops the ended ones itself.

No delta (None) when the base is unknown or too old, so a wrong delta is never merged:
a malformed tag, or a masked one for a token holder (or the reverse); another generation (another
database); no change row with the tag's version *and stamp* (purged by ``purge_changes``, or from
another timeline: a database restored from a backup and edited up to the same version number
again draws other stamps); a change since then that touches everything (a global config key, a
suspension of every job, a TRUNCATE: the whole document is the delta); or more than
``MAX_CHANGED`` contexts touched (a delta as large as the document).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from kirby.models import Context, ScheduleChange, ScheduleVersion
from kirby.schedule.document import build_entries, iso_utc

MAX_CHANGED = 2000  # contexts touched since the base: beyond, the full document is sent
KEEP_CHANGES = 100_000  # change rows kept by ``purge_changes`` (whole versions; older bases get the document)

_CH, _C, _V = ScheduleChange.__table__, Context.__table__, ScheduleVersion.__table__


@dataclass(frozen=True)
class Tag:
    """A ``/schedule`` ETag: ``<generation>-<version>-<stamp>-<live suspensions>[-masked]``."""

    generation: str
    version: int
    stamp: str
    masked: bool


def parse_tag(raw: str) -> Tag | None:
    """The parts of an ETag (quoted, weak or bare); None when it is not one of ours."""
    text = raw.strip().removeprefix("W/").strip('"')
    masked = text.endswith("-masked")
    parts = text.removesuffix("-masked").split("-")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit() or not parts[0] or not parts[2]:
        return None
    return Tag(parts[0], int(parts[1]), parts[2], masked)


def build_delta(session: Session, since: str, now: datetime, masked: bool = False) -> dict[str, Any] | None:
    """The changes since the document tagged ``since``, at ``now``; None: send the full document.

    Call it after reading the response's own tag (``schedule_version``), as for a full document.
    The change log is read before the base is checked (last), so a purge racing this call makes
    it answer None rather than a delta with changes missing (a purge deletes whole old versions:
    while the base's row is there, every later row is).
    """
    tag = parse_tag(since)
    if tag is None or tag.masked != masked:
        return None
    if session.scalar(select(_V.c.generation).where(_V.c.id == 1)) != tag.generation:
        return None
    owners = select(_CH.c.job_id, _CH.c.context_id, _CH.c.environment_id, _CH.c.everything).distinct()
    rows = session.execute(owners.where(_CH.c.version > tag.version).limit(4 * MAX_CHANGED + 1)).all()
    if len(rows) > 4 * MAX_CHANGED or any(row.everything for row in rows):
        return None
    touched = {row.context_id for row in rows if row.context_id is not None}
    jobs = {row.job_id for row in rows if row.job_id is not None}
    environments = {row.environment_id for row in rows if row.environment_id is not None}
    if jobs or environments:  # their contexts, now (deleted ones were logged as contexts)
        touched.update(
            session.scalars(select(_C.c.id).where(_C.c.job_id.in_(jobs) | _C.c.environment_id.in_(environments)))
        )
    if len(touched) > MAX_CHANGED:
        return None
    if not session.scalar(select(exists().where(_CH.c.version == tag.version, _CH.c.stamp == tag.stamp))):
        return None
    changed = build_entries(session, now, sorted(touched)) if touched else []
    present = {entry["context_id"] for entry in changed}
    return {"generated_at": iso_utc(now), "since": since, "changed": changed, "removed": sorted(touched - present)}


def purge_changes(session: Session, keep: int = KEEP_CHANGES) -> int:
    """Delete the oldest change rows, whole versions, leaving at least ``keep``; returns how many went.

    A client whose base is purged gets the full document (``build_delta`` answers None).
    """
    cutoff = session.scalar(select(_CH.c.version).order_by(_CH.c.id.desc()).offset(keep).limit(1))
    if cutoff is None:
        return 0
    return session.execute(delete(_CH).where(_CH.c.version < cutoff)).rowcount
