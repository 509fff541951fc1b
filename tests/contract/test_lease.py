"""The lease store contract (kirby/lease/base.py), run on the embedded store and on the real Redis.

Real time is used only where expiry or concurrency is the point (TTLs of a few tenths of a second,
awaited with bounded waits). Subprocesses are real processes: paused with SIGSTOP, killed with
SIGKILL, racing for the same run ids.
"""

from __future__ import annotations

import signal
import threading
from datetime import datetime, timedelta, timezone

import pytest
from helpers import wait_for
from lease_support import Backend

from kirby.errors import LeaseError, SupervisorNameTaken
from kirby.lease.base import ClaimRequest, LeaseStore, StaleEpoch

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)
TTL = 0.3  # seconds: short leases whose expiry the tests await


@pytest.fixture
def store(backend: Backend) -> LeaseStore:
    return backend.open()


def expire(store: LeaseStore) -> None:
    wait_for(lambda: store.leader() is None, 5, "the leader lease expired")


# -- leader lease --------------------------------------------------------------------------------
def test_acquire_increments_the_epoch_and_a_live_lease_refuses_everyone_else(backend):
    a, b = backend.open(), backend.open()
    assert a.current_epoch() == 0 and a.leader() is None
    epoch = a.acquire_leader("alpha", 30)
    assert epoch == 1 and b.current_epoch() == 1
    assert b.acquire_leader("beta", 30) is None
    assert a.acquire_leader("alpha", 30) is None  # the holder renews instead
    leader = b.leader()
    assert (leader.owner, leader.epoch) == ("alpha", 1)
    assert timedelta(seconds=25) < leader.expires_at - datetime.now(timezone.utc) <= timedelta(seconds=31)
    assert a.release_leader("alpha", epoch) and b.leader() is None
    assert b.acquire_leader("beta", 30) == 2 and a.current_epoch() == 2


def test_renew_and_release_are_compare_and_set_on_owner_and_epoch(store):
    epoch = store.acquire_leader("alpha", 10)
    assert not store.renew_leader("beta", epoch, 60)
    assert not store.renew_leader("alpha", epoch + 1, 60)
    assert not store.release_leader("beta", epoch)
    assert not store.release_leader("alpha", epoch - 1)
    assert store.leader().expires_at < datetime.now(timezone.utc) + timedelta(seconds=11)  # nothing extended it
    assert store.renew_leader("alpha", epoch, 60)
    assert store.leader().expires_at > datetime.now(timezone.utc) + timedelta(seconds=50)  # extended from now
    assert store.release_leader("alpha", epoch)
    assert not store.release_leader("alpha", epoch) and not store.renew_leader("alpha", epoch, 30)
    assert store.current_epoch() == epoch  # releasing keeps the epoch


def test_after_expiry_a_new_owner_takes_over_and_the_old_one_can_neither_renew_nor_release(backend):
    old, new = backend.open(), backend.open()
    first = old.acquire_leader("alpha", TTL)
    expire(new)
    second = new.acquire_leader("beta", 30)
    assert second == first + 1
    assert not old.renew_leader("alpha", first, 30)
    assert not old.release_leader("alpha", first)
    assert (new.leader().owner, new.leader().epoch) == ("beta", second)


def test_a_holder_frozen_past_its_lease_cannot_renew_release_or_write_with_its_epoch(backend):
    store = backend.open()
    process, lines = backend.child("leader", "frozen", "1.5", "1.0")
    epoch = int(lines.next().removeprefix("epoch "))
    assert epoch == store.current_epoch() == 1
    assert lines.next() == "renewed"  # printed after the renewal committed, before a 1 s sleep
    process.send_signal(signal.SIGSTOP)
    expire(store)
    successor = store.acquire_leader("successor", 30)
    assert successor == epoch + 1
    process.send_signal(signal.SIGCONT)
    answers = [lines.next()]
    while not answers[-1].startswith(("cursor", "<eof>")) and len(answers) < 50:  # bounded: a bug renews forever
        answers.append(lines.next())
    assert answers[-3:] == ["renew-refused", "release False", "cursor refused"], answers
    assert process.wait(timeout=10) == 0
    leader = store.leader()
    assert (leader.owner, leader.epoch) == ("successor", successor)
    assert store.get_cursor("schedule") is None
    with pytest.raises(StaleEpoch):
        store.set_cursor("schedule", T0, epoch)


# -- cursors -------------------------------------------------------------------------------------
def test_cursors_are_written_only_while_the_epoch_holds_the_lease(backend):
    a, b = backend.open(), backend.open()
    assert a.get_cursor("job:prod") is None
    epoch = a.acquire_leader("alpha", 30)
    a.set_cursor("job:prod", T0, epoch)
    a.set_cursor("other:prod", T0 + timedelta(hours=2), epoch)
    assert b.get_cursor("job:prod") == T0 and b.get_cursor("job:prod").tzinfo is not None
    with pytest.raises(StaleEpoch):
        a.set_cursor("job:prod", T0 + timedelta(minutes=1), epoch + 1)  # not issued yet
    assert a.renew_leader("alpha", epoch, TTL)  # shortened, then left to expire
    expire(a)
    with pytest.raises(StaleEpoch):  # expired without a successor: refused too
        a.set_cursor("job:prod", T0 + timedelta(minutes=1), epoch)
    newer = b.acquire_leader("beta", 30)
    with pytest.raises(StaleEpoch):
        a.set_cursor("job:prod", T0 + timedelta(minutes=1), epoch)
    assert a.get_cursor("job:prod") == T0
    b.set_cursor("job:prod", T0 + timedelta(minutes=5), newer)
    assert a.get_cursor("job:prod") == T0 + timedelta(minutes=5)
    assert a.get_cursor("other:prod") == T0 + timedelta(hours=2)


def test_a_cursor_is_stored_in_utc_and_a_naive_datetime_is_refused(store):
    epoch = store.acquire_leader("alpha", 30)
    paris = timezone(timedelta(hours=1))
    store.set_cursor("job:prod", datetime(2026, 11, 28, 4, 0, tzinfo=paris), epoch)
    assert store.get_cursor("job:prod") == T0 and store.get_cursor("job:prod").utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        store.set_cursor("job:prod", datetime(2026, 11, 28, 5, 0), epoch)
    assert store.get_cursor("job:prod") == T0


def test_the_record_of_published_slots_is_kept_within_its_window_and_read_back_in_utc(store):
    slots = [T0 + timedelta(seconds=n) for n in (10, 20, 30)]
    store.add_published({"job:prod:1": slots, "other:prod:2": [T0]}, forget_before=T0 - timedelta(hours=1))
    store.add_published({"job:prod:1": slots[1:]}, forget_before=T0 - timedelta(hours=1))  # idempotent
    assert store.published_slots("job:prod:1", T0, T0 + timedelta(minutes=1)) == slots
    assert store.published_slots("job:prod:1", slots[0], slots[1]) == [slots[1]]  # (after, until]
    assert store.published_slots("other:prod:2", T0 - timedelta(seconds=1), T0) == [T0]
    later = T0 + timedelta(seconds=40)
    store.add_published({"job:prod:1": [later]}, forget_before=T0 + timedelta(seconds=25))
    found = store.published_slots("job:prod:1", T0, later)
    assert found == [slots[2], later] and all(i.utcoffset() == timedelta(0) for i in found)


def test_cursors_in_batches_are_written_all_or_none(backend):
    a, b = backend.open(), backend.open()
    epoch = a.acquire_leader("alpha", 30)
    a.set_cursors({"job:prod": T0, "other:prod": T0 + timedelta(hours=1)}, epoch)
    both = {"job:prod": T0, "other:prod": T0 + timedelta(hours=1)}
    assert b.get_cursors(["job:prod", "missing", "other:prod"]) == both
    assert b.get_cursors([]) == {}
    a.set_cursors({}, epoch)
    a.release_leader("alpha", epoch)
    newer = b.acquire_leader("beta", 30)
    with pytest.raises(StaleEpoch):
        a.set_cursors({"job:prod": T0 + timedelta(days=1), "new:prod": T0 + timedelta(days=1)}, epoch)
    assert b.get_cursors(["job:prod", "new:prod"]) == {"job:prod": T0}  # nothing of the refused batch
    b.set_cursors({"job:prod": T0 + timedelta(days=2), "new:prod": T0 + timedelta(days=3)}, newer)
    assert a.get_cursors(["job:prod", "new:prod"]) == {
        "job:prod": T0 + timedelta(days=2),
        "new:prod": T0 + timedelta(days=3),
    }


# -- run claims ----------------------------------------------------------------------------------
def test_a_run_id_is_claimed_once_and_the_claim_can_be_read_back(backend):
    a, b = backend.open(), backend.open()
    before = datetime.now(timezone.utc)
    assert a.claim_run("job:prod:20261128T030000Z", "alpha", attempt=2)
    assert not b.claim_run("job:prod:20261128T030000Z", "beta")
    assert not a.claim_run("job:prod:20261128T030000Z", "alpha", attempt=2)
    assert b.claim_run("job:prod:20261128T030100Z", "beta")
    claim = b.get_claim("job:prod:20261128T030000Z")
    assert (claim.run_id, claim.supervisor, claim.attempt) == ("job:prod:20261128T030000Z", "alpha", 2)
    assert before - timedelta(seconds=1) <= claim.claimed_at <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert a.get_claim("never-claimed") is None
    listed = a.list_claims()
    assert [(c.run_id, c.supervisor) for c in listed] == [
        ("job:prod:20261128T030000Z", "alpha"),
        ("job:prod:20261128T030100Z", "beta"),
    ]


def test_two_processes_racing_for_the_same_1000_run_ids_each_win_exactly_once(backend):
    children = [backend.child("claim", name) for name in ("left", "right")]
    for _, lines in children:
        assert lines.next() == "ready"
    winners = []
    for i in range(1000):
        for process, _ in children:  # both get the run id before either answers: a real race
            process.stdin.write(f"r{i}\n")
            process.stdin.flush()
        answers = [lines.next() for _, lines in children]
        assert sorted(answers) == ["0", "1"], f"run id r{i}: answers {answers}"
        winners.append("left" if answers[0] == "1" else "right")
    for process, _ in children:
        process.stdin.close()
        assert process.wait(timeout=10) == 0
    store = backend.open()
    claims = {claim.run_id: claim.supervisor for claim in store.list_claims()}
    assert claims == {f"r{i}": winner for i, winner in enumerate(winners)}
    assert 0 < winners.count("left") < 1000, "both processes should win some races"


def test_threads_sharing_one_store_claim_each_run_id_once(store):
    results: list[tuple[str, bool]] = []

    def claim_all(name: str) -> None:
        for i in range(200):
            results.append((f"r{i}", store.claim_run(f"r{i}", name)))

    threads = [threading.Thread(target=claim_all, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 800
    winners = [run_id for run_id, won in results if won]
    assert sorted(winners) == sorted(f"r{i}" for i in range(200))


def test_a_claim_is_started_by_its_instance_settled_and_released_only_if_it_never_started(backend):
    """Issue 11: started marks, active index, re-offer of never-started claims of a dead instance."""
    a, b = backend.open(), backend.open()
    assert a.claim_run("j:e:20261128T030000Z", "alpha", instance="i-a", offer='{"run_id": "x"}')
    assert a.claim_run("j:e:20261128T030001Z", "alpha", instance="i-a")
    assert not b.mark_started("j:e:20261128T030000Z", "i-b")  # not its claim: it spawns nothing
    assert a.mark_started("j:e:20261128T030000Z", "i-a") and a.mark_started("j:e:20261128T030000Z", "i-a")
    started = b.get_claim("j:e:20261128T030000Z")
    assert started.instance == "i-a" and started.started_at is not None and started.offer == '{"run_id": "x"}'
    assert not b.release_claim("j:e:20261128T030000Z", "i-a")  # it started: it may have run
    assert [c.run_id for c in b.active_claims()] == ["j:e:20261128T030000Z", "j:e:20261128T030001Z"]
    assert b.release_claim("j:e:20261128T030001Z", "i-a") and not b.release_claim("j:e:20261128T030001Z", "i-a")
    assert not a.mark_started("j:e:20261128T030001Z", "i-a")  # released: the old holder may not start it
    assert b.get_claim("j:e:20261128T030001Z").released
    assert b.claim_run("j:e:20261128T030001Z", "beta", instance="i-b")  # re-offered, claimed again once
    assert not a.claim_run("j:e:20261128T030001Z", "alpha", instance="i-a")
    claim = a.get_claim("j:e:20261128T030001Z")
    assert (claim.supervisor, claim.instance, claim.released, claim.started_at) == ("beta", "i-b", False, None)
    a.settle_run("j:e:20261128T030000Z")
    assert [c.run_id for c in b.active_claims()] == ["j:e:20261128T030001Z"]
    assert b.get_claim("j:e:20261128T030000Z").settled
    assert not b.claim_run("j:e:20261128T030000Z", "beta", instance="i-b")  # settled claims still fence
    assert not a.mark_started("j:e:20261128T030000Z", "i-a")


def test_a_batch_of_claims_gives_the_answers_of_one_claim_at_a_time_in_one_call(backend):
    """Issue 14: the offers of one poll are claimed in one store round trip (``claim_runs``); each
    answer is what ``claim_run`` would have said, in order (a run id twice in a batch: won once)."""
    a, b = backend.open(), backend.open()
    assert b.claim_run("j:e:20261128T030001Z", "beta", instance="i-b")
    assert b.claim_run("j:e:20261128T030002Z", "beta", instance="i-b")
    assert b.release_claim("j:e:20261128T030002Z", "i-b")  # never started, its instance dead: open again
    requests = [
        ClaimRequest("j:e:20261128T030000Z", "alpha", 1, "i-a", '{"run_id": "j:e:20261128T030000Z"}'),
        ClaimRequest("j:e:20261128T030001Z", "alpha", 1, "i-a"),  # beta's
        ClaimRequest("j:e:20261128T030002Z", "alpha", 2, "i-a"),  # released: claimed again
        ClaimRequest("j:e:20261128T030000Z", "alpha", 1, "i-a"),  # the same run id again: a duplicate
    ]
    assert a.claim_runs(requests) == [True, False, True, False]
    assert a.claim_runs([]) == []
    claims = {c.run_id: c for c in b.active_claims()}
    assert {run_id: (c.supervisor, c.instance) for run_id, c in claims.items()} == {
        "j:e:20261128T030000Z": ("alpha", "i-a"),
        "j:e:20261128T030001Z": ("beta", "i-b"),
        "j:e:20261128T030002Z": ("alpha", "i-a"),
    }
    assert claims["j:e:20261128T030000Z"].offer == '{"run_id": "j:e:20261128T030000Z"}'
    assert claims["j:e:20261128T030002Z"].attempt == 2 and not claims["j:e:20261128T030002Z"].released
    assert not b.claim_run("j:e:20261128T030000Z", "beta")  # batch claims fence like single ones

    # Started marks of one instant in one call: only the holder's open claims are marked.
    assert b.settle_run("j:e:20261128T030002Z") is None
    marked = a.mark_runs_started(["j:e:20261128T030000Z", "j:e:20261128T030001Z", "j:e:20261128T030002Z"], "i-a")
    assert marked == [True, False, False]  # beta's claim; a settled claim
    assert a.get_claim("j:e:20261128T030000Z").started_at is not None
    assert a.get_claim("j:e:20261128T030001Z").started_at is None
    assert a.mark_runs_started(["j:e:20261128T030000Z"], "i-a") == [True] and a.mark_runs_started([], "i-a") == []


def test_stores_racing_with_batches_of_claims_win_each_run_id_exactly_once(backend):
    stores = [backend.open() for _ in range(3)]
    won: list[str] = []

    def claim_all(store: LeaseStore, name: str) -> None:
        for start in range(0, 300, 20):  # batches of 20 overlapping run ids, in every thread
            batch = [ClaimRequest(f"r{i}", name, instance=name) for i in range(start, start + 20)]
            won.extend(r.run_id for r, outcome in zip(batch, store.claim_runs(batch)) if outcome)

    threads = [threading.Thread(target=claim_all, args=(store, f"s{n}")) for n, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won) == sorted(f"r{i}" for i in range(300)), "every run id won once, by one store"
    assert {c.run_id for c in stores[0].list_claims()} == set(won)


# -- named leases ----------------------------------------------------------------------------------
def test_named_leases_have_one_holder_a_growing_generation_and_an_index_per_space(backend):
    a, b = backend.open(), backend.open()
    assert a.acquire_lease("daemon:mailer", "alpha", 30) == 1
    assert a.acquire_lease("daemon:mailer", "alpha", 30) == 1  # the holder may acquire again
    assert b.acquire_lease("daemon:mailer", "beta", 30) is None
    assert b.acquire_lease("daemon:indexer", "beta", 30) == 1
    assert b.acquire_lease("overlap:job:env", "run@i", 30) == 1
    holders = a.lease_holders("daemon")
    assert {name: (h.owner, h.generation) for name, h in holders.items()} == {
        "daemon:mailer": ("alpha", 1),
        "daemon:indexer": ("beta", 1),
    }
    assert timedelta(seconds=20) < holders["daemon:mailer"].expires_at - datetime.now(timezone.utc) < timedelta(40)
    assert list(a.lease_holders("overlap")) == ["overlap:job:env"] and a.lease_holders("none") == {}
    assert not b.renew_lease("daemon:mailer", "beta", 30) and not b.release_lease("daemon:mailer", "beta")
    assert a.renew_lease("daemon:mailer", "alpha", 30)
    assert b.renew_lease("daemon:indexer", "beta", TTL)  # shortened, then left to expire
    wait_for(lambda: "daemon:indexer" not in a.lease_holders("daemon"), 5, "the indexer lease expired")
    assert a.lease_holder("daemon:indexer") is None
    assert not b.renew_lease("daemon:indexer", "beta", 30)  # too late: expired
    assert a.acquire_lease("daemon:indexer", "alpha", 30) == 2  # a new owner: a new generation
    assert not b.release_lease("daemon:indexer", "beta")
    assert a.release_lease("daemon:mailer", "alpha") and not a.release_lease("daemon:mailer", "alpha")
    assert {n: h.owner for n, h in b.lease_holders("daemon").items()} == {"daemon:indexer": "alpha"}
    assert b.acquire_lease("daemon:mailer", "beta", 30) == 2
    assert a.acquire_lease("daemon:mailer", "gamma", 30, replaces="alpha") is None  # not alpha's any more
    assert a.acquire_lease("daemon:mailer", "gamma", 30, replaces="beta") == 3  # beta is known dead
    assert a.lease_holder("daemon:mailer").owner == "gamma"


def test_leases_are_renewed_in_one_call_each_on_its_own_holder(backend):
    a, b = backend.open(), backend.open()
    assert a.acquire_lease("daemon:short", "alpha", 2) == 1  # extended to 30 s by the batch
    assert a.acquire_lease("daemon:late", "alpha", TTL) == 1  # left to expire first
    assert b.acquire_lease("daemon:theirs", "beta", 30) == 1
    wait_for(lambda: "daemon:late" not in a.lease_holders("daemon"), 5, "the late lease expired")
    names = ["daemon:short", "daemon:late", "daemon:theirs", "daemon:never"]
    assert a.renew_leases(names, "alpha", 30) == {
        "daemon:short": True,
        "daemon:late": False,  # too late: expired
        "daemon:theirs": False,  # another holder's: untouched
        "daemon:never": False,
    }
    holders = b.lease_holders("daemon")
    assert holders["daemon:short"].expires_at - datetime.now(timezone.utc) > timedelta(seconds=20)
    assert holders["daemon:theirs"].owner == "beta" and "daemon:late" not in holders
    assert a.renew_leases([], "alpha", 30) == {}


def test_cancel_requests_live_for_their_ttl(store):
    assert not store.cancel_requested("j:e:20261128T030000Z")
    store.request_cancel("j:e:20261128T030000Z", TTL)
    assert store.cancel_requested("j:e:20261128T030000Z")
    wait_for(lambda: not store.cancel_requested("j:e:20261128T030000Z"), 5, "the cancel request expired")


def test_a_delivery_is_claimed_once_across_stores_and_again_after_its_ttl(backend):
    first, second = backend.open(), backend.open()  # two connections: two Celery worker processes
    assert first.claim_delivery("celery:j:e:20261128T030000Z:0", "worker-a", TTL) is None
    assert second.claim_delivery("celery:j:e:20261128T030000Z:0", "worker-b", TTL) == "worker-a"
    assert first.claim_delivery("celery:j:e:20261128T030000Z:0", "worker-a", TTL) == "worker-a"
    assert second.claim_delivery("celery:j:e:20261128T030000Z:1", "worker-b", 60) is None  # another key
    wait_for(
        lambda: second.claim_delivery("celery:j:e:20261128T030000Z:0", "worker-b", 60) is None,
        5,
        "the delivery claim expired and was taken again",
    )
    assert first.claim_delivery("celery:j:e:20261128T030000Z:0", "worker-a", 60) == "worker-b"


def test_threads_racing_for_the_same_deliveries_win_each_once(store):
    results: list[tuple[str, str | None]] = []

    def claim_all(name: str) -> None:
        for i in range(100):
            results.append((f"d{i}", store.claim_delivery(f"d{i}", name, 60)))

    threads = [threading.Thread(target=claim_all, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 400
    assert sorted(key for key, holder in results if holder is None) == sorted(f"d{i}" for i in range(100))


# -- supervisor registry -------------------------------------------------------------------------
def test_a_live_supervisor_name_cannot_be_taken_but_an_expired_one_can(backend):
    a, b = backend.open(), backend.open()
    a.register_supervisor("alpha", "instance-1", 30, {"host": "one"})
    a.register_supervisor("alpha", "instance-1", 30, {"host": "one", "pid": 7})  # heartbeat
    [info] = b.supervisors()
    assert (info.name, info.instance, info.info) == ("alpha", "instance-1", {"host": "one", "pid": 7})
    assert abs(info.last_heartbeat - datetime.now(timezone.utc)) < timedelta(seconds=5)
    with pytest.raises(SupervisorNameTaken) as refused:
        b.register_supervisor("alpha", "instance-2", 30)
    message = str(refused.value)
    assert "a supervisor named 'alpha' is already running on host one (pid 7), last heartbeat" in message
    assert refused.value.holder.instance == "instance-1"
    assert "choose another name or stop it" in message and "\n" not in message
    assert isinstance(refused.value, LeaseError)
    b.unregister_supervisor("alpha", "instance-2")  # not its registration: nothing happens
    assert [s.instance for s in a.supervisors()] == ["instance-1"]
    a.register_supervisor("alpha", "instance-1", TTL)
    wait_for(lambda: not b.supervisors(), 5, "the registration of 'alpha' expired")
    b.register_supervisor("alpha", "instance-2", 30)
    b.register_supervisor("beta", "instance-3", 30)
    assert [(s.name, s.instance) for s in a.supervisors()] == [("alpha", "instance-2"), ("beta", "instance-3")]
    b.unregister_supervisor("alpha", "instance-2")
    assert [s.name for s in a.supervisors()] == ["beta"]
    with pytest.raises(SupervisorNameTaken):
        a.register_supervisor("beta", "instance-4", 30, replaces="instance-9")  # not the live holder
    a.register_supervisor("beta", "instance-4", 30, replaces="instance-3")  # instance-3 is known dead
    assert [(s.name, s.instance) for s in b.supervisors()] == [("beta", "instance-4")]
