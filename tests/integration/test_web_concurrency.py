"""Web hardening where real concurrency is the point: a real `kirby web` (waitress) subprocess.

* Parallel wrong passwords are counted before any answer: of N simultaneous attempts only the
  free ones (plus the one that sets the block) reach the password hash; the rest get 429.
* One address spraying unknown usernames is limited as a whole (no CPU denial of service).
* Behind a trusted proxy the throttle keys on the forwarded client address: an attacker's
  failures never lock the user out of a correct login from her own address.
* Live-log streams beyond the caps are refused at once (503 + Retry-After), and while the
  streams that fit are open, /schedule and /healthz keep answering quickly (reserved threads).
* `kirby web` refuses to start with the default SECRET_KEY, in one line.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests

from kirby.db import open_database
from kirby.events import RunEvent
from kirby.recorder import record
from tests.browser.conftest import KIRBY, PASSWORD, TOKEN, start_kirby_web, stop

PROXY = {"KIRBY_TRUSTED_PROXIES": "127.0.0.1"}
ATTACKER, ALICE_HOME = "203.0.113.66", "198.51.100.7"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    web = start_kirby_web(
        tmp_path_factory.mktemp("kirby-web-concurrency"),
        KIRBY_MAX_LOG_STREAMS="8",
        KIRBY_MAX_LOG_STREAMS_PER_USER="4",
        **PROXY,
    )
    yield web
    stop(web.process)


def login_form(url: str, forwarded_for: str) -> tuple[requests.Session, str]:
    """A fresh session that has fetched the login form (its CSRF token)."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = forwarded_for
    page = session.get(f"{url}/login", timeout=30).text
    return session, re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def parallel_logins(url: str, attempts: list[tuple[str, str, str]]) -> tuple[list[int], float]:
    """POST every (username, password, address) login at the same moment; their status codes and
    how long it took from the start to the last answer."""
    forms = [login_form(url, address) for _, _, address in attempts]
    start = threading.Barrier(len(attempts))

    def attempt(index: int) -> int:
        session, token = forms[index]
        username, password, _ = attempts[index]
        start.wait(timeout=60)
        response = session.post(
            f"{url}/login",
            data={"username": username, "password": password, "csrf_token": token},
            allow_redirects=False,
            timeout=120,
        )
        return response.status_code

    with ThreadPoolExecutor(len(attempts)) as pool:
        started = time.monotonic()
        statuses = list(pool.map(attempt, range(len(attempts))))
        return statuses, time.monotonic() - started


def most_let_through(free: int, elapsed: float) -> int:
    """The most wrong attempts the throttle can let through in ``elapsed`` s: the ``free`` ones and
    the one that sets the block, plus one per expired block (blocks last 1, 2, 4... s, so k expiries
    take 2**k - 1 s). On a loaded machine the parallel attempts spread over seconds."""
    return free + 1 + int(math.log2(elapsed + 1))


@pytest.mark.slow
def test_parallel_wrong_passwords_are_counted_before_the_answer_and_never_lock_alice_out(web):
    statuses, elapsed = parallel_logins(web.url, [("alice", "wrong-password", ATTACKER)] * 16)
    # 3 free failures, the 4th sets the block; the others were refused before the password hash
    assert set(statuses) == {401, 429}, statuses
    assert 4 <= statuses.count(401) <= most_let_through(3, elapsed), (statuses, elapsed)
    session, token = login_form(web.url, ALICE_HOME)
    ok = session.post(
        f"{web.url}/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert ok.status_code == 302, "alice, from an address that has not failed, was locked out"


@pytest.mark.slow
def test_one_address_spraying_unknown_usernames_is_limited_as_a_whole(web):
    sprayer = "203.0.113.99"
    statuses, elapsed = parallel_logins(web.url, [(f"nobody-{i}", "guess-password", sprayer) for i in range(40)])
    assert set(statuses) == {401, 429}, statuses  # 20 free failures for the address, then blocked
    assert 21 <= statuses.count(401) <= most_let_through(20, elapsed), (statuses, elapsed)
    session, token = login_form(web.url, "198.51.100.8")
    ok = session.post(
        f"{web.url}/login",
        data={"username": "victor", "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert ok.status_code == 302  # other addresses are unaffected


def _seed_log_lines(web) -> str:
    """A running run with a few lines, so every stream has something to send at once."""
    run_id = "ticker:dev:20260102T030405Z"
    now = datetime.now(timezone.utc)
    events = [RunEvent("started", run_id, now, "sup-a")]
    events += [
        RunEvent("log", run_id, now + timedelta(seconds=i), "sup-a", {"seq": i, "stream": "stdout", "text": f"l{i}"})
        for i in range(3)
    ]
    database = open_database(web.settings)
    try:
        with database.session() as s:
            record(s, events)
    finally:
        database.dispose()
    return run_id


def _logged_in(web, username: str, address: str) -> requests.Session:
    session, token = login_form(web.url, address)
    response = session.post(
        f"{web.url}/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:300]
    return session


@pytest.mark.slow
def test_log_streams_are_capped_and_never_starve_schedule_and_healthz(web):
    run_id = _seed_log_lines(web)
    viewer = _logged_in(web, "victor", "198.51.100.20")
    admin = _logged_in(web, "alice", "198.51.100.21")
    opened, refused = [], []
    try:
        for i in range(48):  # the 48 streams, from a viewer and an admin
            who = viewer if i % 2 else admin
            response = who.get(f"{web.url}/logs/stream?run={run_id}", stream=True, timeout=30)
            if response.status_code == 200:
                chunks, head = response.iter_content(chunk_size=None), b""
                while len(head) < 20:  # the opening comment, then the run's first line: really streaming
                    head += next(chunks)
                assert head.startswith(b": open\n\nid: 0")
                opened.append(response)
            else:
                refused.append(response)
        assert len(opened) == 8  # 4 each (per user), 8 in all (global)
        assert {r.status_code for r in refused} == {503} and len(refused) == 40
        assert all(r.headers["Retry-After"] == "15" for r in refused)
        # while the 8 streams hold their threads, the leader's endpoints answer at once
        for _ in range(10):
            started = time.monotonic()
            schedule = requests.get(f"{web.url}/schedule", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            health = requests.get(f"{web.url}/healthz", timeout=10)
            elapsed = time.monotonic() - started
            assert (
                schedule.status_code == 200 and health.json()["status"] == "ok"
            )  # (a real kirby web also reports its events consumer)
            assert elapsed < 5, f"/schedule + /healthz took {elapsed:.1f} s with {len(opened)} streams open"
        # a token holder's stream is refused too: the global cap is full
        token_stream = requests.get(
            f"{web.url}/logs/stream?run={run_id}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        assert token_stream.status_code == 503
    finally:
        for response in opened:
            response.close()

    def slot_free() -> bool:  # closed connections give their slots back
        response = viewer.get(f"{web.url}/logs/stream?run={run_id}", stream=True, timeout=30)
        response.close()
        return response.status_code == 200

    from tests.helpers import wait_for

    wait_for(slot_free, 60, "no stream slot came back after the clients closed theirs", interval=0.5)


@pytest.mark.slow
def test_kirby_web_refuses_the_default_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "TESTING")}  # unset: the default
    env["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'kirby.db'}"
    result = subprocess.run(  # the other refused keys: tests/unit/test_web_hardening.py
        [str(KIRBY), "web", "--port", "1"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: SECRET_KEY is unset or the insecure default"), lines
    assert not (tmp_path / "kirby.db").exists()  # refused before anything was created
