"""LocalExecutor: the Executor contract on this machine (venv cache + one subprocess per run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from kirby.config import Settings
from kirby.errors import ConfigError, PackageError
from kirby.tasks.base import Executor, OutputLine, OutputLines, RunResult, RunSpec, Staged
from kirby.tasks.install import Installer, default_installer
from kirby.tasks.isolation import RunIdentity, RunLimits, check_run_access, identity_of, run_identity
from kirby.tasks.masking import Masker, index_credentials
from kirby.tasks.names import module_for
from kirby.tasks.process import RunProcess
from kirby.tasks.venvs import PYTHON_VERSION, VenvCache

log = logging.getLogger(__name__)
_STARTING = object()  # in ``LocalExecutor._runs`` while the run's process is being spawned


def check_run_python(python: str) -> None:
    """ConfigError unless ``python`` (KIRBY_RUN_PYTHON) is the Python version Kirby runs on."""
    try:
        found = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"KIRBY_RUN_PYTHON={python!r} does not run: {exc}") from None
    if found != PYTHON_VERSION:
        raise ConfigError(
            f"KIRBY_RUN_PYTHON={python!r} is Python {found}, Kirby runs on {PYTHON_VERSION}: "
            f"point it at a Python {PYTHON_VERSION} interpreter or unset it"
        )


class LocalExecutor(Executor):
    """Runs packages from ``settings.package_index`` in venvs under ``settings.venv_directory``.

    Thread-safe; runs started from several threads spawn in parallel (the lock covers only the
    bookkeeping). ``timeout_grace``: seconds between SIGTERM and SIGKILL when a run times out.
    Runs run as ``run_identity(settings)`` (ConfigError at construction when that is refused, e.g.
    a root supervisor without KIRBY_RUN_USER), with ``settings``' resource limits. ``known_secrets``
    returns the secret values of every job the supervisor knows: each run's output is masked with
    them all (and the package index's credentials), not only with its own.
    """

    def __init__(
        self,
        settings: Settings,
        supervisor_name: str,
        installer: Installer | None = None,
        timeout_grace: float = 10.0,
        known_secrets: Callable[[], Iterable[str]] | None = None,
    ):
        self.supervisor_name = supervisor_name
        self.settings = settings
        self.run_directory = Path(settings.run_directory)
        self.identity = run_identity(settings)
        self.limits = RunLimits.from_settings(settings)
        self.python = python = settings.run_python or sys.executable
        if settings.run_python:
            check_run_python(python)
        self.tightened = check_run_access(settings, self.identity, python)
        self._identities: dict[str, RunIdentity] = {}  # run_as user -> identity, checked once
        self.cache = VenvCache(settings.venv_directory, installer or default_installer(settings.package_index, python))
        self.timeout_grace = timeout_grace
        self.known_secrets = known_secrets or (lambda: ())
        self._index_secrets = index_credentials(settings.package_index)
        self._masker, self._masker_key = Masker(self._index_secrets), frozenset()
        self._masker_source: object = None  # the frozenset ``_masker`` was last checked against
        self._runs: dict[str, RunProcess | object] = {}  # run id -> its process (or _STARTING)
        self._lock = threading.Lock()

    def masker(self) -> Masker:
        """A masker of every secret known now (cached while the set of secrets is unchanged).

        O(1) per run while ``known_secrets`` returns the same frozenset (the supervisor's: one per
        schedule snapshot, so per schedule version); another object is compared by value."""
        try:
            known = self.known_secrets()
        except Exception:  # masking with fewer secrets beats not running: the run's own still apply
            log.exception("could not read the secrets of the other jobs")
            known = frozenset()
        with self._lock:
            if isinstance(known, frozenset) and known is self._masker_source:
                return self._masker
        key = known if isinstance(known, frozenset) else frozenset(known)
        with self._lock:
            if key != self._masker_key:
                self._masker_key, self._masker = key, Masker([*self._index_secrets, *key])
            self._masker_source = known
            return self._masker

    def identity_for(self, spec: RunSpec) -> RunIdentity:
        """The identity ``spec`` runs as: its job's ``run_as`` if set, else the executor's.

        Raises PackageError (nothing started) when ``run_as`` cannot be used: unknown user, root,
        a supervisor that cannot switch, or Kirby's files within its reach.
        """
        if not spec.run_as:
            return self.identity
        name = spec.run_as
        with self._lock:
            known = self._identities.get(name)
        if known is not None:
            return known
        try:
            who = identity_of(name, f"run_as of job {spec.job!r}")
            check_run_access(self.settings, who, self.python)
        except ConfigError as exc:
            raise PackageError(str(exc)) from None
        with self._lock:
            self._identities[name] = who
        return who

    def _open_fence_path(self, spec: RunSpec, identity: RunIdentity) -> None:
        """Let the run user stat its fence file: its directories up to the run directory become 0711."""
        if not spec.fence_file or not identity.switch:
            return
        for parent in Path(spec.fence_file).parents:
            if parent == self.run_directory or self.run_directory not in parent.parents:
                break
            if parent.stat().st_uid == os.geteuid():
                os.chmod(parent, 0o711)

    def prepare(self, package: str, version: str) -> Path:
        return self.cache.ensure(package, version)

    def start(
        self,
        spec: RunSpec,
        on_line: Callable[[OutputLine], None],
        on_exit: Callable[[RunResult], None],
        on_lines: Callable[[OutputLines], None] | None = None,
    ) -> None:
        self._spawn(spec, on_line, on_exit, on_lines, held=False)

    def stage(
        self,
        spec: RunSpec,
        on_line: Callable[[OutputLine], None],
        on_exit: Callable[[RunResult], None],
        on_lines: Callable[[OutputLines], None] | None = None,
    ) -> Staged:
        """The reaper is spawned now and waits on its stdin (``process.RunProcess``, ``held``)."""
        return self._spawn(spec, on_line, on_exit, on_lines, held=True)

    def _spawn(self, spec, on_line, on_exit, on_lines, held: bool) -> RunProcess:
        module = module_for(spec.package, spec.module)
        identity = self.identity_for(spec)
        masker = self.masker()
        lease = self.cache.acquire(spec.package, spec.version)
        with self._lock:  # the run id is taken here; the spawn runs outside the lock, in parallel with others
            if spec.run_id in self._runs:
                lease.release()
                raise ValueError(f"run {spec.run_id!r} is already running on this executor")
            self._runs[spec.run_id] = _STARTING

        def finished(result: RunResult) -> None:
            with self._lock:
                self._runs.pop(spec.run_id, None)
            lease.release()
            if run is not None and run.aborted:  # a held run given up: nothing ran, nothing to report
                log.info("run %s: its held process was ended before the script started", spec.run_id)
                return
            log.info("run %s %s (exit %s, signal %s)", spec.run_id, result.state, result.exit_code, result.signal)
            on_exit(result)

        run = None
        try:
            self._open_fence_path(spec, identity)
            run = RunProcess(
                spec,
                lease.path,
                module,
                self.run_directory,
                on_line,
                finished,
                self.timeout_grace,
                identity=identity,
                limits=self.limits,
                masker=masker,
                on_lines=on_lines,
                held=held,
            )
        except BaseException:
            with self._lock:
                self._runs.pop(spec.run_id, None)
            lease.release()
            raise
        with self._lock:
            if self._runs.get(spec.run_id) is _STARTING:  # else it is over already (``finished`` ran)
                self._runs[spec.run_id] = run
        log.info(
            "run %s %s: %s==%s (module %s)",
            *(spec.run_id, "spawned, held" if held else "started", spec.package, spec.version, module),
        )
        return run

    def cancel(self, run_id: str, grace: float = 10.0) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None or run is _STARTING:  # a run being spawned: the caller asks again (check_cancels)
            return False
        run.stop("cancelled", grace)
        return True

    def running(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def shutdown(self, grace: float = 10.0) -> None:
        with self._lock:
            runs = [run for run in self._runs.values() if run is not _STARTING]
        for run in runs:
            run.stop("cancelled", grace)
        for run in runs:
            run.thread.join(grace + 30)
