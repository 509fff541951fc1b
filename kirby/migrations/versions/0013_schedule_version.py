"""The schedule version: one row bumped by triggers on every write to the tables the schedule reads.

``/schedule`` answers ``304 Not Modified`` while it has not moved (see ``kirby.schedule.version``).
The triggers are the database's own, so every writer bumps it, in its own transaction. SQLite
drops a table's triggers when a batch migration rebuilds that table: a later migration that
rebuilds one of ``TRACKED`` must call ``create_triggers`` again (``tests/unit/test_schedule_etag.py``
checks that every tracked table has them at head).

Revision ID: 0013
Revises: 0012
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TRACKED = ("environments", "jobs", "contexts", "schedules", "suspensions", "config_keys")
BUMP = "UPDATE schedule_version SET version = version + 1"


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION kirby_schedule_changed() RETURNS trigger LANGUAGE plpgsql "
            f"SET search_path FROM CURRENT AS $$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in TRACKED:
            op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_changed ON {table}")
            op.execute(
                f"CREATE TRIGGER kirby_schedule_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION kirby_schedule_changed()"
            )
        return
    for table in TRACKED:
        for action in ("INSERT", "UPDATE", "DELETE"):
            name = f"kirby_schedule_{table}_{action.lower()}"
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(f"CREATE TRIGGER {name} AFTER {action} ON {table} BEGIN {BUMP}; END")


def upgrade() -> None:
    table = op.create_table(
        "schedule_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("generation", sa.String(length=32), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "version": 0, "generation": uuid.uuid4().hex}])
    create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TRACKED:
            op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_changed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS kirby_schedule_changed()")
    else:
        for table in TRACKED:
            for action in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS kirby_schedule_{table}_{action}")
    op.drop_table("schedule_version")
