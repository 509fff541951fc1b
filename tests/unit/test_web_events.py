"""The web's run events consumer: events from the embedded bus become rows, acknowledged after the
commit; runs of a vanished supervisor are marked lost after a grace, with a system log line."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from test_web_support import T0, app, settings, web  # noqa: F401

from kirby.events import Offer, RunEvent
from kirby.models import LogLine, Run, RunState
from kirby.web.events_consumer import EventsConsumer
from tests.helpers import wait_for


def claim(run_id: str, supervisor: str) -> list[RunEvent]:
    return [
        RunEvent("claimed", run_id, T0, supervisor, {"job": "backup", "environment": "prod", "scheduled_at": T0}),
        RunEvent("started", run_id, T0 + timedelta(seconds=1), supervisor),
    ]


def test_events_are_recorded_and_acknowledged_after_commit(app):
    state = app.extensions["kirby"]
    run_id = "backup:prod:20260102T030405Z"
    events = claim(run_id, "sup-a") + [
        RunEvent("log", run_id, T0, "sup-a", {"seq": 1, "stream": "stdout", "text": "hi"}),
        RunEvent("log", run_id, T0, "sup-a", {"seq": 1, "stream": "stdout", "text": "hi"}),  # redelivered
        RunEvent("finished", run_id, T0 + timedelta(seconds=2), "sup-a", {"state": "failed", "exit_code": 3}),
    ]
    for event in events:
        state.bus.publish_event(event)
    consumer = EventsConsumer(state, member="web-test")
    recorded = 0
    for _ in range(20):
        recorded += consumer.consume_once(timeout=0.5)
        if recorded >= len(events):
            break
    consumer.stop()
    assert recorded == len(events)
    with state.database.session() as s:
        run = s.get(Run, run_id)
        assert (run.state, run.exit_code, run.supervisor) == (RunState.FAILED, 3, "sup-a")
        assert s.scalars(select(LogLine.text)).all() == ["hi"]
    again = EventsConsumer(state, member="web-test-2")  # everything was acknowledged: nothing comes back
    assert again.consume_once(timeout=0.3) == 0
    again.stop()


def test_runs_of_a_vanished_supervisor_are_marked_lost_after_the_grace(app):
    state = app.extensions["kirby"]
    state.lease_store.register_supervisor("alive", "instance-1", ttl=60)
    with state.database.session() as s:
        from kirby.recorder import record

        record(s, claim("backup:prod:20260102T030405Z", "alive") + claim("backup:prod:20260102T030406Z", "ghost"))
    consumer = EventsConsumer(state, grace=30)
    assert consumer.check_lost(T0) == []  # ghost is missing since T0: within the grace
    assert consumer.check_lost(T0 + timedelta(seconds=29)) == []
    assert consumer.check_lost(T0 + timedelta(seconds=30)) == ["backup:prod:20260102T030406Z"]
    assert consumer.check_lost(T0 + timedelta(seconds=90)) == []  # already lost; the live one untouched
    with state.database.session() as s:
        lost = s.get(Run, "backup:prod:20260102T030406Z")
        assert lost.state == RunState.LOST and "ghost" in lost.error
        assert s.get(Run, "backup:prod:20260102T030405Z").state == RunState.RUNNING
        line = s.scalar(select(LogLine).where(LogLine.run_id == lost.id))
        assert line.stream == "system" and "stopped heartbeating" in line.text


def test_an_offered_run_started_by_a_dead_instance_is_lost_at_once(app):
    """The claimed event died with its supervisor; the lease store's claim says which instance had
    it and that it started: lost at once (its instance is unregistered), even if the name is back."""
    state = app.extensions["kirby"]
    run_id = "backup:prod:20260102T030407Z"
    with state.database.session() as s:
        from kirby.recorder import record

        record(
            s,
            [
                RunEvent(
                    "offered",
                    run_id,
                    T0,
                    None,
                    {"job": "backup", "environment": "prod", "scheduled_at": T0, "offered_at": T0},
                )
            ],
        )
    assert state.lease_store.claim_run(run_id, "ghost", instance="dead-instance")
    assert state.lease_store.mark_started(run_id, "dead-instance")
    state.lease_store.register_supervisor("ghost", "new-instance", ttl=60)  # the name is back, restarted
    consumer = EventsConsumer(state, grace=30)
    assert consumer.check_lost(T0) == [run_id]
    with state.database.session() as s:
        lost = s.get(Run, run_id)
        assert (lost.state, lost.supervisor) == (RunState.LOST, "ghost")
        assert "died" in lost.error
    assert state.lease_store.active_claims() == [] and consumer.check_lost(T0) == []


def test_a_claim_of_a_dead_instance_that_never_started_is_offered_again_under_its_id(app):
    state = app.extensions["kirby"]
    offer = Offer("backup:prod:20260102T030408Z", "backup:prod:20260102T030408Z", "backup", "prod", "p", "1", T0)
    consumer_of_offers = state.bus.offer_consumer("checker")
    assert state.lease_store.claim_run(offer.run_id, "ghost", instance="dead-instance", offer=offer.to_json().decode())
    assert EventsConsumer(state, grace=30).check_lost(T0) == []
    deliveries = wait_for(lambda: consumer_of_offers.poll(0.5), 10, "the run was not offered again")
    assert [d.message.run_id for d in deliveries] == [offer.run_id]
    consumer_of_offers.close()
    assert state.lease_store.claim_run(offer.run_id, "alive", instance="live-instance")  # once more, once
    assert not state.lease_store.claim_run(offer.run_id, "other", instance="other-instance")


def test_a_run_settled_by_a_dead_instance_whose_result_never_arrived_is_lost_after_the_grace(app):
    """Its supervisor finished it (the claim is settled) and died before the finished event left."""
    state = app.extensions["kirby"]
    run_id = "backup:prod:20260102T030409Z"
    with state.database.session() as s:
        from kirby.recorder import record

        record(s, claim(run_id, "gone"))
    assert state.lease_store.claim_run(run_id, "gone", instance="dead-instance")
    assert state.lease_store.mark_started(run_id, "dead-instance")
    state.lease_store.settle_run(run_id)
    consumer = EventsConsumer(state, grace=30)
    assert consumer.check_lost(T0) == []  # its finished event may still be on its way
    assert consumer.check_lost(T0 + timedelta(seconds=30)) == [run_id]


def test_a_supervisor_that_comes_back_in_time_keeps_its_runs(app):
    state = app.extensions["kirby"]
    with state.database.session() as s:
        from kirby.recorder import record

        record(s, claim("backup:prod:20260102T030405Z", "flaky"))
    consumer = EventsConsumer(state, grace=30)
    assert consumer.check_lost(T0) == []
    state.lease_store.register_supervisor("flaky", "instance-1", ttl=60)
    assert consumer.check_lost(T0 + timedelta(seconds=20)) == []
    state.lease_store.unregister_supervisor("flaky", "instance-1")
    assert consumer.check_lost(T0 + timedelta(seconds=40)) == []  # missing again: the grace restarts
    assert consumer.check_lost(T0 + timedelta(seconds=70)) == ["backup:prod:20260102T030405Z"]


@pytest.mark.kafka
def test_events_from_kafka_are_recorded_once(kafka_servers, make_settings, db):
    """The same consumer on the real Kafka: a batch is recorded, acknowledged, and not redelivered."""
    import time
    import uuid

    from kirby.bus import open_bus
    from kirby.bus.kafka_topics import delete_topics
    from kirby.lease import open_lease_store
    from kirby.web.app import create_app

    name = uuid.uuid4().hex[:12]
    settings = make_settings(
        TESTING="true",
        KAFKA_BOOTSTRAP_SERVERS=kafka_servers,
        KIRBY_SINGLE_HOST="true",  # this test's processes share one host (and one embedded lease store)
        KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
        KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
    )
    bus, leases = open_bus(settings), open_lease_store(settings)
    try:
        state = create_app(settings, database=db, bus=bus, lease_store=leases).extensions["kirby"]
        run_id = "backup:prod:20260102T030405Z"
        events = claim(run_id, "sup-k") + [
            RunEvent("log", run_id, T0, "sup-k", {"seq": i, "stream": "stdout", "text": f"line {i}"}) for i in range(50)
        ]
        for event in events:
            bus.publish_event(event)
        bus.flush()
        consumer = EventsConsumer(state, member=f"web-{name}")
        recorded, deadline = 0, time.monotonic() + 60
        while recorded < len(events) and time.monotonic() < deadline:
            recorded += consumer.consume_once(timeout=1.0)
        consumer.stop()
        assert recorded == len(events), f"only {recorded} of {len(events)} events arrived within 60 s"
        with state.database.session() as s:
            assert s.get(Run, run_id).state == RunState.RUNNING
            assert s.scalars(select(LogLine.seq).order_by(LogLine.seq)).all() == list(range(50))
        again = EventsConsumer(state, member=f"web-{name}-2")  # the group's offsets were committed
        assert sum(again.consume_once(timeout=1.0) for _ in range(5)) == 0
        again.stop()
    finally:
        bus.close()
        leases.close()
        delete_topics(settings)
