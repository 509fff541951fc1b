"""Celery jobs: the task a job sends (name, args, kwargs, queue, routing key, priority); a run's expiry.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_JOB_COLUMNS = ("celery_task", "celery_args", "celery_kwargs", "celery_queue", "celery_routing_key")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("celery_task", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("celery_args", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("celery_kwargs", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("celery_queue", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("celery_routing_key", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("celery_priority", sa.Integer(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("celery_task", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("celery_task")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("celery_priority")
        for name in reversed(_JOB_COLUMNS):
            batch.drop_column(name)
