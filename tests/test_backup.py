"""Backing up a node and restoring it (issue 8): unit tests on both databases, then the drill.

The unit tests give a node every file a node can have — the data keyring, sealed TLS, signing and
encryption keys, a key waiting for a rotation (``.new``), its certificate, the pinned root, trust
state and last good directory, a county CA — and rows in its database (child records, an outbox
row), back it up and restore it into a new directory (and a new, empty PostgreSQL database): every
file comes back byte for byte with its mode, every row reads back. Damaged or incomplete backups
are a table of cases, each refused before anything is written; so are a target that already holds
a node and a database that is not empty.

**The drill** (real nodes over mutual TLS, as in ``tests/test_cases_e2e.py``): 两江新区 accepts an
orphan application for a child registered in 南部县; 南部县 receives it; then 两江新区 goes down and
南部县 requests material — the request and the custody offer wait in 南部县's outbox. 南部县 is backed
up while it runs, stopped, its data directory (and its database) destroyed, restored into a new
directory, and started again on the same port with the same identity. Then the pending messages are
delivered exactly once with receipts, the case goes on in both directions, and the custody chain —
the same at both nodes — verifies offline with ``tongban custody verify``. On SQLite, and with
南部县 on PostgreSQL when a server is available.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from psycopg import sql
from sqlalchemy import func, select

from gateway import backup, config
from gateway.cases import lifecycle as lc
from gateway.cli import main
from gateway.config import NodeConfig
from gateway.custody import store as custody_store
from gateway.custody.chain import CustodyState
from gateway.domain.records import ChildRecord
from gateway.errors import (
    BackupInvalid,
    BackupToolUnusable,
    ConfigError,
    KeyFileError,
    RestoreRefused,
    SchemaOutOfDate,
)
from gateway.exchange import outbox
from gateway.node import init_node, open_node
from gateway.server import NodeServer
from gateway.store.db import _alembic_config, current_revision, head_revision, make_engine
from gateway.store.schema import inbox
from gateway.trust import keyfile
from tests.factories import child
from tests.test_cases_e2e import application_file, run, state, synced
from tests.test_delivery import FAST, eventually, free_port
from tests.test_mtls import PASSPHRASE, LivePki, publish
from tests.test_reconcile_e2e import LJ, NB, World, cfg_arg

PERIOD = "2026Q4"


# --- databases ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Databases:
    """Fresh PostgreSQL databases beside the session's, dropped at the end of the test."""

    admin: str
    made: list[str] = dataclasses.field(default_factory=list)

    def url(self, name: str) -> str:
        return self.admin.rpartition("/")[0] + "/" + name

    def create(self) -> str:
        name = f"{self.admin.rpartition('/')[2]}_{secrets.token_hex(3)}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.made.append(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            name = sql.Identifier(url.rpartition("/")[2])
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))

    def recreate_empty(self, url: str) -> None:
        self.drop(url)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.rpartition("/")[2])))


@pytest.fixture
def databases(postgres_url: str | None) -> Iterator[Databases | None]:
    if postgres_url is None:
        yield None
        return
    dbs = Databases(postgres_url)
    try:
        yield dbs
    finally:
        for name in dbs.made:
            dbs.drop(dbs.url(name))


# --- a node with every file a node can have ---------------------------------------------------------


@dataclasses.dataclass
class Made:
    cfg: NodeConfig
    kind: str  # "sqlite" or "postgresql"
    restore_url: str | None  # an empty database for the restore (PostgreSQL), or None (SQLite: a new file)
    records: list[ChildRecord]
    message_id: str


@dataclasses.dataclass(frozen=True)
class Outgoing:
    message_id: str
    recipient: str
    purpose: str
    data: bytes


def _make_node(tmp_path: Path, db_url: str, databases: Databases | None) -> Made:
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    url = "sqlite:///node.db" if kind == "sqlite" else db_url  # SQLite inside the data directory
    cfg = init_node(tmp_path / "node", node_id="sc-nanbu", division="511321", database_url=url)
    secret = PASSPHRASE.encode()
    keyfile.write_private_key(cfg.tls_key, ec.generate_private_key(ec.SECP256R1()), secret)
    keyfile.write_private_key(cfg.signing_key, ed25519.Ed25519PrivateKey.generate(), secret)
    keyfile.write_private_key(Path(f"{cfg.signing_key}.new"), ed25519.Ed25519PrivateKey.generate(), secret)
    keyfile.write_private_key(cfg.encryption_key, x25519.X25519PrivateKey.generate(), secret)
    keyfile.write_public(cfg.tls_certificate, b"-----BEGIN CERTIFICATE-----\nsynthetic\n-----END CERTIFICATE-----\n")
    for path in (cfg.trust_root, cfg.trust_state, cfg.last_good_directory):
        keyfile.write_public(path, json.dumps({"synthetic": path.name}).encode())
    ca = cfg.base_dir / backup.COUNTY_CA_DIR
    keyfile.write_private_key(ca / "ca.key.pem", ec.generate_private_key(ec.SECP256R1()), secret)
    keyfile.write_public(ca / "ca.crt.pem", b"synthetic county CA certificate\n")
    ca.chmod(0o700)
    node = open_node(cfg)
    try:
        records = [child(300 + i) for i in range(3)]
        node.children.add_many(records, period=PERIOD)
        message_id = "00000000-0000-4000-8000-00000000b001"
        with node.engine.begin() as conn:
            outbox.enqueue(conn, Outgoing(message_id, "cq-liangjiang", "migrant_notice", b"sealed bytes"), node.keyring)
        # A delivery round of the running node holds it when the backup is taken.
        assert [c.message_id for c in outbox.claim(node.engine, "worker-of-the-old-node")] == [message_id]
    finally:
        node.engine.dispose()
    restore_url = databases.create() if kind == "postgresql" and databases is not None else None
    return Made(cfg, kind, restore_url, records, message_id)


@pytest.fixture
def made(tmp_path: Path, db_url: str, databases: Databases | None, monkeypatch: pytest.MonkeyPatch) -> Made:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    return _make_node(tmp_path, db_url, databases)


def _files(cfg: NodeConfig) -> dict[str, tuple[bytes, int]]:
    """Every file of the node's data directory but the database: relative path -> (bytes, mode)."""
    return {
        p.relative_to(cfg.base_dir).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(cfg.base_dir.rglob("*"))
        if p.is_file() and not p.name.startswith("node.db")
    }


def _restore(m: Made, backup_dir: Path, to: Path) -> backup.RestoreResult:
    return backup.restore_backup(backup_dir, to, database_url=m.restore_url)


def _restored_cfg(m: Made, to: Path) -> NodeConfig:
    env = {"TONGBAN_DATABASE_URL": m.restore_url} if m.restore_url else {}
    return config.load(to / config.CONFIG_FILE, env)


# --- unit tests ----------------------------------------------------------------------------------------


def test_a_backup_restores_every_file_byte_for_byte_and_every_row(made: Made, tmp_path: Path) -> None:
    manifest = backup.create_backup(made.cfg, tmp_path / "backup")
    assert (manifest.node_id, manifest.division, manifest.database) == ("sc-nanbu", "511321", made.kind)
    assert manifest.schema_revision == head_revision()
    roles = {f.role for f in manifest.files}
    assert roles == {
        "config",
        "database",
        *(role for role, _, _ in backup.CONFIGURED),
        "keys.signing_key.new",
        "county-ca/ca.key.pem",
        "county-ca/ca.crt.pem",
    }
    # The backup is private, and keys are copied exactly as they are: sealed.
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o700
    for f in manifest.files:
        assert (tmp_path / "backup" / f.name).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "backup/files/keys.signing_key").read_bytes() == made.cfg.signing_key.read_bytes()

    to = tmp_path / "restored"
    result = _restore(made, tmp_path / "backup", to)
    assert result.migrated_from is None
    assert result.schema_revision == head_revision()
    assert result.database_url_differs is (made.kind == "postgresql")
    assert _files(made.cfg) == _files(_restored_cfg(made, to))  # bytes and modes
    assert to.stat().st_mode & 0o777 == 0o700
    assert (to / "keys").stat().st_mode & 0o777 == 0o700
    assert (to / "data-keys.json").stat().st_mode & 0o777 == 0o600

    node = open_node(_restored_cfg(made, to))
    try:
        assert [node.children.get(r.record_id, period=PERIOD) for r in made.records] == made.records
        row = outbox.get(node.engine, made.message_id)
        assert row is not None
        # Still queued, and its lease given back: the old node's worker is gone, the row is due now.
        assert (row.status, row.claimed_by, row.attempts) == (outbox.Status.QUEUED, None, 0)
        assert result.leases_released == 1
        (claimed,) = outbox.claim(node.engine, "worker-of-the-restored-node")
        assert claimed.envelope(node.keyring) == b"sealed bytes"
    finally:
        node.engine.dispose()


def test_an_older_backup_is_migrated_forward_and_says_so(made: Made, tmp_path: Path) -> None:
    engine = make_engine(made.cfg.database_url)
    try:
        command.downgrade(_alembic_config(engine), "-1")
        previous = current_revision(engine)
    finally:
        engine.dispose()
    assert previous is not None
    assert previous != head_revision()
    assert backup.create_backup(made.cfg, tmp_path / "backup").schema_revision == previous  # before an upgrade
    out = io.StringIO()
    argv = ["backup", "restore", str(tmp_path / "backup"), "--to", str(tmp_path / "restored")]
    with redirect_stdout(out):
        assert main(argv + (["--database-url", made.restore_url] if made.restore_url else [])) == 0
    assert f"migrated from schema revision {previous} to {head_revision()}" in out.getvalue()
    assert "tongban node serve --config" in out.getvalue()
    # Restored into another PostgreSQL database than node.toml names: the operator is told how to start it.
    assert ("start the node with TONGBAN_DATABASE_URL" in out.getvalue()) is (made.restore_url is not None)


def test_a_database_password_never_reaches_a_command_line_or_the_terminal() -> None:
    url = "postgresql+psycopg://tongban:s3cret-pw@db.example.cn:5433/tongban?sslmode=require"
    conninfo, env = backup._libpq(url)
    assert "s3cret-pw" not in conninfo
    assert env["PGPASSWORD"] == "s3cret-pw"
    assert {"host=db.example.cn", "port=5433", "dbname=tongban", "user=tongban", "sslmode=require"} <= set(
        conninfo.split()
    )
    assert "s3cret-pw" not in backup.masked_url(url)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(b: Path, change: Callable[[dict[str, object]], None]) -> None:
    doc = json.loads((b / backup.MANIFEST).read_text(encoding="utf-8"))
    change(doc)
    (b / backup.MANIFEST).write_text(json.dumps(doc), encoding="utf-8")


def _entry(doc: dict[str, object], role: str) -> dict[str, object]:
    files = doc["files"]
    assert isinstance(files, list)
    return next(f for f in files if f["role"] == role)


DAMAGED: list[tuple[str, type[Exception], Callable[[Path], object]]] = [
    ("tampered_signing_key", BackupInvalid, lambda b: _flip_a_byte(b / "files/keys.signing_key")),
    ("tampered_configuration", BackupInvalid, lambda b: (b / "files/config").write_text("[node]\n")),
    ("tampered_database_snapshot", BackupInvalid, lambda b: _flip_a_byte(next((b / "database").iterdir()))),
    ("truncated_database_snapshot", BackupInvalid, lambda b: next((b / "database").iterdir()).write_bytes(b"")),
    ("missing_encryption_key", BackupInvalid, lambda b: (b / "files/keys.encryption_key").unlink()),
    ("missing_data_keyring", BackupInvalid, lambda b: (b / "files/keys.data_keyring").unlink()),
    ("missing_database_snapshot", BackupInvalid, lambda b: shutil.rmtree(b / "database")),
    ("missing_manifest", BackupInvalid, lambda b: (b / backup.MANIFEST).unlink()),
    ("manifest_not_json", BackupInvalid, lambda b: (b / backup.MANIFEST).write_text("{")),
    (
        "manifest_names_a_file_outside",
        BackupInvalid,
        lambda b: _edit_manifest(b, lambda d: _entry(d, "keys.tls_key").update(name="files/../../escape")),
    ),
    (
        "manifest_without_database",
        BackupInvalid,
        lambda b: _edit_manifest(b, lambda d: d.update(files=[f for f in d["files"] if f["role"] != "database"])),  # type: ignore[attr-defined]
    ),
    (
        "made_by_newer_software",
        SchemaOutOfDate,
        lambda b: _edit_manifest(b, lambda d: d.update(schema_revision="9999")),
    ),
]


@pytest.mark.parametrize(("name", "error", "damage"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_or_incomplete_backup_restores_nothing(
    made: Made, tmp_path: Path, name: str, error: type[Exception], damage: Callable[[Path], object]
) -> None:
    b = tmp_path / "backup"
    backup.create_backup(made.cfg, b)
    damage(b)
    to = tmp_path / "restored"
    with pytest.raises(error):
        _restore(made, b, to)
    assert not to.exists(), name
    if made.restore_url is not None:
        assert backup._pg_is_empty(made.restore_url)


def test_the_cli_reports_a_damaged_backup_by_code_and_exit_status(made: Made, tmp_path: Path) -> None:
    b = tmp_path / "backup"
    assert main(["backup", "create", "--config", str(made.cfg.path), "--out", str(b)]) == 0
    _flip_a_byte(b / "files/keys.tls_key")
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["backup", "restore", str(b), "--to", str(tmp_path / "restored")])
    assert code == BackupInvalid.exit_code == 65
    assert "[backup_invalid]" in err.getvalue()
    assert "files/keys.tls_key (keys.tls_key)" in err.getvalue()


def test_restore_refuses_an_existing_node(made: Made, tmp_path: Path) -> None:
    b = tmp_path / "backup"
    backup.create_backup(made.cfg, b)
    before = _files(made.cfg)
    with pytest.raises(RestoreRefused, match="already holds a node"):
        _restore(made, b, made.cfg.base_dir)
    assert _files(made.cfg) == before

    # A directory with one of the node's files already in it: refused, and nothing added or left.
    to = tmp_path / "half"
    (to / "keys").mkdir(parents=True)
    (to / "keys/signing.key.pem").write_bytes(b"someone else's key")
    with pytest.raises(RestoreRefused, match=r"signing\.key\.pem exists"):
        _restore(made, b, to)
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*")) == ["keys", "keys/signing.key.pem"]
    assert (to / "keys/signing.key.pem").read_bytes() == b"someone else's key"


def test_restore_refuses_a_database_that_is_not_empty(made: Made, tmp_path: Path) -> None:
    b = tmp_path / "backup"
    backup.create_backup(made.cfg, b)
    to = tmp_path / "restored"
    if made.kind == "sqlite":
        to.mkdir()
        (to / "node.db").write_bytes(b"")
        target = None
    else:
        target = made.cfg.database_url  # the original node's database
    with pytest.raises(RestoreRefused, match=r"exists|not empty"):
        backup.restore_backup(b, to, database_url=target)
    if made.kind == "sqlite":
        assert [p.name for p in to.iterdir()] == ["node.db"]  # only what was there
    else:
        assert not to.exists()
        engine = make_engine(made.cfg.database_url)  # and the original database is untouched
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()


def test_restore_with_the_wrong_passphrase_writes_nothing(
    made: Made, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = tmp_path / "backup"
    backup.create_backup(made.cfg, b)
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, "not the passphrase")
    with pytest.raises(KeyFileError):
        _restore(made, b, tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    if made.restore_url is not None:
        assert backup._pg_is_empty(made.restore_url)


def test_a_backup_goes_into_a_new_directory_of_its_own_node(made: Made, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        backup.create_backup(made.cfg, busy)
    other = dataclasses.replace(made.cfg, node_id="sc-other")
    with pytest.raises(ConfigError, match="different node"):
        backup.create_backup(other, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # no half backup left behind


@pytest.mark.postgres
def test_pg_dump_missing_or_older_than_the_server_is_refused_clearly(
    tmp_path: Path, postgres_url: str | None, databases: Databases | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL")
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    from tests.conftest import _reset_pg

    _reset_pg(postgres_url)
    m = _make_node(tmp_path, postgres_url, databases)
    monkeypatch.setattr("gateway.backup.shutil.which", lambda _tool: None)
    with pytest.raises(BackupToolUnusable, match="pg_dump is not installed"):
        backup.create_backup(m.cfg, tmp_path / "b1")
    monkeypatch.undo()
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    monkeypatch.setattr(backup, "_tool", lambda tool: (tool, f"{tool} (PostgreSQL) 9.6", 9))
    with pytest.raises(BackupToolUnusable, match="older than the PostgreSQL server"):
        backup.create_backup(m.cfg, tmp_path / "b2")
    assert not (tmp_path / "b1").exists()
    assert not (tmp_path / "b2").exists()


def test_the_county_ca_directory_is_the_one_the_county_api_uses() -> None:
    from gateway.county.certs import CA_DIR

    assert backup.COUNTY_CA_DIR == CA_DIR


# --- the drill: real nodes over mutual TLS ---------------------------------------------------------------


@dataclasses.dataclass
class Drill:
    world: World
    live: LivePki
    nb_database: str | None  # 南部县's PostgreSQL database, when it runs on one
    databases: Databases | None

    def start(self, node_id: str) -> None:
        server = NodeServer(open_node(self.world.cfgs[node_id]), retry_policy=FAST, delivery_poll_interval=0.1)
        server.start()
        self.world.servers[node_id] = server

    def stop(self, node_id: str) -> None:
        self.world.servers.pop(node_id).stop(grace=0)


def _enrol(tmp: Path, live: LivePki, node_id: str, division: str, port: int, database_url: str) -> NodeConfig:
    """``tongban node init`` and the operators' enrolment (as ``tests/test_mtls.enrol_on_disk``), on
    a fixed port and a database of our choice, with the node's signing and encryption keys. The
    directory is published at one place outside every node's data directory, as a shared path."""
    d = tmp / node_id
    init_node(d, node_id=node_id, division=division, listen=f"127.0.0.1:{port}", database_url=database_url)
    with (d / "node.toml").open("a", encoding="utf-8") as fh:
        fh.write(f'\n[trust]\ndirectory = "{tmp / "published/bundle.json"}"\nrefresh_seconds = 3600\n')
    cfg = config.load(d / "node.toml")
    pki, secret = live.node(node_id), PASSPHRASE.encode()
    keyfile.write_private_key(cfg.tls_key, pki.tls_key, secret)
    keyfile.write_public(cfg.tls_certificate, pki.tls_cert_pem.encode())
    keyfile.write_public(cfg.trust_root, live.pki.roots[0].to_bytes())
    keyfile.write_private_key(cfg.signing_key, pki.signers[0].private_key, secret)
    keyfile.write_private_key(cfg.encryption_key, pki.encryption_key, secret)
    return cfg


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def drill(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, databases: Databases | None
) -> Iterator[Drill]:
    if request.param == "postgresql" and databases is None:
        pytest.skip("no PostgreSQL: set TONGBAN_TEST_POSTGRES_URL or start the local server")
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    live = LivePki.create()
    divisions = {LJ: "500157", NB: "511321"}
    ports = {node_id: free_port() for node_id in divisions}
    for node_id, port in ports.items():
        live.node(node_id).endpoint = f"127.0.0.1:{port}"
    nb_database = databases.create() if request.param == "postgresql" and databases is not None else None
    cfgs = {
        node_id: _enrol(
            tmp_path,
            live,
            node_id,
            division,
            ports[node_id],
            nb_database if node_id == NB and nb_database else "sqlite:///node.db",
        )
        for node_id, division in divisions.items()
    }
    bundle = live.bundle()
    for cfg in cfgs.values():
        publish(cfg, bundle)
    c1 = child(101, registration="511321", residence="500157")
    d = Drill(World(cfgs, {}, {"c1": c1}, {}), live, nb_database, databases)
    try:
        for node_id in cfgs:
            d.start(node_id)
        yield d
    finally:
        for node_id in list(d.world.servers):
            d.stop(node_id)


def _custody(w: World, node_id: str, case_id: str, live: LivePki) -> CustodyState | None:
    node = open_node(w.cfgs[node_id])
    try:
        with node.engine.connect() as conn:
            return custody_store.view(conn, case_id, live.directory())
    finally:
        node.engine.dispose()


def _outbox(w: World, node_id: str, peer: str) -> list[outbox.OutboxRow]:
    node = open_node(w.cfgs[node_id])
    try:
        return [r for r in outbox.list_messages(node.engine, limit=10_000) if r.peer == peer]
    finally:
        node.engine.dispose()


def _received(w: World, node_id: str, sender: str) -> dict[str, int]:
    """Inbox rows at ``node_id`` from ``sender``: message id -> how many times it is stored."""
    node = open_node(w.cfgs[node_id])
    try:
        with node.engine.connect() as conn:
            rows = conn.execute(
                select(inbox.c.message_id, func.count()).where(inbox.c.sender == sender).group_by(inbox.c.message_id)
            ).all()
        return {str(mid): int(n) for mid, n in rows}
    finally:
        node.engine.dispose()


def _receipts(w: World, node_id: str, message_ids: list[str]) -> list[bool]:
    node = open_node(w.cfgs[node_id])
    try:
        return [outbox.receipt_of(node.engine, mid) is not None for mid in message_ids]
    finally:
        node.engine.dispose()


@pytest.mark.slow
def test_restore_drill_outbox_case_and_custody_continue_where_they_were(drill: Drill, tmp_path: Path) -> None:
    w, live = drill.world, drill.live

    # 1. 两江新区 accepts a case for 南部县, which receives it and, holding custody, may act on it.
    out = run("case", "accept", str(application_file(tmp_path, w, "lj")), *cfg_arg(w, LJ))
    match = re.search(r"accepted ([0-9a-f-]{36})", out)
    assert match is not None
    case_id = match.group(1)
    eventually(lambda: synced(w, NB, case_id, lc.Status.RECEIVED), what="the case received at 南部县")
    eventually(lambda: getattr(_custody(w, NB, case_id, live), "holder", None) == NB, what="南部县 holding custody")

    # 2. 两江新区 goes down; 南部县 requests material: the request and the custody offer wait in its outbox.
    drill.stop(LJ)
    run("case", "request-material", case_id, "--items", "household_register", *cfg_arg(w, NB))
    pending = [r.message_id for r in _outbox(w, NB, LJ) if r.status is outbox.Status.QUEUED]
    assert len(pending) >= 2, "the material request and the custody offer are queued"
    at_backup = _custody(w, NB, case_id, live)
    assert at_backup is not None
    assert at_backup.pending is not None
    assert (at_backup.pending.from_node, at_backup.pending.to_node) == (NB, LJ)
    assert state(w, NB, case_id)[0] is lc.Status.MATERIAL_REQUESTED

    # 3. Back up 南部县 while it runs; then destroy it: server, data directory, database.
    kept = tmp_path / "backup"
    run("backup", "create", *cfg_arg(w, NB), "--out", str(kept))
    drill.stop(NB)
    old_dir = w.cfgs[NB].base_dir
    shutil.rmtree(old_dir)
    if drill.nb_database is not None and drill.databases is not None:
        drill.databases.recreate_empty(drill.nb_database)  # a new server: the same URL, an empty database

    # 4. Restore into a new directory; the same node starts on the same port with the same identity.
    new_dir = tmp_path / "restored" / NB
    argv = ["backup", "restore", str(kept), "--to", str(new_dir)]
    printed = run(*argv, *(["--database-url", drill.nb_database] if drill.nb_database else []))
    assert f"restored node {NB} (511321)" in printed
    assert f"tongban node serve --config {new_dir / 'node.toml'}" in printed
    w.cfgs[NB] = config.load(new_dir / "node.toml")
    assert (w.cfgs[NB].listen, w.cfgs[NB].node_id) == (f"127.0.0.1:{live.node(NB).endpoint.rpartition(':')[2]}", NB)
    assert _custody(w, NB, case_id, live) == at_backup
    drill.start(NB)
    drill.start(LJ)

    # 5. The pending messages are delivered exactly once, each with the receiver's receipt held.
    eventually(lambda: all(_receipts(w, NB, pending)), what="receipts for 南部县's pending messages")
    received = _received(w, LJ, NB)
    assert all(received.get(mid) == 1 for mid in pending)
    assert sorted(received) == sorted(r.message_id for r in _outbox(w, NB, LJ))  # nothing lost, nothing extra
    assert all(r.status is outbox.Status.DELIVERED for r in _outbox(w, NB, LJ))

    # 6. The case goes on: 两江新区 gets the request and resubmits; the restored node receives it,
    #    reviews and decides; the result comes back.
    eventually(lambda: synced(w, LJ, case_id, lc.Status.MATERIAL_REQUESTED), what="the request at 两江新区")
    register = tmp_path / "register.pdf"
    register.write_bytes(b"synthetic household register")
    run("case", "resubmit", case_id, "--document", f"register:household_register:{register}", *cfg_arg(w, LJ))
    eventually(lambda: synced(w, NB, case_id, lc.Status.RESUBMITTED), what="the resubmission at the restored 南部县")
    eventually(lambda: getattr(_custody(w, NB, case_id, live), "holder", None) == NB, what="custody back at 南部县")
    run("case", "first-review", case_id, *cfg_arg(w, NB))
    month = datetime.now(UTC).strftime("%Y-%m")
    run("case", "decide", case_id, "--approve", "--payment-month", month, *cfg_arg(w, NB))
    eventually(lambda: synced(w, LJ, case_id, lc.Status.RESULT_DELIVERED), what="the result at 两江新区")

    # 7. The custody chain continued from where the backup left it: the same chain at both nodes,
    #    now held by 两江新区, and it verifies offline from public material.
    eventually(lambda: getattr(_custody(w, LJ, case_id, live), "holder", None) == LJ, what="custody at 两江新区")
    eventually(lambda: _custody(w, NB, case_id, live) == _custody(w, LJ, case_id, live), what="the same chain")
    final = _custody(w, NB, case_id, live)
    assert final is not None
    assert final.chain[: len(at_backup.chain)] == at_backup.chain
    assert [e.kind.value for e in final.chain] == [
        "genesis", "offer", "accept",  # to 南部县
        "offer", "accept",  # the material request, to 两江新区 (the offer signed before the backup)
        "offer", "accept",  # the resubmission, to 南部县
        "offer", "accept",  # the decision, to 两江新区
    ]  # fmt: skip
    chain_file, bundle, root = tmp_path / "chain.json", tmp_path / "directory.json", tmp_path / "root.json"
    run("custody", "export", case_id, *cfg_arg(w, NB), "--out", str(chain_file))
    bundle.write_bytes(live.bundle())
    root.write_bytes(live.pki.roots[0].to_bytes())
    verified = run("custody", "verify", str(chain_file), "--directory", str(bundle), "--root", str(root))
    assert f"chain of {len(final.chain)} event(s) verifies" in verified
    assert f"holder  {LJ}" in verified
    assert f"head    {final.head}" in verified
