"""`kirby adduser NAME`: create a local user, interactively or from a provisioning script."""

from __future__ import annotations

import sys

import click

from kirby.config import Settings
from kirby.db import opened_database
from kirby.errors import UserError
from kirby.users import add_user, check_password, check_username, find_user


def _password_from_stdin() -> str:
    return sys.stdin.readline().rstrip("\r\n")


@click.command("adduser")
@click.argument("name")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (no questions; viewer unless --admin).",
)
@click.option("--admin/--no-admin", default=None, help="Give or withhold admin rights without asking.")
@click.pass_obj
def adduser(settings: Settings, name: str, password_stdin: bool, admin: bool | None) -> None:
    """Add the user NAME: asks for a password (hidden, confirmed) and whether to give admin rights."""
    check_username(name)
    with opened_database(settings) as database:
        with database.session() as session:
            if find_user(session, name) is not None:  # before asking anything
                raise UserError(f"user {name!r} already exists; choose another name")
        if password_stdin:
            password = _password_from_stdin()
        else:
            password = click.prompt(
                "Password", hide_input=True, confirmation_prompt=True, default="", show_default=False
            )
        check_password(name, password)  # empty or under 12 characters: refused before any question
        if admin is None:
            admin = False if password_stdin else click.confirm("Give admin rights?", default=False)
        with database.session() as session:
            add_user(session, settings, name, password, admin)
    click.echo(f"User {name} added with {'admin' if admin else 'viewer'} rights")


COMMANDS = [adduser]
