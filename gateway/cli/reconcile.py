"""``tongban reconcile``: a monitoring period's reconciliation (SPEC §5), and its report.

``run`` works on any node, in both of its roles: it matches the complete rosters received (as
registration place), reads the answers received to its own notices (as residence place), stores
the findings — replacing the period's previous run — and queues the ``match_result`` answers it
owes each sender (delivered by the running node). It prints counts by finding and peer.

``report`` is for the node's own staff about its own ledger. ``--format table`` (the default)
prints counts by finding and peer; ``csv`` and ``xlsx`` write every finding to ``--out`` (mode 0600)
with Chinese labels (English beside them in the header), the local record id and source row, and
the child's name from this node's ledger — the only place a name appears: never in the terminal
or a log. Writing such a file is recorded in the audit trail (a read of personal data).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from gateway import config as config_mod
from gateway.cli.node import acting_keys, add_config_argument, config_path
from gateway.domain.period import MonitoringPeriod
from gateway.errors import InputError
from gateway.exchange.purposes import load_profiles
from gateway.node import open_node
from gateway.reconcile import store
from gateway.reconcile.findings import Code, Role, label
from gateway.reconcile.service import ReportRow, audit_report, report_rows, run

# Report columns: (Chinese header, English header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("核对结果", "finding"),
    ("结果代码", "code"),
    ("本节点角色", "role"),
    ("涉及方", "side"),
    ("本地记录编号", "record id"),
    ("来源", "source"),
    ("来源行号", "source row"),
    ("姓名", "name"),
    ("对方节点", "peer node"),
    ("对方县", "peer county"),
    ("对方区划代码", "peer division"),
    ("对方引用", "peer reference"),
    ("说明", "detail"),
    ("核对结果（英文）", "finding (English)"),
)
_ROLE_ZH = {Role.REGISTRATION: "户籍地", Role.RESIDENCE: "居住地", Role.LEDGER: "本地台账"}
_SIDE_ZH = {"local": "本地", "peer": "对方", "both": "双方"}


def _print_counts(counts: dict[tuple[str, str], int]) -> None:
    by_code: Counter[str] = Counter()
    for (code, _), n in counts.items():
        by_code[code] += n
    if not by_code:
        print("no findings")
        return
    print(f"{'finding':<34} {'count':>7}  label")
    for code in Code:
        if by_code.get(code.value):
            zh, _ = label(code, Role.REGISTRATION)
            print(f"{code.value:<34} {by_code[code.value]:>7}  {zh}")
    print()
    print(f"{'finding':<34} {'peer':<24} {'count':>7}")
    for (code, peer), n in sorted(counts.items()):
        print(f"{code:<34} {peer or '-':<24} {n:>7}")


def _run(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    cfg = config_mod.load(config_path(args))
    node = open_node(cfg)
    try:
        now = datetime.now(UTC)
        keys = acting_keys(cfg, now)
        summary = run(
            node=node,
            period=period.label,
            directory=keys.directory,
            encryption_key=keys.encryption_key,
            signer=keys.signer,
            profiles=load_profiles(),
            thresholds=cfg.thresholds,
            now=now,
            send=not args.no_send,
        )
    finally:
        node.engine.dispose()
    print(f"{cfg.node_id} ({cfg.division}) period {summary.period}")
    for sender, n in sorted(summary.rosters_matched.items()):
        print(f"as registration place: roster of {sender} matched ({n} notices)")
    if summary.rosters_incomplete:
        print(f"as registration place: {summary.rosters_incomplete} roster(s) incomplete or unusable")
    for peer, n in sorted(summary.answers_read.items()):
        print(f"as residence place: {n} answer(s) from {peer} read")
    print()
    _print_counts({(code.value, peer): n for (code, peer), n in summary.findings.items()})
    if summary.replies_queued:
        print()
        for peer, n in sorted(summary.replies_queued.items()):
            print(f"answers to {peer}: {n} envelope(s) queued for delivery")
    return 0


def _cells(row: ReportRow) -> list[str]:
    f = row.finding
    return [
        row.label_zh,
        f.code.value,
        _ROLE_ZH[f.role],
        _SIDE_ZH[f.side.value],
        f.record_ref,
        row.source,
        "" if row.source_row is None else str(row.source_row),
        row.name,
        f.peer,
        row.peer_county,
        f.peer_division,
        f.peer_ref,
        f.detail,
        row.label_en,
    ]


def _headers() -> list[str]:
    return [f"{zh} ({en})" for zh, en in COLUMNS]


def _private_file(path: Path) -> int:
    """Open ``path`` for writing, mode 0600 (it holds names from the ledger)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_csv(rows: Iterable[ReportRow], path: Path) -> int:
    """UTF-8 with BOM (what Excel opens correctly), header in Chinese with English beside it."""
    n = 0
    with os.fdopen(_private_file(path), "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_headers())
        for row in rows:
            writer.writerow(_cells(row))
            n += 1
    return n


def write_xlsx(rows: Iterable[ReportRow], path: Path, *, title: str) -> int:
    from openpyxl import Workbook  # imported here: only this format needs it

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title[:31])
    sheet.append(_headers())
    n = 0
    for row in rows:
        cells: list[str | int] = list(_cells(row))
        if row.source_row is not None:
            cells[6] = row.source_row
        sheet.append(cells)
        n += 1
    buffer = io.BytesIO()
    workbook.save(buffer)
    with os.fdopen(_private_file(path), "wb") as fh:
        fh.write(buffer.getvalue())
    return n


def _report(args: argparse.Namespace) -> int:
    period = MonitoringPeriod.parse(args.period)
    if args.format != "table" and not args.out:
        raise InputError(f"--format {args.format} needs --out FILE (the report holds names: never the terminal)")
    cfg = config_mod.load(config_path(args))
    node = open_node(cfg)
    try:
        counts = store.counts(node.engine, period.label)
        written = 0
        if args.format == "csv":
            written = write_csv(report_rows(node, period.label), Path(args.out))
        elif args.format == "xlsx":
            written = write_xlsx(report_rows(node, period.label), Path(args.out), title=f"核对结果 {period.label}")
        if args.format != "table":
            audit_report(node, period.label, rows=written, fmt=args.format)
    finally:
        node.engine.dispose()
    print(f"{cfg.node_id} ({cfg.division}) period {period.label}")
    _print_counts(counts)
    if args.format != "table":
        print(f"\nreport: {args.out} ({written} finding(s); it holds names from the ledger, mode 0600)")
    elif not counts:
        print("(run `tongban reconcile run` first)", file=sys.stderr)
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("reconcile", help="reconcile a monitoring period with the peer counties; report findings")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    r = sub.add_parser(
        "run",
        help="match received rosters, read received answers, store findings, queue answers",
        description=(
            "As registration place: match each sender's latest complete roster against this node's ledger and "
            "queue the answers (match_result). As residence place: read the answers received to this node's "
            "notices. Store the findings, replacing this period's previous run. Thresholds from [matching]."
        ),
    )
    add_config_argument(r)
    r.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    r.add_argument("--no-send", action="store_true", help="store the findings but queue no answers")
    r.set_defaults(handler=_run)

    rep = sub.add_parser(
        "report",
        help="the period's findings: counts on the terminal, every finding in a CSV or XLSX file",
    )
    add_config_argument(rep)
    rep.add_argument("--period", required=True, help="monitoring period label, e.g. 2026Q3")
    rep.add_argument("--format", choices=("table", "csv", "xlsx"), default="table", help="default: %(default)s")
    rep.add_argument("--out", metavar="FILE", help="where the csv or xlsx report goes (mode 0600)")
    rep.set_defaults(handler=_report)
