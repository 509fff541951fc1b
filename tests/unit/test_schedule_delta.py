"""Changes since a version (``/schedule?since=<ETag>``), on SQLite and PostgreSQL: every kind of
write is in the delta (or, touching every entry, gets the full document); a delta merged into the
copy it was asked for equals a full fetch, over random edit sequences; a base that is purged,
unknown, from another database or from another timeline (a restored backup) gets the full
document, never a delta; the supervisor's client merges deltas and still works against a plain
URL that ignores ``since``."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sqlite3
import threading
from datetime import timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_schedule import NOW, populate
from test_schedule_etag import AUTH, CHANGES, TOKEN
from test_web_support import admin_client, app, settings, web  # noqa: F401
from werkzeug.serving import make_server

from kirby.bus import open_bus
from kirby.db import open_database
from kirby.lease import open_lease_store
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, JobType, Schedule, Suspension
from kirby.schedule import ScheduleClient
from kirby.schedule.document import build_schedule, schedule_version
from kirby.schedule.snapshot import merge_delta, parse_schedule
from kirby.web.app import create_app
from kirby.web.schedule_changes import build_delta, purge_changes


def fetch(db, since: str | None, now=NOW) -> tuple[str, dict | None, dict]:
    """(tag, the delta since ``since`` or None, the full document), read as the endpoint reads them."""
    with db.session() as session:
        tag = schedule_version(session, now)
        delta = build_delta(session, since, now) if since else None
        return tag, delta, build_schedule(session, now)


def ids_of(contexts) -> dict[str, int]:
    return {name: context.id for name, context in contexts.items()}


# which context each kind of write must bring into the delta (None: it touches every entry)
EXPECTED = {
    "edit_schedule": "report:prod",
    "edit_context": "report:prod",
    "enable_job": "off:prod",
    "config": None,  # a global key: every entry's config
    "edit_secret": None,  # TOKEN is also a global key
    "suspend": None,  # a suspension of every job
    "delete_suspension": "report:prod",
    "rename_environment": "feed:prod",
    "plain_sql": "report:prod",
    "delete_job": "off:prod",
}


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_each_kind_of_write_is_in_the_delta(db, change):
    with db.session() as session:
        contexts = ids_of(populate(session))
    with db.session() as session:
        ids = {
            "schedule": session.get(Context, contexts["report:prod"]).schedules[0].id,
            "context": contexts["report:prod"],
            "off": session.get(Context, contexts["off:prod"]).job_id,
        }
    before, _, document = fetch(db, None)
    with db.session() as session:
        change(session, ids)
    after, delta, full = fetch(db, before)
    assert after != before
    expected = EXPECTED[change.__name__.strip("_")]
    if expected is None:
        assert delta is None  # the full document is the delta
        return
    assert delta is not None and delta["since"] == before
    assert contexts[expected] in [e["context_id"] for e in delta["changed"]] + delta["removed"]
    assert len(delta["changed"]) < len(full["contexts"]) or change.__name__ == "_rename_environment"
    assert merge_delta(parse_schedule(document), delta) == parse_schedule(full)


# -- random edit sequences ----------------------------------------------------------------------
def _pick(session, model, n):
    rows = session.scalars(sa.select(model).order_by(model.id)).all()
    return rows[n % len(rows)] if rows else None


_NAMES = itertools.count()


def _add_job(session, n):
    env = _pick(session, Environment, n)
    job = Job(name=f"j{next(_NAMES)}", type=JobType.SCHEDULED)
    context = Context(job=job, environment=env, package_name="p", package_version=str(n), enabled=n % 5 != 0)
    session.add_all([job, context, Schedule(context=context, cron=f"{n % 60} * * * *", enabled=n % 7 != 0)])


def _edit_cron(session, n):
    if schedule := _pick(session, Schedule, n):
        schedule.cron = f"{n % 60} {n % 24} * * *"


def _toggle_job(session, n):
    if job := _pick(session, Job, n):
        job.enabled = not job.enabled


def _toggle_context(session, n):
    if context := _pick(session, Context, n):
        context.enabled = not context.enabled


def _toggle_schedule(session, n):
    if schedule := _pick(session, Schedule, n):
        schedule.enabled = not schedule.enabled


def _delete_job(session, n):
    if job := _pick(session, Job, n):
        session.delete(job)


def _delete_job_in_sql(session, n):  # the database's own cascade, no ORM
    if job := _pick(session, Job, n):
        session.execute(sa.text("DELETE FROM jobs WHERE id = :id"), {"id": job.id})
        session.expire_all()


def _job_key(session, n):
    if job := _pick(session, Job, n):
        key = session.scalar(sa.select(ConfigKey).where(ConfigKey.job_id == job.id, ConfigKey.key == "K"))
        if key is None:
            session.add(ConfigKey(scope=ConfigScope.JOB, job=job, key="K", value=str(n), secret=n % 2 == 0))
        elif n % 3 == 0:
            session.delete(key)
        else:
            key.value = str(n)


def _context_key(session, n):
    if context := _pick(session, Context, n):
        key = session.scalar(sa.select(ConfigKey).where(ConfigKey.context_id == context.id, ConfigKey.key == "C"))
        if key is None:
            session.add(ConfigKey(scope=ConfigScope.CONTEXT, context=context, key="C", value=str(n)))
        else:
            session.delete(key)


def _global_key(session, n):
    session.execute(sa.update(ConfigKey).where(ConfigKey.key == "REGION").values(value=f"r{n}"))


def _suspend_job(session, n):  # some end within the next steps (the clock moves 7 min a step)
    if job := _pick(session, Job, n):
        session.add(Suspension(job=job, starts_at=NOW, ends_at=NOW + timedelta(minutes=n % 40), reason=str(n)))


def _delete_suspension(session, n):
    if suspension := _pick(session, Suspension, n):
        session.delete(suspension)


def _rename_environment(session, n):
    if env := _pick(session, Environment, n):
        env.name = f"{env.name.split('-')[0]}-{n}"


def _move_context(session, n):
    context, env = _pick(session, Context, n), _pick(session, Environment, n // 3)
    taken = (
        context
        and env
        and session.scalar(sa.select(Context.id).filter_by(job_id=context.job_id, environment_id=env.id))
    )
    if context and env and not taken:  # a job has one context per environment
        context.environment = env


EDITS = [
    _add_job,
    _edit_cron,
    _toggle_job,
    _toggle_context,
    _toggle_schedule,
    _delete_job,
    _delete_job_in_sql,
    _job_key,
    _context_key,
    _global_key,
    _suspend_job,
    _delete_suspension,
    _rename_environment,
    _move_context,
]


@pytest.mark.slow
def test_a_merged_delta_equals_a_full_fetch_over_random_edit_sequences(db):
    with db.session() as session:
        populate(session)
        for n in range(6):
            _add_job(session, n + 1)
    tag, _, document = fetch(db, None)
    copy = {"tag": tag, "snapshot": parse_schedule(document), "step": 0, "done": []}
    paths = {"delta": 0, "full": 0}

    # the database carries on from one example to the next (no shrinking: a replay meets another state)
    @hypothesis_settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.tuples(st.sampled_from(EDITS), st.integers(0, 10_000)), min_size=1, max_size=6))
    def check(edits):
        for edit, n in edits:
            with db.session() as session:  # one transaction per edit, or two edits in one
                edit(session, n)
                if n % 4 == 0:
                    EDITS[n % len(EDITS)](session, n // 4)
            copy["step"] += 1
            copy["done"].append(f"{edit.__name__}({n})")
            now = NOW + timedelta(minutes=7 * copy["step"])
            tag, delta, full = fetch(db, copy["tag"], now)
            expected = parse_schedule(full)
            if delta is None:
                paths["full"] += 1
                copy["snapshot"] = expected
            else:
                paths["delta"] += 1
                copy["snapshot"] = merge_delta(copy["snapshot"], delta)
                assert copy["snapshot"] == expected, f"after {', '.join(copy['done'])}"
            copy["tag"] = tag

    check()
    assert paths["delta"] > paths["full"] > 0, paths  # both paths taken, mostly deltas


# -- bases that cannot be used --------------------------------------------------------------------
def test_a_purged_unknown_or_foreign_base_gets_the_full_document(db, make_settings, tmp_path):
    with db.session() as session:
        contexts = ids_of(populate(session))
    old, _, _ = fetch(db, None)
    for version in ("1.0", "2.0", "3.0"):
        with db.session() as session:
            session.get(Context, contexts["report:prod"]).package_version = version
    recent, _, _ = fetch(db, None)
    with db.session() as session:
        session.get(Context, contexts["feed:prod"]).package_version = "4.0"
    assert fetch(db, old)[1] is not None and fetch(db, recent)[1] is not None
    generation, version, stamp, live = recent.split("-")
    for bad in (
        f"{generation}-{int(version) + 5}-{stamp}-{live}",  # a version this database never had
        f"{generation}-{version}-0123456789abcdef-{live}",  # the version, but another stamp
        f"{'0' * 32}-{version}-{stamp}-{live}",  # another database
        f"{recent}-masked",  # a masked copy, for a token holder
        "not-a-tag",
        f"{generation}-{version}-{live}",  # 0013's format
    ):
        assert fetch(db, bad)[1] is None, bad
    with db.session() as session:
        assert purge_changes(session, keep=3) > 0
    assert fetch(db, old)[1] is None  # purged: too old
    delta = fetch(db, recent)[1]  # kept: still a delta, with the one change since
    assert delta is not None and [e["context_id"] for e in delta["changed"]] == [contexts["feed:prod"]]


def test_a_restored_backup_edited_up_to_the_same_version_is_not_a_base(make_settings, tmp_path):
    """SQLite: the file copied (backup API), edited, restored, edited again as far: other stamps."""
    path, backup = tmp_path / "kirby.db", tmp_path / "backup.db"
    db = open_database(make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}"))
    with db.session() as session:
        contexts = ids_of(populate(session))
    source, target = sqlite3.connect(path), sqlite3.connect(backup)
    source.backup(target)
    source.close()
    target.close()
    with db.session() as session:
        session.get(Context, contexts["report:prod"]).package_version = "lost"
    held, _, _ = fetch(db, None)  # a supervisor's copy of the timeline about to be lost
    db.dispose()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"kirby.db{suffix}").unlink(missing_ok=True)
    shutil.copy(backup, path)
    db = open_database(make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}"))
    try:
        with db.session() as session:
            session.get(Context, contexts["feed:prod"]).package_version = "other"
        now, delta, full = fetch(db, held)
        assert now.split("-")[1] == held.split("-")[1]  # the same version number...
        assert delta is None  # ...but not the same history: the full document
        assert {e["package"]: e["version"] for e in full["contexts"]}["report-pkg"] == "1.2.0"
    finally:
        db.dispose()


def test_an_upgrade_from_0013_starts_the_log_at_the_current_version(database_url, make_settings):
    from alembic import command

    from kirby.db import alembic_config, make_engine

    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0013")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO environments (id, name, description) VALUES (1, 'dev', '')"))
    engine.dispose()
    db = open_database(make_settings(SQLALCHEMY_DATABASE_URI=database_url))
    try:
        tag, _, _ = fetch(db, None)
        assert fetch(db, tag)[1] == {"generated_at": NOW.isoformat(), "since": tag, "changed": [], "removed": []}
        with db.session() as session:
            env = session.get(Environment, 1)
            job = Job(name="new", type=JobType.SCHEDULED)
            session.add_all([job, Context(job=job, environment=env, package_name="p", package_version="1")])
        _, delta, full = fetch(db, tag)
        assert delta is not None and delta["changed"] == full["contexts"] and len(full["contexts"]) == 1
    finally:
        db.dispose()


# -- over HTTP: the endpoint and the supervisor's client -------------------------------------------
def test_the_endpoint_answers_a_delta_to_since_and_masks_it_for_an_admin(app, admin_client):
    state = app.extensions["kirby"]
    with state.database.session() as session:
        contexts = ids_of(populate(session))
    client = app.test_client()
    first = client.get("/schedule", headers=AUTH)
    masked = admin_client.get("/schedule")
    with state.database.session() as session:
        session.get(Context, contexts["report:prod"]).package_version = "5.0"
    since = first.headers["ETag"].strip('"')
    delta = client.get(f"/schedule?since={since}", headers={**AUTH, "If-None-Match": first.headers["ETag"]})
    body = delta.get_json()
    assert delta.status_code == 200 and delta.headers["ETag"] != first.headers["ETag"]
    assert body["since"] == since and [e["version"] for e in body["changed"]] == ["5.0"]
    assert body["changed"][0]["config"]["TOKEN"] == "ctx"  # the token holder gets the values
    admin = admin_client.get(f"/schedule?since={masked.headers['ETag'].strip(chr(34))}").get_json()
    assert admin["changed"][0]["config"]["TOKEN"] == "********"
    crossed = admin_client.get(f"/schedule?since={since}").get_json()  # a token holder's tag: no delta
    assert "contexts" in crossed and "changed" not in crossed


@pytest.fixture
def served(make_settings, db):
    """A real ``kirby web`` app on a socket; yields (db, a ScheduleClient to its /schedule)."""
    settings = make_settings(KIRBY_API_TOKEN=TOKEN, SECRET_KEY="test-secret-key-abcdef")
    bus, leases = open_bus(settings), open_lease_store(settings)
    server = make_server("127.0.0.1", 0, create_app(settings, database=db, bus=bus, lease_store=leases), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/schedule"
    client = ScheduleClient(make_settings(KIRBY_API_TOKEN=TOKEN, KIRBY_SCHEDULE_ENDPOINT=url))
    yield db, client
    client.close()
    server.shutdown()
    bus.close()
    leases.close()


def test_the_supervisors_client_merges_deltas_into_its_copy(served):
    db, client = served
    with db.session() as session:
        contexts = ids_of(populate(session))
    first = client.fetch(NOW)
    assert client.full == 1 and client.fetch(NOW) is first and client.not_modified == 1
    with db.session() as session:
        session.get(Context, contexts["report:prod"]).package_version = "6.0"
    edited = client.fetch(NOW)
    assert client.deltas == 1 and client.full == 1 and edited.scheduled[0].version == "6.0"
    with db.session() as session:
        session.execute(sa.update(Job).where(Job.name == "feed").values(enabled=False))
    disabled = client.fetch(NOW)
    assert client.deltas == 2 and [e.job for e in disabled.entries] == ["report"]
    with db.session() as session:
        assert disabled == parse_schedule(build_schedule(session, disabled.generated_at))
    with db.session() as session:  # a global key changes every entry: the full document
        session.add(ConfigKey(scope=ConfigScope.GLOBAL, key="EVERYWHERE", value="1"))
    everywhere = client.fetch(NOW)
    assert client.full == 2 and all(e.config["EVERYWHERE"] == "1" for e in everywhere.entries)
    assert client.fetch(NOW) is everywhere and client.not_modified == 2


def test_the_client_still_works_with_a_plain_url_that_ignores_since(make_settings, tmp_path, db):
    """The original deployment model: any URL serving the document (here a static file, with an ETag)."""
    with db.session() as session:
        populate(session)
        document = build_schedule(session, NOW)
    (tmp_path / "schedule.json").write_text(json.dumps(document))

    class Static(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def end_headers(self):
            digest = hashlib.md5((tmp_path / "schedule.json").read_bytes()).hexdigest()
            self.send_header("ETag", f'"{digest}"')  # sent, but If-None-Match and since are ignored
            super().end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Static)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ScheduleClient(
        make_settings(KIRBY_SCHEDULE_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}/schedule.json")
    )
    try:
        assert client.fetch(NOW) == parse_schedule(document)
        document["contexts"][0]["version"] = "7.0"
        (tmp_path / "schedule.json").write_text(json.dumps(document))
        assert client.fetch(NOW).entries[0].version == "7.0"
        assert client.full == 2 and client.deltas == 0
    finally:
        client.close()
        server.shutdown()
