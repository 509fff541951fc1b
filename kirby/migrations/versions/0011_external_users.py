"""users.provider, users.subject, users.roles_checked_at: external (LDAP, OIDC) users.

Existing users are local. An external user is found by (provider, subject), unique.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "provider",
                sa.Enum("local", "ldap", "oidc", name="user_provider", native_enum=False, length=16),
                nullable=False,
                server_default="local",
            )
        )
        batch.add_column(sa.Column("subject", sa.String(255), nullable=True))
        batch.add_column(sa.Column("roles_checked_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_user_provider_subject", ["provider", "subject"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_user_provider_subject", type_="unique")
        batch.drop_column("roles_checked_at")
        batch.drop_column("subject")
        batch.drop_column("provider")
