"""The schedule version behind /schedule's ETag: 304 while nothing changed, a new tag after any
write that can change the document (whoever makes it: ORM, bulk update, plain SQL), on SQLite and
PostgreSQL; and the leader's client that keeps its copy on 304."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from test_schedule import NOW, populate
from test_web_support import TOKEN, admin_client, app, settings, web  # noqa: F401
from werkzeug.serving import make_server

from kirby.bus import open_bus
from kirby.lease import open_lease_store
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, Run, RunState, Schedule, Suspension
from kirby.schedule import ScheduleClient
from kirby.schedule.document import DatabaseScheduleSource, schedule_version
from kirby.web.app import create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TRACKED = ("environments", "jobs", "contexts", "schedules", "suspensions", "config_keys")


def version(db, now=NOW) -> str:
    with db.session() as session:
        return schedule_version(session, now)


def test_a_matching_if_none_match_is_answered_304_without_a_body(app):
    with app.extensions["kirby"].database.session() as session:
        populate(session)
    client = app.test_client()
    first = client.get("/schedule", headers=AUTH)
    assert first.status_code == 200 and first.headers["ETag"] and first.headers["Cache-Control"] == "no-cache"
    again = client.get("/schedule", headers={**AUTH, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == first.headers["ETag"]
    other = client.get("/schedule", headers={**AUTH, "If-None-Match": '"some-other-version"'})
    assert other.status_code == 200 and other.get_json() == first.get_json()
    zipped = client.get("/schedule", headers={**AUTH, "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] == first.headers["ETag"]


def test_a_changed_job_changes_the_etag_and_the_document(app):
    state = app.extensions["kirby"]
    with state.database.session() as session:
        contexts = populate(session)
    client = app.test_client()
    before = client.get("/schedule", headers=AUTH)
    with state.database.session() as session:
        session.get(Context, contexts["report:prod"].id).schedules[0].cron = "*/10 * * * *"
    after = client.get("/schedule", headers={**AUTH, "If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200 and after.headers["ETag"] != before.headers["ETag"]
    report = next(c for c in after.get_json()["contexts"] if c["job"] == "report")
    assert report["schedules"][0]["cron"] == "*/10 * * * *"


def test_an_admin_session_gets_masked_values_under_its_own_etag(app, admin_client):
    with app.extensions["kirby"].database.session() as session:
        populate(session)
    token = app.test_client().get("/schedule", headers=AUTH)
    masked = admin_client.get("/schedule")
    assert masked.headers["ETag"] != token.headers["ETag"]
    report = next(c for c in masked.get_json()["contexts"] if c["job"] == "report")
    assert report["config"]["TOKEN"] == "********"
    assert admin_client.get("/schedule", headers={"If-None-Match": masked.headers["ETag"]}).status_code == 304
    # the token holder's tag does not unlock the masked body, nor the reverse
    assert admin_client.get("/schedule", headers={"If-None-Match": token.headers["ETag"]}).status_code == 200


def _edit_schedule(session, ids):
    session.get(Schedule, ids["schedule"]).misfire_grace_seconds = 61


def _edit_context(session, ids):
    session.get(Context, ids["context"]).package_version = "9.9.9"


def _enable_job(session, ids):  # the admin's bulk "enable" action: one UPDATE statement
    session.execute(sa.update(Job).where(Job.id == ids["off"]).values(enabled=True))


def _config(session, ids):
    session.add(ConfigKey(scope=ConfigScope.GLOBAL, key="NEW", value="1"))


def _edit_secret(session, ids):
    session.execute(sa.update(ConfigKey).where(ConfigKey.key == "TOKEN").values(value="rotated"))


def _suspend(session, ids):
    session.add(Suspension(job_id=None, starts_at=NOW, ends_at=NOW + timedelta(hours=1), reason="freeze"))


def _delete_suspension(session, ids):
    session.execute(sa.delete(Suspension).where(Suspension.reason == "maintenance"))


def _rename_environment(session, ids):
    session.scalar(sa.select(Environment).where(Environment.name == "prod")).name = "production"


def _plain_sql(session, ids):  # an operator's psql/sqlite3 edit, outside Kirby
    session.execute(sa.text("UPDATE schedules SET cron = '1 2 * * *' WHERE id = :id"), {"id": ids["schedule"]})


def _delete_job(session, ids):
    session.delete(session.get(Job, ids["off"]))


CHANGES = [
    _edit_schedule,
    _edit_context,
    _enable_job,
    _config,
    _edit_secret,
    _suspend,
    _delete_suspension,
    _rename_environment,
    _plain_sql,
    _delete_job,
]


@pytest.mark.parametrize("change", CHANGES, ids=[c.__name__.strip("_") for c in CHANGES])
def test_every_write_that_can_change_the_document_changes_the_version(db, change):
    with db.session() as session:
        contexts = populate(session)
        ids = {
            "schedule": contexts["report:prod"].schedules[0].id,
            "context": contexts["report:prod"].id,
            "off": contexts["off:prod"].job_id,
        }
    before = version(db)
    assert version(db) == before  # reading does not move it
    with db.session() as session:
        change(session, ids)
    assert version(db) != before


def test_writes_elsewhere_and_rolled_back_writes_leave_the_version(db):
    with db.session() as session:
        populate(session)
    before = version(db)
    with db.session() as session:
        session.add(
            Run(
                id="report:prod:x",
                slot_id="report:prod:x",
                job_name="report",
                environment="prod",
                package_name="p",
                package_version="1",
                scheduled_at=NOW,
                state=RunState.OFFERED,
            )
        )
    assert version(db) == before  # runs are not part of the schedule
    with pytest.raises(RuntimeError), db.session() as session:
        session.add(ConfigKey(scope=ConfigScope.GLOBAL, key="NEVER", value="1"))
        session.flush()
        raise RuntimeError("rolled back")
    assert version(db) == before


def test_a_suspension_that_ends_changes_the_version_with_time_alone(db):
    with db.session() as session:
        populate(session)  # "feed only" ends at NOW + 5 min
    assert version(db, NOW + timedelta(minutes=4)) == version(db, NOW)
    assert version(db, NOW + timedelta(minutes=5)) != version(db, NOW)


def test_a_fresh_database_does_not_repeat_an_old_ones_versions(make_settings, tmp_path):
    from kirby.db import open_database

    first = open_database(make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'a.db'}"))
    second = open_database(make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'b.db'}"))
    try:
        assert version(first) != version(second)
    finally:
        first.dispose()
        second.dispose()


def test_every_tracked_table_has_its_triggers_at_head(db):
    """SQLite drops a table's triggers when a batch migration rebuilds it: this catches that (0014's
    triggers bump the version and log the change rows behind ``/schedule?since=``)."""
    with db.engine.connect() as connection:
        if db.engine.dialect.name == "sqlite":
            rows = connection.execute(sa.text("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'"))
            counts = {table: 0 for table in TRACKED}
            for (table,) in rows:
                counts[table] = counts.get(table, 0) + 1
            assert counts == {table: 3 for table in TRACKED}  # insert, update, delete
        else:
            rows = connection.execute(
                sa.text(
                    "SELECT event_object_table, event_manipulation, action_orientation FROM information_schema.triggers "
                    "WHERE event_object_schema = current_schema()"
                )
            )
            found = {tuple(row) for row in rows}  # a bump per statement, a change row per row (0014)
            actions = ("INSERT", "UPDATE", "DELETE")
            assert found == {(t, a, o) for t in TRACKED for a in actions for o in ("STATEMENT", "ROW")}


def test_the_database_source_reuses_its_snapshot_until_the_version_moves(db):
    with db.session() as session:
        contexts = populate(session)
    source = DatabaseScheduleSource(db)
    first = source.fetch(NOW)
    assert source.fetch(NOW) is first
    with db.session() as session:
        session.get(Context, contexts["report:prod"].id).package_version = "2.0"
    assert source.fetch(NOW) is not first and source.fetch(NOW).scheduled[0].version == "2.0"


def test_the_leaders_client_sends_if_none_match_and_keeps_its_copy_on_304(make_settings, db):
    """The real Flask app on a real socket: an unchanged schedule costs a 304; an edit is read at the next fetch."""
    with db.session() as session:
        contexts = populate(session)
    settings = make_settings(KIRBY_API_TOKEN=TOKEN, SECRET_KEY="test-secret-key-abcdef")
    bus, leases = open_bus(settings), open_lease_store(settings)
    server = make_server("127.0.0.1", 0, create_app(settings, database=db, bus=bus, lease_store=leases), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ScheduleClient(
        make_settings(KIRBY_API_TOKEN=TOKEN, KIRBY_SCHEDULE_ENDPOINT=f"http://127.0.0.1:{server.server_port}/schedule")
    )
    try:
        first = client.fetch(NOW)
        assert client.fetch(NOW) is first and client.not_modified == 1
        with db.session() as session:
            session.get(Context, contexts["report:prod"].id).package_version = "3.0"
        edited = client.fetch(NOW)
        assert edited is not first and edited.scheduled[0].version == "3.0" and client.not_modified == 1
        assert client.fetch(NOW) is edited and client.not_modified == 2
    finally:
        client.close()
        server.shutdown()
        bus.close()
        leases.close()
