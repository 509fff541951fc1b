"""ScheduleClient against a real HTTP server: token, retries, last good copy, clear errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kirby.errors import KirbyError
from kirby.schedule import ScheduleClient

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
DOCUMENT = {
    "generated_at": NOW.isoformat(),
    "contexts": [
        {
            "context_id": 1,
            "job": "j",
            "job_type": "scheduled",
            "environment": "e",
            "package": "p",
            "version": "1",
            "schedules": [{"id": 4, "cron": "* * * * *"}],
        }
    ],
}


class FakeWeb:
    """A real HTTP server whose answers the test scripts: a list of (status, body), last one repeats."""

    def __init__(self):
        self.answers: list[tuple[int, bytes]] = [(200, json.dumps(DOCUMENT).encode())]
        self.requests: list[str | None] = []
        self.hanging = threading.Event()  # while set, requests are held unanswered (a hung server)
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                web.requests.append(self.headers.get("Authorization"))
                while web.hanging.is_set():
                    time.sleep(0.05)
                status, body = web.answers.pop(0) if len(web.answers) > 1 else web.answers[0]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/schedule"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    server = FakeWeb()
    yield server
    server.stop()


def client_for(make_settings, url: str, **env) -> ScheduleClient:
    env.setdefault("KIRBY_API_TOKEN", "s3cret")
    settings = make_settings(KIRBY_SCHEDULE_ENDPOINT=url, EXT_RETRIES="2", EXT_WAIT_BETWEEN_RETRIES="0.01", **env)
    return ScheduleClient(settings, timeout=2)


def test_fetch_sends_the_token_and_parses(web, make_settings):
    snapshot = client_for(make_settings, web.url).fetch(NOW)
    assert web.requests == ["Bearer s3cret"]
    assert snapshot.generated_at == NOW and snapshot.entries[0].schedules[0].id == 4


def test_server_errors_are_retried(web, make_settings):
    web.answers = [(503, b"busy"), (502, b"busy"), (200, json.dumps(DOCUMENT).encode())]
    snapshot = client_for(make_settings, web.url).fetch(NOW)
    assert len(web.requests) == 3 and snapshot.entries[0].job == "j"


def test_no_good_copy_yet_raises_a_clear_error(web, make_settings):
    web.answers = [(500, b"down")]
    with pytest.raises(KirbyError, match=r"schedule endpoint .* unreachable after 3 attempt\(s\): HTTP 500"):
        client_for(make_settings, web.url).fetch(NOW)
    assert len(web.requests) == 3


def test_the_servers_error_message_is_passed_on(web, make_settings):
    web.answers = [(503, b'{"error": "the schedule API is disabled: set KIRBY_API_TOKEN"}')]
    with pytest.raises(KirbyError, match=r"HTTP 503 \(the schedule API is disabled: set KIRBY_API_TOKEN\)"):
        client_for(make_settings, web.url).fetch(NOW)


def test_refused_token_is_not_retried_and_names_the_variable(web, make_settings):
    web.answers = [(401, b"{}")]
    with pytest.raises(KirbyError, match="KIRBY_API_TOKEN"):
        client_for(make_settings, web.url).fetch(NOW)
    assert len(web.requests) == 1


def test_a_down_web_server_is_a_clear_error_the_caller_keeps_its_copy(web, make_settings):
    client = client_for(make_settings, web.url)
    client.fetch(NOW)
    web.stop()  # connection refused; keeping the last good copy is Scheduler.refresh's job
    with pytest.raises(
        KirbyError, match=rf"schedule endpoint {web.url} unreachable after 3 attempt\(s\): connection refused; "
    ):
        client.fetch(NOW + timedelta(seconds=30))


def test_a_hanging_web_server_is_bounded_by_the_total_timeout(make_settings):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/schedule"
        settings = make_settings(KIRBY_SCHEDULE_ENDPOINT=url, EXT_RETRIES="5", EXT_WAIT_BETWEEN_RETRIES="0.01")
        client = ScheduleClient(settings, timeout=10, total_timeout=1.5)
        started = time.monotonic()
        with pytest.raises(KirbyError, match="unreachable after"):
            client.fetch(NOW)
        assert time.monotonic() - started < 4, "a fetch must not outlast its total timeout by much"


def test_a_bad_document_is_an_error(web, make_settings):
    web.answers = [(200, b'{"contexts": []}')]
    with pytest.raises(KirbyError):
        client_for(make_settings, web.url).fetch(NOW)


def test_fetch_from_the_real_web_app(make_settings, db):
    """``kirby web``'s /schedule (the real Flask app on a real socket) read by the leader's client."""
    from test_schedule import populate
    from werkzeug.serving import make_server

    from kirby.bus import open_bus
    from kirby.lease import open_lease_store
    from kirby.web.app import create_app

    with db.session() as session:
        populate(session)
    settings = make_settings(KIRBY_API_TOKEN="web-token-0123456789", SECRET_KEY="test-secret-key-abcdef")
    bus, leases = open_bus(settings), open_lease_store(settings)
    server = make_server("127.0.0.1", 0, create_app(settings, database=db, bus=bus, lease_store=leases), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/schedule"
        snapshot = client_for(make_settings, url, KIRBY_API_TOKEN="web-token-0123456789").fetch(NOW)
        assert {(e.job, e.environment, e.job_type) for e in snapshot.entries} == {
            ("report", "prod", "scheduled"),
            ("feed", "prod", "daemon"),
        }
        report = snapshot.scheduled[0]
        assert report.config["TOKEN"] == "ctx" and report.secrets == ("TOKEN",)  # the token holder gets values
        assert report.schedules[0].cron == "*/5 * * * *" and report.schedules[0].catchup == "all"
        with pytest.raises(KirbyError, match="HTTP 401"):
            client_for(make_settings, url, KIRBY_API_TOKEN="wrong-token-0123456789").fetch(NOW)
    finally:
        server.shutdown()
        bus.close()
        leases.close()
