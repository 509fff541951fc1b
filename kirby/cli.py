"""The ``kirby`` command line: a click group that builds the settings, then calls into the package.

Commands live in ``kirby/commands/``, one module each, and stay thin: parse, build, call. Any
``KirbyError`` ends the command with one line on stderr and exit code 1, never a stack trace.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from kirby.config import load_settings
from kirby.errors import KirbyError
from kirby.hardening import PRIVATE_UMASK


class KirbyGroup(click.Group):
    """Turns a KirbyError (raised while building settings or by a command) into click's one-line error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KirbyError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=KirbyGroup)
@click.version_option(package_name="kirby")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Kirby runs Python scripts on a cluster: scheduled (cron) or daemons."""
    os.umask(PRIVATE_UMASK)  # every file Kirby creates (databases, run directories) is private to its user
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format=settings.log_format)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # no migration chatter in dialogues
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python narrates every connection at INFO
    ctx.obj = settings


def _register() -> None:
    from kirby.commands import audit, demo, gc, scripts_as_code, supervisor, tokens, users, venvs, web

    for module in (demo, users, venvs, web, supervisor, audit, gc, tokens, scripts_as_code):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, turning user errors into one line and exit code 1."""
    try:
        cli.main(args=argv, prog_name="kirby", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KirbyError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
