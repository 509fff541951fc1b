"""The reaper as a file in each venv, and the command line that starts a run with it.

The reaper (``reaper.py``) is compiled once by the supervisor and written into the venv as
``<venv>/.kirby/<hash of its source>/kirby-run``: CPython runs a compiled file given as the script
(it recognises the magic number, whatever the file's name), so a run pays neither a ``-c``
argument of pages of source nor its compilation (~2-4 ms per run). The venv's interpreter is the
Python version Kirby runs on (``KIRBY_RUN_PYTHON`` is checked), so the bytecode fits.

The file and its directories are owned by the supervisor's user, the file 0644 and the
directories 0755 like the rest of the venv: the run user can read and run it, not change it. It
holds the reaper only (no Kirby package is reachable from it: the script's ``sys.path[0]`` becomes
its working directory, as with ``python -m``). A new Kirby version (a new source) writes a new
directory beside the old one, so supervisors of two versions sharing a venv never overwrite each
other's reaper.

The process list stays readable: ``ps`` shows
``<venv>/bin/python <venv>/.kirby/<hash>/kirby-run <job> <run id> <module> <grace> [...]`` for the
reaper and for the script (a fork of it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import marshal
import os
import uuid
from pathlib import Path

from kirby.errors import PackageError

REAPER_NAME = "kirby-run"


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> tuple[str, bytes]:
    """(a short hash of ``source``, the bytes of its compiled file: header + marshalled code)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    code = compile(source, REAPER_NAME, "exec", dont_inherit=True)
    return digest, importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(code)


def install_reaper(venv: Path, source: str) -> Path:
    """The path of the compiled ``source`` in ``venv``, written there first if missing.

    Atomic (a temporary file renamed into place), so concurrent first runs (threads or
    supervisors) are harmless. Raises PackageError when the venv cannot be written.
    """
    digest, data = _compiled(source)
    folder = venv / ".kirby" / digest
    path = folder / REAPER_NAME
    if path.is_file():
        return path
    try:
        for directory in (folder.parent, folder):
            directory.mkdir(exist_ok=True)
            os.chmod(directory, 0o755)  # Kirby's umask is 077: the run user must reach it
        temp = folder / f".{REAPER_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        with open(temp, "wb") as file:
            file.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        raise PackageError(f"cannot write the reaper into the venv {venv}: {exc}; check that it is Kirby's") from None
    return path


def reaper_command(
    venv: Path,
    source: str,
    job: str,
    run_id: str,
    module: str,
    leftover_grace: float,
    fence: tuple[str, float] | None = None,
    options: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """The argument list of a run: the venv's python, the reaper file, then its arguments
    (``<job> <run id> <module> <grace> [<fence file> <fence after>] [--option ...]``)."""
    command = [str(venv / "bin" / "python"), str(install_reaper(venv, source)), job, run_id, module]
    command.append(f"{leftover_grace:g}")
    if fence is not None:
        command += [fence[0], f"{fence[1]:g}"]
    return command + list(options)
