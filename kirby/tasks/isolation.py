"""Who a run runs as, with which limits, and the start-up checks that keep Kirby's files from it.

``run_identity(settings)`` decides once, at executor start, the identity of every run:

* ``KIRBY_RUN_USER`` set: runs switch to that user (setgroups/setgid/setuid in the child before
  exec, by ``subprocess``). It must exist and not be root; switching needs a supervisor started as
  root, unless the run user is the supervisor's own user (then nothing switches).
* unset, supervisor not root: runs keep the supervisor's uid (what can still be closed is closed:
  private run directories, non-dumpable Kirby processes, secrets kept out of ``/proc/<pid>/environ``).
* unset, supervisor root: refused (scripts would run as root) unless ``KIRBY_ALLOW_ROOT_RUNS=true``.

``check_run_access`` then makes sure the run user can reach what it must (venvs, its run
directory, the interpreter) and cannot read what it must not (the settings file, the embedded
database, a SQLite script database): files Kirby owns are tightened to 0600, anything else is an
error naming the file and the fix.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from kirby.config import Settings
from kirby.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunIdentity:
    """The user runs run as. ``switch``: the child must change to it (the supervisor is root)."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    switch: bool

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class RunLimits:
    """setrlimit values applied to each script process (None: unlimited / inherited)."""

    memory: int | None = None  # RLIMIT_AS, bytes
    cpu: int | None = None  # RLIMIT_CPU, seconds
    open_files: int | None = None  # RLIMIT_NOFILE

    @classmethod
    def from_settings(cls, settings: Settings) -> RunLimits:
        return cls(settings.run_memory_limit, settings.run_cpu_limit, settings.run_open_files_limit)

    def reaper_options(self) -> list[str]:
        """The reaper's ``--limit=NAME:VALUE`` options."""
        pairs = (("as", self.memory), ("cpu", self.cpu), ("nofile", self.open_files))
        return [f"--limit={name}:{value}" for name, value in pairs if value is not None]


def _groups_of(user: str, gid: int) -> tuple[int, ...]:
    return tuple(sorted({gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}))


def identity_of(user: str, variable: str = "KIRBY_RUN_USER", euid: int | None = None) -> RunIdentity:
    """The identity of ``user`` (named by ``variable`` in errors); ConfigError if it cannot be used."""
    euid = os.geteuid() if euid is None else euid
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(
            f"{variable}={user!r}: no such user; create it (useradd --system --no-create-home {user}) "
            f"or unset {variable}"
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(f"{variable}={user!r} is root: name an unprivileged user (e.g. kirby-run)")
    if entry.pw_uid != euid and euid != 0:
        raise ConfigError(
            f"{variable}={user!r}: switching to another user needs a supervisor started as root "
            f"(this one runs as uid {euid}); start it as root or unset {variable}"
        )
    return RunIdentity(
        user, entry.pw_uid, entry.pw_gid, _groups_of(user, entry.pw_gid), entry.pw_dir, entry.pw_uid != euid
    )


def run_identity(settings: Settings, euid: int | None = None) -> RunIdentity:
    """The identity of every run of a supervisor with ``settings`` (see the module docstring)."""
    euid = os.geteuid() if euid is None else euid
    if settings.run_user:
        return identity_of(settings.run_user, euid=euid)
    if euid == 0 and not settings.allow_root_runs:
        raise ConfigError(
            "the supervisor runs as root and KIRBY_RUN_USER is unset, so scripts would run as root: "
            "set KIRBY_RUN_USER to an unprivileged user (e.g. useradd --system --no-create-home kirby-run), "
            "or KIRBY_ALLOW_ROOT_RUNS=true to accept root runs (tests only)"
        )
    entry = pwd.getpwuid(euid)
    return RunIdentity(entry.pw_name, euid, os.getegid(), tuple(os.getgroups()), entry.pw_dir, False)


# -- what the run user can reach --------------------------------------------------------------------
def _allows(info: os.stat_result, who: RunIdentity, bits: int) -> bool:
    """``bits`` (an ``S_IROTH``-style triple mask: 4 read, 2 write, 1 search) allowed to ``who``."""
    if who.uid == 0:
        return True
    if info.st_uid == who.uid:
        return bool(info.st_mode & (bits << 6))
    if info.st_gid in who.groups:
        return bool(info.st_mode & (bits << 3))
    return bool(info.st_mode & bits)


def readable_by(path: Path, who: RunIdentity) -> bool:
    """True when ``who`` could open ``path`` for reading (every parent searchable, the file readable)."""
    try:
        return all(_allows(os.stat(parent), who, 1) for parent in Path(path).absolute().parents) and _allows(
            os.stat(path), who, 4
        )
    except OSError:
        return False


def unreachable_parent(path: Path, who: RunIdentity) -> Path | None:
    """The first directory on the way to ``path`` that ``who`` cannot search, or None."""
    for parent in reversed(Path(path).absolute().parents):
        try:
            if not _allows(os.stat(parent), who, 1):
                return parent
        except OSError:
            return None  # does not exist yet: Kirby creates it
    return None


def make_searchable_directory(path: Path) -> None:
    """Create ``path`` and its missing parents 0711 (under umask 077 they would be 0700)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o711)


def _state_files(settings: Settings) -> list[tuple[str, Path]]:
    """Files no run may read, with the variable that names each: settings, embedded and script DB."""
    files = [("the settings file", Path.cwd() / ".env")]
    embedded = Path(settings.embedded_path)
    files += [("KIRBY_EMBEDDED_PATH", Path(f"{embedded}{suffix}")) for suffix in ("", "-wal", "-shm", "-journal")]
    if settings.database_uri.startswith("sqlite:///") and "file:" not in settings.database_uri:
        database = Path(settings.database_uri[len("sqlite:///") :].partition("?")[0])
        if str(database) not in ("", ":memory:"):
            files += [("SQLALCHEMY_DATABASE_URI", Path(f"{database}{suffix}")) for suffix in ("", "-wal", "-shm")]
    return files


def check_run_access(settings: Settings, who: RunIdentity, python: str) -> list[str]:
    """Make Kirby's state unreadable to ``who`` and check it can reach venvs, runs and ``python``.

    Returns what was tightened (for the start-up log). Raises ConfigError when a path the run user
    needs is out of its reach, or a file it must not read is readable and not Kirby's to tighten.
    """
    if not who.switch:
        return []  # same uid: file modes cannot separate the run from Kirby
    for directory in (settings.venv_directory, settings.run_directory):
        make_searchable_directory(Path(directory))
    for variable, path in (
        ("KIRBY_VENV_DIRECTORY", settings.venv_directory),
        ("KIRBY_RUN_DIRECTORY", settings.run_directory),
        ("KIRBY_RUN_PYTHON", Path(os.path.realpath(python))),
    ):
        blocked = unreachable_parent(path, who)
        if blocked is not None:
            raise ConfigError(
                f"{variable}: {path} is out of reach of the run user {who.user} ({blocked} is not searchable "
                f"by it): put it under a directory others may search (chmod o+x {blocked}, or e.g. /var/lib/kirby)"
            )
    tightened = []
    for variable, path in _state_files(settings):
        if not path.exists() or not readable_by(path, who):
            continue
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_uid != who.uid:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)
            tightened.append(str(path))
            log.warning(
                "%s: %s was readable by the run user %s; made it private (chmod go-rwx)", variable, path, who.user
            )
        else:
            raise ConfigError(
                f"{variable}: {path} is readable by the run user {who.user}: make it private to Kirby's user "
                f"(chown it to Kirby's user and chmod 600 {path})"
            )
    return tightened


def describe(who: RunIdentity, limits: RunLimits, non_dumpable: bool) -> str:
    """One start-up line saying which protections are active."""
    if who.switch:
        identity = f"scripts run as {who.user} (uid {who.uid}), not as the supervisor's user"
    elif who.is_root:
        identity = "scripts run AS ROOT (KIRBY_ALLOW_ROOT_RUNS=true): no isolation from Kirby or the host"
    else:
        identity = (
            f"scripts run as the supervisor's own user {who.user} (KIRBY_RUN_USER unset): they can read "
            "files of this user; set KIRBY_RUN_USER and start the supervisor as root to separate them"
        )
    active = [
        "Kirby processes non-dumpable" if non_dumpable else "Kirby processes DUMPABLE (prctl failed)",
        "secrets kept out of /proc/<pid>/environ",
        "private run directories (0700) with their own TMPDIR"
        if who.switch
        else "run directories 0700 with their own TMPDIR (runs share one uid: not private from each other)",
        "venvs read-only to runs" if who.switch else "venvs owned by the same user (not protected)",
    ]
    limits_text = ", ".join(
        f"{name} {value}"
        for name, value in (("memory", limits.memory), ("cpu s", limits.cpu), ("open files", limits.open_files))
        if value is not None
    )
    active.append(f"limits: {limits_text}" if limits_text else "no resource limits")
    return f"run isolation: {identity}; " + "; ".join(active)
