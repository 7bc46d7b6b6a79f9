"""Migrations produce exactly the declared schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway.store.db import current_revision, head_revision, make_engine, migrate, require_current_schema
from gateway.store.schema import metadata


def test_migrated_schema_equals_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert current_revision(engine) == head_revision()
    require_current_schema(engine)
    engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    migrate_down(engine)
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def migrate_down(engine: object) -> None:
    from alembic import command

    from gateway.store.db import _alembic_config

    command.downgrade(_alembic_config(engine), "base")  # type: ignore[arg-type]
