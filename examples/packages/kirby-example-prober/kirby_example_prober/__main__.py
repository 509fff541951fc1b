"""Try to read and write what a script must not, and print one line per attempt.

Every attempt prints ``<kind> <target> denied <errno name>`` or ``<kind> <target> READ <what was
read>`` / ``... WROTE``: what it read is printed, so a leak shows in the run's log. Config:

- PROBE_ECHO: printed line by line (``echo <line>``), e.g. to check what the supervisor masks;
- PROBE_WAIT_FOR: wait (up to 60 s) until PROBE_WAIT_COUNT (default 1) processes whose command
  line holds this text run;
- PROBE_CMDLINE: comma-separated texts; try ``/proc/<pid>/environ`` and ``/proc/<pid>/mem`` of every
  process whose command line holds one of them (default ``kirby``), except this one;
- PROBE_READ, PROBE_WRITE, PROBE_LIST: comma-separated files to read, files to append to or create,
  directories to list;
- PROBE_ALLOCATE: bytes to allocate (prints ``allocate N MemoryError`` when refused);
- PROBE_OPEN_FILES: files to open at most (prints how many could be opened);
- PROBE_BURN_CPU: seconds of CPU to burn (a CPU limit kills it with SIGXCPU first).
"""

import os
import resource
import sys
import time


def say(*words):
    print(*words, flush=True)


def attempt(kind, target, action):
    try:
        result = action()
    except OSError as exc:
        say(kind, target, "denied", os.strerror(exc.errno) if exc.errno else type(exc).__name__)
        return
    say(kind, target, result)


def read(path, size=4096):
    with open(path, "rb") as file:
        return "READ " + repr(file.read(size))


def write(path):
    with open(path, "ab") as file:
        file.write(b"# written by kirby-example-prober\n")
    return "WROTE"


def listing(path):
    return "READ " + " ".join(sorted(os.listdir(path)))


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ")
    except OSError:
        return b""


def processes(text):
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me and text.encode() in cmdline(p)]


def items(name):
    return [item for item in os.environ.get(name, "").split(",") if item]


def main():
    say("identity uid", os.getuid(), "euid", os.geteuid(), "gid", os.getgid(), "groups", os.getgroups())
    tmp = os.environ.get("TMPDIR", "")
    if tmp:
        info = os.stat(tmp)
        say("tmpdir", tmp, "mode", oct(info.st_mode & 0o777), "owner", info.st_uid)
    say("cwd", os.getcwd(), "mode", oct(os.stat(".").st_mode & 0o777), "owner", os.stat(".").st_uid)
    say(
        "limits as",
        resource.getrlimit(resource.RLIMIT_AS),
        "cpu",
        resource.getrlimit(resource.RLIMIT_CPU),
        "nofile",
        resource.getrlimit(resource.RLIMIT_NOFILE),
    )
    for line in os.environ.get("PROBE_ECHO", "").splitlines():
        say("echo", line)
    wait_for = os.environ.get("PROBE_WAIT_FOR")
    if wait_for:
        count = int(os.environ.get("PROBE_WAIT_COUNT", "1"))
        deadline = time.monotonic() + 60
        while len(processes(wait_for)) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        say("waited for", wait_for, "found", processes(wait_for))
    targets = sorted({pid for text in items("PROBE_CMDLINE") or ["kirby"] for pid in processes(text)})
    for pid in targets:
        attempt("environ", pid, lambda: read(f"/proc/{pid}/environ"))
        attempt("mem", pid, lambda: read(f"/proc/{pid}/mem", 16))
    for path in items("PROBE_READ"):
        attempt("read", path, lambda: read(path))
    for path in items("PROBE_WRITE"):
        attempt("write", path, lambda: write(path))
    for path in items("PROBE_LIST"):
        attempt("list", path, lambda: listing(path))
    if os.environ.get("PROBE_ALLOCATE"):
        size = int(os.environ["PROBE_ALLOCATE"])
        try:
            block = bytearray(size)
            say("allocate", size, "done", len(block))
        except MemoryError:
            say("allocate", size, "MemoryError")
    if os.environ.get("PROBE_OPEN_FILES"):
        opened = []
        try:
            for _ in range(int(os.environ["PROBE_OPEN_FILES"])):
                opened.append(open(os.devnull))
        except OSError as exc:
            say("open files", len(opened), "then", os.strerror(exc.errno))
        else:
            say("open files", len(opened), "all")
    if os.environ.get("PROBE_BURN_CPU"):
        say("burning cpu")
        until = time.process_time() + float(os.environ["PROBE_BURN_CPU"])
        while time.process_time() < until:
            pass
        say("burned cpu")
    say("probe done")
    sys.exit(0)


main()
