"""`kirby token create|revoke|list`: named API tokens for scripts and CI (see kirby.tokens)."""

from __future__ import annotations

import click

from kirby.clock import SYSTEM_CLOCK
from kirby.db import opened_database
from kirby.tokens import create_token, list_tokens, parse_duration, revoke_token, status


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


@click.group("token")
def token() -> None:
    """API tokens (Authorization: Bearer <token>): admin or viewer, optionally expiring."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True, help="viewer: GET only.")
@click.option("--expires", default=None, help="Lifetime such as 30d, 12h, 90m or 2w (default: never).")
@click.pass_obj
def create(settings, name: str, role: str, expires: str | None) -> None:
    """Create token NAME and print it once (only its hash is stored)."""
    lifetime = parse_duration(expires) if expires else None
    with opened_database(settings) as database, database.session() as session:
        row, secret = create_token(session, name, role, SYSTEM_CLOCK.now(), lifetime)
        expires_at = row.expires_at
    click.echo(secret)
    click.echo(
        f"token {name} ({role}, expires {_when(expires_at) if expires_at else 'never'}): "
        "copy it now, it is not shown again",
        err=True,
    )


@token.command("revoke")
@click.argument("name")
@click.pass_obj
def revoke(settings, name: str) -> None:
    """Revoke token NAME: it is refused from now on."""
    with opened_database(settings) as database, database.session() as session:
        revoke_token(session, name, SYSTEM_CLOCK.now())
    click.echo(f"token {name} revoked")


@token.command("list")
@click.pass_obj
def list_command(settings) -> None:
    """List tokens: name, role, state, created, expires (never the tokens themselves)."""
    with opened_database(settings) as database, database.session() as session:
        now = SYSTEM_CLOCK.now()
        lines = [
            f"{r.name}\t{r.role.value}\t{status(r, now)}\t{_when(r.created_at)}\t{_when(r.expires_at)}"
            for r in list_tokens(session)
        ]
    if not lines:
        click.echo("no API tokens; create one with kirby token create NAME --role viewer")
        return
    click.echo("name\trole\tstate\tcreated\texpires")
    for line in lines:
        click.echo(line)


COMMANDS = [token]
