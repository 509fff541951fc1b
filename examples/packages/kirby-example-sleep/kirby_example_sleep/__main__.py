"""Sleep SLEEP_SECONDS (default 300), printing a heartbeat line every second.

With SLEEP_IGNORE_SIGTERM set, SIGTERM is ignored (only SIGKILL stops it).
"""

import os
import signal
import time

if os.environ.get("SLEEP_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

seconds = float(os.environ.get("SLEEP_SECONDS", "300"))
print(f"sleeping {seconds:g} s", flush=True)
deadline = time.monotonic() + seconds
beat = 0
while time.monotonic() < deadline:
    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    beat += 1
    print(f"heartbeat {beat}", flush=True)
print("done", flush=True)
