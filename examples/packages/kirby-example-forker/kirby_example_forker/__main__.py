"""Fork two children and a double-forked, daemonized grandchild that would outlive this process.

Each descendant appends ``<role> <pid>`` to the file named by FORKER_PIDFILE. The main process
exits 0 once all three are written, or sleeps forever if FORKER_STAY is set (for timeout tests).
"""

import os
import sys
import time

pidfile = os.environ["FORKER_PIDFILE"]
open(pidfile, "a").close()


def record(role: str) -> None:
    with open(pidfile, "a") as file:
        file.write(f"{role} {os.getpid()}\n")


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


for _ in range(2):
    if os.fork() == 0:
        record("child")
        sleep_forever()

if os.fork() == 0:  # daemonize: new session, fork again, the middle process exits at once
    os.setsid()
    if os.fork() == 0:
        record("daemon")
        sleep_forever()
    os._exit(0)

deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    with open(pidfile) as file:
        if len(file.read().splitlines()) >= 3:
            break
    time.sleep(0.01)
print("forked two children and a daemon", flush=True)
if os.environ.get("FORKER_STAY"):
    sleep_forever()
sys.exit(0)
