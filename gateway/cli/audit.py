"""``tongban audit``: check and read the node's tamper-evident audit trail (SPEC §7).

``verify`` walks the whole hash chain and exits 0 if it holds, printing the number of entries and
the head hash (record it elsewhere: a chain cut off at the end, or recomputed by someone with write
access to the database, can only be caught by comparing with a head recorded earlier). A broken
chain exits 77 and names the first entry that does not hold. ``tail`` prints the last entries.
Neither needs the node's key passphrase: the log holds references, never personal values.
"""

from __future__ import annotations

import argparse

from gateway import audit
from gateway.cli.node import add_config_argument, node_database


def _verify(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        count, head = audit.verify_entries(audit.entries(engine))
    finally:
        engine.dispose()
    print(f"audit log intact: {count} entr{'y' if count == 1 else 'ies'}")
    print(f"head: {head.hex()}")
    return 0


def _tail(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        rows = audit.tail(engine, args.n)
    finally:
        engine.dispose()
    for e in rows:
        at = e.at.isoformat(timespec="seconds").replace("+00:00", "Z")
        print(f"{e.seq:>8}  {at}  {e.actor}  {e.action}  {e.purpose}  {e.reference}  {e.detail}".rstrip())
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("audit", help="verify and read the tamper-evident audit trail")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    verify = sub.add_parser("verify", help="check the whole hash chain (exit 77 if it is broken)")
    add_config_argument(verify)
    verify.set_defaults(handler=_verify)

    tail = sub.add_parser("tail", help="show the last entries (references only, no personal data)")
    add_config_argument(tail)
    tail.add_argument("-n", type=int, default=20, help="how many entries (default: %(default)s)")
    tail.set_defaults(handler=_tail)
