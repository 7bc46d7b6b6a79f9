"""``tongban node``: create, inspect and run a county node."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric import x25519
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine, inspect, select

from gateway import config as config_mod
from gateway.errors import ConfigError, SchemaOutOfDate
from gateway.node import init_node, open_node
from gateway.server import serve_forever
from gateway.store.db import current_revision, make_engine, pending_migrations, require_current_schema, upgrade
from gateway.store.schema import node_meta
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.tls import TlsIdentity, secure_channel_to
from gateway.trust.verifier import Directory

ENV_CONFIG = "TONGBAN_CONFIG"
EXIT_UNHEALTHY = 69  # EX_UNAVAILABLE: not serving, or not answering


def config_path(args: argparse.Namespace) -> Path:
    path = Path(args.config)
    return path / config_mod.CONFIG_FILE if path.is_dir() else path


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG, config_mod.CONFIG_FILE),
        help=f"node.toml or its directory (env {ENV_CONFIG}; default: %(default)s)",
    )


def node_database(args: argparse.Namespace) -> tuple[config_mod.NodeConfig, Engine]:
    """The node's configuration and an engine on its database, refused unless at the packaged schema
    (for commands that read or change the database without opening the node's keys)."""
    cfg = config_mod.load(config_path(args))
    engine = make_engine(cfg.database_url)
    require_current_schema(engine)
    return cfg, engine


def utc_text(at: datetime | None) -> str:
    """A UTC time as commands print it (``2026-12-06T11:37:01Z``), ``-`` for none."""
    return "-" if at is None else at.isoformat(timespec="seconds").replace("+00:00", "Z")


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


def dial_address(listen: str, setting: str) -> str:
    """Where a health check on this machine dials a listener configured as ``listen``: a wildcard
    host becomes loopback. ``ConfigError`` for port 0 (any free port: nothing fixed to dial)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        raise ConfigError(f"{setting} {listen!r} has no fixed port to health-check; set one, or pass --address")
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}  # noqa: S104 - mapped away
    return f"{wildcard.get(host, host)}:{port}"


def _health_channel(cfg: config_mod.NodeConfig, listener: str, target: str) -> grpc.Channel:
    """Plaintext, except the node-to-node port of an enrolled node: mutual TLS as this node itself
    (its TLS key, unsealed with the key passphrase, and its directory's provincial CAs)."""
    if listener == "county" and getattr(cfg, "county_tls", False):
        raise ConfigError("the county listener asks for client certificates ([county] tls); use --listener node")
    if listener == "node" and cfg.enrolled:
        identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=cfg.node_id)
        directory = TrustStore.from_config(cfg).current()
        return secure_channel_to(cfg.node_id, directory, identity, now=utc_now(), target=target)
    return grpc.insecure_channel(target)


def _health(args: argparse.Namespace) -> int:
    """Ask the running node's gRPC health service (``grpc.health.v1.Health/Check``); exit 0 if it
    answers SERVING, 69 if it answers anything else or does not answer within the timeout."""
    cfg = config_mod.load(config_path(args))
    setting = "county.listen" if args.listener == "county" else "server.listen"
    target = args.address or dial_address(cfg.county_listen if args.listener == "county" else cfg.listen, setting)
    request = health_pb2.HealthCheckRequest(service=args.service)
    with _health_channel(cfg, args.listener, target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            print(f"{args.listener} {target}: {code.name if code else 'error'}", file=sys.stderr)
            return EXIT_UNHEALTHY
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{args.listener} {target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_UNHEALTHY


def _database_owner(engine: Engine) -> str | None:
    """The node id recorded in the database (``node init`` writes it), if it has one yet."""
    if not inspect(engine).has_table(node_meta.name):
        return None
    with engine.connect() as conn:
        value = conn.execute(select(node_meta.c.value).where(node_meta.c.key == "node_id")).scalar()
    return None if value is None else str(value)


def _migrate(args: argparse.Namespace) -> int:
    """Bring the configured database to this software's schema (see ``gateway.store.db.upgrade``)."""
    cfg = config_mod.load(config_path(args))
    engine = make_engine(cfg.database_url)
    try:
        owner = _database_owner(engine)
        if owner is not None and owner != cfg.node_id:
            raise ConfigError("the database belongs to a different node than this configuration names")
        print(f"node:      {cfg.node_id}")
        print(f"database:  {engine.dialect.name}")
        if args.check:
            before = current_revision(engine)
            pending = pending_migrations(before)  # SchemaTooNew for an unknown revision
            for revision, title in pending:
                print(f"pending:   {revision}  {title}")
            if pending:
                raise SchemaOutOfDate(f"database is at {before or 'no revision'}, {len(pending)} migration(s) pending")
            print(f"schema:    {before} (the head of this software; nothing to do)")
            return 0
        done = upgrade(engine)
    finally:
        engine.dispose()
    for revision, title in done.applied:
        print(f"applied:   {revision}  {title}")
    if done.applied:
        plural = "" if len(done.applied) == 1 else "s"
        print(f"schema:    {done.before or 'empty'} -> {done.after} ({len(done.applied)} migration{plural} applied)")
    else:
        print(f"schema:    {done.after} -> {done.after} (already at the head of this software; nothing to do)")
    if owner is None:
        print(f"note:      the database records no node yet; create it with `tongban node init` (node {cfg.node_id})")
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

    health = sub.add_parser(
        "health",
        help="check the running node's gRPC health service (exit 0 serving, 69 not serving or not answering)",
        description=(
            "Ask the running node's gRPC health service. By default on the county API's listener "
            "([county] listen: loopback, plaintext, so cheap enough for a container health check); "
            "--listener node checks the node-to-node port instead, over mutual TLS as the node itself "
            "when it is enrolled (its TLS key needs the key passphrase). A wildcard host is dialled on "
            "loopback. Exit codes: 0 SERVING, 69 anything else or no answer, 78 no fixed port configured."
        ),
    )
    add_config_argument(health)
    health.add_argument(
        "--listener", choices=("county", "node"), default="county", help="which listener to ask (default: %(default)s)"
    )
    health.add_argument("--address", help="HOST:PORT to dial instead of the configured one")
    health.add_argument(
        "--service", default="", help="service name to ask about (default: the whole server, the empty name)"
    )
    health.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer (default: %(default)s)"
    )
    health.set_defaults(handler=_health)

    migrate = sub.add_parser(
        "migrate",
        help="upgrade the node's database to this software's schema (idempotent; run before `node serve`)",
        description=(
            "Apply the database migrations this software packages to the database the configuration "
            "names, and print the revision found and the revision left (from -> to). Idempotent: at the "
            "head it changes nothing. Safe to run from several processes at once: on PostgreSQL the "
            "migrations run in one transaction under an advisory lock, so replicas starting together "
            "migrate one after the other and all but the first find nothing to do. A database stamped "
            "with a revision this software does not know (a newer Tongban migrated it) is refused and "
            "left untouched (schema_too_new, exit 74). Needs only the configuration and the database, "
            "no keys. Exit codes: 0 at head, 74 refused or failed (or, with --check, migrations "
            "pending), 78 configuration error."
        ),
    )
    add_config_argument(migrate)
    migrate.add_argument(
        "--check", action="store_true", help="only report the pending migrations; exit 74 if there are any"
    )
    migrate.set_defaults(handler=_migrate)

    info = sub.add_parser("info", help="show the node's identity (no personal data)")
    add_config_argument(info)
    info.set_defaults(handler=_info)

    rotate = sub.add_parser("rotate-data-key", help="add a new data key and re-seal every stored record")
    add_config_argument(rotate)
    rotate.set_defaults(handler=_rotate_data_key)
