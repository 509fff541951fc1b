"""Schedules get ``on_lost`` (skip | retry): what happens to a started run whose supervisor died.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(
            sa.Column(
                "on_lost",
                sa.Enum("skip", "retry", name="on_lost_policy", native_enum=False, length=16),
                nullable=False,
                server_default="skip",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("on_lost")
