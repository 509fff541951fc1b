"""`kirby gc`: delete finished runs (and their logs) older than KIRBY_RUN_RETENTION_DAYS."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from kirby.db import opened_database
from kirby.errors import UserError
from kirby.retention import prune_runs


@click.command("gc")
@click.option("--days", type=click.IntRange(min=1), help="Override KIRBY_RUN_RETENTION_DAYS for this run.")
@click.pass_obj
def gc(settings, days: int | None) -> None:
    """Delete finished runs older than the retention (KIRBY_RUN_RETENTION_DAYS), with their log lines."""
    days = days or settings.run_retention_days
    if days <= 0:
        raise UserError("KIRBY_RUN_RETENTION_DAYS=0 keeps run history forever; pass --days N to prune anyway")
    with opened_database(settings) as database:
        pruned = prune_runs(database, datetime.now(timezone.utc), days)
    click.echo(f"deleted {pruned.runs} runs and {pruned.lines} log lines finished more than {days} days ago")


COMMANDS = [gc]
