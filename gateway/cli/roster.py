"""``tongban roster``: load a county's ledger into its node and count what is there.

``import`` reads JSON Lines in the shape of :mod:`gateway.domain.codec` (what ``tongban synth
--format jsonl`` writes). The county spreadsheet formats (CSV/XLSX with Chinese headers, SQL
sources) arrive with the adapters. Every row is validated; rejected rows are listed by line
number and reason (never by value) and the command exits 65 if any row was rejected, so a partial
import is never silent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from gateway import config as config_mod
from gateway.cli.node import add_config_argument, config_path
from gateway.domain.codec import record_from_json
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord, Provenance
from gateway.errors import InputError, InvalidRecord
from gateway.exchange.purposes import load_profiles
from gateway.exchange.rosters import send_migrant_roster
from gateway.node import open_node
from gateway.roster import intake
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore


def read_jsonl(stream: IO[str], *, source: str, node_id: str) -> Iterator[ChildRecord | InputError]:
    """Yield one record (re-stamped with this import's provenance) or one error per line."""
    now = datetime.now(UTC)
    for line_no, line in enumerate(stream, start=1):
        if not line.strip():
            yield InvalidRecord("empty line")
            continue
        try:
            record = record_from_json(json.loads(line))
        except ValueError:
            yield InvalidRecord("not a JSON object")
            continue
        except InputError as exc:
            yield exc
            continue
        stamp = Provenance(source=source, imported_at=now, node_id=node_id, source_row=line_no)
        yield dataclasses.replace(record, provenance=stamp)


def _import(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    node = open_node(config_mod.load(config_path(args)))
    table = DivisionTable.load_default()
    try:
        if args.file == "-":
            rows = read_jsonl(sys.stdin, source="jsonl:<stdin>", node_id=node.config.node_id)
            summary = intake(node.children, rows, period=period.label, table=table, today=date.today())
        else:
            path = Path(args.file)
            with path.open(encoding="utf-8-sig") as fh:
                rows = read_jsonl(fh, source=f"jsonl:{path.name}", node_id=node.config.node_id)
                summary = intake(node.children, rows, period=period.label, table=table, today=date.today())
    finally:
        node.engine.dispose()
    for rejection in summary.rejections:
        print(f"line {rejection.position}: rejected [{rejection.code}] {rejection.reason}", file=sys.stderr)
    kinds = ", ".join(f"{k.label_zh} {n}" for k, n in summary.by_kind.items() if n)
    print(
        f"period {summary.period}: accepted {summary.accepted} ({kinds or 'none'}), "
        f"re-routed {summary.rerouted}, rejected {summary.rejected}"
    )
    if summary.rejected:
        reasons = Counter(r.code for r in summary.rejections)
        print(
            "rejections by reason: " + ", ".join(f"{c} {n}" for c, n in reasons.most_common()),
            file=sys.stderr,
        )
        return 65
    return 0


def _summary(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    node = open_node(config_mod.load(config_path(args)))
    try:
        counts = node.children.counts_by_kind(period.label)
    finally:
        node.engine.dispose()
    print(f"{node.config.node_id} ({node.config.division}) period {period.label}")
    for kind in ChildKind:
        print(f"  {kind.label_zh:<6} {kind.value:<12} {counts[kind]:>8}")
    return 0


def _send(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    cfg = config_mod.load(config_path(args))
    node = open_node(cfg)
    try:
        trust = TrustStore.from_config(cfg)
        now = datetime.now(UTC)
        directory = trust.refresh(now) if cfg.directory_source else trust.current(now)
        passphrase = passphrase_from_env()
        summary = send_migrant_roster(
            node_id=cfg.node_id,
            period=period.label,
            children=node.children,
            engine=node.engine,
            keyring=node.keyring,
            directory=directory,
            profiles=load_profiles(),
            signer=Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
            encryption_key=read_encryption_key(cfg.encryption_key, passphrase),
            now=now,
            batch_size=args.batch_size,
        )
    finally:
        node.engine.dispose()
    for r in summary.rosters:
        print(
            f"{r.peer} ({r.registration_division}): {r.notices} notices in {r.batches} batch(es) + manifest, "
            f"{r.without_token} without ID token; roster {r.roster_id}"
        )
    for division, n in sorted(summary.unroutable.items()):
        print(f"{division}: {n} notices NOT queued — no active node serves this division", file=sys.stderr)
    print(
        f"period {summary.period}: {summary.envelopes} envelopes queued for delivery "
        "(the running node delivers them; see `tongban outbox list`)"
    )
    return 65 if summary.unroutable else 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("roster", help="import a county ledger into the node; count it")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    imp = sub.add_parser("import", help="import JSON Lines records (exit 65 if any row is rejected)")
    add_config_argument(imp)
    imp.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    imp.add_argument("file", help="JSON Lines file, or - for stdin")
    imp.set_defaults(handler=_import)

    send = sub.add_parser(
        "send",
        help="queue this period's migrant notices for every registration county concerned "
        "(exit 65 if a county has no node)",
    )
    add_config_argument(send)
    send.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    send.add_argument("--batch-size", type=int, default=1000, help="notices per signed envelope (default: %(default)s)")
    send.set_defaults(handler=_send)

    summ = sub.add_parser("summary", help="children stored for a period, by kind (no personal data)")
    add_config_argument(summ)
    summ.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    summ.set_defaults(handler=_summary)
