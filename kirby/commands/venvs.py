"""`kirby venvs list` and `kirby venvs gc`: the venv cache of this machine."""

from __future__ import annotations

import time

import click
from sqlalchemy import select

from kirby.db import opened_database
from kirby.models import Context
from kirby.tasks.install import default_installer
from kirby.tasks.venvs import VenvCache


def _cache(settings) -> VenvCache:
    return VenvCache(settings.venv_directory, default_installer(settings.package_index))


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)) if moment else "-"


@click.group("venvs")
def venvs() -> None:
    """The virtualenvs cached for package versions (KIRBY_VENV_DIRECTORY)."""


@venvs.command("list")
@click.pass_obj
def list_venvs(settings) -> None:
    """List cached venvs: package, version, Python, size, last used, in use."""
    infos = _cache(settings).list()
    if not infos:
        click.echo(f"no venvs in {settings.venv_directory}")
        return
    click.echo(f"{'PACKAGE':32} {'VERSION':12} {'PYTHON':6} {'SIZE':>9} {'LAST USED':19} IN USE")
    for info in infos:
        state = "yes" if info.in_use else "no"
        if not info.ready:
            state += " (broken: rebuilt on next use)"
        click.echo(
            f"{info.package:32} {info.version:12} {info.python:6} {_size(info.size):>9} {_when(info.last_used):19} {state}"
        )


def used_versions(settings) -> set[tuple[str, str]]:
    """(package, version) of every enabled context of the script database."""
    with opened_database(settings) as database, database.session() as session:
        rows = session.execute(
            select(Context.package_name, Context.package_version).where(Context.enabled.is_(True))
        ).all()
    return {(name, version) for name, version in rows}


@venvs.command("gc")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.pass_obj
def gc_venvs(settings, dry_run: bool) -> None:
    """Remove venvs of versions no enabled job context uses (never one in use)."""
    removed = _cache(settings).gc(used_versions(settings), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for info in removed:
        click.echo(f"{verb} {info.package} {info.version} (python {info.python}, {_size(info.size)})")
    click.echo(f"{verb} {len(removed)} venv(s), {_size(sum(info.size for info in removed))}")


COMMANDS = [venvs]
