"""Alembic environment: runs with the engine handed over by gateway.store.db (never an ini file)."""

from __future__ import annotations

from alembic import context

from gateway.store.schema import metadata

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
    )
    context.run_migrations()
