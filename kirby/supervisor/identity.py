"""Who a supervisor process is, and whether a registered one is dead (to take its name over).

A registration's ``info`` carries ``host``, ``pid`` and ``started`` (the process's start time in
clock ticks since boot, from ``/proc/<pid>/stat``). A registration of this host whose pid is gone,
or whose pid now belongs to a process started at another time (the pid was reused), is dead: a
supervisor restarted under the same name takes the name over at once. A registration of another
host cannot be checked from here and is dead only once its heartbeats expire.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def process_started(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22; the name may hold spaces


def identity() -> dict[str, Any]:
    """This process: host, pid, start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_started(pid)}


def is_dead_here(info: dict[str, Any]) -> bool:
    """True when ``info`` names a process of this host that no longer runs."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    started = process_started(info["pid"])
    return started is None or (info.get("started") is not None and started != info["started"])


def live_instances(registrations) -> set[str]:
    """The instance ids of ``registrations`` (``SupervisorInfo``) that may be alive: registered, and
    not a process of this host known to be gone (so a death on this host counts at once, not after
    the registration's TTL)."""
    return {info.instance for info in registrations if not is_dead_here(info.info)}
