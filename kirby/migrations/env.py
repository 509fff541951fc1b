"""Alembic environment: runs on the engine Kirby passes in ``config.attributes['engine']``."""

from alembic import context

from kirby.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
