"""Leader election on the embedded lease store (real product code; lease expiry is real time)."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest

from kirby.lease import open_lease_store
from kirby.supervisor.election import Election


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def store(make_settings):
    with open_lease_store(make_settings()) as lease_store:
        yield lease_store


def test_one_leader_and_renewal_keeps_the_epoch(store, caplog):
    caplog.set_level(logging.INFO, logger="kirby.supervisor.election")
    elected = []
    alpha = Election(store, "alpha", window=10, on_elected=elected.append)
    beta = Election(store, "beta", window=10)
    now = utcnow()
    state = alpha.tick(now)
    assert state.is_leader and state.epoch == 1 and alpha.epoch == 1 and elected == [1]
    assert state.wait == pytest.approx(10 / 3)  # renew every window / 3
    assert alpha.ttl == 15  # the lease lasts 1.5 x window
    follower = beta.tick(now)
    assert not follower.is_leader and follower.epoch is None
    # The follower plans its next try at the leader's expiry (TTL 1.5 x window), capped at one window.
    assert 1.0 <= follower.wait <= 10.0
    expiry = store.leader().expires_at
    assert alpha.tick(now + timedelta(seconds=1)).wait == pytest.approx(10 / 3 - 1)  # not yet time to renew
    assert store.leader().expires_at == expiry
    renewed = alpha.tick(now + timedelta(seconds=4))
    assert renewed.is_leader and renewed.epoch == 1 and store.leader().expires_at > expiry
    assert "supervisor alpha became leader (epoch 1)" in caplog.messages


def test_a_dead_leader_is_replaced_with_a_new_epoch_and_cannot_renew(store, caplog):
    caplog.set_level(logging.INFO, logger="kirby.supervisor.election")
    deposed = []
    alpha = Election(store, "alpha", window=0.5, on_deposed=deposed.append)  # TTL 0.75 s
    beta = Election(store, "beta", window=0.5)
    assert alpha.tick(utcnow()).epoch == 1
    assert not beta.tick(utcnow()).is_leader
    # alpha stops ticking (crashed or frozen): its lease expires and beta takes over with epoch 2.
    wait_for(lambda: beta.tick(utcnow()).is_leader, 5, "beta to become leader")
    assert beta.epoch == 2 and store.current_epoch() == 2
    # alpha wakes up: its renewal is refused and it stops leading at once.
    state = alpha.tick(utcnow() + timedelta(seconds=1))
    assert not state.is_leader and alpha.epoch is None and deposed == [1]
    assert "supervisor alpha stopped being leader (epoch 1)" in caplog.messages
    assert "supervisor beta became leader (epoch 2)" in caplog.messages
    assert store.leader().owner == "beta"


def test_release_hands_over_at_once(store):
    alpha = Election(store, "alpha", window=30)
    beta = Election(store, "beta", window=30)
    now = utcnow()
    assert alpha.tick(now).is_leader
    alpha.release()
    assert not alpha.is_leader and store.leader() is None
    state = beta.tick(now)
    assert state.is_leader and state.epoch == 2
    assert not alpha.tick(now).is_leader  # beta holds a live lease now


def test_step_down_stops_leading_and_the_own_live_lease_is_resumed_under_the_same_epoch(store):
    alpha = Election(store, "alpha", window=30)
    now = utcnow()
    assert alpha.tick(now).epoch == 1
    alpha.step_down("cursor write refused")
    assert not alpha.is_leader
    # Its lease (same owner, same epoch) is still live: acquiring resumes it, no new epoch.
    state = alpha.tick(now + timedelta(seconds=1))
    assert state.is_leader and state.epoch == 1 and store.current_epoch() == 1


def test_window_must_be_positive(store):
    with pytest.raises(ValueError, match="window"):
        Election(store, "alpha", window=0)


def test_holds_answers_from_the_last_renewal_without_io(store):
    """``holds(epoch, now)``: live from the ``now`` of the tick that won or renewed the lease, for one
    TTL; a frozen leader (no tick since) answers False once that is past, before ticking again."""
    alpha = Election(store, "alpha", window=2)  # TTL 3 s
    now = utcnow()
    assert not alpha.holds(1, now)
    assert alpha.tick(now).epoch == 1
    assert alpha.holds(1, now + timedelta(seconds=2.9))
    assert not alpha.holds(1, now + timedelta(seconds=3))  # frozen past its TTL: not held any more
    assert not alpha.holds(2, now)  # another epoch
    alpha.tick(now + timedelta(seconds=1))  # a renewal extends it from that tick's now
    assert alpha.holds(1, now + timedelta(seconds=3.9)) and not alpha.holds(1, now + timedelta(seconds=4))
    alpha.step_down("cursor write refused")
    assert not alpha.holds(1, now)


def test_run_renews_in_its_own_thread_and_wakes_the_scheduler_on_each_change(store):
    """``run`` keeps the lease for as long as it runs (here 1.5 s = 6 TTLs of a 0.2 s window);
    ``on_change`` is called when it wins and when it stops leading."""
    import threading

    changes, stop = [], threading.Event()
    alpha = Election(store, "alpha", window=0.2, on_change=lambda: changes.append(alpha.epoch))
    beta = Election(store, "beta", window=0.2)
    thread = threading.Thread(target=alpha.run, args=(stop, utcnow))
    thread.start()
    try:
        wait_for(lambda: alpha.is_leader, 5, "alpha to lead")
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert not beta.tick(utcnow()).is_leader, "alpha's lease lapsed although its thread renews it"
            assert alpha.holds(1, utcnow())
            time.sleep(0.05)
        assert store.current_epoch() == 1 and changes == [1]
        alpha.step_down("test")  # wakes the thread: it resumes its own live lease under the same epoch
        wait_for(lambda: alpha.is_leader, 5, "alpha to resume")
        assert alpha.epoch == 1 and changes == [1, None, 1]
    finally:
        stop.set()
        alpha.wake()
        thread.join(5)
    assert not thread.is_alive()
