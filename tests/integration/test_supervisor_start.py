"""A supervisor's start: its registration stays live while its offer consumer joins the group.

On Kafka a join waits for a rebalance: 6.9 s was measured in CI against a registration TTL of
``3 * window`` (6 s at ``--window 2``). Before, the heartbeat started only after the join; the
registration lapsed meanwhile, and the leader settled the runs this live instance claimed right
after the join as a dead instance's: recorded lost while they ran (the e2e test of leaders killed
and restarted under their names). Here the real Supervisor runs on the embedded backends, its
consumer's join held for several TTLs.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from kirby.schedule import ScheduleSnapshot, StaticScheduleSource
from kirby.supervisor.service import Supervisor
from tests.helpers import wait_for

WINDOW = 0.5  # registration TTL 1.5 s
JOIN_SECONDS = 4 * 3 * WINDOW


def test_the_registration_stays_live_while_the_offer_consumer_joins(make_settings):
    settings = make_settings()
    source = StaticScheduleSource(ScheduleSnapshot(generated_at=datetime.now(timezone.utc)))
    supervisor = Supervisor(settings, "s1", window=WINDOW, wakeup=1.0, source=source)
    joining, joined = threading.Event(), threading.Event()
    open_consumer = supervisor.bus.offer_consumer

    def slow_join(name):  # the real consumer, handed over once a long rebalance is over
        joining.set()
        joined.wait(JOIN_SECONDS + 30)
        return open_consumer(name)

    supervisor.bus.offer_consumer = slow_join
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,))
    thread.start()
    try:
        wait_for(joining.is_set, 30, "the supervisor never opened its offer consumer")
        until, lapses, looks = time.monotonic() + JOIN_SECONDS, 0, 0
        while time.monotonic() < until:
            live = {info.instance for info in supervisor.leases.supervisors()}
            lapses += supervisor.instance not in live
            looks += 1
            time.sleep(0.1)  # sampling the registration through the join, not awaiting a condition
        assert lapses == 0, f"the registration lapsed in {lapses} of {looks} looks during a {JOIN_SECONDS} s join"
        joined.set()
        wait_for(lambda: supervisor.runner is not None, 30, "the runner was never built after the join")
    finally:
        joined.set()
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the supervisor did not stop"
