"""``tongban backup``: back a node up, and restore it into a new directory (issue 8).

``create`` writes a backup directory — the configuration, every key, certificate and trust file
exactly as it is on disk (sealed keys stay sealed), a consistent database snapshot, and a manifest
with the SHA-256 of each — while the node runs. ``restore`` checks the whole backup first (a
damaged or incomplete one restores nothing), refuses to overwrite a node or to fill a non-empty
database, restores, migrates an older backup forward, and opens the node to check that its
configuration and database agree. See :mod:`gateway.backup` and docs/operators.md.

Exit codes: 0 done; 65 the backup is damaged or incomplete (``backup_invalid``); 74 the database
snapshot or restore failed, or the backup is from newer software (``schema_out_of_date``); 77 the
key passphrase does not open the backup's data keyring; 78 something is in the way
(``restore_refused``), ``pg_dump``/``pg_restore`` is missing or too old, or the configuration is
not valid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway import backup
from gateway import config as config_mod
from gateway.cli.node import add_config_argument, config_path


def _size(n: int) -> str:
    value, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


def _create(args: argparse.Namespace) -> int:
    cfg = config_mod.load(config_path(args))
    out = Path(args.out)
    manifest = backup.create_backup(cfg, out)
    snapshot = manifest.file("database")
    files = [f for f in manifest.files if f.role != "database"]
    print(f"backed up node {manifest.node_id} ({manifest.division}) to {out}")
    if snapshot is not None:
        print(
            f"  database: {manifest.database} at schema revision {manifest.schema_revision}, "
            f"{_size(snapshot.size)} ({manifest.snapshot_tool})"
        )
    print(f"  files:    {len(files)} — " + ", ".join(f.role for f in files))
    if manifest.keyring_from_environment:
        print("  the data keyring comes from TONGBAN_DATA_KEYRING_JSON and is NOT in the backup: keep it safe apart")
    print("the backup holds the node's sealed keys and data: keep it as safely as the node itself")
    print("(the key passphrase is not in it, and a restore needs it)")
    return 0


def _restore(args: argparse.Namespace) -> int:
    result = backup.restore_backup(Path(args.backup), Path(args.to), database_url=args.database_url)
    m = result.manifest
    print(f"restored node {m.node_id} ({m.division}) from the backup of {m.created_at}")
    print(f"  configuration: {result.config_path}")
    for f in result.files:
        if f.role != "config":
            print(f"  {f.role}: {f.path}")
    where = backup.masked_url(result.database_url)
    if result.migrated_from is not None:
        print(
            f"  database: {result.database} ({where}), migrated from schema revision {result.migrated_from} "
            f"to {result.schema_revision}"
        )
    else:
        print(f"  database: {result.database} ({where}) at schema revision {result.schema_revision}")
    if result.leases_released:
        print(
            f"  outbox: {result.leases_released} message(s) the old node was sending when the backup was "
            "taken are due again at once"
        )
    print("  checked: configuration and database name the same node, schema at head")
    if result.database_url_differs:
        print("the configuration names another database: start the node with TONGBAN_DATABASE_URL set to the URL")
        print(f"given here, or set [database] url in {result.config_path}; then:")
    else:
        print("next:")
    print(f"  tongban node serve --config {result.config_path}")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser(
        "backup",
        help="back up a node (configuration, sealed keys, database snapshot) and restore it",
        description=(
            "Back up a node while it runs, and restore it into a new directory. A backup holds the "
            "node's sealed keys and data (never the key passphrase): keep it as safely as the node."
        ),
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    create = sub.add_parser(
        "create",
        help="write a backup directory: configuration, key and trust files as they are, database snapshot",
        description=(
            "Copy the configuration and every key, certificate and trust file byte for byte, take a "
            "consistent database snapshot (SQLite online backup, or pg_dump --format=custom on "
            "PostgreSQL; pg_dump must not be older than the server), and write manifest.json with "
            "the SHA-256 of each file last. Works while the node runs."
        ),
    )
    add_config_argument(create)
    create.add_argument("--out", required=True, metavar="DIR", help="the backup directory (new, or empty)")
    create.set_defaults(handler=_create)

    restore = sub.add_parser(
        "restore",
        help="restore a backup into a new node directory (and an empty database)",
        description=(
            "Check every file of the backup against its manifest, then restore into --to (which "
            "must not hold a node) and the database (a new SQLite file, or an EMPTY PostgreSQL "
            "database), migrate an older backup to the current schema, and open the node to check "
            "configuration and database agree. Needs the key passphrase (TONGBAN_KEY_PASSPHRASE or "
            "TONGBAN_KEY_PASSPHRASE_FILE) to check the data keyring."
        ),
    )
    restore.add_argument("backup", help="the backup directory (tongban backup create --out)")
    restore.add_argument("--to", required=True, metavar="DIR", help="the node's new data directory")
    restore.add_argument(
        "--database-url",
        metavar="URL",
        help=(
            "where the database goes (default: the restored configuration's [database] url, or "
            "TONGBAN_DATABASE_URL when set); a PostgreSQL database must exist and be empty"
        ),
    )
    restore.set_defaults(handler=_restore)
