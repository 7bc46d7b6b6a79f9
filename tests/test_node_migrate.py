"""``tongban node migrate``: the configured database brought to this software's schema, on SQLite and
PostgreSQL.

Four starting points, each run through the real command line: an empty database (every migration
applied), a database at head (nothing changes, a second run neither), a database one revision behind
(the last migration applied, its rows kept, the node opens), and a database stamped with a revision
this build does not know — a newer Tongban migrated it — which is refused (``schema_too_new``, exit
74) with nothing changed, as is a database that belongs to another node. On PostgreSQL, migrators
that start together queue on the advisory lock: one applies the migrations, the other then finds
nothing to do.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, select, text

from gateway import config
from gateway.cli import main
from gateway.errors import ConfigError, SchemaOutOfDate, SchemaTooNew
from gateway.node import init_node, open_node
from gateway.store.db import (
    MIGRATION_LOCK_ID,
    Migration,
    _alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    make_engine,
    upgrade,
)
from gateway.store.schema import metadata, node_meta
from tests.factories import child
from tests.test_upgrade import previous_revision

LJ = "cq-liangjiang"
FUTURE = "9999"  # a revision no build of this software packages


def migrate_cli(node_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["node", "migrate", "--config", str(node_dir), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def schema_of(engine: Engine) -> dict[str, Any]:
    """Tables, their columns and indexes, and the stamped revision: what a migration would change."""
    reflected = MetaData()
    reflected.reflect(engine)
    return {
        "revision": current_revision(engine),
        "tables": {
            t.name: (sorted(c.name for c in t.columns), sorted(str(i.name) for i in t.indexes))
            for t in reflected.sorted_tables
        },
    }


def at_declared_schema(engine: Engine) -> bool:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata) == []


@pytest.fixture
def node_dir(tmp_path: Path, db_url: str) -> Path:
    """A node made by ``tongban node init`` on the database under test (at head), with a record."""
    cfg = init_node(tmp_path / "node", node_id=LJ, division="500157", database_url=db_url)
    node = open_node(cfg)
    try:
        node.children.add_many([child(1)], period="2026Q4")
    finally:
        node.engine.dispose()
    return cfg.base_dir


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def test_an_empty_database_gets_every_migration(
    tmp_path: Path, db_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / config.CONFIG_FILE).write_text(config.render(LJ, "500157", "127.0.0.1:0", db_url), encoding="utf-8")

    code, out, err = migrate_cli(node_dir, capsys)
    assert code == 0, err
    head = head_revision()
    assert f"schema:    empty -> {head} ({len(known_revisions())} migrations applied)" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("applied:")] == sorted(known_revisions())
    assert "records no node yet" in out  # the schema only: `node init` records the node
    assert current_revision(engine) == head
    assert at_declared_schema(engine)

    code, out, _ = migrate_cli(node_dir, capsys)
    assert code == 0
    assert f"schema:    {head} -> {head} (already at the head" in out


def test_a_database_at_head_is_left_as_it_is(
    node_dir: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    before = schema_of(engine)
    for _ in range(2):
        code, out, err = migrate_cli(node_dir, capsys)
        assert code == 0, err
        assert f"{head_revision()} -> {head_revision()} (already at the head of this software; nothing to do)" in out
        assert "applied:" not in out
        assert "records no node" not in out
    assert migrate_cli(node_dir, capsys, "--check")[0] == 0
    assert schema_of(engine) == before
    node = open_node(config.load(node_dir / config.CONFIG_FILE))
    node.engine.dispose()


def test_a_database_one_revision_behind_is_migrated_and_the_node_opens(
    node_dir: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    previous, head = previous_revision(), head_revision()
    command.downgrade(_alembic_config(engine), previous)
    cfg = config.load(node_dir / config.CONFIG_FILE)
    with pytest.raises(SchemaOutOfDate):
        open_node(cfg)

    behind = schema_of(engine)
    code, out, err = migrate_cli(node_dir, capsys, "--check")
    assert code == SchemaOutOfDate.exit_code
    assert f"pending:   {head}  " in out
    assert "[schema_out_of_date]" in err
    assert schema_of(engine) == behind  # --check changes nothing

    code, out, err = migrate_cli(node_dir, capsys)
    assert code == 0, err
    assert f"applied:   {head}  " in out
    assert f"schema:    {previous} -> {head} (1 migration applied)" in out
    assert current_revision(engine) == head
    assert at_declared_schema(engine)

    node = open_node(cfg)  # the node's identity and its records came through
    try:
        assert [r.record_id for r in node.children.iter_period("2026Q4")] == [child(1).record_id]
    finally:
        node.engine.dispose()


def test_a_database_from_a_newer_tongban_is_refused_and_left_untouched(
    node_dir: Path, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with engine.begin() as conn:  # what a newer build would have left: its revision, a table of its own
        conn.execute(text("CREATE TABLE from_the_future (id INTEGER PRIMARY KEY)"))
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    before = schema_of(engine)
    with engine.connect() as conn:
        rows = list(conn.execute(select(node_meta)))

    for extra in ((), ("--check",)):
        code, _, err = migrate_cli(node_dir, capsys, *extra)
        assert code == SchemaTooNew.exit_code == 74
        assert f"[{SchemaTooNew.code}]" in err
        assert f"database is at {FUTURE}" in err
    with pytest.raises(SchemaTooNew):
        upgrade(engine)
    assert schema_of(engine) == before
    with engine.connect() as conn:
        assert list(conn.execute(select(node_meta))) == rows
    with pytest.raises(SchemaTooNew):  # and the node refuses it with the same reason
        open_node(config.load(node_dir / config.CONFIG_FILE))


def test_a_database_of_another_node_is_refused(
    node_dir: Path, tmp_path: Path, db_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    command.downgrade(_alembic_config(engine), previous_revision())
    other = tmp_path / "other"
    other.mkdir()
    (other / config.CONFIG_FILE).write_text(
        config.render("cq-beibei", "500109", "127.0.0.1:0", db_url), encoding="utf-8"
    )
    before = schema_of(engine)
    code, _, err = migrate_cli(other, capsys)
    assert code == ConfigError.exit_code
    assert "belongs to a different node" in err
    assert schema_of(engine) == before


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # the advisory lock is PostgreSQL's
def test_migrators_starting_together_take_turns_on_the_advisory_lock(db_url: str, engine: Engine) -> None:
    """Two migrators (as two replicas' init containers) on an empty database while a third party
    holds the migration lock: neither touches the database until the lock is free; then one applies
    every migration and the other, after it, finds the schema at head."""
    results: list[Migration] = []
    errors: list[BaseException] = []

    def migrator() -> None:
        own = make_engine(db_url)
        try:
            results.append(upgrade(own))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            own.dispose()

    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        threads = [threading.Thread(target=migrator) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1.5)
        assert all(t.is_alive() for t in threads), "a migrator did not wait for the lock"
        assert current_revision(engine) is None
        holder.rollback()  # releases the lock
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    head = head_revision()
    first, second = sorted(results, key=lambda m: len(m.applied), reverse=True)
    assert (first.before, first.after, len(first.applied)) == (None, head, len(known_revisions()))
    assert (second.before, second.after, second.applied) == (head, head, ())
    assert at_declared_schema(engine)
