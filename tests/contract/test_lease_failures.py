"""The lease stores when things break: Redis restarted, replies lost, Redis unreachable or silent;
an embedded-store user killed with SIGKILL in the middle of a transaction."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import pytest
from helpers import wait_for
from lease_support import Backend, Lines, delete_keys, free_port

from kirby.errors import LeaseError
from kirby.lease.base import StaleEpoch
from kirby.lease.local import LocalLeaseStore
from kirby.lease.redis import RedisLeaseStore


def settings_for(make_settings, url: str, retries: int, wait: float):
    return make_settings(REDIS_URL=url, EXT_RETRIES=str(retries), EXT_WAIT_BETWEEN_RETRIES=str(wait))


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restarted_while_in_use_the_client_reconnects_and_then_fails_clearly(private_redis, make_settings):
    store = RedisLeaseStore(settings_for(make_settings, private_redis.url, retries=50, wait=0.1))
    impatient = RedisLeaseStore(settings_for(make_settings, private_redis.url, retries=2, wait=0.1))
    results: list[bool] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def claim_continuously() -> None:
        i = 0
        while not stop.is_set():
            try:
                results.append(store.claim_run(f"r{i}", "alpha"))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)
                return
            i += 1

    worker = threading.Thread(target=claim_continuously)
    worker.start()
    try:
        wait_for(lambda: len(results) >= 100 or errors, 10, "claims before the restart")
        assert impatient.current_epoch() == 0  # holds a pooled connection that the restart breaks
        private_redis.kill()
        before = len(results)
        time.sleep(0.5)  # the outage itself: Redis stays down while the worker keeps calling
        private_redis.start()
        wait_for(lambda: len(results) >= before + 100 or errors, 15, "claims resumed after the restart")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert all(results) and len(results) >= 200
    assert store.acquire_leader("alpha", 30) == 1  # scripts reloaded on the fresh server (it lost its data)

    private_redis.kill()
    started = time.monotonic()
    with pytest.raises(LeaseError) as failed:
        impatient.claim_run("r-down", "alpha")
    assert time.monotonic() - started < 5
    assert str(failed.value) == (
        f"cannot reach Redis at {private_redis.url} (REDIS_URL): Connection refused; "
        "check the address or start Redis (deploy/services up redis)"
    )


@pytest.mark.redis
def test_a_password_and_tls_in_redis_url_are_honoured(start_private_redis, tmp_path: Path, make_settings):
    key, certificate = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    start_private_redis(
        "--requirepass",
        "s3cret",
        "--tls-port",
        str(tls_port),
        "--tls-auth-clients",
        "no",
        "--tls-cert-file",
        str(certificate),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(certificate),
    )
    url = f"rediss://:s3cret@127.0.0.1:{tls_port}/0?ssl_ca_certs={certificate}"
    store = RedisLeaseStore(settings_for(make_settings, url, retries=0, wait=0))
    assert store.claim_run("r1", "alpha") and not store.claim_run("r1", "beta")
    assert store.acquire_leader("alpha", 30) == 1
    store.close()
    wrong = RedisLeaseStore(settings_for(make_settings, url.replace("s3cret", "guess"), retries=3, wait=1))
    started = time.monotonic()
    with pytest.raises(LeaseError) as refused:
        wrong.claim_run("r2", "alpha")
    assert time.monotonic() - started < 1  # a wrong password is not retried
    message = str(refused.value)
    masked = f"rediss://:***@127.0.0.1:{tls_port}/0?ssl_ca_certs={certificate}"
    assert message.startswith(f"Redis at {masked} (REDIS_URL) refused the credentials")
    assert "fix the password in REDIS_URL" in message and "guess" not in message
    wrong.close()


class ReplyDropper:
    """A TCP proxy to Redis. When ``armed``, it forwards the next request but closes the client's
    connection instead of passing the reply on: the write happened, the caller never hears of it."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.dropped.set()
                    break
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.redis
def test_a_retried_claim_or_acquire_whose_first_reply_was_lost_keeps_its_answer(redis_url, make_settings):
    address = urlparse(redis_url)
    proxy = ReplyDropper(address.port)
    proxied_url = address._replace(netloc=address.netloc.replace(f":{address.port}", f":{proxy.port}")).geturl()
    prefix = f"kirby-test:{uuid.uuid4().hex[:12]}:"
    store = RedisLeaseStore(settings_for(make_settings, proxied_url, retries=3, wait=0.05), prefix=prefix)
    direct = RedisLeaseStore(settings_for(make_settings, redis_url, retries=3, wait=0.05), prefix=prefix)
    try:
        assert store.claim_run("warm-up", "alpha")  # the connection is open and the script loaded
        proxy.armed.set()
        assert store.claim_run("r1", "alpha") is True  # the retry finds its own token: it won
        assert proxy.dropped.is_set(), "the proxy should have dropped the first reply"
        assert direct.get_claim("r1").supervisor == "alpha" and not direct.claim_run("r1", "beta")

        proxy.dropped.clear()
        proxy.armed.set()
        assert store.acquire_leader("alpha", 30) == 1  # not None, although the lease exists on retry
        assert proxy.dropped.is_set()
        assert direct.current_epoch() == 1 and direct.leader().owner == "alpha"
    finally:
        store.close()
        direct.close()
        proxy.close()
        delete_keys(redis_url, prefix)


def test_an_unreachable_redis_is_one_line_naming_the_address_and_variable(make_settings):
    port = free_port()  # nothing listens there
    store = RedisLeaseStore(settings_for(make_settings, f"redis://:secret@127.0.0.1:{port}/0", retries=2, wait=0.1))
    started = time.monotonic()
    with pytest.raises(LeaseError) as failed:
        store.acquire_leader("alpha", 30)
    assert time.monotonic() - started < 5
    assert str(failed.value) == (
        f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0 (REDIS_URL): Connection refused; "
        "check the address or start Redis (deploy/services up redis)"
    )


def test_a_redis_that_accepts_but_never_answers_ends_in_an_error_not_a_hang(make_settings):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever replies
        port = silent.getsockname()[1]
        store = RedisLeaseStore(settings_for(make_settings, f"redis://127.0.0.1:{port}/0", retries=1, wait=0.1))
        started = time.monotonic()
        with pytest.raises(LeaseError, match=rf"cannot reach Redis at redis://127.0.0.1:{port}/0 \(REDIS_URL\): .*"):
            store.claim_run("r1", "alpha")
        assert time.monotonic() - started < 10


# -- the embedded store --------------------------------------------------------------------------
HALF_DONE = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO lease_run (run_id, supervisor, instance, attempt, claimed_at) VALUES ('r-half', 'killed', '', 1, 0)")
print("in transaction", flush=True)
time.sleep(60)
"""


def test_a_process_killed_inside_a_transaction_leaves_the_embedded_store_usable(make_settings):
    settings = make_settings()
    store = LocalLeaseStore(settings)
    child = subprocess.Popen(
        [sys.executable, "-c", HALF_DONE, str(settings.embedded_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert Lines(child).next() == "in transaction"  # it holds the write lock, its claim uncommitted
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    started = time.monotonic()
    assert store.claim_run("r-half", "survivor")  # the half-done claim vanished with its process
    assert time.monotonic() - started < 2  # the lock died with the process: no waiting for the timeout
    assert store.get_claim("r-half").supervisor == "survivor"


def test_processes_killed_at_random_while_claiming_lose_no_committed_claim(tmp_path: Path, make_settings):
    backend = Backend("local", {"KIRBY_EMBEDDED_PATH": str(tmp_path / "embedded.db")}, tmp_path)
    store = backend.open()
    try:
        for round_ in range(3):
            name = f"worker{round_}"
            process, lines = backend.child("claim-forever", name)
            reported = [lines.next() for _ in range(50 + 37 * round_)]
            process.send_signal(signal.SIGKILL)  # most likely inside a transaction: it spends its life in them
            process.wait(timeout=10)
            claimed = {claim.run_id for claim in store.list_claims() if claim.supervisor == name}
            assert set(reported) <= claimed
            assert store.claim_run(f"after-{name}", "survivor")
        with sqlite3.connect(tmp_path / "embedded.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        backend.close()


def test_an_unusable_embedded_path_is_one_line_naming_the_variable(tmp_path: Path, make_settings):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(LeaseError) as failed:
        LocalLeaseStore(make_settings(KIRBY_EMBEDDED_PATH=str(tmp_path / "a-file" / "embedded.db")))
    message = str(failed.value)
    assert "KIRBY_EMBEDDED_PATH" in message and str(tmp_path / "a-file") in message and "\n" not in message
    assert os.path.isfile(tmp_path / "a-file")


@pytest.mark.slow
@pytest.mark.redis
def test_after_redis_restarts_empty_epochs_still_increase_and_a_zombie_is_refused(private_redis, make_settings):
    """Issue 10, scenario 2: Redis forgets the epoch counter and the lease (restarted empty)."""
    settings = settings_for(make_settings, private_redis.url, retries=20, wait=0.1)
    zombie, successor = RedisLeaseStore(settings), RedisLeaseStore(settings)
    T = datetime(2026, 3, 1, tzinfo=timezone.utc)
    try:
        assert zombie.acquire_leader("z", 0.5) == 1
        wait_for(lambda: zombie.leader() is None, 10, "the first lease expired")
        assert successor.acquire_leader("n", 0.5) == 2
        wait_for(lambda: successor.leader() is None, 10, "the second lease expired")
        assert zombie.acquire_leader("z", 60) == 3  # z leads under 3; n has seen 3 too
        assert successor.current_epoch() == 3
        private_redis.kill()
        private_redis.start()  # empty: no counter, no lease
        assert successor.current_epoch() == 0
        assert successor.acquire_leader("n", 60) == 4, "the epoch went back"
        with pytest.raises(StaleEpoch):
            zombie.set_cursor("job:prod:1", T, 3, owner="z")

        # The number itself may collide (stores that saw nothing): owner and token still fence.
        private_redis.kill()
        private_redis.start()
        old, new = RedisLeaseStore(settings), RedisLeaseStore(settings)
        assert old.acquire_leader("z", 60) == 1
        private_redis.kill()
        private_redis.start()
        assert new.acquire_leader("z", 60) == 1  # a restarted "z": the same name and epoch number
        with pytest.raises(StaleEpoch):
            old.set_cursor("job:prod:1", T, 1, owner="z")  # its token is not the live lease's
        new.set_cursor("job:prod:1", T, 1, owner="z")
        assert new.get_cursor("job:prod:1") == T
        old.close()
        new.close()
    finally:
        zombie.close()
        successor.close()
