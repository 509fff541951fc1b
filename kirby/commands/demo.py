"""`kirby demo [--json_file_path PATH] [--force]`: import a JSON script database (see kirby.demo)."""

from __future__ import annotations

from pathlib import Path

import click

from kirby.db import opened_database
from kirby.demo import import_data, parse_file


@click.command()
@click.option(
    "--json_file_path",
    "--json-file-path",
    "json_file_path",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON file to import (default: Kirby's own demo.json).",
)
@click.option("--force", is_flag=True, help="Import into a database that already holds jobs (same names are replaced).")
@click.pass_obj
def demo(settings, json_file_path: Path | None, force: bool) -> None:
    """Import scripts, environments, config, users... from a JSON file, all or nothing."""
    data = parse_file(json_file_path)  # a bad file stops here, before the database is opened
    with opened_database(settings) as database:
        notes = import_data(database, settings, data, force=force)
    for note in notes:
        click.echo(note)
    click.echo("demo data inserted in the database")


COMMANDS = [demo]
