"""Schedule changes: the triggers of 0013 also log what each write touched, for ``/schedule?since=``.

Every write to a table of ``TRACKED`` bumps ``schedule_version.version``, draws a new random
``stamp`` and logs, in ``schedule_changes`` (same transaction), the owners it touched: a context,
a job (all its contexts), an environment (all its contexts) or ``everything`` (a global config
key, a suspension of every job, a TRUNCATE). Old and new row are both logged, so a row moved to
another owner, deleted or disabled is seen. Each logged row carries the version and stamp it was
written under: a client's tag ``<generation>-<version>-<stamp>-...`` is a valid base for a delta
only while a row with that version and stamp is still there (not purged, not from another
timeline after a database restore); see ``kirby.web.schedule_changes``.

PostgreSQL: one statement-level BEFORE trigger bumps (and logs a marker row: a statement that
touched no row still has its version on record), a row-level AFTER trigger logs each row.
SQLite (row triggers only): each row bumps and logs. SQLite drops a table's triggers when a
batch migration rebuilds that table: a later migration that rebuilds one of ``TRACKED`` must
call ``create_triggers`` again (``tests/unit/test_schedule_etag.py`` checks them at head).

Revision ID: 0014
Revises: 0013
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TRACKED = ("environments", "jobs", "contexts", "schedules", "suspensions", "config_keys")
# per table: the owners a row touches, (job_id, context_id, environment_id, everything), of row {r}
OWNERS = {
    "environments": "NULL, NULL, {r}.id, false",
    "jobs": "{r}.id, NULL, NULL, false",
    "contexts": "NULL, {r}.id, NULL, false",
    "schedules": "NULL, {r}.context_id, NULL, false",
    "suspensions": "{r}.job_id, NULL, NULL, ({r}.job_id IS NULL)",
    "config_keys": (
        "{r}.job_id, {r}.context_id, NULL, ({r}.scope = 'global' OR ({r}.job_id IS NULL AND {r}.context_id IS NULL))"
    ),
}
COLUMNS = "version, stamp, job_id, context_id, environment_id, everything"
PG_STAMP = "substr(md5(random()::text || clock_timestamp()::text), 1, 16)"
SQLITE_STAMP = "lower(hex(randomblob(8)))"


def _log(table: str, row: str) -> str:
    owners = OWNERS[table].format(r=row)
    return f"INSERT INTO schedule_changes ({COLUMNS}) SELECT version, stamp, {owners} FROM schedule_version WHERE id = 1"


def drop_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TRACKED:
            op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_changed ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_row_changed ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS kirby_schedule_{table}_row()")
        op.execute("DROP FUNCTION IF EXISTS kirby_schedule_changed()")
        return
    for table in TRACKED:
        for action in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_{table}_{action}")


def create_triggers() -> None:
    drop_triggers()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION kirby_schedule_changed() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path FROM CURRENT AS $$ BEGIN "
            f"UPDATE schedule_version SET version = version + 1, stamp = {PG_STAMP} WHERE id = 1; "
            f"INSERT INTO schedule_changes ({COLUMNS}) SELECT version, stamp, NULL, NULL, NULL, "
            "(TG_OP = 'TRUNCATE') FROM schedule_version WHERE id = 1; RETURN NULL; END $$"
        )
        for table in TRACKED:
            op.execute(
                f"CREATE FUNCTION kirby_schedule_{table}_row() RETURNS trigger LANGUAGE plpgsql "
                "SET search_path FROM CURRENT AS $$ BEGIN "
                f"IF TG_OP <> 'INSERT' THEN {_log(table, 'OLD')}; END IF; "
                f"IF TG_OP <> 'DELETE' THEN {_log(table, 'NEW')}; END IF; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER kirby_schedule_changed BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION kirby_schedule_changed()"
            )
            op.execute(
                f"CREATE TRIGGER kirby_schedule_row_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION kirby_schedule_{table}_row()"
            )
        return
    bump = f"UPDATE schedule_version SET version = version + 1, stamp = {SQLITE_STAMP} WHERE id = 1"
    for table in TRACKED:
        for action, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            body = "; ".join([bump, *(_log(table, row) for row in rows)])
            op.execute(f"CREATE TRIGGER kirby_schedule_{table}_{action.lower()} AFTER {action} ON {table} BEGIN {body}; END")


def upgrade() -> None:
    with op.batch_alter_table("schedule_version") as batch:
        batch.add_column(sa.Column("stamp", sa.String(length=16), nullable=False, server_default=""))
    op.create_table(
        "schedule_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("stamp", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("context_id", sa.Integer(), nullable=True),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("everything", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_schedule_changes_version", "schedule_changes", ["version"])
    # the current version gets a stamp and a marker row: the base of the first deltas
    stamp = uuid.uuid4().hex[:16]
    op.execute(sa.text("UPDATE schedule_version SET stamp = :stamp").bindparams(stamp=stamp))
    op.execute(
        f"INSERT INTO schedule_changes ({COLUMNS}) SELECT version, stamp, NULL, NULL, NULL, false FROM schedule_version"
    )
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    op.drop_index("ix_schedule_changes_version", "schedule_changes")
    op.drop_table("schedule_changes")
    with op.batch_alter_table("schedule_version") as batch:
        batch.drop_column("stamp")
    # back to 0013's triggers (a bump per statement on PostgreSQL, per row on SQLite)
    bump = "UPDATE schedule_version SET version = version + 1"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION kirby_schedule_changed() RETURNS trigger LANGUAGE plpgsql "
            f"SET search_path FROM CURRENT AS $$ BEGIN {bump}; RETURN NULL; END $$"
        )
        for table in TRACKED:
            op.execute(
                f"CREATE TRIGGER kirby_schedule_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION kirby_schedule_changed()"
            )
        return
    for table in TRACKED:
        for action in ("INSERT", "UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER kirby_schedule_{table}_{action.lower()} AFTER {action} ON {table} BEGIN {bump}; END")
