"""Engines and migrations for the node database.

SQLite is the embedded default (one file per node, WAL mode); PostgreSQL is the production
database. Both are driven through the same SQLAlchemy Core code and the same Alembic migrations.

**Upgrading a database** (``tongban node migrate``, :func:`upgrade`; and :func:`migrate`, which
``node init`` and ``backup restore`` use) happens in one transaction
that first takes a PostgreSQL transaction-level advisory lock (:data:`MIGRATION_LOCK_ID`). Several
gateway processes of one node that start at once (Kubernetes replicas, each with the migration as
its init container; systemd units on several hosts, each with it as ``ExecStartPre=``) therefore
migrate one after the other: the first applies the migrations, the others wait for its commit, then
find the schema at head and do nothing. PostgreSQL's DDL is transactional, so a migration that fails
leaves the schema where it was. SQLite is one file used by one node process on one host, so nothing
races there and no lock is taken. A database stamped with a revision this software does not know —
migrated by a newer Tongban — is refused before anything is touched (:class:`SchemaTooNew`): a
database is never downgraded by an older build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import SchemaOutOfDate, SchemaTooNew, StorageError

SCRIPT_LOCATION = "gateway.store:migrations"
# The key of the PostgreSQL advisory lock every migration of a node database takes (the ASCII of
# "tongban" read as a number; advisory locks are per database, so nodes on one server never meet).
MIGRATION_LOCK_ID = 0x746F6E6762616E


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


def _alembic_config(engine: Engine, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["engine"] = engine
    if connection is not None:  # run the migrations inside the caller's transaction (env.py)
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (idempotent), in one transaction under the migration
    lock, as :func:`upgrade` does (``node init``, ``backup restore`` and tests use it)."""
    try:
        with engine.begin() as conn:
            _lock_migrations(conn)
            command.upgrade(_alembic_config(engine, conn), revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed ({type(exc).__name__})") from None


def _lock_migrations(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Held until this transaction ends: concurrent migrators queue here, one at a time.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:
        raise StorageError("no migrations are packaged")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revisions() -> frozenset[str]:
    """Every revision this software packages (the history is linear: base to head)."""
    return frozenset(r.revision for r in _script().walk_revisions())


def require_current_schema(engine: Engine) -> None:
    """Refuse to run against a database that is not at the packaged head revision:
    :class:`SchemaTooNew` when a newer Tongban migrated it, :class:`SchemaOutOfDate` otherwise."""
    have, want = current_revision(engine), head_revision()
    if have is not None and have not in known_revisions():
        raise SchemaTooNew(f"database is at {have}, the newest revision this software knows is {want}")
    if have != want:
        raise SchemaOutOfDate(f"database is at {have or 'no revision'}, software expects {want}")


@dataclass(frozen=True)
class Migration:
    """What :func:`upgrade` did: the revision found, the revision left, and the migrations applied
    between them, oldest first, each as (revision, the first line of its docstring)."""

    before: str | None
    after: str
    applied: tuple[tuple[str, str], ...]


def pending_migrations(before: str | None) -> tuple[tuple[str, str], ...]:
    """The packaged migrations after ``before`` (``None``: an empty database), oldest first.
    ``SchemaTooNew`` for a revision this software does not know."""
    if before is not None and before not in known_revisions():
        raise SchemaTooNew(f"database is at {before}, the newest revision this software knows is {head_revision()}")
    steps = _script().iterate_revisions("head", before or "base")  # newest first, ``before`` excluded
    return tuple((r.revision, (r.doc or "").strip()) for r in reversed(list(steps)) if r.revision != before)


def upgrade(engine: Engine) -> Migration:
    """Bring the database to the packaged head, idempotently, safe to run from several processes
    at once (see the module docstring).

    In one transaction: take the migration lock (PostgreSQL), read the revision, refuse an unknown
    one with :class:`SchemaTooNew` (nothing changed), apply the pending migrations, and commit.
    Raises :class:`StorageError` if the database refuses (the transaction rolls back).
    """
    try:
        with engine.begin() as conn:
            _lock_migrations(conn)
            before = MigrationContext.configure(conn).get_current_revision()
            applied = pending_migrations(before)
            if applied:
                command.upgrade(_alembic_config(engine, conn), "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(f"migration failed ({type(exc).__name__})") from None
    if after != head_revision():  # pragma: no cover - Alembic reached another revision than head
        raise StorageError(f"migration ended at {after}, not at {head_revision()}")
    return Migration(before, after, applied)
