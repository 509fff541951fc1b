"""Log lines stored in rows of consecutive lines: ``log_lines.line_count`` (see ``kirby.logstore``).

Existing rows hold one line each (``line_count`` 1). The downgrade splits every row of several
lines back into one row per line, so nothing is lost going back.

Revision ID: 0016
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("log_lines", sa.Column("line_count", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, run_id, seq, time, stream, text FROM log_lines WHERE line_count > 1")
    ).all()
    for row in rows:
        texts = row.text.split("\n")
        connection.execute(sa.text("UPDATE log_lines SET text = :text WHERE id = :id"), {"text": texts[0], "id": row.id})
        connection.execute(
            sa.text(
                "INSERT INTO log_lines (run_id, seq, time, stream, text) VALUES (:run_id, :seq, :time, :stream, :text)"
            ),
            [
                {"run_id": row.run_id, "seq": row.seq + n, "time": row.time, "stream": row.stream, "text": text}
                for n, text in enumerate(texts[1:], 1)
            ],
        )
    with op.batch_alter_table("log_lines") as batch:
        batch.drop_column("line_count")
