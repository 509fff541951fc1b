"""Wake-ups for the embedded bus: a waiting consumer sleeps until a publisher signals, not in a 20 ms poll.

Each stream has a wake file beside the embedded file (``<embedded file>.<stream>.wake``, empty).
After each commit that gives a stream's consumers work (a publish, released or closed-over
messages), the writer touches it (``touch``: one ``utime`` call, whatever the number of
consumers). A consumer watches it with inotify (Linux, through ctypes: no dependency) and sleeps
on the watch, so an idle consumer wakes only when there is something to look at, or every
``SAFETY_INTERVAL`` seconds (work that comes with time alone: a dead member's messages, free once
its session timed out; a writer that could not touch the file).

The watch is created before the consumer's first look at the database, and its pending events are
drained before each look (``Waiter.clear``), so a touch between a look and the next wait is never
lost: the wait returns at once. Where inotify is missing (another OS, the per-user limit of inotify
instances reached, a file system that sends no events: checked at start by touching the file) the
consumer looks every ``POLL_INTERVAL`` seconds, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.02  # seconds between looks without inotify
SAFETY_INTERVAL = 0.5  # seconds between looks with inotify, when nothing signalled
_IN_MODIFY, _IN_ATTRIB, _IN_NONBLOCK, _IN_CLOEXEC = 0x2, 0x4, os.O_NONBLOCK, os.O_CLOEXEC


def wake_path(embedded: Path, stream: str) -> Path:
    return embedded.with_name(f"{embedded.name}.{stream}.wake")


def touch(path: Path) -> None:
    """Signal the consumers watching ``path``; best effort (they look every SAFETY_INTERVAL anyway)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.touch()
        except OSError:
            pass
    except OSError:
        pass


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc if hasattr(libc, "inotify_init1") else None
    except OSError:
        return None


_LIBC = _libc()


class Waiter:
    """Sleeps until ``path`` is touched (or a timeout); ``fd`` is None when polling instead."""

    def __init__(self, path: Path):
        self.fd: int | None = None
        touch(path)  # exists before it is watched
        if _LIBC is None:
            return
        fd = _LIBC.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.info("no inotify for %s (%s): looking every %g s", path, os.strerror(ctypes.get_errno()), POLL_INTERVAL)
            return
        if _LIBC.inotify_add_watch(fd, os.fsencode(path), _IN_ATTRIB | _IN_MODIFY) < 0:
            log.info("cannot watch %s (%s): looking every %g s", path, os.strerror(ctypes.get_errno()), POLL_INTERVAL)
            os.close(fd)
            return
        touch(path)
        if not select.select([fd], [], [], 0)[0]:  # a file system that sends no events
            log.info("%s sends no inotify events: looking every %g s", path, POLL_INTERVAL)
            os.close(fd)
            return
        self.fd = fd
        self.clear()

    def clear(self) -> None:
        """Forget the signals so far: call before looking at the database."""
        if self.fd is None:
            return
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, seconds: float) -> None:
        """Sleep until a signal since the last ``clear``, or ``seconds`` (capped by the look interval)."""
        if self.fd is None:
            time.sleep(max(0.0, min(POLL_INTERVAL, seconds)))
        else:
            try:
                select.select([self.fd], [], [], max(0.0, min(SAFETY_INTERVAL, seconds)))
            except (OSError, ValueError):  # closed meanwhile by another thread: the caller sees the bus closed
                time.sleep(POLL_INTERVAL)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
