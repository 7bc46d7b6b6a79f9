"""Engines and migrations for the node database.

SQLite is the embedded default (one file per node, WAL mode); PostgreSQL is the production
database. Both are driven through the same SQLAlchemy Core code and the same Alembic migrations.
"""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import SchemaOutOfDate, StorageError

SCRIPT_LOCATION = "gateway.store:migrations"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite connections get WAL, foreign keys and a busy timeout."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError) as exc:
        raise StorageError(f"cannot use database URL ({type(exc).__name__})") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent)."""
    try:
        command.upgrade(_alembic_config(engine), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed ({type(exc).__name__})") from None


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://"))).get_current_head()
    if head is None:
        raise StorageError("no migrations are packaged")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current_schema(engine: Engine) -> None:
    """Refuse to run against a database that is not at the packaged head revision."""
    have, want = current_revision(engine), head_revision()
    if have != want:
        raise SchemaOutOfDate(f"database is at {have or 'no revision'}, software expects {want}")
