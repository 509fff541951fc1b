"""The leader while the web server is down or hangs (issue 10, scenario 4): no fetch runs in, or
delays, the thread that renews the lease and publishes; the leader keeps publishing from its last
good copy for the whole outage and says so once."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from kirby.schedule import ScheduleClient
from kirby.supervisor.scheduler import Scheduler
from tests.unit.test_schedule_client import FakeWeb
from tests.unit.test_scheduler import Cluster, cluster  # noqa: F401 (fixture)

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def document(cron: str) -> bytes:
    context = {
        "context_id": 1,
        "job": "tick",
        "job_type": "scheduled",
        "environment": "prod",
        "package": "p",
        "version": "1",
        "schedules": [{"id": 1, "cron": cron, "misfire_grace_seconds": 30}],
    }
    return json.dumps({"generated_at": NOW.isoformat(), "contexts": [context]}).encode()


def client(cluster: Cluster, web: FakeWeb, make_settings) -> ScheduleClient:  # noqa: F811
    settings = make_settings(KIRBY_SCHEDULE_ENDPOINT=web.url, EXT_RETRIES="0")
    return ScheduleClient(settings, timeout=30, total_timeout=30)


def test_a_down_web_server_means_the_last_good_copy_and_one_warning_per_outage(cluster, make_settings, caplog):  # noqa: F811
    web = FakeWeb()
    web.answers = [(200, document("* * * * * */10"))]
    leader: Scheduler = cluster.leader("alpha", client(cluster, web, make_settings))
    leader.refresh(NOW)
    first = leader.snapshot
    web.stop()
    caplog.set_level(logging.INFO, logger="kirby.supervisor.scheduler")
    for seconds in (30, 60, 90):
        leader.refresh(NOW + timedelta(seconds=seconds))
        assert leader.snapshot is first
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"cannot read the schedule: schedule endpoint {web.url} unreachable")
    assert warnings[0].endswith(f"scheduling from the copy fetched at {NOW.isoformat()} until it can")
    back = FakeWeb()  # it comes back (at another address: the old port is not ours to reuse)
    leader.source.url = back.url
    leader.refresh(NOW + timedelta(seconds=120))
    assert leader.snapshot is not first
    assert f"the schedule can be read again (it could not since {(NOW + timedelta(seconds=30)).isoformat()})" in [
        r.getMessage() for r in caplog.records
    ]
    back.stop()


def test_a_hanging_web_server_never_delays_publishing_nor_costs_the_lease(cluster, make_settings):  # noqa: F811
    web = FakeWeb()
    web.answers = [(200, document("* * * * * *"))]
    # A 1 s lease TTL and a copy stale after 0.5 s: an inline fetch held 4 s would lose the lease.
    leader = cluster.leader("alpha", client(cluster, web, make_settings), window=0.5, wakeup=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=leader.run, args=(stop,))
    thread.start()
    received = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < 2:
            assert time.monotonic() < deadline, "the leader published nothing"
            received.extend(cluster.published())
        epoch, asked = cluster.store.current_epoch(), len(web.requests)
        web.hanging.set()
        hang_start = datetime.now(UTC)
        time.sleep(4)  # the fault itself: the web server holds every request for 4 s (4 lease TTLs)
        hang_end = datetime.now(UTC)
        received.extend(cluster.published())
        assert len(web.requests) > asked, "the refresh thread should have asked (and hung) meanwhile"
    finally:
        web.hanging.clear()
        stop.set()
        thread.join(30)
        web.stop()
    assert not thread.is_alive()
    assert cluster.store.current_epoch() == epoch, "the leader lost its lease during the hang"
    during = {o.scheduled_at for o in received if hang_start < o.scheduled_at <= hang_end - timedelta(seconds=1)}
    expected = {hang_start.replace(microsecond=0) + timedelta(seconds=n) for n in range(1, 4)}
    assert expected <= during, f"slots not published during the hang: {sorted(expected - during)}"
