"""Print a few lines (run id, a config key, the installed version) and exit 0.

If KIRBY_RUN_LEDGER is set, append ``<run id> <pid> <time>`` to that file: the end-to-end tests
count executions there, independently of what Kirby records.
"""

import os
import sys
import time
from importlib.metadata import version

run_id = os.environ.get("KIRBY_RUN_ID", "?")
ledger = os.environ.get("KIRBY_RUN_LEDGER")
if ledger:
    with open(ledger, "a") as file:
        file.write(f"{run_id} {os.getpid()} {time.time():.6f}\n")
print(f"hello from kirby-example-hello {version('kirby-example-hello')}")
print(f"run {run_id} of job {os.environ.get('KIRBY_JOB', '?')}")
print(f"greeting: {os.environ.get('GREETING', 'hello')}")
print(f"python: {sys.executable}")
print("bye")
