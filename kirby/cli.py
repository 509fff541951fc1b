"""The ``kirby`` command line: a click group that builds the settings, then calls into the package.

Commands live in ``kirby/commands/``, one module each, and stay thin: parse, build, call. Any
``KirbyError`` ends the command with one line on stderr and exit code 1, never a stack trace.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from kirby.config import load_settings
from kirby.errors import KirbyError
from kirby.hardening import PRIVATE_UMASK

# command name -> its module in kirby/commands/: a command's module (and what it imports: Flask,
# the ORM) is imported only when that command runs, so ``kirby supervisor`` stays lean in memory
COMMAND_MODULES = {
    "demo": "demo",
    "adduser": "users",
    "venvs": "venvs",
    "web": "web",
    "supervisor": "supervisor",
    "audit": "audit",
    "gc": "gc",
    "token": "tokens",
    "export": "scripts_as_code",
    "apply": "scripts_as_code",
    "celery": "celery",
}


class KirbyGroup(click.Group):
    """Turns a KirbyError (raised while building settings or by a command) into click's one-line
    error; loads each command from its module (``COMMAND_MODULES``) when it is asked for."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KirbyError as exc:
            raise click.ClickException(str(exc)) from None

    def list_commands(self, ctx: click.Context | None) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            module = importlib.import_module(f"kirby.commands.{COMMAND_MODULES[name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(name)


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
