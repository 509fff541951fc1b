"""`kirby export [--format json|yaml] [--with-secrets]` and `kirby apply FILE [--dry-run] [--prune]`."""

from __future__ import annotations

from pathlib import Path

import click

from kirby.db import opened_database
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
    with opened_database(settings) as database:
        text, notes = export_text(database, fmt, with_secrets)
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
    with opened_database(settings) as database:
        plan = apply_checked(database, settings, data, prune=prune, dry_run=dry_run)
    echo_plan(plan, dry_run, unchanged=f"no changes: the database matches {file}")


def echo_plan(plan, dry_run: bool, unchanged: str, applied: str = "") -> None:
    """What an apply changed (or would, ``dry_run``): its notes on stderr, then each change and a
    count on stdout; ``unchanged`` when there is none, ``applied`` after the count once written."""
    for note in plan.notes:
        click.echo(note, err=True)
    for change in plan.changes:
        click.echo(str(change))
    if not plan.changes:
        click.echo(unchanged)
    elif dry_run:
        click.echo(f"{len(plan.changes)} change(s); dry run: nothing written")
    else:
        click.echo(f"{len(plan.changes)} change(s) applied{applied}")


COMMANDS = [export, apply]
