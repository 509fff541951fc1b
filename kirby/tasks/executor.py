"""LocalExecutor: the Executor contract on this machine (venv cache + one subprocess per run)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from kirby.config import Settings
from kirby.tasks.base import Executor, OutputLine, RunResult, RunSpec
from kirby.tasks.install import Installer, default_installer
from kirby.tasks.names import module_for
from kirby.tasks.process import RunProcess
from kirby.tasks.venvs import VenvCache

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    """Runs packages from ``settings.package_index`` in venvs under ``settings.venv_directory``.

    Thread-safe. ``timeout_grace``: seconds between SIGTERM and SIGKILL when a run times out.
    """

    def __init__(
        self, settings: Settings, supervisor_name: str, installer: Installer | None = None, timeout_grace: float = 10.0
    ):
        self.supervisor_name = supervisor_name
        self.run_directory = Path(settings.run_directory)
        self.cache = VenvCache(settings.venv_directory, installer or default_installer(settings.package_index))
        self.timeout_grace = timeout_grace
        self._runs: dict[str, RunProcess] = {}
        self._lock = threading.Lock()

    def prepare(self, package: str, version: str) -> Path:
        return self.cache.ensure(package, version)

    def start(self, spec: RunSpec, on_line: Callable[[OutputLine], None], on_exit: Callable[[RunResult], None]) -> None:
        module = module_for(spec.package, spec.module)
        lease = self.cache.acquire(spec.package, spec.version)
        with self._lock:
            if spec.run_id in self._runs:
                lease.release()
                raise ValueError(f"run {spec.run_id!r} is already running on this executor")

            def finished(result: RunResult) -> None:
                with self._lock:
                    self._runs.pop(spec.run_id, None)
                lease.release()
                log.info("run %s %s (exit %s, signal %s)", spec.run_id, result.state, result.exit_code, result.signal)
                on_exit(result)

            try:
                self._runs[spec.run_id] = RunProcess(
                    spec, lease.path, module, self.run_directory, on_line, finished, self.timeout_grace
                )
            except BaseException:
                lease.release()
                raise
        log.info("run %s started: %s==%s (module %s)", spec.run_id, spec.package, spec.version, module)

    def cancel(self, run_id: str, grace: float = 10.0) -> bool:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            return False
        run.stop("cancelled", grace)
        return True

    def running(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def shutdown(self, grace: float = 10.0) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop("cancelled", grace)
        for run in runs:
            run.thread.join(grace + 30)
