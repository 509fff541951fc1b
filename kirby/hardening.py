"""Process hardening of Kirby's own processes (supervisor, ``kirby web``): call ``harden_process()`` first.

* ``umask 077``: every file and directory Kirby creates (databases, the embedded bus and lease
  file, run directories, fence files) is private to Kirby's user unless it widens it on purpose
  (venvs are made readable, never writable, for the run user).
* ``PR_SET_DUMPABLE 0``: the kernel then refuses ``/proc/<pid>/environ``, ``/proc/<pid>/mem`` and
  ptrace to any process without CAP_SYS_PTRACE, even of the same uid, so a script cannot read the
  secrets of the process that started it. The reaper does the same (its own copy: the venv's
  interpreter cannot import Kirby).

Only the standard library: this module must stay importable anywhere.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PRIVATE_UMASK = 0o077


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def make_non_dumpable() -> bool:
    """Make this process non-dumpable; True when the kernel confirms it (False off Linux or on error)."""
    try:
        _prctl(PR_SET_DUMPABLE, 0)
        return _prctl(PR_GET_DUMPABLE) == 0
    except (OSError, AttributeError) as exc:
        log.warning("cannot make this process non-dumpable (PR_SET_DUMPABLE): %s", exc)
        return False


def is_dumpable() -> bool:
    """The kernel's dumpable flag of this process (True where it cannot be read)."""
    try:
        return _prctl(PR_GET_DUMPABLE) != 0
    except (OSError, AttributeError):
        return True


def harden_process() -> bool:
    """Set umask 077 and make this process non-dumpable; True when non-dumpable."""
    os.umask(PRIVATE_UMASK)
    return make_non_dumpable()
