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


class ReplyLost(RedisLeaseStore):
    """A real Redis store whose first ``claim_runs`` reply is lost: Redis applies the claims, then the
    caller gets the connection error a restart (or a cut link) gives it at that moment."""

    lost = False

    def claim_runs(self, requests, generation=None):
        outcomes = super().claim_runs(requests, generation)
        if not self.lost:
            self.lost = True
            raise LeaseError("cannot reach Redis (REDIS_URL): Connection reset by peer (the reply was lost)")
        return outcomes


def poll_fails(runner: Runner) -> bool:
    """One poll of ``runner``; True when its claim call failed (the store's reply was lost)."""
    try:
        runner.poll_once(timeout=0.2)
    except LeaseError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.redis
def test_an_offer_whose_claim_reply_was_lost_finds_its_own_claim_and_runs_once(private_redis, bus_settings):
    """The chaos suite's Redis SIGKILL once left a slot ``offered`` forever: the claim reached the
    AOF, the reply did not, and the offer given back was then dropped as "already claimed" by the
    very runner holding the claim. The retried claim carries the failed call's token."""
    settings = bus_settings(private_redis.url)
    leases, bus = ReplyLost(settings), open_bus(settings)
    events = Events(bus)
    executor = LocalExecutor(settings, "alpha", timeout_grace=1.0)
    reporter = RunReporter(bus, "alpha")
    runner = Runner("alpha", bus.offer_consumer("alpha"), bus, leases, executor, reporter, instance="alpha-1")
    try:
        offer = slot_offer(0, leases.acquire_leader("leader", 600))
        bus.publish_offers([offer])
        wait_for(lambda: poll_fails(runner), 60, "the lost reply never reached the runner")
        claim = leases.get_claim(offer.run_id)
        assert claim is not None and claim.instance == runner.instance  # Redis did apply it

        def finished() -> bool:
            runner.poll_once(timeout=0.2)
            return any(e.kind == "finished" and e.run_id == offer.run_id for e in events.items)

        wait_for(finished, 60, f"the offer came back but did not run: {runner.counters}")
        assert runner.counters.claimed == 1 and runner.counters.duplicates == 0
        assert [e.kind for e in events.items if e.run_id == offer.run_id].count("started") == 1
    finally:
        executor.shutdown(grace=1.0)
        reporter.close()
        events.close()
        bus.close()
        leases.close()


@pytest.mark.slow
@pytest.mark.redis
def test_a_claim_whose_reply_was_lost_runs_once_when_its_offer_went_to_another_member(private_redis, bus_settings):
    """The claim reached Redis, its reply did not, and the offer given back went to another member
    (on Kafka: a rebalance moved its partition), which dropped it as claimed. The claim's holder is
    alive, so settling never re-offers it: its runner reads the claim back (``undecided``) and runs
    it, once; the other member never runs it."""
    settings = bus_settings(private_redis.url)
    bus, other_leases = open_bus(settings), RedisLeaseStore(settings)
    events = Events(bus)
    made: list = []

    def runner(name: str, leases) -> Runner:
        executor, reporter = LocalExecutor(settings, name, timeout_grace=1.0), RunReporter(bus, name)
        made.extend([executor, reporter])
        return Runner(name, bus.offer_consumer(name), bus, leases, executor, reporter, instance=f"{name}-1")

    alpha = runner("alpha", ReplyLost(settings))
    alpha.undecided.resolve_after = 1.0
    try:
        offer = slot_offer(0, alpha.leases.acquire_leader("leader", 600))
        bus.publish_offers([offer])
        wait_for(lambda: poll_fails(alpha), 60, "the lost reply never reached alpha")
        alpha.consumer.close()  # alpha's share of the bus moves to beta, with the offer given back
        beta = runner("beta", other_leases)
        wait_for(lambda: beta.poll_once(timeout=0.2) or beta.counters.duplicates, 60, "beta never got the offer")
        alpha.consumer = bus.offer_consumer("alpha")

        def finished() -> bool:
            alpha.poll_once(timeout=0.2)
            beta.poll_once(timeout=0.2)
            return any(e.kind == "finished" and e.run_id == offer.run_id for e in events.items)

        wait_for(finished, 60, f"the claim found no way to its run: alpha {alpha.counters}, beta {beta.counters}")
        assert (alpha.counters.claimed, beta.counters.claimed, beta.counters.duplicates) == (1, 0, 1)
        assert [e.kind for e in events.items if e.run_id == offer.run_id].count("started") == 1
    finally:
        for part in made:
            part.shutdown(grace=1.0) if isinstance(part, LocalExecutor) else part.close()
        events.close()
        bus.close()
        other_leases.close()
        alpha.leases.close()


@pytest.mark.redis
def test_two_copies_of_an_offer_in_one_poll_are_claimed_once_and_run_once(private_redis, bus_settings):
    """A dead instance's never-started claim is re-offered by the settler while its original offer
    is still on the bus: one member can receive both copies in one poll. Both claim requests would
    carry the run's one token, and Redis grants a claim to its own token (a retried call finds its
    lost reply's claim), so the second copy must be dropped before the claim. Before, both won:
    the executor refused the second spawn, and that refusal recorded the run failed."""
    settings = bus_settings(private_redis.url)
    leases, bus = RedisLeaseStore(settings), open_bus(settings)
    events = Events(bus)
    executor = LocalExecutor(settings, "alpha", timeout_grace=1.0)
    reporter = RunReporter(bus, "alpha")
    runner = Runner("alpha", bus.offer_consumer("alpha"), bus, leases, executor, reporter, instance="alpha-1")
    try:
        offer = slot_offer(0, leases.acquire_leader("leader", 600))
        bus.publish_offers([offer, offer])
        wait_for(lambda: runner.poll_once(timeout=0.2) == 2, 60, "the two copies never came in one poll")
        assert (runner.counters.claimed, runner.counters.duplicates) == (1, 1)

        def finished():
            runner.poll_once(timeout=0.2)
            return [e for e in events.items if e.kind == "finished" and e.run_id == offer.run_id]

        assert wait_for(finished, 60, "the run did not finish")[0].data["state"] == "succeeded"
        assert [e.kind for e in events.items if e.run_id == offer.run_id].count("started") == 1
    finally:
        executor.shutdown(grace=1.0)
        reporter.close()
        events.close()
        bus.close()
        leases.close()
