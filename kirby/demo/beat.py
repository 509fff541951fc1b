"""Writing translated beat entries (``kirby.celery.beat_import``) through ``kirby apply``'s machinery.

Contract: :func:`import_beat` writes every translated entry as a Celery job in one transaction,
or nothing: an entry refused by the translation (unless the user skips it by name), a job name
already used by a job that is not a Celery task, or anything ``kirby apply`` refuses stops it
before the database changes. ``dry_run`` computes the same changes and rolls them back.

Re-importing is an update, not a duplicate: a Celery job of the same name keeps what was added in
Kirby (notification group, policies, description, other environments) and takes the task, its
arguments, options and timing from the beat entry; importing the same app twice changes nothing
the second time. Only the jobs of the beat schedule are touched; the environments they run in are
declared with the description they have, so their contexts are enabled (an import means "Kirby
sends these now": stop beat before, see the README's "Replacing celery beat").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from kirby.celery.beat_import import BeatImportError, Refused, Translated, jobs_document
from kirby.config import Settings
from kirby.db import Database
from kirby.demo import document
from kirby.demo.apply import Plan
from kirby.demo.export import export_data
from kirby.demo.files import apply_checked
from kirby.demo.parse import parse
from kirby.vocabulary import name_problem


@dataclass
class BeatImport:
    translated: list[Translated]
    skipped: list[str] = field(default_factory=list)  # entry names left to beat (--skip)
    plan: Plan = field(default_factory=Plan)


class EntriesRefused(BeatImportError):
    """Some entries have no exact Kirby schedule; ``refused`` says which and why. Nothing was written."""

    def __init__(self, refused: list[Refused], total: int):
        self.refused = refused
        super().__init__(
            f"{len(refused)} of {total} beat entries cannot be imported (see above); nothing was written. "
            "Change them, or leave them to beat with --skip NAME"
        )


def select_entries(results: list[Translated | Refused], skip: tuple[str, ...] = ()) -> BeatImport:
    """The translated entries to write, minus ``skip``; EntriesRefused if any other entry was refused."""
    names = {result.entry for result in results}
    unknown = [name for name in skip if name not in names]
    if unknown:
        raise BeatImportError(
            f"--skip {unknown[0]!r}: the beat_schedule has no such entry (it has {', '.join(map(repr, names))})"
        )
    kept = [result for result in results if result.entry not in skip]
    refused = [result for result in kept if isinstance(result, Refused)]
    if refused:
        raise EntriesRefused(refused, len(results))
    translated = [result for result in kept if isinstance(result, Translated)]
    if not translated:
        raise BeatImportError("the app's beat_schedule has no entry to import (it is empty, or every entry is skipped)")
    return BeatImport(translated, skipped=[name for name in skip])


def _merged(item: Translated, fresh: dict, existing: dict | None, environment: str) -> dict:
    if existing is None:
        return fresh
    if "celery_task" not in existing:
        raise BeatImportError(
            f"beat entry {item.entry!r}: a job named {item.job!r} exists and runs a package, not a Celery task; "
            "rename the beat entry or the job, then import again"
        )
    body = copy.deepcopy(existing)
    body["celery_task"] = fresh["celery_task"]
    body["environments"] = sorted({*existing.get("environments", []), environment})  # as kirby export writes them
    body["scheduled_param"] = {**existing.get("scheduled_param", {}), **fresh["scheduled_param"]}
    return body


def import_beat(
    database: Database, settings: Settings, selected: BeatImport, environment: str, dry_run: bool
) -> BeatImport:
    """Write ``selected.translated`` as Celery jobs running in ``environment``, all or nothing."""
    problem = name_problem(environment, "environment name")
    if problem:
        raise BeatImportError(f"--environment: {problem}")
    with database.session() as session:
        current = document.document(export_data(session), with_secrets=False)
    fresh = jobs_document(selected.translated, {item.job: [environment] for item in selected.translated})
    jobs = {
        item.job: _merged(item, fresh[item.job], current["JOBS"].get(item.job), environment)
        for item in selected.translated
    }
    used = dict.fromkeys(name for body in jobs.values() for name in body["environments"])
    envs = {name: current["ENVS"].get(name, name) for name in used}
    plan = apply_checked(database, settings, parse({"ENVS": envs, "JOBS": jobs}), prune=False, dry_run=dry_run)
    plan.notes = [note for note in plan.notes if not note.startswith("kept ")]  # the rest is not ours to list
    selected.plan = plan
    return selected
