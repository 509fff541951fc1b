"""The embedded bus's wake-ups (kirby.bus.wake): a waiting consumer sleeps until a writer signals.

Counted, not timed: which writes signal a stream's consumers, that no signal between a look and
the next wait is lost, and how often an idle consumer looks at the database (its ``take`` calls).
The delivery itself, across processes and members, is tested by tests/contract/test_bus.py.
"""

from __future__ import annotations

import select
import subprocess
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from kirby.bus import wake
from kirby.bus.local import LocalBus
from kirby.bus.wake import Waiter, wake_path
from kirby.events import Offer
from tests.conftest import IN_CI


def offer(run_id: str) -> Offer:
    return Offer(run_id, f"slot-{run_id}", "job", "prod", "pkg", "1.0", datetime(2026, 11, 28, tzinfo=timezone.utc))


def signalled(waiter: Waiter) -> bool:
    return bool(select.select([waiter.fd], [], [], 0)[0])


@pytest.fixture
def bus(make_settings):
    bus = LocalBus(make_settings())
    yield bus
    bus.close()


def needs_inotify(waiter: Waiter) -> None:
    if sys.platform.startswith("linux"):
        assert waiter.fd is not None, "inotify is available on Linux: the waiter must use it"
    elif IN_CI:  # pragma: no cover - CI runs on Linux: a CI without inotify must fail, not skip
        pytest.fail("inotify is Linux only, and this CI runs elsewhere: the wake tests cannot run")
    else:  # pragma: no cover
        pytest.skip("inotify is Linux only; elsewhere consumers poll")


def test_a_publish_signals_the_consumers_of_its_stream_only(bus):
    offers, events = Waiter(bus.wake["offers"]), Waiter(bus.wake["events"])
    needs_inotify(offers)
    offers.clear(), events.clear()
    bus.publish_offer(offer("r1"))
    assert signalled(offers) and not signalled(events)
    offers.clear()
    assert not signalled(offers), "clear forgets the signals so far"
    offers.close(), events.close()


def test_released_and_closed_over_messages_signal_the_others(bus):
    waiter = Waiter(bus.wake["offers"])
    needs_inotify(waiter)
    consumer = bus.offer_consumer("a")
    bus.publish_offers([offer("r1"), offer("r2")])
    first, second = consumer.poll(5.0, max_messages=2)
    waiter.clear()
    consumer.release([first])
    assert signalled(waiter), "a released message is work for the group"
    waiter.clear()
    consumer.close()
    assert signalled(waiter), "a closing member's unacknowledged messages go back to the group"
    waiter.close()


def test_a_signal_between_a_look_and_the_wait_is_not_lost(bus):
    waiter = Waiter(bus.wake["offers"])
    needs_inotify(waiter)
    waiter.clear()  # the consumer's look at the database happens here
    wake.touch(bus.wake["offers"])  # a publish right after the look
    assert signalled(waiter), "the next wait returns at once"
    waiter.close()


def test_an_idle_consumer_looks_at_the_file_a_few_times_a_second_not_fifty(bus):
    consumer = bus.offer_consumer("a")
    needs_inotify(consumer._waiter)
    looks = []
    take = consumer.take
    consumer.take = lambda now, limit: looks.append(now) or take(now, limit)
    assert consumer.poll(2.0) == []
    assert len(looks) <= 2 / wake.SAFETY_INTERVAL + 2, f"{len(looks)} looks in a 2 s poll"
    consumer.close()


def test_a_publish_from_another_process_signals_this_one(bus):
    consumer = bus.offer_consumer("a")
    needs_inotify(consumer._waiter)
    publisher = textwrap.dedent(
        f"""
        from datetime import datetime, timezone
        from pathlib import Path
        from kirby.bus.local import LocalBus
        from kirby.config import load_settings
        from kirby.events import Offer
        settings = load_settings(environ={{"KIRBY_EMBEDDED_PATH": {str(bus.path)!r}}}, cwd=Path({str(bus.path.parent)!r}))
        bus = LocalBus(settings)
        bus.publish_offer(Offer("r1", "slot-r1", "job", "prod", "pkg", "1.0", datetime(2026, 11, 28, tzinfo=timezone.utc)))
        bus.close()
        """
    )
    consumer._waiter.clear()
    subprocess.run([sys.executable, "-c", publisher], check=True, timeout=120)
    assert signalled(consumer._waiter), "the other process's publish ends this one's wait"
    (delivery,) = consumer.poll(60.0)
    assert delivery.message.run_id == "r1"
    consumer.close()


def test_without_inotify_a_consumer_polls_and_still_gets_every_message(bus, monkeypatch):
    monkeypatch.setattr(wake, "_LIBC", None)
    consumer = bus.offer_consumer("a")
    assert consumer._waiter.fd is None
    bus.publish_offers([offer("r1"), offer("r2")])
    assert [d.message.run_id for d in consumer.poll(5.0)] == ["r1", "r2"]
    consumer.close()


def test_the_wake_files_sit_beside_the_embedded_file(bus):
    assert wake_path(bus.path, "offers") == bus.path.with_name(bus.path.name + ".offers.wake")
    assert all(path.exists() for path in bus.wake.values())
