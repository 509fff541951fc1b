"""Fixtures and helpers of the web tests (imported by the other test_web_* modules; no tests here)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from kirby.bus import open_bus
from kirby.lease import open_lease_store
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, JobType, Role, Schedule, User
from kirby.web.app import create_app

TOKEN = "test-api-token-0123456789"
PASSWORD = "correct horse battery"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def settings(make_settings):
    return make_settings(TESTING="true", KIRBY_API_TOKEN=TOKEN, SECRET_KEY="test-secret-key-abcdef")


@pytest.fixture
def web(settings, db):
    """(app, state) over the parametrized ``db``, with the embedded bus and lease store."""
    bus, leases = open_bus(settings), open_lease_store(settings)
    app = create_app(settings, database=db, bus=bus, lease_store=leases)
    add_users(app)
    yield app
    bus.close()
    leases.close()


@pytest.fixture
def app(web):
    return web


_HASHES: dict[str, str] = {}


def add_users(app) -> None:
    """Admin ``alice`` and viewer ``victor`` (hashed once per test session: scrypt is slow on purpose)."""
    from kirby.users import add_user

    state = app.extensions["kirby"]
    with state.database.session() as s:
        if not _HASHES:
            for name, admin in (("alice", True), ("victor", False)):
                _HASHES[name] = add_user(s, state.settings, name, PASSWORD, admin=admin).password_hash
        else:
            s.add_all(
                [
                    User(username="alice", password_hash=_HASHES["alice"], role=Role.ADMIN),
                    User(username="victor", password_hash=_HASHES["victor"], role=Role.VIEWER),
                ]
            )


def login(app, username: str):
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def admin_client(app):
    return login(app, "alice")


@pytest.fixture
def viewer_client(app):
    return login(app, "victor")


def seed(app) -> dict:
    """One scheduled job in one environment, with global, job and context config (one secret each)."""
    state = app.extensions["kirby"]
    with state.database.session() as s:
        env = Environment(name="prod")
        job = Job(name="backup", type=JobType.SCHEDULED, description="nightly")
        context = Context(job=job, environment=env, package_name="backup-pkg", package_version="1.0.0")
        s.add_all([env, job, context])
        s.flush()
        s.add_all(
            [
                Schedule(context_id=context.id, cron="0 3 * * *", timezone="Europe/Paris"),
                ConfigKey(scope=ConfigScope.GLOBAL, key="GLOBAL_SECRET", value="hunter2-global", secret=True),
                ConfigKey(scope=ConfigScope.GLOBAL, key="PUBLIC_URL", value="https://example.org", secret=False),
                ConfigKey(scope=ConfigScope.JOB, job_id=job.id, key="JOB_SECRET", value="hunter2-job", secret=True),
                ConfigKey(
                    scope=ConfigScope.CONTEXT, context_id=context.id, key="CTX_SECRET", value="hunter2-ctx", secret=True
                ),
            ]
        )
        return {"job_id": job.id, "context_id": context.id, "environment_id": env.id}


SECRET_VALUES = ("hunter2-global", "hunter2-job", "hunter2-ctx")
