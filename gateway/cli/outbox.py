"""``tongban outbox``: what this node has queued, delivered and given up on (SPEC §4).

``list`` prints the counts per peer and status, then the newest messages (optionally one status or
one peer): message id, peer, purpose, status, attempts, when, and for a dead letter or a message
being retried the reason — a code and a public message, never personal data. Dead letters are
never dropped: they stay listed here until an operator deals with them.
"""

from __future__ import annotations

import argparse

from gateway.cli.node import add_config_argument, node_database, utc_text
from gateway.exchange import outbox


def _list(args: argparse.Namespace) -> int:
    status = outbox.Status(args.status) if args.status else None
    _, engine = node_database(args)
    try:
        counts = outbox.counts(engine)
        rows = outbox.list_messages(engine, status=status, peer=args.peer, limit=args.limit)
    finally:
        engine.dispose()
    peers = sorted({peer for peer, _ in counts})
    print(f"{'peer':<24} {'queued':>8} {'delivered':>10} {'dead':>6}")
    for peer in peers:
        n = {s: counts.get((peer, s), 0) for s in outbox.Status}
        print(f"{peer:<24} {n[outbox.Status.QUEUED]:>8} {n[outbox.Status.DELIVERED]:>10} {n[outbox.Status.DEAD]:>6}")
    if not peers:
        print("(the outbox is empty)")
    if rows:
        print()
    for r in rows:
        when = r.delivered_at if r.status is outbox.Status.DELIVERED else r.next_attempt_at
        line = f"{r.message_id}  {r.peer}  {r.purpose}  {r.status.value}  attempts={r.attempts}  {utc_text(when)}"
        if r.status is not outbox.Status.DELIVERED and r.last_error:
            line += f"  reason: {r.last_error}"
        print(line)
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("outbox", help="messages queued, delivered and dead-lettered by this node")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    lst = sub.add_parser("list", help="counts per peer and status, then the newest messages")
    add_config_argument(lst)
    lst.add_argument("--status", choices=[s.value for s in outbox.Status], help="only messages in this status")
    lst.add_argument("--peer", help="only messages to this node id")
    lst.add_argument("--limit", "-n", type=int, default=100, help="at most this many messages (default: %(default)s)")
    lst.set_defaults(handler=_list)
