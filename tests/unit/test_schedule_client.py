"""ScheduleClient against a real HTTP server: token, retries, last good copy, clear errors."""

from __future__ import annotations

import json
import logging
import threading
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
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                web.requests.append(self.headers.get("Authorization"))
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
    with pytest.raises(KirbyError, match=r"schedule endpoint .* unreachable after 3 attempts: HTTP 500"):
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


def test_down_web_server_means_last_good_copy_and_one_warning_per_outage(web, make_settings, caplog):
    client = client_for(make_settings, web.url)
    first = client.fetch(NOW)
    web.stop()  # the web server goes away: connection refused
    caplog.set_level(logging.INFO, logger="kirby.schedule.source")
    assert client.fetch(NOW + timedelta(seconds=30)) is first
    assert client.fetch(NOW + timedelta(seconds=60)) is first
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"schedule endpoint {web.url} unreachable: ")
    assert warnings[0].endswith(f"; scheduling from the copy fetched at {NOW.isoformat()}")
    # It comes back (at another address here; the port of the old one is not ours to reuse).
    back = FakeWeb()
    client.url = back.url
    assert client.fetch(NOW + timedelta(seconds=90)) is not first
    assert client.last_good_at == NOW + timedelta(seconds=90) and not client.in_outage
    back.stop()
    client.fetch(NOW + timedelta(seconds=120))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # a new outage warns again
    assert warnings[1].endswith(f"copy fetched at {(NOW + timedelta(seconds=90)).isoformat()}")


def test_bad_document_keeps_the_last_good_copy(web, make_settings):
    client = client_for(make_settings, web.url)
    first = client.fetch(NOW)
    web.answers = [(200, b'{"contexts": []}')]
    assert client.fetch(NOW + timedelta(seconds=30)) is first
    assert client.in_outage


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
