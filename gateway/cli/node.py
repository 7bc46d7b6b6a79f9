"""``tongban node``: create, inspect and run a county node."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from gateway import config as config_mod
from gateway.node import init_node, open_node
from gateway.server import serve_forever
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore
from gateway.trust.verifier import Directory

ENV_CONFIG = "TONGBAN_CONFIG"


def config_path(args: argparse.Namespace) -> Path:
    path = Path(args.config)
    return path / config_mod.CONFIG_FILE if path.is_dir() else path


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG, config_mod.CONFIG_FILE),
        help=f"node.toml or its directory (env {ENV_CONFIG}; default: %(default)s)",
    )


@dataclass(frozen=True)
class ActingKeys:
    """What a command needs to act for its node: the verified directory and the node's keys."""

    directory: Directory
    signer: Ed25519Signer
    encryption_key: x25519.X25519PrivateKey


def acting_keys(cfg: config_mod.NodeConfig, now: datetime) -> ActingKeys:
    """The directory (fetched fresh when the node has a publishing point, else the last good one)
    and the node's signing and encryption keys, unsealed with the key passphrase."""
    trust = TrustStore.from_config(cfg)
    directory = trust.refresh(now) if cfg.directory_source else trust.current(now)
    passphrase = passphrase_from_env()
    return ActingKeys(
        directory,
        Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
        read_encryption_key(cfg.encryption_key, passphrase),
    )


def _init(args: argparse.Namespace) -> int:
    cfg = init_node(
        Path(args.data_dir),
        node_id=args.id,
        division=args.division,
        listen=args.listen,
        database_url=args.database_url,
    )
    print(f"initialised node {cfg.node_id} ({cfg.division}) in {cfg.base_dir}")
    print(f"configuration: {cfg.path}")
    print(f"start it with: tongban node serve --config {cfg.path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    node = open_node(config_mod.load(config_path(args)))
    return serve_forever(node)


def _info(args: argparse.Namespace) -> int:
    node = open_node(config_mod.load(config_path(args)))
    d = node.description
    print(f"node:      {d.node_id}")
    print(f"division:  {d.division_code} {d.division_name} (province {d.province_code})")
    print(f"listen:    {node.config.listen}")
    print(f"database:  {node.engine.dialect.name}")
    print(f"data key:  {node.keyring.active_key_id} ({len(node.keyring.keys)} in keyring)")
    print(f"software:  {d.software_version} ({d.wire_version})")
    node.engine.dispose()
    return 0


def _rotate_data_key(args: argparse.Namespace) -> int:
    node = open_node(config_mod.load(config_path(args)))
    new_id = node.keyring.rotate()
    node.keyring.save(node.config.data_keyring)  # saved before any row uses the new key
    rewrapped = node.children.rewrap()
    print(f"new active data key {new_id}; re-sealed {rewrapped} record(s)")
    node.engine.dispose()
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("node", help="create, inspect and run a county node")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="create a node's data directory, keys and database")
    init.add_argument("data_dir", help="directory to create (must not hold a node yet)")
    init.add_argument("--id", required=True, help="node id, e.g. cq-500157")
    init.add_argument("--division", required=True, help="current six-digit county-level division code")
    init.add_argument("--listen", default="127.0.0.1:7301", help="gRPC address (default: %(default)s)")
    init.add_argument(
        "--database-url",
        default="sqlite:///node.db",
        help="SQLAlchemy URL; relative SQLite paths are inside DATA_DIR (default: %(default)s)",
    )
    init.set_defaults(handler=_init)

    serve = sub.add_parser("serve", help="run the node's gRPC server until SIGTERM")
    add_config_argument(serve)
    serve.set_defaults(handler=_serve)

    info = sub.add_parser("info", help="show the node's identity (no personal data)")
    add_config_argument(info)
    info.set_defaults(handler=_info)

    rotate = sub.add_parser("rotate-data-key", help="add a new data key and re-seal every stored record")
    add_config_argument(rotate)
    rotate.set_defaults(handler=_rotate_data_key)
