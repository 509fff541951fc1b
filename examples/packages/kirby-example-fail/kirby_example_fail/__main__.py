"""Print a line to stdout, an error to stderr, and exit 1."""

import sys

print("about to fail", flush=True)
print("kirby-example-fail: something went wrong", file=sys.stderr, flush=True)
sys.exit(1)
