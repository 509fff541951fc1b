"""The execution contract the supervisor calls: prepare a venv, start a run, cancel it, list runs.

Implemented by ``kirby.tasks.executor.LocalExecutor`` (venv per package version + subprocess).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to launch one run. ``module`` empty: derived from the package name."""

    run_id: str
    job: str
    environment: str
    package: str
    version: str
    scheduled_at: datetime
    supervisor: str
    module: str = ""
    run_as: str | None = None  # the job's run user instead of the executor's (KIRBY_RUN_USER)
    config: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # names of config keys whose values are masked in output
    timeout_seconds: float | None = None
    # Self-fencing (daemons): ``fence_file`` holds a deadline on the host's monotonic clock
    # (CLOCK_MONOTONIC, shared by its processes), rewritten at each renewal of the run's lease; the
    # run stops itself once it passes (an empty file: when untouched for ``fence_after`` seconds).
    fence_file: str | None = None
    fence_after: float | None = None
    fence_token: int | None = None  # the daemon lease's generation, in KIRBY_FENCE_TOKEN


@dataclass(frozen=True)
class OutputLine:
    """One line of a run's output (``stream``: stdout | stderr | system), secrets already masked.

    ``seq`` counts from 0 over the whole run; lines read together share one ``time``; a line over
    64 KiB is cut, with a marker saying how many bytes were dropped. ``system`` lines are Kirby's
    own (timeout, cancel, skipped config keys).
    """

    run_id: str
    seq: int
    time: datetime
    stream: str
    text: str


@dataclass(frozen=True)
class OutputLines:
    """Lines of one stream read together (secrets already masked): ``texts[i]`` is the line with
    ``seq == first_seq + i``; they share ``time``. ``lines()`` gives them as ``OutputLine``."""

    run_id: str
    first_seq: int
    time: datetime
    stream: str
    texts: list[str]

    def lines(self) -> list[OutputLine]:
        return [
            OutputLine(self.run_id, seq, self.time, self.stream, text)
            for seq, text in enumerate(self.texts, self.first_seq)
        ]


@dataclass(frozen=True)
class RunResult:
    """How a run ended. ``state``: succeeded | failed | timed_out | cancelled.

    ``exit_code`` is set when the process exited, ``signal`` (and no exit code) when a signal
    killed it; ``error`` is one line for failed and timed out runs.
    """

    run_id: str
    state: str
    exit_code: int | None
    signal: int | None
    started_at: datetime
    finished_at: datetime
    error: str = ""


class Staged(ABC):
    """A run spawned ahead of its start (``Executor.stage``): its process waits, no script code runs."""

    @abstractmethod
    def release(self) -> None:
        """Let the script start now (its timeout and ``started_at`` count from here)."""

    @abstractmethod
    def abort(self) -> None:
        """End it instead: no script code ran, and its ``on_exit`` is not called."""


class _Deferred(Staged):
    """``Executor.stage``'s default: nothing is spawned until ``release`` starts the run."""

    def __init__(self, start: Callable[[], None]):
        self._start = start

    def release(self) -> None:
        self._start()

    def abort(self) -> None:
        pass


class Executor(ABC):
    def stage(
        self,
        spec: RunSpec,
        on_line: Callable[[OutputLine], None],
        on_exit: Callable[[RunResult], None],
        on_lines: Callable[[OutputLines], None] | None = None,
    ) -> Staged:
        """Like ``start``, but the script waits for ``Staged.release`` (the process start-up may be
        done ahead of the run's due instant); same errors as ``start``. Default: ``release`` calls
        ``start``."""
        return _Deferred(lambda: self.start(spec, on_line, on_exit, on_lines))

    @abstractmethod
    def prepare(self, package: str, version: str) -> Path:
        """Build or reuse the venv of ``package==version``; return its path when ready.

        Raises PackageError (invalid name or version, unknown or uninstallable package) with a
        clear message; ``PackageError.output`` holds the installer's output when there is one.
        """

    @abstractmethod
    def start(
        self,
        spec: RunSpec,
        on_line: Callable[[OutputLine], None],
        on_exit: Callable[[RunResult], None],
        on_lines: Callable[[OutputLines], None] | None = None,
    ) -> None:
        """Start ``spec`` in the background (venv must be prepared); returns once the process runs.

        ``on_line`` is called for each output line as it comes, ``on_exit`` exactly once at the
        end (after the last ``on_line``), from the executor's threads (one thread per run, so a
        run's callbacks never overlap). With ``on_lines``, it is called instead of ``on_line``
        once per batch of lines read together (cheaper for a script that prints a lot). An
        exception in a callback is logged, not propagated.
        Raises PackageError for an invalid module, package or version (nothing started) and
        ValueError if ``spec.run_id`` already runs on this executor.
        """

    @abstractmethod
    def cancel(self, run_id: str, grace: float = 10.0) -> bool:
        """SIGTERM the run's process group, SIGKILL after ``grace``; False if it does not run."""

    @abstractmethod
    def running(self) -> list[str]:
        """Run ids currently running."""

    @abstractmethod
    def shutdown(self, grace: float = 10.0) -> None:
        """Cancel every run (with ``grace``) and wait for them to end."""
