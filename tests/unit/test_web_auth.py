"""Web auth: every route but a few public ones needs a login (or the API token); roles; CSRF;
login backoff; cookies and security headers."""

from __future__ import annotations

import re

import pytest
from test_web_support import PASSWORD, TOKEN, add_users, admin_client, app, settings, viewer_client, web  # noqa: F401
from werkzeug.routing import Rule

from kirby.bus import open_bus
from kirby.lease import open_lease_store
from kirby.web.app import create_app
from kirby.web.throttle import LoginThrottle


@pytest.fixture
def database_url(tmp_path) -> str:
    """Auth does not depend on the database engine: these tests run on SQLite only."""
    return f"sqlite:///{tmp_path / 'kirby.db'}"


PUBLIC = {"static", "admin.static", "auth.login", "api.healthz"}
ARGUMENTS = {"path": "x:y", "int": "1", "default": "csv"}


def concrete_url(rule: Rule) -> str:
    url = rule.rule
    for converter, name in re.findall(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", rule.rule):
        url = re.sub(rf"<[^>]*\b{name}>", ARGUMENTS.get(converter or "default", "x"), url)
    return url


def protected_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, concrete_url(rule), rule.endpoint


def test_every_route_but_the_public_ones_needs_a_login(app):
    client = app.test_client()
    checked = 0
    for method, url, endpoint in protected_routes(app):
        response = client.open(url, method=method)
        if endpoint == "root":
            assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
        elif response.status_code == 302:
            assert "/login" in response.headers["Location"], (method, url)
        else:
            assert response.status_code == 401, (method, url, response.status_code)
        checked += 1
    assert checked > 80  # every admin view's list, edit, delete, action... was tried


def test_the_public_routes_are_few_and_harmless(app):
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/login").status_code == 200


def test_a_viewer_reads_but_cannot_change_anything(app, viewer_client):
    from test_web_support import seed

    ids = seed(app)
    assert viewer_client.get("/admin/job/").status_code == 200
    assert viewer_client.get("/admin/job/new/").status_code == 302  # no create form
    viewer_client.post("/admin/job/new/", data={"name": "sneaky", "type": "scheduled"})
    viewer_client.post(f"/admin/job/edit/?id={ids['job_id']}", data={"name": "renamed", "type": "scheduled"})
    viewer_client.post("/admin/job/delete/", data={"id": ids["job_id"]})
    viewer_client.post("/admin/job/action/", data={"action": "disable", "rowid": ids["job_id"]})
    assert viewer_client.post(f"/admin/context/run-now/{ids['context_id']}").status_code == 403
    assert viewer_client.get("/admin/user/").status_code == 403
    assert viewer_client.post("/api/jobs/backup/run").status_code == 403
    page = viewer_client.get("/admin/job/").get_data(as_text=True)
    assert "run-now" not in page and "/admin/job/new/" not in page
    from kirby.models import Job

    with app.extensions["kirby"].database.session() as s:
        jobs = s.query(Job).all()
        assert [(j.name, j.enabled) for j in jobs] == [("backup", True)]


def test_an_admin_can_edit(app, admin_client):
    response = admin_client.post("/admin/environment/new/", data={"name": "staging", "description": "pre-prod"})
    assert response.status_code == 302
    from kirby.models import Environment

    with app.extensions["kirby"].database.session() as s:
        assert [e.name for e in s.query(Environment)] == ["staging"]
    assert admin_client.get("/admin/user/").status_code == 200


def test_logout_ends_the_session(app, admin_client):
    assert admin_client.get("/admin/job/").status_code == 200
    assert admin_client.post("/logout").status_code == 302
    assert "/login" in admin_client.get("/admin/job/").headers["Location"]


def test_wrong_passwords_are_refused_then_slowed_down(app):
    client = app.test_client()
    statuses = [client.post("/login", data={"username": "alice", "password": "nope"}).status_code for _ in range(5)]
    assert statuses[:4] == [401, 401, 401, 401] and statuses[4] == 429
    # even the right password waits out the backoff
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429 and "try again in" in response.get_data(as_text=True)
    # another user from the same address is not blocked
    assert client.post("/login", data={"username": "victor", "password": PASSWORD}).status_code == 302


def test_login_backoff_doubles_and_is_capped():
    throttle = LoginThrottle(free=3, cap_seconds=10)
    key = ("alice", "127.0.0.1")
    for _ in range(3):
        throttle.failure(key, now=100.0)
    assert throttle.wait_seconds(key, 100.0) == 0
    waits = []
    for _ in range(6):
        throttle.failure(key, now=100.0)
        waits.append(throttle.wait_seconds(key, 100.0))
    assert waits == [1, 2, 4, 8, 10, 10]
    assert throttle.wait_seconds(key, 200.0) == 0
    throttle.success(key)
    throttle.failure(key, now=300.0)
    assert throttle.wait_seconds(key, 300.0) == 0


def test_login_does_not_redirect_off_site(app):
    client = app.test_client()
    response = client.post("/login?next=//evil.example/", data={"username": "alice", "password": PASSWORD})
    assert response.headers["Location"] == "/admin/"


def test_the_api_token_acts_and_a_wrong_one_does_not(app):
    client = app.test_client()
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/schedule", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_schedule_without_a_configured_token_answers_503(make_settings, db):
    settings = make_settings(TESTING="true", SECRET_KEY="k")
    with open_bus(settings) as bus, open_lease_store(settings) as leases:
        app = create_app(settings, database=db, bus=bus, lease_store=leases)
        response = app.test_client().get("/schedule", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 503 and "KIRBY_API_TOKEN" in response.get_json()["error"]


@pytest.fixture
def csrf_app(make_settings, db):
    settings = make_settings(TESTING="false", KIRBY_API_TOKEN=TOKEN, SECRET_KEY="another-secret-key")
    with open_bus(settings) as bus, open_lease_store(settings) as leases:
        app = create_app(settings, database=db, bus=bus, lease_store=leases)
        add_users(app)
        yield app


def test_csrf_is_enforced_outside_tests(csrf_app):
    client = csrf_app.test_client()
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 400
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert (
        client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}).status_code == 302
    )
    # logged in, an admin form without the token is refused and saves nothing
    assert client.post("/admin/environment/new/", data={"name": "x"}).status_code == 400
    assert client.post("/api/jobs/backup/run").status_code == 400
    assert client.post("/logout").status_code == 400
    form = client.get("/admin/environment/new/").get_data(as_text=True)
    token = re.search(r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    assert client.post("/admin/environment/new/", data={"name": "ok", "csrf_token": token}).status_code == 302
    # the token holder needs no CSRF token
    response = client.post("/api/jobs/nope/run", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400 and "no job named" in response.get_json()["error"]


def test_security_headers_and_cookie_flags(app):
    client = app.test_client()
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    for path in ("/login", "/admin/job/", "/healthz"):
        headers = client.get(path).headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    for path in ("/login", "/admin/job/"):  # scripts: own origin, this response's nonce, known handlers only
        script_src = client.get(path).headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        assert "'unsafe-inline'" not in script_src and "'nonce-" in script_src
    admin_scripts = client.get("/admin/job/").headers["Content-Security-Policy"].split(";")[1]
    assert "'unsafe-hashes'" in admin_scripts and admin_scripts.count("'sha256-") == 7
    secure = app.test_client().post(
        "/login", base_url="https://kirby.example", data={"username": "alice", "password": PASSWORD}
    )
    assert "Secure" in secure.headers["Set-Cookie"]
