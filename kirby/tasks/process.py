"""One run as a subprocess: environment, working directory, streamed output, timeout and cancel.

The process tree is ``<venv>/bin/python <venv>/.kirby/<hash>/kirby-run <job> <run id> <module> ...``
(see reaper.py and reaper_file.py): a subreaper that runs the module like ``python -m`` and, when
it ends, kills and reaps whatever it left behind; ``ps`` shows the job and run id. The run gets its
own session and process group, an environment built from scratch (the run's config, PATH, HOME,
LANG, TMPDIR and the KIRBY_* variables: nothing of the supervisor's), and its own private working
directory (0700, owned by the run's user, with ``tmp/`` as TMPDIR). With a ``RunIdentity`` that
switches, the child drops to the run user (setgroups, setgid, setuid) before exec. The config
values are not in the exec'd environment (readable in ``/proc/<pid>/environ`` until the reaper is
non-dumpable): they are written to the reaper's stdin, which loads them.
One thread per run reads stdout and stderr in chunks of up to READ_SIZE as they come (bounded
memory: lines longer than MAX_LINE are cut), splits and masks each chunk's complete lines in bulk
(see output.py and masking.py), calls ``on_lines`` once per chunk (or ``on_line`` per line),
enforces the timeout, and calls ``on_exit`` once at the end, after the last line. Between chunks
it sleeps until output, the reaper's exit (a pidfd, on Linux; elsewhere a look every 0.2 s) or a
deadline, so a quiet long run (a daemon) costs its supervisor almost no wake-ups.

Stopping (timeout or cancel): SIGTERM to the process group; after ``grace`` SIGUSR1 to the reaper,
which SIGKILLs every descendant; as a last resort SIGKILL to the group and to any process still
carrying the run's KIRBY_RUN_ID in its environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from kirby.tasks.base import OutputLine, OutputLines, RunResult, RunSpec
from kirby.tasks.install import SAFE_PATH, home_directory
from kirby.tasks.isolation import RunIdentity, RunLimits
from kirby.tasks.masking import Masker
from kirby.tasks.output import CUT_MARKER, MAX_LINE, LineSplitter, mask_lines  # noqa: F401 (re-exported)
from kirby.tasks.reaper_file import reaper_command

GO = b"\x01"  # kirby/tasks/reaper.py's: written after the config, it lets the script start

READ_SIZE = 256 * 1024
EXIT_AFTER_EOF = 5.0  # seconds the reaper may take to exit once its output pipes have closed
LEFTOVER_GRACE = 2.0  # seconds processes left behind by an exited script get before SIGKILL
BACKSTOP = 5.0  # seconds after the grace before the last resort
DRAIN_AFTER_EXIT = 2.0  # seconds to wait for pipes still held open once the reaper has exited
log = logging.getLogger(__name__)
REAPER_SOURCE = (Path(__file__).parent / "reaper.py").read_text()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _exit_fd(pid: int) -> int | None:
    """A pidfd of ``pid`` (Linux 5.3+): readable once it ended; None where there is none (then
    the reader looks for the exit every 0.2 s)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def run_directory_for(root: Path, run_id: str) -> Path:
    """The run's working directory: ``root/<run id made safe for a path>``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id).lstrip(".")[:120] or "run"
    if safe != run_id:
        safe += "-" + hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return root / safe


def prepare_run_directory(root: Path, run_id: str, identity: RunIdentity | None = None) -> Path:
    """Create the run's private working directory and its ``tmp/`` (0700, owned by the run's user).

    ``root`` is made 0711: a run user can enter its own directory but not list the others.
    """
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)
    workdir = run_directory_for(root, run_id)
    for path in (workdir, workdir / "tmp"):
        if path.is_symlink():  # left by an earlier run of this id: never follow it
            path.unlink()
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        if identity is not None and identity.switch:
            os.chown(path, identity.uid, identity.gid, follow_symlinks=False)
    return workdir


def run_home(identity: RunIdentity | None, workdir: Path) -> str:
    """HOME of a run: the supervisor user's; for a run user, its home if it exists, else the workdir."""
    if identity is None or not identity.switch:
        return home_directory()
    return identity.home if os.path.isdir(identity.home) else str(workdir)


def run_environment(
    spec: RunSpec, venv: Path, home: str | None = None, tmpdir: Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """The run's environment, built from scratch, and the config keys skipped as invalid."""
    env: dict[str, str] = {"HOME": home or home_directory(), "LANG": "C.UTF-8"}
    skipped = []
    for key, value in spec.config.items():
        if _ENV_NAME.match(key) and "\0" not in str(value):
            env[key] = str(value)
        else:
            skipped.append(key)
    env.update(
        PATH=f"{venv / 'bin'}:{SAFE_PATH}",
        PYTHONUNBUFFERED="1",
        KIRBY_RUN_ID=spec.run_id,
        KIRBY_JOB=spec.job,
        KIRBY_ENVIRONMENT=spec.environment,
        KIRBY_SCHEDULED_AT=spec.scheduled_at.astimezone(timezone.utc).isoformat(),
        KIRBY_SUPERVISOR=spec.supervisor,
    )
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    if spec.fence_token is not None:
        env["KIRBY_FENCE_TOKEN"] = str(spec.fence_token)
    return env, skipped


def split_environment(env: dict[str, str], spec: RunSpec) -> tuple[dict[str, str], bytes]:
    """(the exec'd environment, the config entries for the reaper's stdin): values of the config
    never appear in ``/proc/<pid>/environ``."""
    hidden = {key for key in spec.config if key in env and env[key] == str(spec.config[key])}
    visible = {key: value for key, value in env.items() if key not in hidden}
    entries = b"".join(f"{key}={env[key]}".encode("utf-8", "surrogateescape") + b"\0" for key in sorted(hidden))
    return visible, entries


class RunProcess:
    """A started run; ``stop`` ends it (timeout and cancel both go through it)."""

    def __init__(
        self,
        spec: RunSpec,
        venv: Path,
        module: str,
        run_root: Path,
        on_line: Callable[[OutputLine], None],
        on_exit: Callable[[RunResult], None],
        timeout_grace: float = 10.0,
        identity: RunIdentity | None = None,
        limits: RunLimits | None = None,
        masker: Masker | None = None,
        on_lines: Callable[[OutputLines], None] | None = None,
        held: bool = False,
    ):
        """``masker``: the supervisor's (every job's secrets); the run's own secrets are added to it.
        ``on_lines``: called per batch of lines instead of ``on_line`` per line (see Executor.start).
        ``held``: the reaper is spawned but waits (no script code runs) until ``release``; ``abort``
        ends it instead. Its timeout and ``started_at`` count from the release."""
        self.spec = spec
        self._timeout_grace = timeout_grace
        self._on_line = on_line
        self._on_lines = on_lines
        self._on_exit = on_exit
        own = [spec.config.get(name, "") for name in spec.secrets]
        self._mask = masker.with_values(own) if masker is not None else Masker(own)
        self._seq = 0
        self._exit_watched = False  # the reader sleeps on a pidfd of the reaper (no 0.2 s polls)
        self._lock = threading.Lock()
        self._reason = ""  # "", "timed_out" or "cancelled"
        self._notices: list[str] = []  # system lines from other threads, emitted by the run's thread
        self._kill_at: float | None = None  # when the grace ends
        self._last_resort_at: float | None = None
        self.workdir = prepare_run_directory(run_root, spec.run_id, identity)
        env, skipped = run_environment(spec, venv, run_home(identity, self.workdir), self.workdir / "tmp")
        env, hidden = split_environment(env, spec)
        switch = {}
        if identity is not None and identity.switch:
            switch = {"user": identity.uid, "group": identity.gid, "extra_groups": list(identity.groups)}
        self.started_at = datetime.now(timezone.utc)
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            reaper_command(
                venv,
                REAPER_SOURCE,
                spec.job,
                spec.run_id,
                module,
                LEFTOVER_GRACE,
                (spec.fence_file, spec.fence_after or 0.0) if spec.fence_file else None,
                ["--stdin-env", *(limits.reaper_options() if limits else [])],
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
            pipesize=1024 * 1024,
            **switch,
        )
        self._held = held
        self.aborted = False
        self._send_config(hidden, release=not held)
        for key in skipped:
            self._emit_system(f"config key {key!r} skipped: not a valid environment variable name or value")
        self.thread = threading.Thread(target=self._watch, name=f"run-{spec.run_id}", daemon=True)
        self.thread.start()

    def release(self) -> None:
        """Let a held run's script start now (GO, then EOF on the reaper's stdin)."""
        with self._lock:
            if not self._held:
                return
            self._held = False
            self.started_at = datetime.now(timezone.utc)
            self._started = time.monotonic()
        self._send_config(b"", release=True)

    def abort(self) -> None:
        """End a held run before any script code ran (its reaper gets EOF without GO, then SIGKILL);
        ``aborted`` is set first, so the exit callback can tell it from a run that ran."""
        with self._lock:
            if not self._held:
                return
            self._held, self.aborted = False, True
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self._signal_group(signal.SIGKILL)

    def _send_config(self, entries: bytes, release: bool = True) -> None:
        """Write the config entries to the reaper's stdin; with ``release`` also GO and close it (the
        reaper reads until EOF, and starts the script only after GO)."""
        try:
            self.process.stdin.write(entries + (GO if release else b""))
            if not release:
                self.process.stdin.flush()
                return
            self.process.stdin.close()
        except OSError as exc:  # the reaper died at once: its exit status and stderr tell why
            log.error("run %s: could not pass the config to the run: %s", self.spec.run_id, exc)
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def stop(self, reason: str, grace: float) -> None:
        """SIGTERM the process group now, SIGKILL everything after ``grace`` seconds."""
        with self._lock:
            if self._reason or self.process.returncode is not None:
                return
            self._reason = reason
            self._kill_at = time.monotonic() + grace
            self._last_resort_at = self._kill_at + BACKSTOP
            self._notices.append(f"{reason.replace('_', ' ')}: SIGTERM to the process group, SIGKILL after {grace:g} s")
        self._signal_group(signal.SIGTERM)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except OSError:
            pass

    def _emit_notices(self) -> None:
        with self._lock:
            notices, self._notices = self._notices, []
        for text in notices:
            self._emit_system(text)

    def _emit_system(self, text: str) -> None:
        self._emit("system", [text.encode()], datetime.now(timezone.utc))

    def _emit(self, stream: str, lines: list[bytes], now: datetime) -> None:
        with self._lock:
            first = self._seq
            self._seq += len(lines)
        if not lines:
            return
        batch = OutputLines(self.spec.run_id, first, now, stream, mask_lines(self._mask, lines))
        if self._on_lines is not None:
            try:
                self._on_lines(batch)
            except Exception:  # a failing callback must not stop the reading (the script would block)
                log.exception("on_lines failed for run %s lines %d+; output goes on", batch.run_id, first)
            return
        for line in batch.lines():
            try:
                self._on_line(line)
            except Exception:
                log.exception("on_line failed for run %s line %d; output goes on", line.run_id, line.seq)

    def _watch(self) -> None:
        try:
            self._pump()
        finally:
            self._finish()

    def _pump(self) -> None:
        selector = selectors.DefaultSelector()
        for pipe, stream in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe, selectors.EVENT_READ, (stream, LineSplitter()))
        exit_fd = _exit_fd(self.process.pid)  # readable once the reaper ended: no polling for its exit
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ, None)
        self._exit_watched = exit_fd is not None

        def unwatch_exit() -> None:  # once: after it fired (or the exit was seen), 0.2 s polls take over
            if self._exit_watched:
                selector.unregister(exit_fd)
                self._exit_watched = False

        try:
            self._pump_pipes(selector, unwatch_exit)
        finally:
            selector.close()
            if exit_fd is not None:
                os.close(exit_fd)

    def _pump_pipes(self, selector: selectors.BaseSelector, unwatch_exit: Callable[[], None]) -> None:
        timeout = self.spec.timeout_seconds
        drain_until = None
        while len(selector.get_map()) > self._exit_watched:  # a pipe still open
            now = time.monotonic()
            if timeout is not None and not self._held and now - self._started >= timeout:
                self.stop("timed_out", self._timeout_grace)
                timeout = None
            self._escalate(now)
            if drain_until is None and self.process.poll() is not None:
                drain_until = now + DRAIN_AFTER_EXIT
                unwatch_exit()
            if drain_until is not None and now >= drain_until:  # leftovers hold the pipes: end them
                self._kill_leftovers()
                for key in list(selector.get_map().values()):
                    stream, splitter = key.data
                    self._emit(stream, splitter.flush(), datetime.now(timezone.utc))
                break
            events = selector.select(self._wait_time(now, timeout, drain_until))
            self._emit_notices()  # queued before their signal was sent: before the output it causes
            for key, _ in events:
                if key.data is None:  # the reaper ended: the next turn sees it (poll) and drains
                    unwatch_exit()
                    continue
                stream, splitter = key.data
                chunk = os.read(key.fileobj.fileno(), READ_SIZE)
                stamp = datetime.now(timezone.utc)
                if chunk:
                    self._emit(stream, splitter.feed(chunk), stamp)
                else:
                    self._emit(stream, splitter.flush(), stamp)
                    selector.unregister(key.fileobj)

    def _wait_time(self, now: float, timeout: float | None, drain_until: float | None) -> float:
        candidates = [1.0]
        if timeout is not None:
            candidates.append(self._started + timeout - now)
        for moment in (self._kill_at, self._last_resort_at, drain_until):
            if moment is not None:
                candidates.append(moment - now)
        if self.process.returncode is None and drain_until is None and not self._exit_watched:
            candidates.append(0.2)  # notice the exit of a script whose leftovers keep the pipes open
        return max(0.0, min(candidates))

    def _escalate(self, now: float) -> None:
        if self._kill_at is not None and now >= self._kill_at:
            self._kill_at = None
            if self.process.poll() is None:
                self._emit_system("grace period over: SIGKILL to every process of the run")
                try:
                    self.process.send_signal(signal.SIGUSR1)
                except OSError:
                    pass
        if self._last_resort_at is not None and now >= self._last_resort_at:
            self._last_resort_at = None
            self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        self._signal_group(signal.SIGKILL)
        for pid in processes_of_run(self.spec.run_id):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _finish(self) -> None:
        if self.process.poll() is None:
            try:  # the pipes close as the reaper exits, a moment before its exit status can be read
                self.process.wait(timeout=EXIT_AFTER_EOF)
            except subprocess.TimeoutExpired:  # reading failed unexpectedly: never leave it running
                log.error("run %s: output reading stopped early; killing the run", self.spec.run_id)
                self._kill_leftovers()
        for pipe in (self.process.stdout, self.process.stderr):
            pipe.close()
        code = self.process.wait()
        self._emit_notices()  # a stop() that raced with the end (no new one can come: returncode is set)
        finished = datetime.now(timezone.utc)
        if self._reason:
            state = self._reason
        else:
            state = "succeeded" if code == 0 else "failed"
        exit_code, sig = (code, None) if code >= 0 else (None, -code)
        error = ""
        if state == "timed_out":
            error = f"timed out after {self.spec.timeout_seconds:g} s"
        elif state == "failed":
            error = f"exit code {code}" if code >= 0 else f"killed by signal {signal.Signals(-code).name}"
        try:
            self._on_exit(RunResult(self.spec.run_id, state, exit_code, sig, self.started_at, finished, error))
        except Exception:
            log.exception("on_exit failed for run %s", self.spec.run_id)


def processes_of_run(run_id: str) -> list[int]:
    """Pids of this user's processes whose environment holds KIRBY_RUN_ID=<run_id>."""
    needle = f"KIRBY_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if needle in file.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found
