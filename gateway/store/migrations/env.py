"""Alembic environment: runs with the engine handed over by gateway.store.db (never an ini file).

When gateway.store.db also hands over a connection (``upgrade``: the migration lock is held in that
connection's transaction), the migrations run inside that transaction; otherwise in one of their own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gateway.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
    )
    context.run_migrations()


shared = context.config.attributes.get("connection")
if shared is not None:
    _run(shared)
else:
    with context.config.attributes["engine"].begin() as connection:
        _run(connection)
