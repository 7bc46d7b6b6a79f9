"""``tongban roster``: load a county's ledger into its node and count what is there.

``import`` reads JSON Lines in the shape of :mod:`gateway.domain.codec` (what ``tongban synth
--format jsonl`` writes) itself, and the files county staff really have — CSV and XLSX with the
national system's Chinese headers, other layouts through ``--mapping``, and SQL sources
(``--sql URL --query ...``) — through the readers registered in the entry point group
``tongban.readers`` (``adapters/``; see :mod:`gateway.sources`), so the gateway never imports them.

Every row is validated; good rows are stored in one transaction. Rejected rows are listed by row
number, column, code and reason (never by value) and written, with their cells, to a quarantine
CSV for the county to fix (mode 0600); warnings (invalid or inconsistent ID numbers) are listed
too. The command exits 65 if any row was rejected, so a partial import is never silent;
``--all-or-nothing`` stores nothing at all then.

``--household-register FILE [--register-mapping FILE]`` (CSV, XLSX and SQL ledgers: the reader
reads the register, see :mod:`gateway.sources`) stores with each record what the registration
county's household register (户籍登记) says of the child — ``single_birth``, sealed with the rest
of the record — which ``tongban reconcile run`` gives the matcher (``gateway.reconcile.service``).
The summary adds the register's counts and how many records are single births, have a sibling
born within a day, are not found or undecided: counts (and register row numbers), never a value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from array import array
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from tqdm import tqdm

from gateway import config as config_mod
from gateway.cli.node import acting_keys, add_config_argument, config_path
from gateway.domain.codec import record_from_json
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord, Provenance
from gateway.errors import InputError, InvalidRecord, ReaderUnavailable
from gateway.exchange.purposes import load_profiles
from gateway.exchange.roster_pages import roster_pool
from gateway.exchange.rosters import send_migrant_roster
from gateway.node import Node, open_node
from gateway.roster import IntakeSummary, intake
from gateway.sources import BirthCounts, BirthStatus, Quarantine, ReadRequest, Severity, find_reader


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


_TABULAR_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".xlsx": "xlsx", ".xlsm": "xlsx"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
_SHOWN_ISSUES = 20  # issue lines printed; the quarantine file has them all


class _AllOrNothing(Exception):
    """Raised inside the stored stream to roll the transaction back (``--all-or-nothing``)."""


def _source_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.sql:
        return "sql"
    if args.file is None:
        raise InputError("give a FILE to import, or --sql URL")
    if args.file == "-":
        return "jsonl"
    suffix = Path(args.file).suffix.lower()
    if suffix in _JSONL_SUFFIXES and args.mapping is None:
        return "jsonl"
    return _TABULAR_SUFFIXES.get(suffix, "csv")


def _import(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    fmt = _source_format(args)
    if args.register_mapping is not None and args.household_register is None:
        print("tongban roster import: --register-mapping needs --household-register", file=sys.stderr)
        return 2
    if args.household_register is not None and fmt == "jsonl":
        print(
            "tongban roster import: --household-register needs a CSV, XLSX or SQL ledger, not JSON Lines",
            file=sys.stderr,
        )
        return 2
    node = open_node(config_mod.load(config_path(args)))
    table = DivisionTable.load_default()
    try:
        if fmt == "jsonl":
            return _import_jsonl(args, node, period, table)
        return _import_rows(args, fmt, node, period, table)
    finally:
        node.engine.dispose()


def _import_jsonl(args: argparse.Namespace, node: Node, period: MonitoringPeriod, table: DivisionTable) -> int:
    today = date.today()

    def run(stream: IO[str], source: str) -> IntakeSummary:
        rows = read_jsonl(stream, source=source, node_id=node.config.node_id)
        return intake(
            node.children, rows, period=period.label, table=table, today=today, all_or_nothing=args.all_or_nothing
        )

    if args.file == "-":
        summary = run(sys.stdin, "jsonl:<stdin>")
    else:
        path = Path(args.file)
        with path.open(encoding="utf-8-sig") as fh:
            summary = run(fh, f"jsonl:{path.name}")
    if not summary.stored:
        print(f"period {period.label}: {summary.rejected} line(s) rejected; stored nothing (--all-or-nothing)")
        return 65
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


def _quarantine_path(args: argparse.Namespace) -> Path:
    if args.quarantine:
        return Path(args.quarantine)
    if args.file and args.file != "-":
        path = Path(args.file)
        return path.with_name(path.name + ".quarantine.csv")
    return Path("sql-import.quarantine.csv")


def _import_rows(args: argparse.Namespace, fmt: str, node: Node, period: MonitoringPeriod, table: DivisionTable) -> int:
    """CSV, XLSX and SQL through a ``tongban.readers`` reader; quarantine; one transaction."""
    today = date.today()
    reader = find_reader(fmt)
    request = ReadRequest(
        node_id=node.config.node_id,
        period=period,
        today=today,
        path=Path(args.file) if args.file else None,
        mapping=Path(args.mapping) if args.mapping else None,
        encoding=args.encoding,
        sql_url=args.sql,
        sql_query=args.query,
        household_register=Path(args.household_register) if args.household_register else None,
        register_mapping=Path(args.register_mapping) if args.register_mapping else None,
    )
    source = reader(request)
    register_line: str | None = getattr(source, "register_summary", None)  # None from a reader without it
    if request.household_register is not None and register_line is None:
        # Fail closed: storing the records without the answer asked for would look like success.
        raise ReaderUnavailable(f"the {fmt!r} reader does not read household registers")
    quarantine = Quarantine(_quarantine_path(args), source.headers)
    rejected: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    births: Counter[BirthStatus] = Counter()
    rows_of_records = array("q")  # position in the stored stream -> source row number
    shown = rows_rejected = 0

    def records() -> Iterator[ChildRecord]:
        nonlocal shown, rows_rejected
        progress = tqdm(source.rows(), unit="row", leave=False, file=sys.stderr, disable=True if args.quiet else None)
        try:
            for row in progress:
                if row.issues:
                    quarantine.write(row)
                for issue in row.issues:
                    counter = warnings if issue.severity is Severity.WARNING else rejected
                    counter[issue.code] += 1
                    if shown < _SHOWN_ISSUES:
                        print(issue.line(), file=sys.stderr)
                        shown += 1
                if row.record is None:
                    rows_rejected += 1
                else:
                    rows_of_records.append(row.row)
                    if row.birth is not None:
                        births[row.birth] += 1
                    yield row.record
        finally:
            progress.close()
        if rejected and args.all_or_nothing:
            raise _AllOrNothing

    try:
        summary: IntakeSummary | None = intake(node.children, records(), period=period.label, table=table, today=today)
    except _AllOrNothing:
        summary = None
    finally:
        quarantine.close()
    for rejection in summary.rejections if summary else ():
        # validate() already passed in the reader, so this is a safety net, reported all the same.
        row_no = rows_of_records[rejection.position - 1]
        print(f"row {row_no}: rejected [{rejection.code}] {rejection.reason}", file=sys.stderr)
        rejected[rejection.code] += 1
        rows_rejected += 1
    issues = sum(rejected.values()) + sum(warnings.values())
    if issues > shown:
        print(f"... {issues - shown} more issue(s) in the quarantine file", file=sys.stderr)
    if summary is None:
        print(f"{source.source}: period {period.label}: stored nothing (--all-or-nothing: a row was rejected)")
    else:
        kinds = ", ".join(f"{k.label_zh} {n}" for k, n in summary.by_kind.items() if n)
        print(
            f"{source.source}: period {summary.period}: accepted {summary.accepted} ({kinds or 'none'}), "
            f"re-routed {summary.rerouted}, rejected {rows_rejected}, warnings {sum(warnings.values())}"
        )
        if register_line is not None:
            print(f"household register: {register_line}")
            print(f"single births: {BirthCounts.of(births).describe('records')}")
    if rejected:
        print("rejections by code: " + ", ".join(f"{c} {n}" for c, n in rejected.most_common()))
    if warnings:
        print("warnings by code: " + ", ".join(f"{c} {n}" for c, n in warnings.most_common()))
    if quarantine.lines:
        print(f"quarantine: {quarantine.path} ({quarantine.lines} line(s); it holds the rows' personal data)")
    return 65 if rejected else 0


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
    # [exchange] roster_workers: the pool starts only for a roster of more than one batch, and
    # this process builds pages until its workers are ready (gateway.exchange.roster_pages).
    try:
        with roster_pool(cfg.roster_workers) as workers:
            now = datetime.now(UTC)
            keys = acting_keys(cfg, now)
            summary = send_migrant_roster(
                node_id=cfg.node_id,
                period=period.label,
                children=node.children,
                engine=node.engine,
                keyring=node.keyring,
                directory=keys.directory,
                profiles=load_profiles(),
                signer=keys.signer,
                encryption_key=keys.encryption_key,
                now=now,
                batch_size=args.batch_size,
                workers=workers,
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

    imp = sub.add_parser(
        "import",
        help="import a ledger: JSON Lines, CSV, XLSX or SQL (exit 65 if any row is rejected)",
        description=(
            "Import a county ledger. CSV (UTF-8, UTF-8 with BOM, GBK/GB18030) and XLSX files with the national "
            "system's Chinese headers are recognised; other layouts need --mapping. Rejected rows and warnings go "
            "to a quarantine CSV (default: FILE.quarantine.csv, mode 0600)."
        ),
    )
    add_config_argument(imp)
    imp.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    imp.add_argument("file", nargs="?", help="the ledger file (.jsonl, .csv, .xlsx), or - for JSON Lines on stdin")
    imp.add_argument("--format", choices=("jsonl", "csv", "xlsx", "sql"), help="override the format guessed from FILE")
    imp.add_argument("--mapping", metavar="TOML", help="mapping file: headers, sheet, header row, value maps")
    imp.add_argument("--encoding", help="CSV text encoding (default: detected; utf-8-sig, utf-8 or gb18030)")
    imp.add_argument("--sql", metavar="URL", help="import from a SQL database (SQLAlchemy URL) instead of a file")
    imp.add_argument("--query", metavar="SELECT", help="with --sql: the query (or name a table in --mapping)")
    imp.add_argument("--quarantine", metavar="FILE", help="where rejected rows go (default: FILE.quarantine.csv)")
    imp.add_argument(
        "--all-or-nothing", action="store_true", help="store nothing if any row is rejected (still exits 65)"
    )
    imp.add_argument(
        "--household-register",
        metavar="FILE",
        help="the registration county's household register (户籍登记: 户号, 姓名, 公民身份号码, 出生日期; CSV/XLSX): "
        "each record is stored with whether it is a single birth, for reconciliation (CSV, XLSX, SQL ledgers; "
        "see docs/county-ledgers.md)",
    )
    imp.add_argument(
        "--register-mapping",
        metavar="TOML",
        help="column mapping file for the household register (--mapping does not apply to it)",
    )
    imp.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
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
