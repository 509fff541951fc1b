"""The venv cache: one venv per (package, version, Python version) under the venv directory.

A venv is built in a temporary folder beside its final place and renamed into place, with the
``.kirby-ready`` marker written last, so a crash never leaves a half-built venv that looks ready.
A file lock per venv makes concurrent first builds (threads or processes) build it once. A venv
without its marker, its interpreter or its package's metadata is broken: it is removed and rebuilt.
A run holds a shared lock on the venv's ``.use`` file while it runs; ``gc`` takes it exclusively
without waiting, so it never removes a venv in use.

Venvs are read-only to runs: owned by the supervisor's user, directories 0755 and files 0644 (0755
when executable), so a run user can import and run them but not change them; ``<dir>`` itself is
0711 (a run user reaches its venv but cannot list the others) and ``.locks`` is 0700.

Layout: ``<dir>/<name>/`` venvs, ``<dir>/.locks/<name>.build|.use`` locks, ``<dir>/.locks/builds.log``
one line per build, ``<dir>/.tmp-<name>-*`` builds in progress (or crashed: removed on next build).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from kirby.tasks.install import Installer, remove_tree
from kirby.tasks.names import check_package, check_version, venv_name

log = logging.getLogger(__name__)

MARKER = ".kirby-ready"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class VenvInfo:
    """One cached venv, as ``kirby venvs list`` shows it."""

    name: str
    path: Path
    package: str
    version: str
    python: str
    installer: str
    ready: bool
    size: int
    built_at: float
    last_used: float
    in_use: bool


class VenvLease:
    """A venv in use by a run: holds the venv's shared lock until ``release``."""

    def __init__(self, path: Path, lock_file):
        self.path = path
        self._lock_file = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"


def _has_distribution(venv: Path, package: str, version: str) -> bool:
    try:
        entries = os.listdir(_site_packages(venv))
    except OSError:
        return False
    for entry in entries:
        if entry.endswith(".dist-info"):
            name, _, found = entry[: -len(".dist-info")].rpartition("-")
            if canonicalize_name(name) == package and _same_version(found, version):
                return True
    return False


def is_ready(venv: Path, package: str, version: str) -> bool:
    """True if ``venv`` has its marker, a runnable interpreter and the package's metadata."""
    python = venv / "bin" / "python"
    return (
        (venv / MARKER).is_file()
        and os.path.exists(python)  # follows the symlink: its target must exist
        and os.access(python, os.X_OK)
        and _has_distribution(venv, package, version)
    )


def share_read_only(tree: Path) -> None:
    """Make ``tree`` readable (and searchable) by everyone and writable by its owner only."""
    for root, _dirs, files in os.walk(tree):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            mode = os.lstat(path).st_mode
            os.chmod(path, 0o755 if mode & 0o100 else 0o644)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class VenvCache:
    """Builds, reuses, lists and collects venvs under ``directory`` with ``installer``."""

    def __init__(self, directory: Path, installer: Installer):
        self.directory = Path(directory)
        self.installer = installer
        self.locks = self.directory / ".locks"
        self._checked: dict[Path, tuple] = {}  # ready venv -> what it looked like then (see _is_ready)

    def _is_ready(self, venv: Path, package: str, version: str) -> bool:
        """``is_ready``, remembered while the venv's marker, ``bin/`` and site-packages are unchanged
        (three stats per run instead of a listing): a rebuilt venv has a new marker, a removed
        interpreter or package metadata changes its directory."""
        try:
            stats = [os.stat(path) for path in (venv / MARKER, venv / "bin", _site_packages(venv))]
        except OSError:
            self._checked.pop(venv, None)
            return False
        signature = tuple((info.st_ino, info.st_mtime_ns) for info in stats)
        if self._checked.get(venv) == signature:
            return True
        if not is_ready(venv, package, version):
            return False
        self._checked[venv] = signature
        return True

    def path(self, package: str, version: str) -> Path:
        return self.directory / venv_name(package, version, PYTHON_VERSION)

    def ensure(self, package: str, version: str) -> Path:
        """Return the ready venv of ``package==version``, building it (once) if needed.

        Raises PackageError (invalid name or version, unknown or uninstallable package).
        """
        package, version = check_package(package), check_version(version)
        venv = self.path(package, version)
        if self._is_ready(venv, package, version):
            return venv
        self._make_directories()
        with FileLock(str(self.locks / f"{venv.name}.build")):
            if is_ready(venv, package, version):
                return venv  # another thread or process built it while we waited
            self._clear(venv)
            self._build(venv, package, version)
        return venv

    def acquire(self, package: str, version: str) -> VenvLease:
        """Mark the venv in use (shared lock) and return it ready; ``release`` the lease after the run."""
        package, version = check_package(package), check_version(version)
        venv = self.path(package, version)
        self._make_directories()
        use = open(self.locks / f"{venv.name}.use", "a+")
        try:
            fcntl.flock(use, fcntl.LOCK_SH)  # waits only while gc is removing this very venv
            os.utime(use.fileno())  # last used
            return VenvLease(self.ensure(package, version), use)
        except BaseException:
            use.close()
            raise

    def _make_directories(self) -> None:
        """The venv directory (0711: runs reach their venv, cannot list) and its private .locks."""
        if not self.locks.is_dir():
            self.locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.stat(self.directory).st_uid == os.geteuid():
            os.chmod(self.directory, 0o711)

    def _clear(self, venv: Path) -> None:
        """Remove a broken venv and crashed builds of it (the build lock is held)."""
        for leftover in self.directory.glob(f".tmp-{venv.name}-*"):
            log.warning("removing the unfinished build %s", leftover)
            remove_tree(leftover)
        if venv.exists():
            log.warning("venv %s is broken (no marker, interpreter or package metadata): rebuilding", venv)
            self._discard(venv)

    def _discard(self, venv: Path) -> None:
        trash = self.directory / f".trash-{venv.name}-{uuid.uuid4().hex[:8]}"
        os.rename(venv, trash)
        remove_tree(trash)

    def _build(self, venv: Path, package: str, version: str) -> None:
        temp = self.directory / f".tmp-{venv.name}-{uuid.uuid4().hex[:8]}"
        started = time.time()
        try:
            self.installer.build(temp, package, version)
            marker = {
                "package": package,
                "version": version,
                "python": PYTHON_VERSION,
                "installer": self.installer.name,
                "built_at": time.time(),
            }
            (temp / MARKER).write_text(json.dumps(marker))
            share_read_only(temp)
            os.rename(temp, venv)
        finally:
            remove_tree(temp)
        with open(self.locks / "builds.log", "a") as builds:
            builds.write(f"{venv.name} {self.installer.name} {time.time() - started:.3f}s pid {os.getpid()}\n")
        log.info("built venv %s with %s in %.1f s", venv, self.installer.name, time.time() - started)

    def list(self) -> list[VenvInfo]:
        """Every venv in the directory (ready or broken), sorted by name."""
        infos = []
        if not self.directory.is_dir():
            return infos
        for venv in sorted(self.directory.iterdir()):
            if venv.name.startswith(".") or not venv.is_dir():
                continue
            infos.append(self._info(venv))
        return infos

    def _info(self, venv: Path) -> VenvInfo:
        try:
            marker = json.loads((venv / MARKER).read_text())
        except (OSError, ValueError):
            marker = {}
        package, version = marker.get("package", "?"), marker.get("version", "?")
        use = self.locks / f"{venv.name}.use"
        built_at = float(marker.get("built_at", 0.0))
        return VenvInfo(
            name=venv.name,
            path=venv,
            package=package,
            version=version,
            python=marker.get("python", "?"),
            installer=marker.get("installer", "?"),
            ready=bool(marker) and is_ready(venv, package, version),
            size=_tree_size(venv),
            built_at=built_at,
            last_used=use.stat().st_mtime if use.exists() else built_at,
            in_use=self._in_use(venv),
        )

    def _in_use(self, venv: Path) -> bool:
        use = self.locks / f"{venv.name}.use"
        if not use.exists():
            return False
        with open(use, "a+") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def gc(self, keep: set[tuple[str, str]], dry_run: bool = False) -> list[VenvInfo]:
        """Remove venvs whose (package, version) is not in ``keep`` and that no run uses.

        ``keep`` holds (name, version) pairs, normalized here. Returns the venvs removed (or that
        would be, with ``dry_run``). Broken venvs not in ``keep`` are removed too.
        """
        wanted = {(canonicalize_name(name), _normal_version(version)) for name, version in keep}
        removed = []
        for info in self.list():
            if (info.package, info.version) in wanted or info.in_use:
                continue
            if dry_run or self._remove_unused(info.path):
                removed.append(info)
        return removed

    def _remove_unused(self, venv: Path) -> bool:
        self.locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks / f"{venv.name}.build")):
            with open(self.locks / f"{venv.name}.use", "a+") as use:
                try:
                    fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # a run started meanwhile
                if venv.exists():
                    self._discard(venv)
                log.info("removed unused venv %s", venv)
                return True


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def _normal_version(version: str) -> str:
    try:
        return check_version(version)
    except Exception:
        return version
