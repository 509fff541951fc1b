"""Set-up of the run-user isolation tests: the run user, an interpreter it can run, a reachable folder.

CI runs as root, so the run-user path is tested for real: ``run_user()`` creates the system user
``kirby-run-test`` when it is missing (idempotent) and fails the test with the reason when it
cannot (skips outside CI when the tests do not run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import IN_CI

RUN_USER = "kirby-run-test"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def _unavailable(message: str):
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def run_user() -> pwd.struct_passwd:
    """The run user of the tests, created if missing (needs root)."""
    if os.geteuid() != 0:
        _unavailable("the run-user isolation tests need root (CI runs as root): run pytest as root")
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        pass
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_USER],
        capture_output=True,
        text=True,
    )
    try:
        return pwd.getpwnam(RUN_USER)  # also when a parallel test created it first
    except KeyError:
        pytest.fail(
            f"cannot create the test run user {RUN_USER} with useradd: {done.stderr.strip() or done.returncode}"
        )


def run_python() -> str:
    """A Python of Kirby's version that the run user can execute (Kirby's own may live under /root)."""
    from kirby.tasks.isolation import identity_of, unreachable_parent

    who = identity_of(RUN_USER)
    candidates = [sys.executable, f"/usr/bin/python{PYTHON_VERSION}", f"/usr/local/bin/python{PYTHON_VERSION}"]
    candidates.append(shutil.which(f"python{PYTHON_VERSION}", path="/usr/local/bin:/usr/bin:/bin") or "")
    for candidate in candidates:
        real = Path(os.path.realpath(candidate)) if candidate else None
        if real and real.is_file() and unreachable_parent(real, who) is None and real.stat().st_mode & 0o001:
            return candidate
    pytest.fail(
        f"no Python {PYTHON_VERSION} that {RUN_USER} can execute (tried {', '.join(filter(None, candidates))}): "
        f"install python{PYTHON_VERSION} from the distribution"
    )


def open_folder() -> Path:
    """A fresh folder under /tmp that the run user may enter (0711) but not list; remove it after."""
    folder = Path(tempfile.mkdtemp(prefix="kirby-isolation-", dir="/tmp"))
    os.chmod(folder, 0o711)
    return folder
