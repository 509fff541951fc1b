"""Work STINT_SECONDS (default 2), then exit 0; with STINT_UNTIL (a path), stop earlier, as soon as
that file exists (a test decides how long the run lasts).

If KIRBY_RUN_LEDGER is set, append ``<run id> <pid> <time>`` to that file when it starts (the
format of kirby-example-hello's ledger) and ``<run id> <pid> <time> end`` when it ends, so tests
can count executions and prove that two runs of a job never ran at once, independently of what
Kirby records.
"""

import os
import time

run_id = os.environ.get("KIRBY_RUN_ID", "?")
ledger = os.environ.get("KIRBY_RUN_LEDGER")
until = os.environ.get("STINT_UNTIL")


def record(suffix: str = "") -> None:
    if ledger:
        with open(ledger, "a") as file:
            file.write(f"{run_id} {os.getpid()} {time.time():.6f}{suffix}\n")


record()
seconds = float(os.environ.get("STINT_SECONDS", "2"))
print(f"run {run_id}: working {seconds:g} s" + (f" or until {until} exists" if until else ""), flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and not (until and os.path.exists(until)):
    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
record(" end")
print("done", flush=True)
