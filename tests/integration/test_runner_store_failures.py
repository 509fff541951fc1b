"""The runner when the lease store fails in the middle of a batch (issue 10, scenario 1).

A private Redis is frozen (SIGSTOP: connections hang, nothing is lost) while offers arrive, so
``current_epoch``/``claim_run`` raise: every offer of the batch must come back once Redis answers
again and run exactly once. On both buses: Kafka's consumer position has moved past the records
(they must be sought back), the embedded bus holds them in flight for a live member (they must be
released).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from kirby.bus import open_bus
from kirby.errors import LeaseError
from kirby.events import Offer
from kirby.lease.redis import RedisLeaseStore
from kirby.supervisor.reporting import RunReporter
from kirby.supervisor.runner import Runner
from kirby.tasks.executor import LocalExecutor
from tests.helpers import wait_for
from tests.integration.test_supervisor_runner import Events

SLOT = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def slot_offer(n: int, epoch: int) -> Offer:
    instant = SLOT + timedelta(seconds=n)
    run_id = f"hello:dev:{instant:%Y%m%dT%H%M%SZ}"
    return Offer(run_id, run_id, "hello", "dev", "kirby-example-hello", "1.0.0", instant, epoch=epoch, overlap="allow")


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_settings(request, make_settings, example_wheels, shared_venvs):
    def build(redis_url: str):
        name = uuid.uuid4().hex[:12]
        environ = {
            "KIRBY_PACKAGE_INDEX": str(example_wheels),
            "KIRBY_VENV_DIRECTORY": str(shared_venvs),
            "REDIS_URL": redis_url,
            "EXT_RETRIES": "0",
            "KIRBY_SUPERVISOR_GROUP_ID": f"supervisors-{name}",
        }
        if request.param == "kafka":
            environ.update(
                KAFKA_BOOTSTRAP_SERVERS=request.getfixturevalue("kafka_servers"),
                KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
                KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
            )
        return make_settings(**environ)

    return build


@pytest.mark.slow
@pytest.mark.redis
def test_offers_of_a_batch_whose_claims_failed_come_back_and_run_once(private_redis, bus_settings):
    settings = bus_settings(private_redis.url)
    leases, bus = RedisLeaseStore(settings), open_bus(settings)
    events = Events(bus)
    executor = LocalExecutor(settings, "alpha", timeout_grace=1.0)
    reporter = RunReporter(bus, "alpha")
    runner = Runner("alpha", bus.offer_consumer("alpha"), bus, leases, executor, reporter)
    try:
        epoch = leases.acquire_leader("leader", 600)
        offers = [slot_offer(n, epoch) for n in range(5)]
        private_redis.freeze()
        try:
            bus.publish_offers(offers)
            failures = 0

            def failed_once() -> bool:
                nonlocal failures
                try:
                    runner.poll_once(timeout=0.2)
                except LeaseError:
                    failures += 1
                return failures > 0

            wait_for(failed_once, 60, "the runner never hit the frozen store")
        finally:
            private_redis.thaw()
        assert runner.counters.claimed == 0
        wanted = {offer.run_id for offer in offers}

        def all_finished() -> bool:
            runner.poll_once(timeout=0.2)
            return wanted <= {e.run_id for e in events.items if e.kind == "finished"}

        wait_for(all_finished, 120, f"not every offer came back and ran: {runner.counters}")
        assert runner.counters.claimed == 5
        started = Counter(e.run_id for e in events.items if e.kind == "started")
        assert set(started) == wanted and set(started.values()) == {1}
        assert {c.run_id for c in leases.list_claims()} == wanted
    finally:
        executor.shutdown(grace=1.0)
        reporter.close()
        events.close()
        bus.close()
        leases.close()
