"""One config key per scope owner: partial unique indexes replace a constraint NULLs slipped through.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("uq_config_global_key", ["key"], "scope = 'global'"),
    ("uq_config_job_key", ["job_id", "key"], "scope = 'job'"),
    ("uq_config_context_key", ["context_id", "key"], "scope = 'context'"),
)


def upgrade() -> None:
    # Keep the newest of any duplicates the old constraint let in, so the new indexes can be built.
    op.execute(
        "DELETE FROM config_keys WHERE id NOT IN (SELECT MAX(id) FROM config_keys "
        "GROUP BY scope, COALESCE(job_id, 0), COALESCE(context_id, 0), key)"
    )
    with op.batch_alter_table("config_keys") as batch:
        batch.drop_constraint("uq_config_scope_key", type_="unique")
    for name, columns, where in INDEXES:
        op.create_index(name, "config_keys", columns, unique=True,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def downgrade() -> None:
    for name, _, _ in INDEXES:
        op.drop_index(name, table_name="config_keys")
    with op.batch_alter_table("config_keys") as batch:
        batch.create_unique_constraint("uq_config_scope_key", ["scope", "job_id", "context_id", "key"])
