"""The embedded bus's delivery latency and a waiting consumer's CPU (not a test).

Run: .venv/bin/python bench/bus_wake.py [N]: a consumer in another process waits in ``poll(1.0)``;
first its CPU over 5 s with nothing published, then N events published 0.1 s apart: publish ->
delivered p50/p99/max. Run it with another checkout's interpreter for that checkout's bus (the
consumer runs ``sys.executable``).
"""

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from kirby.bus.local import LocalBus
from kirby.config import load_settings
from kirby.events import RunEvent


def bus(path):
    return LocalBus(load_settings(environ={"KIRBY_EMBEDDED_PATH": path}, cwd=Path(path).parent))


if len(sys.argv) > 2 and sys.argv[1] == "consumer":
    b = bus(sys.argv[2])
    c = b.event_consumer("g", "c")
    n = int(sys.argv[3])
    print("ready", flush=True)
    got = 0
    while got < n:
        for d in c.poll(1.0):
            print(d.message.run_id, time.time(), flush=True)
            c.ack(d)
            got += 1
    c.close()
    b.close()
    sys.exit()

n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
path = str(Path(tempfile.mkdtemp()) / "e.db")
b = bus(path)
consumer = subprocess.Popen([sys.executable, __file__, "consumer", path, str(n)], stdout=subprocess.PIPE, text=True)
assert consumer.stdout.readline().strip() == "ready"
time.sleep(1)


# idle CPU of the waiting consumer over 5 s
def stat():
    return sum(int(x) for x in Path(f"/proc/{consumer.pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])


c0 = stat()
time.sleep(5)
idle = (stat() - c0) / os.sysconf("SC_CLK_TCK") / 5
sent = {}
for i in range(n):
    run_id = f"r{i}"
    sent[run_id] = time.time()
    b.publish_event(RunEvent(kind="log", run_id=run_id, time=datetime.now(timezone.utc), supervisor="s", data={}))
    time.sleep(0.1)
late = []
for _ in range(n):
    run_id, at = consumer.stdout.readline().split()
    late.append(float(at) - sent[run_id])
consumer.wait()
late.sort()
print(
    f"publish -> delivered (n={n}): p50 {late[n // 2] * 1000:.1f} ms  p99 {late[int(n * 0.99) - 1] * 1000:.1f} ms  "
    f"max {late[-1] * 1000:.1f} ms; waiting consumer's CPU {idle * 100:.2f} % of a core; load {os.getloadavg()[0]:.2f}"
)
