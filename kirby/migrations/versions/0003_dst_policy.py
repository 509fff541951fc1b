"""Per-schedule DST policy: dst_fall_back (auto|first|second|both), dst_spring_forward (auto|shift|skip).

Existing schedules get "auto" (by the hour field: see kirby.cron).

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column(
            "dst_fall_back",
            sa.Enum("auto", "first", "second", "both", name="dst_fall_back", native_enum=False, length=16),
            nullable=False, server_default="auto",
        ))
        batch.add_column(sa.Column(
            "dst_spring_forward",
            sa.Enum("auto", "shift", "skip", name="dst_spring_forward", native_enum=False, length=16),
            nullable=False, server_default="auto",
        ))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("dst_spring_forward")
        batch.drop_column("dst_fall_back")
