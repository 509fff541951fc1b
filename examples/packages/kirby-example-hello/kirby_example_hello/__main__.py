"""Print a few lines (run id, a config key, the installed version) and exit 0."""

import os
import sys
from importlib.metadata import version

print(f"hello from kirby-example-hello {version('kirby-example-hello')}")
print(f"run {os.environ.get('KIRBY_RUN_ID', '?')} of job {os.environ.get('KIRBY_JOB', '?')}")
print(f"greeting: {os.environ.get('GREETING', 'hello')}")
print(f"python: {sys.executable}")
print("bye")
