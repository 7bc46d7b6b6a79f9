"""Backing up a node and restoring it elsewhere (issue 8, operations).

A **backup** is a directory::

    BACKUP/manifest.json                 what is in it, with the size and SHA-256 of every file
    BACKUP/files/config                  node.toml, byte for byte
    BACKUP/files/keys.data_keyring       the data keyring, sealed as it is on disk
    BACKUP/files/keys.tls_key …          every key, certificate and trust file the node has
    BACKUP/files/county-ca/…             the node's county CA (``[county] tls``), when it has one
    BACKUP/database/node.sqlite3         a consistent snapshot: the SQLite online backup API …
    BACKUP/database/node.pgdump          … or ``pg_dump --format=custom`` on PostgreSQL

Key files are copied **exactly as they are**: sealed with the node's key passphrase, never opened,
decrypted or re-encrypted here, so the backup is as safe as the node's own disk and no safer — it
holds the sealed keys and the database (personal fields sealed under the data keyring, which is in
the backup too). The passphrase is never in it. Every file of the backup is mode 0600 in a 0700
directory. The manifest is written last: a backup that stopped half-way has none, and restores
nothing.

:func:`create_backup` works while the node runs: SQLite's online backup copies a consistent
snapshot page by page (a writer that commits meanwhile makes it restart, never tear), and
``pg_dump`` reads everything in one repeatable-read snapshot. The database is not required to be at
the software's schema revision — backing up *before* an upgrade is the point — but it must belong
to the node the configuration names.

:func:`restore_backup` checks, in this order, and restores nothing until every check has passed:

1. the manifest is present, of a known format, and names only files inside the backup;
2. every file the manifest lists is present with its size and SHA-256 (:class:`BackupInvalid`);
3. the backup's schema revision is one this software knows (a backup made by newer software is
   refused, :class:`SchemaOutOfDate`);
4. the target holds no node: no ``node.toml``, none of the files the restored configuration names,
   no SQLite file, and a PostgreSQL database given by the URL that is **empty**, of the same kind
   as the backup's (:class:`RestoreRefused`); for PostgreSQL, ``pg_restore`` is usable
   (:class:`BackupToolUnusable`);
5. the data keyring in the backup opens with this environment's key passphrase (or the keyring
   comes from ``TONGBAN_DATA_KEYRING_JSON``) — else :class:`~gateway.errors.KeyFileError`.

Then it writes the files with their recorded modes (never wider than 0600 for a secret; new
directories 0700), restores the database (a file copy for SQLite; ``pg_restore`` in one transaction
for PostgreSQL), migrates an older backup forward to the software's head revision (and says so),
gives back the outbox leases the snapshot caught (the workers that held them are gone; their rows
would otherwise wait for the lease to run out), and opens the node with
:func:`gateway.node.open_node`: configuration and database must name the same node and the schema
must be at head. If any of that fails, what it wrote is removed again.

The configuration is restored byte for byte and its paths are resolved against the new directory,
so relative paths (the default) land inside it; a path configured as absolute is restored to that
same absolute path, and refused if something is already there. ``database_url`` names where the
database goes when it is not where the configuration (with ``TONGBAN_DATABASE_URL``) says; the
node must then be started with that URL too — the result says so.

Errors name roles, files, revisions and node ids only: a backup holds no personal data in clear,
and nothing from the database is ever quoted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, MetaData, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from gateway import config as config_mod
from gateway.config import NodeConfig
from gateway.errors import (
    BackupInvalid,
    BackupToolUnusable,
    ConfigError,
    RestoreRefused,
    SchemaOutOfDate,
    StorageError,
)
from gateway.exchange import outbox
from gateway.node import open_node, software_version
from gateway.store.db import SCRIPT_LOCATION, current_revision, make_engine, migrate
from gateway.store.keyring import ENV_KEYRING_JSON, DataKeyring
from gateway.store.schema import node_meta
from gateway.store.schema import outbox as outbox_table

log = logging.getLogger(__name__)

FORMAT = "tongban-backup/1"
MANIFEST = "manifest.json"
SQLITE_SNAPSHOT = "database/node.sqlite3"
PG_SNAPSHOT = "database/node.pgdump"
COUNTY_CA_DIR = "county-ca"  # gateway.county.certs.CA_DIR (a test holds them equal)
PENDING_SUFFIX = ".new"  # keys waiting for a rotation response (keys/enrol.py)

# The files a configuration names: role (the setting), NodeConfig attribute, secret?
CONFIGURED: tuple[tuple[str, str, bool], ...] = (
    ("keys.data_keyring", "data_keyring", True),
    ("keys.tls_key", "tls_key", True),
    ("keys.tls_certificate", "tls_certificate", False),
    ("keys.signing_key", "signing_key", True),
    ("keys.encryption_key", "encryption_key", True),
    ("trust.root", "trust_root", False),
    ("trust.state", "trust_state", False),
    ("trust.last_good", "last_good_directory", False),
)
_PENDING_KEYS = ("keys.tls_key", "keys.signing_key", "keys.encryption_key")
_SAFE_NAME = re.compile(r"^(files|database)/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_CHUNK = 1 << 20


# --- the manifest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupFile:
    """One file of a backup. ``location`` is where it lived: relative to the node's data directory,
    or absolute when configured so (empty for the database snapshot)."""

    role: str
    name: str  # inside the backup directory
    location: str
    mode: int
    secret: bool
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "name": self.name,
            "location": self.location,
            "mode": f"{self.mode:04o}",
            "secret": self.secret,
            "size": self.size,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, doc: Any) -> BackupFile:
        if not isinstance(doc, dict):
            raise BackupInvalid("a file entry of the manifest is not an object")
        try:
            entry = cls(
                role=_str(doc["role"]),
                name=_str(doc["name"]),
                location=_str(doc["location"]),
                mode=int(_str(doc["mode"]), 8),
                secret=bool(doc["secret"]),
                size=int(doc["size"]),
                sha256=_str(doc["sha256"]),
            )
        except (KeyError, ValueError, TypeError):
            raise BackupInvalid("a file entry of the manifest is incomplete") from None
        if not _SAFE_NAME.match(entry.name) or ".." in entry.name.split("/"):
            raise BackupInvalid(f"the manifest names a file outside the backup ({entry.role})")
        if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256) or entry.size < 0 or not 0 <= entry.mode <= 0o777:
            raise BackupInvalid(f"the manifest entry of {entry.role} is malformed")
        return entry


@dataclass(frozen=True)
class Manifest:
    """What a backup holds. It never holds a database URL (it may carry a password)."""

    node_id: str
    division: str
    schema_revision: str
    created_at: str
    database: str  # "sqlite" or "postgresql"
    snapshot_tool: str  # "sqlite3 online backup" or "pg_dump (PostgreSQL) 15.20"
    software_version: str
    files: tuple[BackupFile, ...]
    keyring_from_environment: bool = False  # TONGBAN_DATA_KEYRING_JSON: the keyring is not in the backup
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "node_id": self.node_id,
            "division": self.division,
            "schema_revision": self.schema_revision,
            "created_at": self.created_at,
            "database": self.database,
            "snapshot_tool": self.snapshot_tool,
            "software_version": self.software_version,
            "keyring_from_environment": self.keyring_from_environment,
            "files": [f.to_json() for f in self.files],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict):
            raise BackupInvalid("the manifest is not a JSON object")
        if doc.get("format") != FORMAT:
            raise BackupInvalid(f"the manifest is not of format {FORMAT}")
        files = doc.get("files")
        if not isinstance(files, list):
            raise BackupInvalid("the manifest lists no files")
        try:
            manifest = cls(
                node_id=_str(doc["node_id"]),
                division=_str(doc["division"]),
                schema_revision=_str(doc["schema_revision"]),
                created_at=_str(doc["created_at"]),
                database=_str(doc["database"]),
                snapshot_tool=_str(doc["snapshot_tool"]),
                software_version=_str(doc["software_version"]),
                files=tuple(BackupFile.from_json(f) for f in files),
                keyring_from_environment=bool(doc.get("keyring_from_environment", False)),
            )
        except (KeyError, TypeError):
            raise BackupInvalid("the manifest is incomplete") from None
        if manifest.database not in ("sqlite", "postgresql"):
            raise BackupInvalid("the manifest names an unknown database kind")
        roles = [f.role for f in manifest.files]
        names = [f.name for f in manifest.files]
        if len(set(roles)) != len(roles) or len(set(names)) != len(names):
            raise BackupInvalid("the manifest lists a file twice")
        if roles.count("config") != 1 or roles.count("database") != 1:
            raise BackupInvalid("the manifest lacks the configuration or the database snapshot")
        return manifest

    def file(self, role: str) -> BackupFile | None:
        return next((f for f in self.files if f.role == role), None)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


# --- helpers -----------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never replacing a file) with ``mode``, whatever the umask, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)


def _relative_location(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return ScriptDirectory.from_config(cfg)


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this software's migrations."""
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _kind(url: str) -> str:
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigError("the database URL cannot be parsed") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"backups support SQLite and PostgreSQL databases, not {backend}")
    return backend


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ConfigError("the SQLite database is not a file: nothing to back up or restore")
    return Path(database)


def masked_url(url: str) -> str:
    """A database URL fit to print: the password, if any, replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


# --- PostgreSQL client tools ---------------------------------------------------------------------


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment that carries it (a
    password on a command line is visible to every user of the machine)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    _, sep, rest = url.partition("://")  # postgresql:// or SQLAlchemy's postgresql+psycopg://
    if not sep:
        raise ConfigError("the PostgreSQL URL cannot be parsed")
    params = {k: str(v) for k, v in conninfo_to_dict("postgresql://" + rest).items() if v is not None}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env


def _tool(tool: str) -> tuple[str, str, int]:
    """The client tool's path, its version line and major version (``BackupToolUnusable`` if missing)."""
    path = shutil.which(tool)
    if path is None:
        raise BackupToolUnusable(f"{tool} is not installed (Debian: apt-get install postgresql-client)")
    try:
        argv = [path, "--version"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout  # noqa: S603 - fixed argv
    except (OSError, subprocess.SubprocessError):
        raise BackupToolUnusable(f"{tool} --version failed") from None
    found = re.search(r"(\d+)(?:\.(\d+))?", out)
    if found is None:
        raise BackupToolUnusable(f"cannot read the version of {tool}")
    return path, out.strip(), int(found.group(1))


def _server_major(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(str(conn.execute(text("SHOW server_version_num")).scalar_one())) // 10000
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot connect to the PostgreSQL database ({type(exc).__name__})") from None
    finally:
        engine.dispose()


def _run_tool(argv: list[str], env: Mapping[str, str], what: str) -> None:
    """Run a PostgreSQL client tool; on failure raise ``StorageError`` with its first error line,
    every quoted value in it masked (an error about a row may quote the row)."""
    try:
        # The argv is ours (no shell); the connection string is one argument, without the password.
        done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as exc:
        raise BackupToolUnusable(f"{what} could not be started ({exc.strerror})") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "")
        first = re.sub(r'"[^"]*"', '"…"', first)
        first = re.sub(r"\([^)]*\)=\([^)]*\)", "(…)=(…)", first)[:240]
        raise StorageError(f"{what} failed (exit {done.returncode}): {first}")


# --- backup --------------------------------------------------------------------------------------------


def _node_files(cfg: NodeConfig) -> Iterator[tuple[str, Path, bool]]:
    """Every file of the node besides the database: (role, path, secret), those that exist."""
    yield "config", cfg.path, False
    for role, attr, secret in CONFIGURED:
        path: Path = getattr(cfg, attr)
        if role == "keys.data_keyring" and os.environ.get(ENV_KEYRING_JSON):
            continue  # the keyring comes from a secret store, not from this file
        if path.is_file():
            yield role, path, secret
    for role in _PENDING_KEYS:
        attr = next(a for r, a, _ in CONFIGURED if r == role)
        pending = Path(str(getattr(cfg, attr)) + PENDING_SUFFIX)
        if pending.is_file():
            yield role + PENDING_SUFFIX, pending, True
    ca = cfg.base_dir / COUNTY_CA_DIR
    if ca.is_dir():
        for path in sorted(p for p in ca.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            rel = path.relative_to(ca).as_posix()
            yield f"{COUNTY_CA_DIR}/{rel}", path, path.name.endswith("key.pem")


def _snapshot_sqlite(cfg: NodeConfig, out: Path) -> tuple[dict[str, str], str | None]:
    """Copy the live SQLite database with the online backup API; return its node identity and
    schema revision, read from the snapshot itself."""
    source_path = _sqlite_path(cfg.database_url)
    if not source_path.is_file():
        raise StorageError(f"the SQLite database {source_path} does not exist")
    out.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(source_path)  # only read: the backup API copies from it
        dst = sqlite3.connect(out)
        try:
            src.execute("PRAGMA busy_timeout=10000")
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            meta = dict(dst.execute("SELECT key, value FROM node_meta").fetchall())
            revision = dst.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise StorageError(f"the SQLite snapshot failed ({type(exc).__name__})") from None
    os.chmod(out, 0o600)
    return {str(k): str(v) for k, v in meta.items()}, (str(revision[0]) if revision else None)


def _snapshot_postgresql(cfg: NodeConfig, out: Path) -> tuple[dict[str, str], str | None, str]:
    """``pg_dump --format=custom`` of the node's database; return its identity, revision and the
    tool's version line. Refuses a pg_dump older than the server (it would refuse anyway, less
    clearly)."""
    pg_dump, version, client = _tool("pg_dump")
    server = _server_major(cfg.database_url)
    if client < server:
        raise BackupToolUnusable(
            f"pg_dump {client} is older than the PostgreSQL server {server}: install pg_dump {server}"
        )
    engine = make_engine(cfg.database_url)
    try:
        with engine.connect() as conn:
            meta = {r.key: r.value for r in conn.execute(select(node_meta.c.key, node_meta.c.value))}
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot read the node database ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    conninfo, env = _libpq(cfg.database_url)
    out.parent.mkdir(mode=0o700, exist_ok=True)
    _run_tool(
        [pg_dump, "--format=custom", "--no-password", f"--file={out}", f"--dbname={conninfo}"],
        env,
        "pg_dump",
    )
    os.chmod(out, 0o600)
    return meta, revision, version


def create_backup(cfg: NodeConfig, out_dir: Path, *, now: datetime | None = None) -> Manifest:
    """Back up the node of ``cfg`` into ``out_dir`` (which must not exist, or be empty).

    Copies the configuration and every key, certificate and trust file the node has, byte for byte
    (sealed keys stay sealed), and a consistent snapshot of its database, then writes the manifest
    last. Raises ``ConfigError`` (``out_dir`` not empty; the database belongs to another node; no
    data keyring), ``BackupToolUnusable`` (pg_dump missing or older than the server),
    ``StorageError`` (the snapshot failed). A failed backup leaves no manifest.
    """
    kind = _kind(cfg.database_url)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} exists and is not empty; a backup goes into a new directory")
    keyring_from_env = bool(os.environ.get(ENV_KEYRING_JSON))
    if not keyring_from_env and not cfg.data_keyring.is_file():
        raise ConfigError(f"data keyring file not found: {cfg.data_keyring}")
    created = not out_dir.exists()
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    out_dir.chmod(0o700)
    try:
        try:
            manifest = _write_backup(cfg, out_dir, kind, keyring_from_env, now)
        except OSError as exc:
            raise StorageError(f"cannot write the backup ({exc.strerror}: {exc.filename})") from None
    except BaseException:
        # Never leave half a backup (it holds sealed keys) beside the operator's good ones.
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            for child in out_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
        raise
    log.info(
        "backup of node %s: %d file(s), %s database at revision %s",
        cfg.node_id,
        len(manifest.files) - 1,
        kind,
        manifest.schema_revision,
    )
    return manifest


def _write_backup(cfg: NodeConfig, out_dir: Path, kind: str, keyring_from_env: bool, now: datetime | None) -> Manifest:
    (out_dir / "files").mkdir(mode=0o700)
    base = cfg.base_dir
    entries: list[BackupFile] = []
    for role, path, secret in _node_files(cfg):
        data = path.read_bytes()
        name = f"files/{role}"
        target = out_dir / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(target, data)
        location = config_mod.CONFIG_FILE if role == "config" else _relative_location(path, base)
        entries.append(
            BackupFile(
                role=role,
                name=name,
                location=location,
                mode=path.stat().st_mode & 0o777,
                secret=secret,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    if kind == "sqlite":
        name = SQLITE_SNAPSHOT
        meta, revision = _snapshot_sqlite(cfg, out_dir / name)
        tool = f"sqlite3 online backup (SQLite {sqlite3.sqlite_version})"
    else:
        name = PG_SNAPSHOT
        meta, revision, tool = _snapshot_postgresql(cfg, out_dir / name)
    if meta.get("node_id") != cfg.node_id or meta.get("division") != cfg.division:
        raise ConfigError("the database belongs to a different node than this configuration names")
    if revision is None:
        raise StorageError("the database has no schema revision: it was never migrated")
    size, digest = _sha256_file(out_dir / name)
    entries.append(BackupFile("database", name, "", 0o600, True, size, digest))
    manifest = Manifest(
        node_id=cfg.node_id,
        division=cfg.division,
        schema_revision=revision,
        created_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        database=kind,
        snapshot_tool=tool,
        software_version=software_version(),
        files=tuple(entries),
        keyring_from_environment=keyring_from_env,
    )
    body = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    _write_private(out_dir / (MANIFEST + ".tmp"), body)
    os.replace(out_dir / (MANIFEST + ".tmp"), out_dir / MANIFEST)  # the commit point
    return manifest


# --- restore -----------------------------------------------------------------------------------------


def read_manifest(backup_dir: Path) -> Manifest:
    """The manifest of ``backup_dir`` (``BackupInvalid`` when absent or malformed)."""
    try:
        raw = (backup_dir / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BackupInvalid(f"{backup_dir} has no {MANIFEST}: not a backup, or one that did not finish") from None
    except OSError as exc:
        raise BackupInvalid(f"cannot read {MANIFEST} ({exc.strerror})") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BackupInvalid(f"{MANIFEST} is not JSON") from None
    return Manifest.from_json(doc)


def verify_backup(backup_dir: Path) -> Manifest:
    """Read the manifest and check every file it lists: present, a regular file inside the backup,
    of its size and SHA-256. Returns the manifest or raises ``BackupInvalid`` naming the first
    file that fails (by role; never its content)."""
    manifest = read_manifest(backup_dir)
    root = backup_dir.resolve()
    for entry in manifest.files:
        path = backup_dir / entry.name
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            raise BackupInvalid(f"{entry.name} ({entry.role}) is not a file inside the backup")
        if not path.is_file():
            raise BackupInvalid(f"{entry.name} ({entry.role}) is missing")
        size, digest = _sha256_file(path)
        if size != entry.size or digest != entry.sha256:
            raise BackupInvalid(f"{entry.name} ({entry.role}) does not match its SHA-256 in the manifest")
    return manifest


@dataclass(frozen=True)
class RestoredFile:
    role: str
    path: Path


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_backup` did. ``migrated_from`` is the backup's revision when the
    database was migrated forward; ``database_url_differs`` when the node must be started with the
    URL given to the restore (``TONGBAN_DATABASE_URL``), its configuration naming another."""

    manifest: Manifest
    config_path: Path
    database: str
    database_url: str
    schema_revision: str
    migrated_from: str | None
    database_url_differs: bool
    files: tuple[RestoredFile, ...] = field(default=())
    leases_released: int = 0


def _destination(cfg: NodeConfig, data_dir: Path, entry: BackupFile) -> Path:
    if entry.role == "config":
        return data_dir / config_mod.CONFIG_FILE
    role = entry.role.removesuffix(PENDING_SUFFIX)
    attr = next((a for r, a, _ in CONFIGURED if r == role), None)
    if attr is not None:
        path: Path = getattr(cfg, attr)
        return Path(str(path) + PENDING_SUFFIX) if entry.role.endswith(PENDING_SUFFIX) else path
    if entry.role.startswith(COUNTY_CA_DIR + "/"):
        rel = entry.role.removeprefix(COUNTY_CA_DIR + "/")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise BackupInvalid(f"the manifest entry of {entry.role} leaves the data directory")
        return cfg.base_dir / COUNTY_CA_DIR / rel
    raise BackupInvalid(f"the manifest names a file of unknown role {entry.role}")


def _pg_is_empty(url: str) -> bool:
    engine = make_engine(url)
    query = text(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'"
    )
    try:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) == 0
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot connect to the target PostgreSQL database ({type(exc).__name__}); create it empty first"
        ) from None
    finally:
        engine.dispose()


def _pg_clear(url: str) -> None:
    """Remove what a failed restore put into a database that was empty before it."""
    engine = make_engine(url)
    try:
        md = MetaData()
        md.reflect(engine)
        md.drop_all(engine)
    except SQLAlchemyError:
        log.warning("restore: could not empty the target database again after a failure")
    finally:
        engine.dispose()


class _Undo:
    """What a restore wrote, removed again (newest first) if it does not finish."""

    def __init__(self) -> None:
        self.files: list[Path] = []
        self.dirs: list[Path] = []
        self.pg_url: str | None = None

    def mkdirs(self, path: Path) -> None:
        missing = []
        for parent in (path, *path.parents):
            if parent.exists():
                break
            missing.append(parent)
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            d.chmod(0o700)
            self.dirs.append(d)

    def run(self) -> None:
        for path in reversed(self.files):
            for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
                with contextlib.suppress(OSError):
                    p.unlink()
        for d in reversed(self.dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        if self.pg_url is not None:
            _pg_clear(self.pg_url)


def restore_backup(backup_dir: Path, data_dir: Path, *, database_url: str | None = None) -> RestoreResult:
    """Restore the backup in ``backup_dir`` as a node in ``data_dir`` (see the module docstring for
    the checks, in order). ``database_url``: where the database goes (an empty PostgreSQL database,
    or a SQLite file that does not exist yet); by default where the restored configuration —
    with ``TONGBAN_DATABASE_URL`` if set — says.

    Raises ``BackupInvalid`` (incomplete or damaged backup), ``SchemaOutOfDate`` (made by newer
    software), ``RestoreRefused`` (a node, a file or a non-empty database is in the way; a database
    of another kind), ``BackupToolUnusable`` (pg_restore missing or too old), ``KeyFileError`` (the
    passphrase does not open the backup's keyring), ``StorageError`` (the database restore or
    migration failed; what was written is removed), ``ConfigError`` (configuration and database
    disagree). In every case but the last few, nothing was written.
    """
    manifest = verify_backup(backup_dir)
    if not known_revision(manifest.schema_revision):
        raise SchemaOutOfDate(
            f"the backup is at schema revision {manifest.schema_revision}, which this software does not know: "
            "restore it with the software that made it (or a newer one)"
        )
    target_cfg = data_dir / config_mod.CONFIG_FILE
    if target_cfg.exists():
        raise RestoreRefused(
            f"{data_dir} already holds a node ({config_mod.CONFIG_FILE}); restore into a new directory"
        )

    undo = _Undo()
    staged = data_dir / f".{config_mod.CONFIG_FILE}.restoring"
    try:
        try:
            return _restore(manifest, backup_dir, data_dir, database_url, undo, staged)
        except OSError as exc:
            raise StorageError(f"cannot restore ({exc.strerror}: {exc.filename})") from None
    except BaseException:
        undo.run()
        raise


def _restore(
    manifest: Manifest, backup_dir: Path, data_dir: Path, database_url: str | None, undo: _Undo, staged: Path
) -> RestoreResult:
    config_entry, snapshot = manifest.file("config"), manifest.file("database")
    if config_entry is None or snapshot is None:  # Manifest.from_json already refuses this
        raise BackupInvalid("the manifest lacks the configuration or the database snapshot")
    target_cfg = data_dir / config_mod.CONFIG_FILE
    undo.mkdirs(data_dir)
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()  # left by a restore that was killed
    _write_private(staged, (backup_dir / config_entry.name).read_bytes(), config_entry.mode)
    undo.files.append(staged)
    environ = dict(os.environ)
    if database_url:
        environ["TONGBAN_DATABASE_URL"] = database_url
    cfg = config_mod.load(staged, environ)
    configured_url = config_mod.load(staged, dict(os.environ)).database_url
    if (cfg.node_id, cfg.division) != (manifest.node_id, manifest.division):
        raise BackupInvalid("the configuration in the backup names another node than its manifest")
    kind = _kind(cfg.database_url)
    if kind != manifest.database:
        raise RestoreRefused(f"the backup holds a {manifest.database} database; the target is {kind}")

    # 4. Nothing in the way.
    plan = [(entry, _destination(cfg, data_dir, entry)) for entry in manifest.files if entry.role != "database"]
    for entry, dest in plan:
        if dest.exists() or dest.is_symlink():
            raise RestoreRefused(f"{dest} exists ({entry.role}); refusing to overwrite a node's file")
    sqlite_target: Path | None = None
    if kind == "sqlite":
        sqlite_target = _sqlite_path(cfg.database_url)
        for p in (sqlite_target, Path(f"{sqlite_target}-wal"), Path(f"{sqlite_target}-shm")):
            if p.exists():
                raise RestoreRefused(f"{p} exists; refusing to overwrite a database")
    else:
        pg_restore, _, client = _tool("pg_restore")
        made_by = re.search(r"(\d+)", manifest.snapshot_tool)
        if made_by is not None and client < int(made_by.group(1)):
            raise BackupToolUnusable(f"pg_restore {client} cannot read a dump of pg_dump {made_by.group(1)}")
        if not _pg_is_empty(cfg.database_url):
            raise RestoreRefused("the target PostgreSQL database is not empty; restore into an empty database")

    # 5. The keyring opens (the passphrase is right) before anything else is written.
    keyring_entry = manifest.file("keys.data_keyring")
    if keyring_entry is not None:
        DataKeyring.load(backup_dir / keyring_entry.name)
    elif not os.environ.get(ENV_KEYRING_JSON):
        raise ConfigError(f"the backup's data keyring came from {ENV_KEYRING_JSON}: set it to restore")

    # Write the files, then the database.
    restored: list[RestoredFile] = []
    for entry, dest in plan:
        if entry.role == "config":
            continue  # staged above, renamed last
        undo.mkdirs(dest.parent)
        mode = entry.mode & 0o600 if entry.secret else entry.mode
        _write_private(dest, (backup_dir / entry.name).read_bytes(), mode)
        undo.files.append(dest)
        restored.append(RestoredFile(entry.role, dest))
    if sqlite_target is not None:
        undo.mkdirs(sqlite_target.parent)
        undo.files.append(sqlite_target)
        _copy_new(backup_dir / snapshot.name, sqlite_target)
    else:
        conninfo, env = _libpq(cfg.database_url)
        undo.pg_url = cfg.database_url
        _run_tool(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                f"--dbname={conninfo}",
                str(backup_dir / snapshot.name),
            ],
            env,
            "pg_restore",
        )

    # Forward to head, then the node must open.
    engine = make_engine(cfg.database_url)
    try:
        revision = current_revision(engine)
        if revision != manifest.schema_revision:
            raise BackupInvalid("the restored database is not at the revision the manifest names")
        migrated_from = None
        if revision != _script().get_current_head():
            migrate(engine)
            migrated_from = revision
            log.info("restore: node %s database migrated from %s to head", cfg.node_id, revision)
        revision = current_revision(engine) or ""
        released = _release_leases(engine)
    finally:
        engine.dispose()
    node = open_node(cfg)
    node.engine.dispose()

    os.rename(staged, target_cfg)
    undo.files.remove(staged)
    undo.files.append(target_cfg)
    restored.insert(0, RestoredFile("config", target_cfg))
    log.info("restore: node %s restored (%d file(s), %s database)", cfg.node_id, len(restored), kind)
    return RestoreResult(
        manifest=manifest,
        config_path=target_cfg,
        database=kind,
        database_url=cfg.database_url,
        schema_revision=revision,
        migrated_from=migrated_from,
        database_url_differs=cfg.database_url != configured_url,
        files=tuple(restored),
        leases_released=released,
    )


def _release_leases(engine: Engine) -> int:
    """Give back the outbox leases the snapshot caught: the delivery workers that held them ran
    against the old database and will never finish their rounds, so their rows would otherwise
    wait for the lease to run out (``[exchange] lease_seconds``, 5 minutes by default) before the
    restored node sends them. No worker can be running on a database restored a moment ago."""
    with engine.connect() as conn:
        workers = [
            str(w)
            for (w,) in conn.execute(
                select(outbox_table.c.claimed_by).where(outbox_table.c.claimed_by.is_not(None)).distinct()
            )
        ]
    return sum(outbox.release(engine, worker) for worker in workers)


def _copy_new(src: Path, dest: Path) -> None:
    """Copy ``src`` to a new file ``dest`` (mode 0600), streaming, fsynced."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out, _CHUNK)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(dest, 0o600)
