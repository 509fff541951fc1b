"""`kirby web`: serve the web UI, the JSON API and live logs (waitress; Flask's debugger with --debug)."""

from __future__ import annotations

import click

from kirby.hardening import harden_process
from kirby.web.server import serve


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--debug", is_flag=True, help="Flask's development server with the debugger (never in production).")
@click.option(
    "--lost-grace",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds a supervisor may be missing from the registry before its runs are marked lost.",
)
@click.pass_obj
def web(settings, host: str, port: int, debug: bool, lost_grace: float) -> None:
    """Serve the web UI on HOST:PORT."""
    harden_process()  # umask 077, non-dumpable: no same-uid process reads its environment or memory
    serve(settings, host=host, port=port, debug=debug, lost_grace=lost_grace)


COMMANDS = [web]
