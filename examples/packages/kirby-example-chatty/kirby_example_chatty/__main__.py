"""Print CHATTY_LINES numbered lines (default 1000), or one line of CHATTY_LINE_BYTES bytes."""

import os
import sys

out = sys.stdout
line_bytes = int(os.environ.get("CHATTY_LINE_BYTES", "0"))
if line_bytes:
    chunk = "x" * 65536
    for _ in range(line_bytes // len(chunk)):
        out.write(chunk)
    out.write("x" * (line_bytes % len(chunk)) + "\n")
else:
    lines = int(os.environ.get("CHATTY_LINES", "1000"))
    batch = 10000
    for start in range(0, lines, batch):
        out.write("".join(f"line {n} of chatty output\n" for n in range(start, min(lines, start + batch))))
out.flush()
