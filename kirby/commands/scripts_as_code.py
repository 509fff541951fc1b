"""`kirby export [--format json|yaml] [--with-secrets]` and `kirby apply FILE [--dry-run] [--prune]`."""

from __future__ import annotations

from pathlib import Path

import click

from kirby.db import open_database
from kirby.demo.files import apply_checked, export_text, read_data


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json", show_default=True)
@click.option("--with-secrets", is_flag=True, help='Write secret values too (else they read {"secret": true}).')
@click.option(
    "--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File (default: stdout)."
)
@click.pass_obj
def export(settings, fmt: str, with_secrets: bool, output: Path | None) -> None:
    """Write the script database in the import format (kirby demo / kirby apply read it)."""
    database = open_database(settings)
    try:
        text, notes = export_text(database, fmt, with_secrets)
    finally:
        database.dispose()
    for note in notes:
        click.echo(note, err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@click.command("apply")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the changes and write nothing.")
@click.option("--prune", is_flag=True, help="Also delete what the database holds and the file does not.")
@click.pass_obj
def apply(settings, file: Path, dry_run: bool, prune: bool) -> None:
    """Make the script database match FILE (JSON or YAML, the import format), all or nothing."""
    data = read_data(file)  # a bad file stops here, before the database is opened
    database = open_database(settings)
    try:
        plan = apply_checked(database, settings, data, prune=prune, dry_run=dry_run)
    finally:
        database.dispose()
    for note in plan.notes:
        click.echo(note, err=True)
    for change in plan.changes:
        click.echo(str(change))
    if not plan.changes:
        click.echo(f"no changes: the database matches {file}")
    elif dry_run:
        click.echo(f"{len(plan.changes)} change(s); dry run: nothing written")
    else:
        click.echo(f"{len(plan.changes)} change(s) applied")


COMMANDS = [export, apply]
