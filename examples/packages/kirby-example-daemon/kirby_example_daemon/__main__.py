"""Run until SIGTERM, printing a heartbeat every second.

If KIRBY_DAEMON_PIDFILE is set, append ``start <pid> <time>`` on start and ``stop <pid> <time>``
on exit to it, so tests can prove two instances never run at once.
"""

import os
import signal
import sys
import time

pidfile = os.environ.get("KIRBY_DAEMON_PIDFILE")


def record(event: str) -> None:
    if pidfile:
        with open(pidfile, "a") as file:
            file.write(f"{event} {os.getpid()} {time.time():.6f}\n")


def stop(signum, frame):
    print("daemon stopping", flush=True)
    record("stop")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
record("start")
print(f"daemon started, pid {os.getpid()}", flush=True)
beat = 0
while True:
    beat += 1
    print(f"heartbeat {beat}", flush=True)
    time.sleep(1)
