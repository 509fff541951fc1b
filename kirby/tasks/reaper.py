"""The first process of every run: a subreaper that runs the script and leaves nothing behind.

This file is compiled into each venv as ``kirby-run`` (see reaper_file.py: the venv cannot import
Kirby) and run by the venv's interpreter with argv ``[job, run_id, module, leftover_grace,
[fence_file, fence_after]]`` plus options (``--stdin-env``, ``--limit=as|cpu|nofile:VALUE``); the
job and the run id are there for the process list only (``ps`` shows them for the reaper and the
script). It first makes itself non-dumpable (so no other
process of the run user can read its environment or memory; the script inherits this), then with
``--stdin-env`` reads the run's config (``KEY=value`` entries separated by NUL) from stdin into its
environment (so the values never appear in any ``/proc/<pid>/environ``) and points stdin at
/dev/null. The supervisor ends them with the ``GO`` byte when the run may start, then closes stdin:
it may spawn the reaper ahead of the run's due instant and release it at the instant (the
interpreter's start-up is then done beforehand). Stdin closed without ``GO`` (the supervisor died or
gave the run up) ends the reaper at once with exit code 75: no script code ran. It makes itself a child subreaper (so orphans of
the script, even double-forked daemons in another session, are reparented to it), forks, and the
child sets the ``--limit`` resource limits (RLIMIT_AS bytes, RLIMIT_CPU seconds, RLIMIT_NOFILE)
and runs ``module`` exactly as ``python -m`` would (one interpreter start-up for both). The parent:

- reaps every process reparented to it while the script runs (no zombies);
- on SIGTERM/SIGINT forwards the signal to descendants outside its process group (the supervisor
  signals the group itself); on SIGUSR1 SIGKILLs every descendant (the supervisor's grace is over);
- when the supervisor dies (PR_SET_PDEATHSIG: SIGHUP), SIGTERMs every descendant and SIGKILLs them
  after ``leftover_grace`` seconds, so no script outlives its supervisor (a daemon would otherwise
  run twice once another supervisor takes its lease);
- with a fence file (daemons): when the monotonic deadline the supervisor writes in it at each
  lease renewal passed (or, for an empty file, it was not touched for ``fence_after`` seconds)
  (it lost the daemon's lease, or it is frozen and cannot renew), stops everything the same way,
  before the lease can expire and another supervisor start a second instance;
- once the script's main process has exited, SIGTERMs what is left, SIGKILLs it after
  ``leftover_grace`` seconds, reaps it all, and exits with the main process's status (same code,
  or killed by the same signal).
"""

import _signal as signal  # the C module: ``signal`` would import enum (slow start-up)
import os
import sys
import time


def _descendants(root):
    """Pids of every live descendant of ``root``, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                fields = file.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _reap_ready():
    """Reap exited children without waiting; False once there is no child left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _stale(path, seconds):
    """True when the monotonic deadline written in ``path`` passed (an empty file: when it was not
    touched for ``seconds``), or the file is gone or unreadable."""
    try:
        with open(path) as file:
            text = file.read().strip()
        if text:
            return time.monotonic() > float(text)
        return time.time() - os.stat(path).st_mtime > seconds
    except (OSError, ValueError):
        return True


GO = b"\x01"  # ends the config on stdin: the run may start


def _load_environment():
    """Read NUL-separated ``KEY=value`` entries, then GO, from stdin into the environment; stdin
    becomes /dev/null. Without GO (the supervisor went away before releasing the run): exit 75."""
    data = []
    while True:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        data.append(chunk)
    data = b"".join(data)
    if not data.endswith(GO):
        os._exit(75)
    data = data[: -len(GO)]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for entry in data.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if key and sep:
            os.environb[key] = value


def _set_limits(limits):
    """setrlimit each (name, value) of ``limits`` (soft and hard; CPU: hard 5 s later), within the hard limit."""
    import resource

    for name, value in limits:
        which = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "nofile": resource.RLIMIT_NOFILE}[name]
        hard = value + 5 if name == "cpu" else value
        current = resource.getrlimit(which)[1]
        if current != resource.RLIM_INFINITY:
            value, hard = min(value, current), min(hard, current)
        resource.setrlimit(which, (value, hard))


def _kirby_reaper(module, leftover_grace, fence="", fence_after=0.0, options=()):
    try:
        _prctl(4, 0)  # PR_SET_DUMPABLE 0: no /proc/<pid>/environ, mem or ptrace for same-uid processes
    except Exception as exc:
        print(f"kirby: cannot make the run non-dumpable: {exc}", file=sys.stderr, flush=True)
    limits = []
    for option in options:
        if option == "--stdin-env":
            _load_environment()
        elif option.startswith("--limit="):
            name, _, value = option[len("--limit=") :].partition(":")
            limits.append((name, int(value)))
    me = os.getpid()
    group = os.getpgid(0)

    def forward(signum, frame):
        _signal_all([p for p in _descendants(me) if _group_of(p) != group], signum)

    def kill_all(signum, frame):
        _signal_all(_descendants(me), signal.SIGKILL)

    kill_at = []  # set once everything must stop: SIGKILL what is left at this time

    def stop_everything():
        if not kill_at:
            kill_at.append(time.monotonic() + leftover_grace)
            _signal_all(_descendants(me), signal.SIGTERM)
            signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)

    def orphaned(signum, frame):  # the supervisor died: stop everything, SIGKILL after the grace
        stop_everything()

    def tick(signum, frame):  # every 0.2 s once stopping, else every 0.5 s when fenced
        if kill_at and time.monotonic() >= kill_at[0]:
            _signal_all(_descendants(me), signal.SIGKILL)
        elif fence and not kill_at and _stale(fence, fence_after):
            print(
                f"kirby: {fence} not refreshed for {fence_after:g} s: the supervisor lost this run's "
                "lease (or froze); stopping it",
                file=sys.stderr,
                flush=True,
            )
            stop_everything()

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGALRM)
    defaults = {sig: signal.getsignal(sig) for sig in handled}
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGUSR1, kill_all)
    signal.signal(signal.SIGHUP, orphaned)
    signal.signal(signal.SIGALRM, tick)
    if fence:
        signal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)
    parent = os.getppid()
    try:
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except Exception as exc:  # still runs; orphans then go to init
        print(f"kirby: cannot become a subreaper: {exc}", file=sys.stderr, flush=True)
    try:
        _prctl(1, signal.SIGHUP)  # PR_SET_PDEATHSIG: SIGHUP when the supervisor dies
    except Exception as exc:
        print(f"kirby: cannot watch the supervisor: {exc}", file=sys.stderr, flush=True)
    if os.getppid() != parent:  # it died before the watch was set
        os.kill(me, signal.SIGHUP)
    import gc

    gc.freeze()  # the child's collections leave the reaper's objects alone: fewer copy-on-write faults
    main = os.fork()
    if main == 0:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        for sig, handler in defaults.items():
            signal.signal(sig, handler)
        if limits:
            try:
                _set_limits(limits)
            except (OSError, ValueError) as exc:
                print(f"kirby: cannot set the resource limits {limits}: {exc}", file=sys.stderr, flush=True)
                os._exit(70)
        sys.argv = [module]
        sys.path[0] = os.getcwd()
        import runpy

        runpy._run_module_as_main(module, alter_argv=True)
        return
    status = 0
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == main:
            status = code
            break
    deadline = time.monotonic() + leftover_grace
    termed = set()
    while _reap_ready() or _descendants(me):
        left = _descendants(me)
        if time.monotonic() < deadline:
            _signal_all([p for p in left if p not in termed], signal.SIGTERM)
            termed.update(left)
        else:
            _signal_all(left, signal.SIGKILL)
        time.sleep(0.02)
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL) if sig != signal.SIGKILL else None
        os.kill(me, sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8)


_PRCTL = []  # the C function, made once


def _prctl(option, value):
    """prctl(option, value) through _ctypes (``import ctypes`` costs ~10 ms, ``_ctypes`` ~1.5 ms)."""
    import _ctypes

    if not _PRCTL:

        class Int(_ctypes._SimpleCData):
            _type_ = "i"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = Int

        _PRCTL.append(Function(_ctypes.dlsym(_ctypes.dlopen(None), "prctl")))
    if _PRCTL[0](option, int(value), 0, 0, 0) != 0:
        raise OSError(_ctypes.get_errno(), f"prctl({option}) failed")


def _group_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


if __name__ == "__main__":
    _module, _grace = sys.argv[3], float(sys.argv[4])  # argv[1:3]: job and run id, for ps
    _options = [a for a in sys.argv[5:] if a.startswith("--")]
    _fence = [a for a in sys.argv[5:] if not a.startswith("--")]
    _kirby_reaper(_module, _grace, *(_fence[:1] + [float(a) for a in _fence[1:2]]), options=_options)
