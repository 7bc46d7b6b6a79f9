"""A node's local state: creating its data directory and opening it.

``init_node`` creates the directory, the configuration, the data keyring and the migrated database
and records the node's identity in the database; ``open_node`` loads all of it back and checks that
the configuration and the database agree (so two configurations can never share one ledger by
mistake). The CLI, the server and the demo all go through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlalchemy import Engine, insert, select

from gateway import config as config_mod
from gateway.config import NodeConfig
from gateway.domain.divisions import DivisionTable
from gateway.errors import ConfigError
from gateway.store.db import make_engine, migrate, require_current_schema
from gateway.store.keyring import DataKeyring
from gateway.store.repository import SqlChildRepository
from gateway.store.schema import node_meta
from gateway.wire import NodeDescription


def software_version() -> str:
    try:
        return version("tongban")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


@dataclass(frozen=True)
class Node:
    config: NodeConfig
    engine: Engine
    keyring: DataKeyring
    children: SqlChildRepository
    description: NodeDescription


def init_node(
    data_dir: Path,
    *,
    node_id: str,
    division: str,
    listen: str = "127.0.0.1:7301",
    database_url: str = "sqlite:///node.db",
    table: DivisionTable | None = None,
) -> NodeConfig:
    """Create a node in ``data_dir`` (which must not already hold one) and return its config.

    The division must be a *current* county-level code: a node is never created for a retired one.
    Raises ``ConfigError`` if the directory already holds a node, ``InvalidDivisionCode`` or
    ``RetiredDivision`` for the division.
    """
    config_mod.validate_node_id(node_id)
    table = table or DivisionTable.load_default()
    table.current(division)
    cfg_path = data_dir / config_mod.CONFIG_FILE
    if cfg_path.exists():
        raise ConfigError(f"{cfg_path} already exists; refusing to overwrite a node")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    cfg_path.write_text(config_mod.render(node_id, division, listen, database_url), encoding="utf-8")
    cfg = config_mod.load(cfg_path)
    if not cfg.data_keyring.exists():
        DataKeyring.generate().save(cfg.data_keyring)
    engine = make_engine(cfg.database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            existing = conn.execute(select(node_meta.c.value).where(node_meta.c.key == "node_id")).first()
            if existing is not None and existing.value != node_id:
                raise ConfigError("the database already belongs to another node")
            if existing is None:
                conn.execute(
                    insert(node_meta),
                    [
                        {"key": "node_id", "value": node_id},
                        {"key": "division", "value": division},
                        {"key": "created_at", "value": datetime.now(UTC).isoformat()},
                    ],
                )
    finally:
        engine.dispose()
    return cfg


def open_node(cfg: NodeConfig, *, table: DivisionTable | None = None) -> Node:
    """Open an initialised node: schema at head, identity matching the configuration."""
    table = table or DivisionTable.load_default()
    division = table.current(cfg.division)
    engine = make_engine(cfg.database_url)
    try:
        require_current_schema(engine)
        with engine.connect() as conn:
            meta = {row.key: row.value for row in conn.execute(select(node_meta.c.key, node_meta.c.value))}
        if meta.get("node_id") != cfg.node_id or meta.get("division") != cfg.division:
            raise ConfigError("the database belongs to a different node than this configuration names")
        keyring = DataKeyring.load(cfg.data_keyring)
    except BaseException:
        engine.dispose()
        raise
    return Node(
        config=cfg,
        engine=engine,
        keyring=keyring,
        children=SqlChildRepository(engine, keyring),
        description=NodeDescription(
            node_id=cfg.node_id,
            division_code=cfg.division,
            division_name=division.name,
            software_version=software_version(),
        ),
    )
