"""OpenID Connect in the web app, with the real provider: a bad issuer stops a real ``kirby web`` at
start with one line naming KIRBY_OIDC_ISSUER; a provider that stops answering after start (a
private instance, killed) is one message on the login page and one log line naming the setting;
the first sign-in creates the ``oidc`` user, whose session ends once its groups are due for a check
(KIRBY_ROLE_REFRESH, on an injected clock); a local user of the same name is never merged."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from kirby.clock import FixedClock
from kirby.models import Provider, Role, User
from kirby.users import add_user
from kirby.web.app import create_app
from tests.helpers import wait_for
from tests.oidc_provider import oidc_variables, sign_in_at_provider

KIRBY = Path(sys.executable).with_name("kirby")
SERVER = Path(__file__).resolve().parents[2] / "deploy" / "oidc" / "server.js"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_provider(oidc_issuer, tmp_path):
    """The test provider on a port of its own (``deploy/services up oidc`` installed its modules)."""
    port = free_port()
    with open(tmp_path / "oidc.log", "wb") as log:
        process = subprocess.Popen(
            ["node", str(SERVER)],
            env={**os.environ, "KIRBY_OIDC_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    issuer = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "oidc.log").read_text()
        try:
            return requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_for(ready, 60, f"the private OIDC provider did not answer on {issuer}")
    process.issuer = issuer
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_kirby_web_stops_at_start_naming_a_bad_issuer(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'kirby.db'}",
        "KIRBY_EMBEDDED_PATH": str(tmp_path / "embedded.db"),
        "SECRET_KEY": "oidc-test-secret-key",
        **oidc_variables(closed, "http://127.0.0.1:8080"),
    }
    result = subprocess.run(
        [str(KIRBY), "web", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"KIRBY_OIDC_ISSUER='{closed}'" in lines[0] and "connection refused" in lines[0], lines


def test_a_provider_gone_after_start_is_one_message_and_one_log_line(private_provider, make_settings, caplog):
    settings = make_settings(
        SECRET_KEY="oidc-test-secret-key", **oidc_variables(private_provider.issuer, "http://localhost")
    )
    app = create_app(settings)  # discovery passes: the provider answers now
    client = app.test_client()
    assert client.get("/login/oidc").status_code == 302  # to the provider
    os.killpg(private_provider.pid, signal.SIGKILL)
    private_provider.wait(timeout=10)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        page = client.get("/login/oidc")
    assert page.status_code == 503
    assert "Sign-in with Test IdP is unavailable: the provider does not answer." in page.get_data(as_text=True)
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"KIRBY_OIDC_ISSUER={private_provider.issuer}" in errors[0], errors
    app.extensions["kirby"].close()


@pytest.fixture
def oidc_app(oidc_issuer, make_settings):
    settings = make_settings(
        SECRET_KEY="oidc-test-secret-key",
        KIRBY_ROLE_REFRESH="60",
        **oidc_variables(oidc_issuer, "http://127.0.0.1:18080"),
    )
    app = create_app(settings)
    app.extensions["kirby"].clock = FixedClock(datetime.now(timezone.utc))  # moved by the tests
    yield app
    app.extensions["kirby"].close()


def sign_in(client, username: str):
    """Kirby's /login/oidc, the provider's login form (over HTTP), then Kirby's callback."""
    start = client.get("/login/oidc")
    assert start.status_code == 302, start.get_data(as_text=True)
    return client.get("/login/oidc/callback", query_string=sign_in_at_provider(start.headers["Location"], username))


def test_first_sign_in_creates_the_oidc_user_whose_session_ends_when_its_groups_are_due(oidc_app):
    client = oidc_app.test_client()
    landed = sign_in(client, "ada")
    assert landed.status_code == 302 and landed.headers["Location"].endswith("/admin/")
    state = oidc_app.extensions["kirby"]
    with state.database.session() as s:
        user = s.scalars(select(User).where(User.username == "ada")).one()
        assert (user.provider, user.subject, user.role) == (Provider.OIDC, "u-1001", Role.ADMIN)
    assert client.get("/admin/user/").status_code == 200  # an admin page
    state.clock.advance(61)  # past KIRBY_ROLE_REFRESH: no refresher for oidc, so sign in again
    assert "/login" in client.get("/admin/user/").headers["Location"]
    assert sign_in(client, "ada").status_code == 302  # the same user again, found by its subject
    with state.database.session() as s:
        assert s.scalars(select(func.count()).select_from(User)).one() == 1


def test_a_local_user_of_the_same_name_is_never_merged(oidc_app):
    state = oidc_app.extensions["kirby"]
    with state.database.session() as s:
        add_user(s, state.settings, "vic", "a-local-password", admin=True)
    refused = sign_in(oidc_app.test_client(), "vic")
    assert refused.status_code == 403
    assert "The name vic belongs to a local Kirby user" in refused.get_data(as_text=True)


def test_an_expired_id_token_is_refused_at_the_callback(oidc_app):
    oidc_app.extensions["kirby"].clock.advance(600 + 61)  # the provider's ID tokens live 600 s; 60 s of skew
    refused = sign_in(oidc_app.test_client(), "ada")
    assert refused.status_code == 400
    assert "The sign-in could not be completed: the ID token expired" in refused.get_data(as_text=True)
