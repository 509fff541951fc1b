"""The script database on SQLite and PostgreSQL: constraints, cascades, UTC datetimes, enums, migrations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError, StatementError

from kirby.db import alembic_config, make_engine, open_database
from kirby.models import (
    Base,
    CatchUp,
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Job,
    JobNotification,
    JobType,
    LogLine,
    NotificationEmail,
    NotificationGroup,
    Overlap,
    Role,
    Run,
    RunState,
    Schedule,
    Suspension,
    User,
)
from kirby.run_ids import attempt_run_id, slot_run_id

UTC = timezone.utc
WHEN = datetime(2024, 3, 31, 1, 30, 15, 123456, tzinfo=UTC)


def count(db, model) -> int:
    with db.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(model))


def add_script(session, name="sensor", environment="dev") -> Context:
    env = session.scalar(sa.select(Environment).where(Environment.name == environment))
    env = env or Environment(name=environment)
    job = Job(name=name, type=JobType.SCHEDULED)
    context = Context(job=job, environment=env, package_name="sensor-pkg", package_version="1.0.0")
    context.schedules.append(Schedule(cron="*/5 * * * *", timezone="Europe/Paris"))
    session.add(context)
    return context


def add_run(session, context: Context, attempt: int = 1) -> Run:
    slot = slot_run_id(context.job.name, context.environment.name, WHEN)
    run = Run(
        id=attempt_run_id(slot, attempt),
        slot_id=slot,
        context_id=context.id,
        job_name=context.job.name,
        environment=context.environment.name,
        scheduled_at=WHEN,
        attempt=attempt,
    )
    session.add(run)
    return run


def refused(db, build) -> None:
    """``build(session)`` must violate a constraint, and change nothing."""
    with pytest.raises(IntegrityError):
        with db.session() as session:
            build(session)
            session.flush()


# --- uniqueness ------------------------------------------------------------------------------


def test_job_names_are_unique(db):
    with db.session() as session:
        add_script(session)
    refused(db, lambda s: s.add(Job(name="sensor", type=JobType.DAEMON)))
    assert count(db, Job) == 1


def test_one_context_per_job_and_environment(db):
    with db.session() as session:
        context = add_script(session)
    with db.session() as session:
        session.add(Environment(name="prod"))
    with db.session() as session:
        prod = session.scalar(sa.select(Environment).where(Environment.name == "prod"))
        session.add(Context(job_id=context.job_id, environment_id=prod.id, package_name="p", package_version="2"))

    def duplicate(session):
        session.add(
            Context(job_id=context.job_id, environment_id=context.environment_id, package_name="p", package_version="3")
        )

    refused(db, duplicate)
    assert count(db, Context) == 2


def test_one_config_key_per_scope_owner(db):
    with db.session() as session:
        context = add_script(session)
        session.flush()
        session.add_all(
            [
                ConfigKey(scope=ConfigScope.GLOBAL, key="A", value="1"),
                ConfigKey(scope=ConfigScope.JOB, job_id=context.job_id, key="A", value="2"),
                ConfigKey(scope=ConfigScope.CONTEXT, context_id=context.id, key="A", value="3"),
            ]
        )
    refused(db, lambda s: s.add(ConfigKey(scope=ConfigScope.GLOBAL, key="A", value="again")))
    refused(db, lambda s: s.add(ConfigKey(scope=ConfigScope.JOB, job_id=context.job_id, key="A", value="again")))
    refused(db, lambda s: s.add(ConfigKey(scope=ConfigScope.CONTEXT, context_id=context.id, key="A", value="again")))
    assert count(db, ConfigKey) == 3


def test_run_ids_and_log_line_sequences_are_unique(db):
    with db.session() as session:
        context = add_script(session)
    with db.session() as session:
        context = session.get(Context, context.id)
        run = add_run(session, context)
        session.flush()
        add_run(session, context, attempt=2)
        session.add(LogLine(run_id=run.id, seq=1, time=WHEN, stream="stdout", text="hello"))
    assert run.id == "sensor:dev:20240331T013015Z"
    with db.session() as session:
        assert session.get(Run, "sensor:dev:20240331T013015Z#2").attempt == 2

    def same_run(session):
        add_run(session, session.get(Context, context.id))

    refused(db, same_run)
    refused(db, lambda s: s.add(LogLine(run_id=run.id, seq=1, time=WHEN, stream="stderr", text="again")))
    assert (count(db, Run), count(db, LogLine)) == (2, 1)


def test_user_names_environments_and_groups_are_unique(db):
    with db.session() as session:
        session.add_all(
            [User(username="alice", password_hash="x"), Environment(name="dev"), NotificationGroup(name="ops")]
        )
    refused(db, lambda s: s.add(User(username="alice", password_hash="y")))
    refused(db, lambda s: s.add(Environment(name="dev")))
    refused(db, lambda s: s.add(NotificationGroup(name="ops")))


# --- cascades --------------------------------------------------------------------------------


def populate(db) -> dict[str, int]:
    with db.session() as session:
        context = add_script(session)
        session.flush()
        group = NotificationGroup(name="ops", emails=[NotificationEmail(email="ops@example.com")])
        session.add_all(
            [
                group,
                JobNotification(job=context.job, group=group),
                Suspension(job=context.job, starts_at=WHEN, ends_at=WHEN + timedelta(hours=1)),
                ConfigKey(scope=ConfigScope.JOB, job=context.job, key="A", value="1"),
                ConfigKey(scope=ConfigScope.CONTEXT, context=context, key="A", value="2", secret=True),
                ConfigKey(scope=ConfigScope.GLOBAL, key="B", value="3"),
            ]
        )
        run = add_run(session, context)
        session.flush()
        session.add(LogLine(run_id=run.id, seq=1, time=WHEN, stream="stdout", text="hi"))
        return {"job": context.job_id, "environment": context.environment_id, "group": group.id, "run": run.id}


def test_deleting_a_job_cascades_and_keeps_run_history(db):
    ids = populate(db)
    with db.session() as session:
        session.delete(session.get(Job, ids["job"]))
    assert [count(db, m) for m in (Context, Schedule, JobNotification, Suspension)] == [0, 0, 0, 0]
    with db.session() as session:
        assert [k.key for k in session.scalars(sa.select(ConfigKey))] == ["B"]  # only the global key stays
        run = session.get(Run, ids["run"])
        assert run is not None and run.context_id is None  # history outlives the script
    assert (count(db, Environment), count(db, NotificationGroup), count(db, LogLine)) == (1, 1, 1)


def test_database_level_cascades(db):
    """Deleting with plain SQL (not through the ORM) cascades too: the foreign keys say so."""
    ids = populate(db)
    with db.engine.begin() as connection:
        connection.execute(sa.delete(Environment.__table__).where(Environment.__table__.c.id == ids["environment"]))
        connection.execute(sa.delete(NotificationGroup.__table__))
    assert [count(db, m) for m in (Context, Schedule, NotificationEmail, JobNotification)] == [0, 0, 0, 0]
    assert count(db, Job) == 1
    with db.session() as session:
        assert session.get(Run, ids["run"]).context_id is None
    with db.engine.begin() as connection:
        connection.execute(sa.delete(Run.__table__))
    assert count(db, LogLine) == 0


# --- types -----------------------------------------------------------------------------------


def test_datetimes_round_trip_as_aware_utc(db):
    paris = WHEN.astimezone(timezone(timedelta(hours=2)))
    with db.session() as session:
        session.add(Suspension(starts_at=paris, ends_at=WHEN + timedelta(days=400)))
    with db.session() as session:
        if db.engine.dialect.name == "postgresql":  # values come back in the session's time zone
            session.execute(sa.text("SET TIME ZONE 'Asia/Kolkata'"))
        suspension = session.scalars(sa.select(Suspension)).one()
        assert suspension.starts_at == WHEN and suspension.starts_at.tzinfo == UTC
        assert suspension.starts_at.microsecond == 123456
        assert suspension.ends_at.utcoffset() == timedelta(0)
        later = session.scalars(sa.select(Suspension).where(Suspension.starts_at > WHEN - timedelta(seconds=1))).all()
        assert later == [suspension]  # comparisons in SQL see UTC instants
    with pytest.raises(StatementError, match="naive datetime"):
        with db.session() as session:
            session.add(Suspension(starts_at=datetime(2024, 1, 1), ends_at=WHEN))
            session.flush()
    assert count(db, Suspension) == 1


def test_enums_are_stored_as_their_values(db):
    with db.session() as session:
        context = add_script(session)
        context.schedules[0].catchup = CatchUp.ALL
        context.schedules[0].overlap = Overlap.REPLACE
        session.add(User(username="alice", password_hash="x", role=Role.ADMIN))
        session.flush()
        run = add_run(session, context)
        run.state = RunState.TIMED_OUT
    with db.engine.connect() as connection:
        raw = connection.execute(
            sa.text("SELECT j.type, s.catchup, s.overlap, u.role, r.state FROM jobs j, schedules s, users u, runs r")
        ).one()
    assert tuple(raw) == ("scheduled", "all", "replace", "admin", "timed_out")
    with db.session() as session:
        schedule = session.scalars(sa.select(Schedule)).one()
        assert (schedule.catchup, schedule.overlap) == (CatchUp.ALL, Overlap.REPLACE)
        assert session.scalars(sa.select(Run)).one().state is RunState.TIMED_OUT
        assert session.scalars(sa.select(User)).one().is_admin
        assert session.scalars(sa.select(Job)).one().type is JobType.SCHEDULED


def test_defaults(db):
    with db.session() as session:
        context = add_script(session)
        session.add(User(username="bob", password_hash="x"))
    with db.session() as session:
        schedule = session.scalars(sa.select(Schedule)).one()
        assert (schedule.misfire_grace_seconds, schedule.catchup, schedule.overlap, schedule.retries) == (
            300,
            CatchUp.LATEST,
            Overlap.FORBID,
            0,
        )
        user = session.scalars(sa.select(User)).one()
        assert user.role is Role.VIEWER and user.active and user.created_at.tzinfo == UTC
        assert session.get(Context, context.id).enabled


# --- migrations ------------------------------------------------------------------------------


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config(make_engine("sqlite://"))).get_current_head()


def current_revision(engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_an_old_database_is_upgraded_without_data_loss(database_url, make_settings):
    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as connection:  # data as revision 0001 stores it, written with plain SQL
        connection.execute(sa.text("INSERT INTO environments (id, name, description) VALUES (1, 'dev', 'Development')"))
        connection.execute(
            sa.text(
                "INSERT INTO jobs (id, name, description, type, enabled, module) VALUES (1, 'sensor', '', 'scheduled', :t, '')"
            ),
            {"t": True},
        )
        connection.execute(
            sa.text(
                "INSERT INTO contexts (id, job_id, environment_id, package_name, package_version, enabled) "
                "VALUES (1, 1, 1, 'sensor-pkg', '1.0.0', :t)"
            ),
            {"t": True},
        )
        connection.execute(
            sa.text(
                "INSERT INTO users (id, username, password_hash, role, active, created_at) "
                "VALUES (1, 'alice', 'hash', 'admin', :t, :when)"
            ),
            {"t": True, "when": WHEN if engine.dialect.name != "sqlite" else WHEN.replace(tzinfo=None)},
        )
    engine.dispose()

    database = open_database(make_settings(SQLALCHEMY_DATABASE_URI=database_url))
    try:
        assert current_revision(database.engine) == head_revision()
        with database.session() as session:
            context = session.scalars(sa.select(Context)).one()
            assert (context.job.name, context.environment.description, context.package_version) == (
                "sensor",
                "Development",
                "1.0.0",
            )
            alice = session.scalars(sa.select(User)).one()
            assert (alice.username, alice.role, alice.created_at) == ("alice", Role.ADMIN, WHEN)
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], f"models and migrations disagree (add an Alembic revision): {differences}"
    finally:
        database.dispose()

    again = open_database(make_settings(SQLALCHEMY_DATABASE_URI=database_url))  # idempotent
    try:
        assert count(again, User) == 1 and current_revision(again.engine) == head_revision()
    finally:
        again.dispose()
