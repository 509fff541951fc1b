"""Plumbing shared by the lease store tests: child processes, stores on one shared state, cleanup."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kirby.config import load_settings
from kirby.lease.base import LeaseStore
from kirby.lease.local import LocalLeaseStore
from kirby.lease.redis import RedisLeaseStore

# A child process: builds a store from the JSON spec in argv[1], then plays the role in argv[2].
WORKER = r"""
import json, sys, time
from datetime import datetime, timezone
from kirby.config import load_settings
from kirby.lease.base import StaleEpoch

spec = json.loads(sys.argv[1])
settings = load_settings(environ=spec["environ"], cwd=spec["cwd"])
if spec["kind"] == "redis":
    from kirby.lease.redis import RedisLeaseStore
    store = RedisLeaseStore(settings, prefix=spec["prefix"])
else:
    from kirby.lease.local import LocalLeaseStore
    store = LocalLeaseStore(settings)
role, name = sys.argv[2], sys.argv[3]

def say(*words):
    print(*words, flush=True)

if role == "claim":  # claim each run id read from stdin, answer 1 (won) or 0
    say("ready")
    for line in sys.stdin:
        say(int(store.claim_run(line.strip(), name)))
elif role == "claim-forever":  # claim <name>-0, <name>-1, ... and report each claim once committed
    i = 0
    while True:
        if store.claim_run(f"{name}-{i}", name):
            say(f"{name}-{i}")
        i += 1
elif role == "leader":  # take the lease, renew it periodically; once renewal fails, try to act anyway
    ttl, period = float(sys.argv[4]), float(sys.argv[5])
    epoch = store.acquire_leader(name, ttl)
    say("epoch", epoch)
    while store.renew_leader(name, epoch, ttl):
        say("renewed")
        time.sleep(period)
    say("renew-refused")
    say("release", store.release_leader(name, epoch))
    try:
        store.set_cursor("schedule", datetime(2030, 1, 1, tzinfo=timezone.utc), epoch)
        say("cursor written")
    except StaleEpoch:
        say("cursor refused")
"""


class Lines:
    """The stdout lines of a child process, read by a thread, taken with a bounded wait."""

    def __init__(self, process: subprocess.Popen):
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(process.stdout,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put("<eof>")

    def next(self, timeout: float = 30.0) -> str:  # generous: a loaded 2-core CI machine starts Python slowly
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from the child process within {timeout} s") from None


@dataclass
class Backend:
    """Opens stores sharing one state (a SQLite file, or a Redis key prefix); closes them at teardown."""

    kind: str
    environ: dict[str, str]
    cwd: Path
    prefix: str = ""
    opened: list[LeaseStore] = field(default_factory=list)
    children: list[subprocess.Popen] = field(default_factory=list)

    def open(self) -> LeaseStore:
        settings = load_settings(environ=self.environ, cwd=self.cwd)
        store = RedisLeaseStore(settings, prefix=self.prefix) if self.kind == "redis" else LocalLeaseStore(settings)
        self.opened.append(store)
        return store

    def child(self, role: str, name: str, *args: str) -> tuple[subprocess.Popen, Lines]:
        spec = json.dumps({"kind": self.kind, "environ": self.environ, "cwd": str(self.cwd), "prefix": self.prefix})
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, spec, role, name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.children.append(process)
        return process, Lines(process)

    def close(self) -> None:
        for process in self.children:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            process.wait(timeout=10)
        for store in self.opened:
            store.close()


def delete_keys(url: str, prefix: str) -> None:
    """Remove a test's keys (redis-cli, so that redis-py stays inside kirby/lease/redis.py)."""
    listed = subprocess.run(
        ["redis-cli", "-u", url, "--scan", "--pattern", prefix + "*"], capture_output=True, text=True
    )
    keys = listed.stdout.split()
    if keys:
        subprocess.run(["redis-cli", "-u", url, "del", *keys], capture_output=True, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
