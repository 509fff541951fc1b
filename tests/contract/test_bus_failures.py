"""The bus when its store fails: Kafka unreachable or restarted; the embedded file locked or left by a crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import wait_for

from kirby.bus import open_bus
from kirby.bus.local import LocalBus
from kirby.errors import BusError
from kirby.events import Offer

SERVICES = Path(__file__).resolve().parents[2] / "deploy" / "services"


def offer(run_id: str) -> Offer:
    return Offer(run_id, f"slot-{run_id}", "job", "prod", "pkg", "1.0", datetime(2026, 11, 28, tzinfo=timezone.utc))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def received_ids(consumer, expected: set[str], timeout: float) -> set[str]:
    got: set[str] = set()

    def complete() -> bool:
        for delivery in consumer.poll(0.2):
            got.add(delivery.message.run_id)
            consumer.ack(delivery)
        return expected <= got

    wait_for(complete, timeout, f"received {sorted(got)}, expected {sorted(expected)}")
    return got


def assert_one_line_naming(message: str, *names: str) -> None:
    for name in names:
        assert name in message, f"{name!r} missing from {message!r}"
    assert "\n" not in message and "Traceback" not in message, message


def test_unreachable_kafka_fails_fast_with_one_line(make_settings):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=address, EXT_RETRIES="1", EXT_WAIT_BETWEEN_RETRIES="0.1")
    started = time.monotonic()
    with pytest.raises(BusError) as caught:
        open_bus(settings)
    assert time.monotonic() - started < 15
    assert_one_line_naming(str(caught.value), address, "KAFKA_BOOTSTRAP_SERVERS", "deploy/services up kafka")


@pytest.fixture
def private_kafka(kafka_servers, tmp_path: Path):
    """A broker of this test's own (restarting the shared one would disturb other tests)."""
    port, controller = free_port(), free_port()
    environ = {
        **os.environ,
        "KIRBY_SERVICES_DIR": str(tmp_path / "services"),
        "KIRBY_KAFKA_PORT": str(port),
        "KIRBY_KAFKA_CONTROLLER_PORT": str(controller),
    }

    def services(*command: str) -> None:
        subprocess.run(
            [str(SERVICES), *command, "kafka"], env=environ, check=True, timeout=180, stdout=subprocess.DEVNULL
        )

    services("up")
    yield f"127.0.0.1:{port}", services
    services("down")


@pytest.mark.slow
@pytest.mark.kafka
def test_kafka_clients_reconnect_after_a_broker_restart_and_fail_clearly_while_it_is_down(private_kafka, make_settings):
    address, services = private_kafka
    settings = make_settings(KAFKA_BOOTSTRAP_SERVERS=address, EXT_RETRIES="0")
    with open_bus(settings) as bus:
        consumer = bus.offer_consumer("a")
        bus.publish_offer(offer("before"))
        assert received_ids(consumer, {"before"}, 30) == {"before"}

        services("restart")
        bus.publish_offer(offer("after"))  # the same producer and consumer, reconnected
        assert received_ids(consumer, {"after"}, 30) == {"after"}

        services("down")
        started = time.monotonic()
        with pytest.raises(BusError) as caught:
            bus.publish_offer(offer("while-down"))
        assert time.monotonic() - started < 20
        assert_one_line_naming(str(caught.value), address, "KAFKA_BOOTSTRAP_SERVERS")
        started = time.monotonic()
        assert consumer.poll(1.0) == []
        assert time.monotonic() - started < 5, "poll must not hang while the broker is down"


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO bus_offers (run_id, payload, created_at) VALUES ('ghost', '{}', 0)")
print("locked", flush=True)
sys.stdin.readline()  # then exit: the transaction rolls back
"""


@pytest.fixture
def lock_holder(make_settings):
    """Starts a process that holds the embedded file's write lock, with an uncommitted offer in it."""
    processes: list[subprocess.Popen] = []

    def start(path: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_embedded_publish_waits_for_a_brief_lock_of_another_process(make_settings, lock_holder):
    settings = make_settings()
    bus = LocalBus(settings)
    consumer = bus.offer_consumer("a")
    holder = lock_holder(settings.embedded_path)
    errors: list[Exception] = []
    publisher = threading.Thread(target=lambda: _capture(errors, bus.publish_offer, offer("waited")))
    publisher.start()
    publisher.join(0.3)
    assert publisher.is_alive(), "publish returned while another process held the write lock"
    holder.communicate("release\n", timeout=10)
    publisher.join(10)
    assert not publisher.is_alive() and errors == []
    assert received_ids(consumer, {"waited"}, 10) == {"waited"}
    bus.close()


def _capture(errors: list, function, *args) -> None:
    try:
        function(*args)
    except Exception as exc:  # reported by the test
        errors.append(exc)


def test_embedded_file_locked_too_long_is_one_line_naming_the_file(make_settings, lock_holder):
    settings = make_settings()
    bus = LocalBus(settings, busy_timeout=0.3)
    lock_holder(settings.embedded_path)
    with pytest.raises(BusError) as caught:
        bus.publish_offer(offer("blocked"))
    assert_one_line_naming(str(caught.value), str(settings.embedded_path), "KIRBY_EMBEDDED_PATH")
    bus.close()


def test_embedded_bus_recovers_from_a_process_killed_mid_transaction(make_settings, lock_holder):
    settings = make_settings()
    bus = LocalBus(settings)
    consumer = bus.offer_consumer("a")
    holder = lock_holder(settings.embedded_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    bus.publish_offer(offer("after-crash"))
    got = received_ids(consumer, {"after-crash"}, 10)
    late = [delivery.message.run_id for delivery in consumer.poll(0.3)]
    assert got == {"after-crash"} and late == [], "the killed process' uncommitted offer must not appear"
    bus.close()


def test_unusable_embedded_path_is_one_line_naming_the_variable(make_settings, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = make_settings(KIRBY_EMBEDDED_PATH=str(blocker / "embedded.db"))
    with pytest.raises(BusError) as caught:
        LocalBus(settings)
    assert_one_line_naming(str(caught.value), str(blocker / "embedded.db"), "KIRBY_EMBEDDED_PATH")
