"""Web hardening (issue 12) through Flask's test client: return URLs, bad query values, session
revocation, passwords in the admin form, database errors without values, live-log stream caps,
byte caps on log answers, trusted proxies. Real concurrency is in
tests/integration/test_web_concurrency.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from test_web_api import AUTH, finished_run, sse_events
from test_web_support import (  # noqa: F401
    PASSWORD,
    T0,
    TOKEN,
    add_users,
    admin_client,
    app,
    login,
    settings,
    viewer_client,
    web,
)

from kirby.bus import open_bus
from kirby.events import RunEvent
from kirby.lease import open_lease_store
from kirby.models import ConfigKey, Environment, User
from kirby.recorder import record
from kirby.web.app import create_app
from kirby.web.redirects import is_safe_return_url


@pytest.fixture
def database_url(request, tmp_path) -> str:
    """SQLite only (these checks do not depend on the engine), unless a test asks for postgres."""
    if getattr(request, "param", "sqlite") == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'kirby.db'}"


# --- return URLs ---------------------------------------------------------------------------------

UNSAFE = [
    "http:/evil.example",  # browsers resolve it to http://evil.example/
    "http://evil.example/",
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/admin/\r\nSet-Cookie: x=1",
    "/admin/\x00",
    "/admin/\t",
    "",
]


@pytest.mark.parametrize("target", UNSAFE)
def test_unsafe_return_urls(target):
    assert not is_safe_return_url(target)


@pytest.mark.parametrize("target", ["/admin/", "/admin/job/?page=2&sort=1", "/logs?run=a:b:c", "/admin/job/edit/?id=3"])
def test_safe_return_urls(target):
    assert is_safe_return_url(target)


@pytest.mark.parametrize("target", ["http:/evil.example", "//evil.example", "/\\evil.example"])
def test_flask_admin_url_parameter_is_checked(app, admin_client, target):
    for path, query in (("/admin/job/new/", {}), ("/admin/environment/edit/", {"id": "1"})):
        response = admin_client.get(path, query_string={**query, "url": target})
        assert response.status_code == 400 and "url=" in response.get_json()["error"], (path, target)
    response = admin_client.post("/admin/environment/new/", query_string={"url": target}, data={"name": "staging"})
    assert response.status_code == 400 and "Location" not in response.headers
    response = admin_client.post("/admin/environment/new/", data={"name": "staging", "url": target})  # form field
    assert response.status_code == 400
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(func.count()).select_from(Environment)) == 0  # refused before anything is saved


def test_a_safe_flask_admin_return_url_is_followed(admin_client):
    response = admin_client.post(
        "/admin/environment/new/", query_string={"url": "/admin/environment/?page=0"}, data={"name": "staging"}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/admin/environment/?page=0"


def test_the_open_redirect_does_not_chain_through_the_login_page(app):
    client = app.test_client()
    # anonymous: the admin page would send to /login?next=<this page with url=...>
    response = client.get("/admin/job/new/", query_string={"url": "http:/evil.example"})
    assert response.status_code == 400
    # logging in with a next= that carries the bad url= lands on a 400, never off-site
    target = "/admin/job/new/?url=http:/evil.example"
    response = client.post("/login", query_string={"next": target}, data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == target
    assert client.get(response.headers["Location"]).status_code == 400


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_crlf_in_next_is_a_400_not_a_500(app, method):
    client = app.test_client()
    response = client.open(
        "/login?next=/admin/%0d%0aSet-Cookie:%20evil=1",
        method=method,
        data={"username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 400 and "next=" in response.get_json()["error"]
    assert "evil" not in response.headers.get("Set-Cookie", "")


# --- bad query values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "headers", "parameter"),
    [
        ("/api/runs?page=100000000000000000000", {}, "page="),
        ("/api/runs?page=" + "9" * 5000, {}, "page="),
        ("/api/runs/backup:prod:20260102T030405Z/logs?after=100000000000000000000", {}, "after="),
        ("/logs/stream?run=backup:prod:20260102T030405Z", {"Last-Event-ID": "9" * 5000}, "Last-Event-ID="),
        ("/logs/stream", {"Last-Event-ID": "100000000000000000000"}, "Last-Event-ID="),
        ("/admin/run/?page=100000000000000000000", {}, "page="),
        ("/admin/job/?page=-5", {}, "page="),
        ("/admin/job/?page_size=100000000000000000000", {}, "page_size="),
    ],
)
def test_bad_query_values_are_400s_naming_the_parameter(app, viewer_client, url, headers, parameter):
    finished_run(app)
    response = viewer_client.get(url, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"].startswith(parameter)


# --- sessions and passwords ----------------------------------------------------------------------


def test_logout_ends_every_session_of_the_user(app):
    laptop, phone, other = login(app, "alice"), login(app, "alice"), login(app, "victor")
    assert phone.get("/admin/job/").status_code == 200
    assert laptop.post("/logout").status_code == 302
    assert "/login" in phone.get("/admin/job/").headers["Location"]  # revoked, not only the laptop's
    assert phone.get("/api/runs").status_code == 401
    assert other.get("/admin/job/").status_code == 200  # another user's session is untouched
    assert login(app, "alice").get("/admin/job/").status_code == 200  # a new login works


def test_a_new_password_ends_the_users_sessions(app, admin_client):
    victor = login(app, "victor")
    with app.extensions["kirby"].database.session() as s:
        victor_id = s.scalar(select(User.id).where(User.username == "victor"))
    short = admin_client.post(
        f"/admin/user/edit/?id={victor_id}",
        data={"username": "victor", "role": "viewer", "active": "y", "new_password": "eleven-char"},
    )
    assert short.status_code == 200 and "at least 12" in short.get_data(as_text=True)
    assert victor.get("/admin/job/").status_code == 200  # a refused change revokes nothing
    response = admin_client.post(
        f"/admin/user/edit/?id={victor_id}",
        data={"username": "victor", "role": "viewer", "active": "y", "new_password": "a-new-passphrase"},
    )
    assert response.status_code == 302
    assert "/login" in victor.get("/admin/job/").headers["Location"]
    assert admin_client.get("/admin/job/").status_code == 200  # the admin's own session stays
    fresh = app.test_client()
    assert fresh.post("/login", data={"username": "victor", "password": PASSWORD}).status_code == 401
    assert fresh.post("/login", data={"username": "victor", "password": "a-new-passphrase"}).status_code == 302


def test_the_admin_form_refuses_a_short_password(app, admin_client):
    page = admin_client.post(
        "/admin/user/new/", data={"username": "carol", "role": "viewer", "active": "y", "new_password": "short-pass1"}
    )
    assert page.status_code == 200 and "at least 12" in page.get_data(as_text=True)
    with app.extensions["kirby"].database.session() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.username == "carol")) == 0


# --- a database error does not echo what was typed -----------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_an_integrity_error_does_not_echo_a_secret_value(app, admin_client):
    first = admin_client.post("/admin/config/new/", data={"key": "DUP_KEY", "value": "first-value", "secret": "y"})
    assert first.status_code == 302
    page = admin_client.post(
        "/admin/config/new/", data={"key": "DUP_KEY", "value": "hunter2-typed-secret", "secret": "y"}
    ).get_data(as_text=True)
    assert "Could not save" in page and "Secret: not shown again" in page
    assert "hunter2-typed-secret" not in page and "parameters" not in page.lower()
    with app.extensions["kirby"].database.session() as s:
        assert list(s.scalars(select(ConfigKey.value).where(ConfigKey.key == "DUP_KEY"))) == ["first-value"]


# --- live-log stream caps ------------------------------------------------------------------------


@pytest.fixture
def capped(make_settings, db):
    settings = make_settings(
        TESTING="true",
        KIRBY_API_TOKEN=TOKEN,
        SECRET_KEY="test-secret-key-abcdef",
        KIRBY_MAX_LOG_STREAMS="3",
        KIRBY_MAX_LOG_STREAMS_PER_USER="2",
    )
    with open_bus(settings) as bus, open_lease_store(settings) as leases:
        app = create_app(settings, database=db, bus=bus, lease_store=leases)
        app.config["KIRBY_SSE_LIFETIME"] = 60
        app.config["KIRBY_SSE_POLL"] = 0.05
        add_users(app)
        yield app


def test_live_log_streams_are_capped_per_user_and_in_total(capped):
    viewer, admin = login(capped, "victor"), login(capped, "alice")
    slots = capped.extensions["kirby"].streams
    open_streams = [viewer.get("/logs/stream", buffered=False) for _ in range(2)]
    assert [r.status_code for r in open_streams] == [200, 200]
    third = viewer.get("/logs/stream", buffered=False)
    assert third.status_code == 503 and third.headers["Retry-After"] == "15"
    assert "KIRBY_MAX_LOG_STREAMS_PER_USER" in third.get_json()["error"]
    open_streams.append(admin.get("/logs/stream", buffered=False))
    assert open_streams[-1].status_code == 200 and slots.open_count() == 3
    assert "kirby_web_log_streams_open 3\n" in admin.get("/metrics").get_data(as_text=True)
    total = admin.get("/logs/stream", buffered=False)
    assert total.status_code == 503 and "KIRBY_MAX_LOG_STREAMS)" in total.get_json()["error"]
    token = capped.test_client().get("/logs/stream", headers=AUTH, buffered=False)
    assert token.status_code == 503  # the token counts against the global cap too
    open_streams.pop(0).close()  # a stream that ends gives its slot back
    assert slots.open_count() == 2
    again = viewer.get("/logs/stream", buffered=False)
    assert again.status_code == 200
    for response in [*open_streams, again]:
        response.close()
    assert slots.open_count() == 0


# --- byte caps -----------------------------------------------------------------------------------


def test_the_logs_api_is_capped_in_bytes_and_pages_on(app):
    big = "x" * (100 * 1024)
    run_id = finished_run(app, lines=[f"{i}:{big}" for i in range(25)])  # 2.5 MB of log
    client = app.test_client()
    seen, after, pages = [], -1, 0
    while True:
        answer = client.get(f"/api/runs/{run_id}/logs?after={after}", headers=AUTH).get_json()
        pages += 1
        seen += [line["seq"] for line in answer["lines"]]
        assert len("".join(line["text"] for line in answer["lines"])) <= 1024 * 1024
        if not answer["truncated"]:
            break
        after = answer["lines"][-1]["seq"]
    assert seen == list(range(25)) and pages == 3


def test_sse_batches_are_capped_in_bytes_and_still_send_every_line(app, viewer_client, monkeypatch):
    from kirby.web import logs

    sizes = []
    original = logs._event

    def measured(event_id, data):
        text = original(event_id, data)
        sizes.append(len(text))
        return text

    monkeypatch.setattr(logs, "_event", measured)
    big = "y" * (100 * 1024)
    run_id = finished_run(app, lines=[big] * 12)
    events = sse_events(viewer_client.get(f"/logs/stream?run={run_id}"))
    assert [e["id"] for e in events[:-1]] == [str(i) for i in range(12)] and events[-1]["event"] == "end"
    # a batch stops once it holds BATCH_BYTES: 12 lines of 100 KiB take several queries
    assert logs.BATCH_BYTES < sum(sizes)


# --- trusted proxies -----------------------------------------------------------------------------


@pytest.fixture
def proxied(make_settings, db):
    settings = make_settings(
        TESTING="true", KIRBY_API_TOKEN=TOKEN, SECRET_KEY="test-secret-key-abcdef", KIRBY_TRUSTED_PROXIES="127.0.0.1"
    )
    with open_bus(settings) as bus, open_lease_store(settings) as leases:
        app = create_app(settings, database=db, bus=bus, lease_store=leases)
        add_users(app)
        yield app


def _fail_until_blocked(client, peer: str, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    for attempt in range(1, 20):
        response = client.post(
            "/login",
            data={"username": "alice", "password": "wrong-password"},
            headers=headers,
            environ_base={"REMOTE_ADDR": peer},
        )
        if response.status_code == 429:
            return attempt
    raise AssertionError("never throttled")


def test_the_client_address_comes_from_a_trusted_proxy_only(proxied):
    client = proxied.test_client()
    throttle = proxied.extensions["kirby"].throttle
    throttle.clock = _now  # frozen: no block expires while the test runs
    # through the proxy: the address nginx appended (the last one), whatever the client put first
    assert _fail_until_blocked(client, "127.0.0.1", "6.6.6.6, 203.0.113.9") == 5
    assert throttle.wait_seconds(("alice", "203.0.113.9"), _now()) > 0
    assert throttle.wait_seconds(("alice", "6.6.6.6"), _now()) == 0
    # alice through the same proxy from her own address is not locked out
    ok = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.7"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert ok.status_code == 302
    # an untrusted peer cannot choose its address: the header is ignored (and removed)
    assert _fail_until_blocked(proxied.test_client(), "192.0.2.50", "198.51.100.7") == 5
    assert throttle.wait_seconds(("alice", "192.0.2.50"), _now()) > 0
    assert throttle.wait_seconds(("alice", "198.51.100.7"), _now()) == 0


def test_https_from_the_trusted_proxy_marks_the_cookie_secure(proxied):
    response = proxied.test_client().post(
        "/login",
        data={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert "Secure" in response.headers["Set-Cookie"]
    spoofed = proxied.test_client().post(
        "/login",
        data={"username": "alice", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "192.0.2.50"},
    )
    assert "Secure" not in spoofed.headers["Set-Cookie"]


def _now() -> float:
    return 1000.0


# --- the per-run cap on stored lines --------------------------------------------------------------


def test_stored_log_lines_stop_at_the_cap_with_one_truncated_line(app):
    run_id = "backup:prod:20260102T030405Z"
    events = [
        RunEvent("log", run_id, T0 + timedelta(seconds=i), "sup-a", {"seq": i, "stream": "stdout", "text": f"l{i}"})
        for i in range(25)
    ]
    database = app.extensions["kirby"].database
    for _ in range(2):  # idempotent: a redelivery stores nothing more
        with database.session() as s:
            record(s, events, max_lines=10)
    client = app.test_client()
    lines = client.get(f"/api/runs/{run_id}/logs", headers=AUTH).get_json()["lines"]
    assert [line["text"] for line in lines[:10]] == [f"l{i}" for i in range(10)]
    assert len(lines) == 11 and lines[10]["stream"] == "system" and "log truncated" in lines[10]["text"]


# --- SECRET_KEY ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "  ", "kirby-insecure-development-key", "change-me-to-a-long-random-string"])
def test_kirby_web_refuses_a_default_or_empty_secret_key(make_settings, key):
    from kirby.errors import ConfigError
    from kirby.web.server import check_secret_key

    variables = {} if key is None else {"SECRET_KEY": key}
    with pytest.raises(ConfigError, match="^SECRET_KEY is unset or the insecure default: set it to a long random"):
        check_secret_key(make_settings(**variables), debug=False)
    check_secret_key(make_settings(**variables), debug=True)  # the debugger is for development only
    check_secret_key(make_settings(TESTING="true", **variables), debug=False)
    check_secret_key(make_settings(SECRET_KEY="a-real-random-key-0123456789"), debug=False)
