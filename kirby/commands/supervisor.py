"""`kirby supervisor NAME [--window 5] [--wakeup 30] [--grace 30] [--concurrency N]`: run one supervisor until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading

import click

from kirby.hardening import harden_process
from kirby.supervisor.service import Supervisor


@click.command()
@click.argument("name")
@click.option(
    "--window",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between election attempts; the leader lease lives a small multiple of it.",
)
@click.option(
    "--wakeup",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="The leader re-reads the schedule at least this often (seconds).",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On shutdown, seconds running scripts get to finish before they are stopped.",
)
@click.option(
    "--concurrency",
    default=None,
    type=click.IntRange(min=1),
    help="Scheduled runs this supervisor runs at once; offers beyond it stay on the bus for others. "
    "[default: KIRBY_CONCURRENCY, else 4 x CPU cores]",
)
@click.pass_obj
def supervisor(settings, name: str, window: float, wakeup: float, grace: float, concurrency: int | None) -> None:
    """Run supervisor NAME: lead when elected, run offered scripts, keep daemons alive."""
    harden_process()  # umask 077, non-dumpable: scripts cannot read this process's environment or memory
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    Supervisor(settings, name, window=window, wakeup=wakeup, grace=grace, concurrency=concurrency).run(stop)


COMMANDS = [supervisor]
