"""Per-job run user: jobs.run_as (NULL: the supervisor's KIRBY_RUN_USER).

Revision ID: 0006
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("run_as", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_as")
