"""`kirby celery import-beat MODULE:APP [--environment NAME] [--skip ENTRY] [--dry-run]`."""

from __future__ import annotations

import click

from kirby.celery.beat_import import app_schedule, load_app, translate
from kirby.commands.scripts_as_code import echo_plan
from kirby.db import opened_database
from kirby.demo.beat import EntriesRefused, import_beat, select_entries


@click.group("celery")
def celery() -> None:
    """Kirby and Celery: migrating a celery beat schedule."""


@celery.command("import-beat")
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--environment", default="production", show_default=True, help="Environment the jobs run in.")
@click.option("--skip", multiple=True, metavar="ENTRY", help="A beat entry to leave out (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would be written and write nothing.")
@click.pass_obj
def import_beat_command(settings, app_spec: str, environment: str, skip: tuple[str, ...], dry_run: bool) -> None:
    """Write the beat_schedule of the Celery app MODULE:APP as Kirby jobs, all or nothing."""
    beat_schedule, zone = app_schedule(load_app(app_spec))
    results = translate(beat_schedule, zone)
    try:
        selected = select_entries(results, skip)
    except EntriesRefused as exc:
        for refused in exc.refused:
            click.echo(str(refused), err=True)
        raise
    with opened_database(settings) as database:
        done = import_beat(database, settings, selected, environment, dry_run)
    for item in done.translated:
        click.echo(str(item))
    for name in done.skipped:
        click.echo(f"{name!r} skipped: left to celery beat")
    echo_plan(
        done.plan,
        dry_run,
        unchanged=f"no changes: the database already holds these {len(done.translated)} job(s)",
        applied="; stop celery beat now (Kirby sends these tasks)",
    )


COMMANDS = [celery]
