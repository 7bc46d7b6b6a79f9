"""``tongban id check``: validate resident ID numbers (GB 11643) from arguments or a file.

Output names the line and the rule broken, never the number itself, so it can be pasted into a
ticket without leaking personal data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import date

from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.errors import InvalidIdNumber


def _check(args: argparse.Namespace) -> int:
    table = DivisionTable.load_default()
    lines: Iterable[str] = args.numbers if args.numbers else sys.stdin
    bad = total = 0
    for position, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        total += 1
        try:
            idnumber.parse(line, today=date.today(), division_existed=table.existed)
        except InvalidIdNumber as exc:
            bad += 1
            print(f"{position}: invalid ({exc.reason.value}): {exc.detail}")
        else:
            if args.all:
                print(f"{position}: valid")
    print(f"{total - bad} valid, {bad} invalid", file=sys.stderr)
    return 0 if bad == 0 else 65


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("id", help="resident ID number tools")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    check = sub.add_parser(
        "check",
        help="validate ID numbers (arguments, or one per line on stdin); exit 65 if any is invalid",
    )
    check.add_argument("numbers", nargs="*", help="ID numbers (omit to read stdin)")
    check.add_argument("--all", action="store_true", help="also list the valid ones")
    check.set_defaults(handler=_check)
