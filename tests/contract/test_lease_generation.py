"""The generation marker that detects amnesia (issue 10), on the embedded store and on Redis: a
store that lost its data, or whose server restarted, grants no claim under the old generation
until a leader has rebuilt it and opened the new one; claims can be written back meanwhile."""

from __future__ import annotations

import sqlite3

import pytest
from lease_support import Backend, delete_keys

from kirby.lease.base import ClaimRequest, ClaimsClosed, RestoredClaim
from kirby.lease.redis import RedisLeaseStore


def forget_everything(backend: Backend) -> None:
    """What a Redis restarted empty (or an embedded file deleted) does: every key gone."""
    if backend.kind == "redis":
        delete_keys(backend.environ["REDIS_URL"], backend.prefix)
        return
    with sqlite3.connect(backend.environ["KIRBY_EMBEDDED_PATH"]) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'lease_%'"):
            db.execute(f"DELETE FROM {table}")


def test_a_fresh_store_opens_its_first_generation_and_keeps_it(backend):
    store = backend.open()
    first = store.check_generation(None)
    assert first.open and first.marker and first.closed_at is None and not first.rebuilt
    assert store.check_generation(first.marker) == first
    assert backend.open().check_generation(None).marker == first.marker  # a newcomer joins it
    assert store.claim_run("job:prod:20260101T000000Z", "s1", generation=first.marker)


def test_after_amnesia_no_claim_is_granted_until_the_leader_opens_the_rebuilt_generation(backend):
    old, leader = backend.open(), backend.open()
    known = old.check_generation(None).marker
    assert old.claim_run("job:prod:20260101T000000Z", "s1", instance="i1", generation=known)
    forget_everything(backend)

    lost = old.check_generation(known)  # the old process notices: a new marker, closed
    assert lost.marker != known and not lost.open and lost.closed_at is not None
    with pytest.raises(ClaimsClosed):
        old.claim_run("job:prod:20260101T000000Z", "s2", generation=known)  # the run it claimed before
    with pytest.raises(ClaimsClosed):
        old.claim_run("job:prod:20260101T000001Z", "s2", generation=lost.marker)  # closed: rebuilding
    assert leader.check_generation(None) == lost  # a newcomer sees it closed, and does not reopen it
    batch = [ClaimRequest("job:prod:20260101T000003Z", "s2"), ClaimRequest("job:prod:20260101T000004Z", "s2")]
    assert old.claim_runs(batch, generation=lost.marker) == [None, None]  # batches are refused alike
    assert old.get_claim("job:prod:20260101T000003Z") is None

    # Claims are written back while closed, never over another one; conflicts are reported.
    remembered = RestoredClaim("job:prod:20260101T000000Z", "s1", "i1", started=True, settled=False)
    assert old.restore_claims([remembered]) == []
    assert old.restore_claims([RestoredClaim("job:prod:20260101T000000Z", "other", "i9")]) == [remembered.run_id]
    claim = old.get_claim(remembered.run_id)
    assert (claim.supervisor, claim.instance, claim.settled) == ("s1", "i1", False) and claim.started_at
    assert [c.run_id for c in old.active_claims()] == [remembered.run_id]
    assert old.mark_started(remembered.run_id, "i1")

    assert not leader.open_generation(lost.marker, 1, "leader")  # only the live leader opens it
    epoch = leader.acquire_leader("leader", 30)
    assert not leader.open_generation("another marker", epoch, "leader")
    assert leader.open_generation(lost.marker, epoch, "leader")
    reopened = old.check_generation(lost.marker)
    assert reopened.open and reopened.rebuilt and reopened.marker == lost.marker
    assert not old.claim_run(remembered.run_id, "s2", generation=lost.marker)  # fenced by the written-back claim
    reopened_batch = [ClaimRequest(remembered.run_id, "s2"), ClaimRequest("job:prod:20260101T000003Z", "s2")]
    assert old.claim_runs(reopened_batch, generation=lost.marker) == [False, True]
    assert old.claim_run("job:prod:20260101T000001Z", "s2", generation=lost.marker)


def test_a_marker_a_newcomer_created_after_the_loss_is_closed_by_the_first_process_that_knew_the_old_one(backend):
    old, newcomer = backend.open(), backend.open()
    known = old.check_generation(None).marker
    forget_everything(backend)
    fresh = newcomer.check_generation(None)
    assert fresh.open  # the newcomer cannot tell: it never saw the old marker
    closed = old.check_generation(known)
    assert closed.marker == fresh.marker and not closed.open
    with pytest.raises(ClaimsClosed):
        newcomer.claim_run("job:prod:20260101T000000Z", "s3", generation=fresh.marker)
    assert newcomer.claim_run("job:prod:20260101T000002Z", "s3")  # without a generation: not checked (tools)


@pytest.mark.slow
@pytest.mark.redis
def test_a_redis_restart_closes_the_generation_even_when_its_data_survived(start_private_redis, make_settings):
    """``appendfsync everysec`` may lose the last second of writes on a crash: any restart of the
    server (a new INFO run_id) is treated as a possible loss, although the marker survived."""
    server = start_private_redis("--appendonly", "yes", "--appendfsync", "always")
    store = RedisLeaseStore(make_settings(REDIS_URL=server.url, EXT_RETRIES="50", EXT_WAIT_BETWEEN_RETRIES="0.1"))
    try:
        known = store.check_generation(None)
        assert store.claim_run("job:prod:20260101T000000Z", "s1", generation=known.marker)
        server.kill()
        server.start()
        after = store.check_generation(known.marker)
        assert after.marker == known.marker and not after.open and after.boot != known.boot
        assert store.get_claim("job:prod:20260101T000000Z") is not None  # AOF always: the claim survived
        assert store.check_generation(known.marker) == after  # noticed once; stays closed
    finally:
        store.close()


def test_after_amnesia_no_named_lease_is_given_to_a_new_owner_until_the_rebuilt_generation_opens(backend):
    """Issue 10, "the daemon never has two instances": a daemon lease that vanished with the data is
    taken by nobody while the generation is missing or closed; its old holder's renewal fails (it
    stops its daemon); once the leader opened the rebuilt generation, the lease is taken again
    under a fence token above every one issued before the loss."""
    holder, other, leader = backend.open(), backend.open(), backend.open()
    fresh = backend.open()
    assert fresh.acquire_lease("daemon:never:checked", "s0@i0", 30, generation=None) == 1  # not checked (tools)
    known = holder.check_generation(None).marker
    assert holder.acquire_lease("daemon:sensor:prod", "s1@i1", 30, generation=known) == 1
    assert holder.acquire_lease("daemon:sensor:prod", "s1@i1", 30, generation=known) == 1  # its own: kept
    assert other.acquire_lease("daemon:sensor:prod", "s2@i2", 30, generation=known) is None  # held
    assert other.release_lease("daemon:sensor:prod", "s2@i2") is False
    assert holder.release_lease("daemon:sensor:prod", "s1@i1")
    before = other.acquire_lease("daemon:sensor:prod", "s2@i2", 30, generation=known)
    assert before == 2
    forget_everything(backend)

    with pytest.raises(ClaimsClosed):  # the marker is missing: nobody has noticed yet
        other.acquire_lease("daemon:sensor:prod", "s3@i3", 30, generation=known)
    assert not other.renew_lease("daemon:sensor:prod", "s2@i2", 30)  # the holder stops its daemon
    lost = holder.check_generation(known)
    assert not lost.open
    for marker in (known, lost.marker):
        with pytest.raises(ClaimsClosed):
            other.acquire_lease("daemon:sensor:prod", "s3@i3", 30, generation=marker)
    assert other.lease_holder("daemon:sensor:prod") is None

    epoch = leader.acquire_leader("leader", 30)
    assert leader.open_generation(lost.marker, epoch, "leader")
    after = other.acquire_lease("daemon:sensor:prod", "s3@i3", 30, generation=lost.marker)
    assert after is not None and after > before, f"fence token {after} after amnesia, {before} before"
    assert other.lease_holder("daemon:sensor:prod").owner == "s3@i3"
    assert holder.acquire_lease("daemon:sensor:prod", "s1@i1", 30, generation=lost.marker) is None
    assert other.release_lease("daemon:sensor:prod", "s3@i3")
    assert other.acquire_lease("daemon:sensor:prod", "s4@i4", 30, generation=lost.marker) == after + 1


def test_after_amnesia_an_overlap_lease_is_given_to_nobody_new_and_its_running_holder_writes_it_back(backend):
    """Issue 10, overlap policies across amnesia: a ``forbid`` run that started before the loss still
    fences the next slots. While the generation is closed no new owner is given the overlap lease
    (a run waits); the supervisor of the running run writes its lease back (no marker: allowed
    while closed), under a fence token above those issued before; once the leader opened the
    rebuilt generation, a later slot finds it held."""
    runner, other, leader = backend.open(), backend.open(), backend.open()
    known = runner.check_generation(None).marker
    running = "sleep:prod:20260101T000000Z@i1"
    before = runner.acquire_lease("overlap:sleep:prod", running, 30, generation=known)
    assert before == 1
    assert other.acquire_lease("overlap:sleep:prod", "sleep:prod:20260101T000005Z@i2", 30, generation=known) is None
    forget_everything(backend)

    assert not runner.renew_lease("overlap:sleep:prod", running, 30)  # vanished with the data
    with pytest.raises(ClaimsClosed):  # the marker is missing: nobody has noticed yet
        other.acquire_lease("overlap:sleep:prod", "sleep:prod:20260101T000005Z@i2", 30, generation=known)
    lost = runner.check_generation(known)
    assert not lost.open
    with pytest.raises(ClaimsClosed):
        other.acquire_lease("overlap:sleep:prod", "sleep:prod:20260101T000005Z@i2", 30, generation=lost.marker)
    written_back = runner.acquire_lease("overlap:sleep:prod", running, 30)  # re-asserted while closed
    assert written_back is not None and written_back > before, f"fence token {written_back}, {before} before"
    assert runner.renew_lease("overlap:sleep:prod", running, 30)

    epoch = leader.acquire_leader("leader", 30)
    assert leader.open_generation(lost.marker, epoch, "leader")
    later = "sleep:prod:20260101T000010Z@i2"
    assert other.acquire_lease("overlap:sleep:prod", later, 30, generation=lost.marker) is None  # still fenced
    assert other.lease_holder("overlap:sleep:prod").owner == running
    assert runner.release_lease("overlap:sleep:prod", running)  # the run is over
    assert other.acquire_lease("overlap:sleep:prod", later, 30, generation=lost.marker) == written_back + 1
