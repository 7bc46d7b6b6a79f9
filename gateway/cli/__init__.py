"""The ``tongban`` command line.

``main(argv) -> int`` builds one argparse tree from command groups; each group module exposes
``register(subcommands)`` and sets ``handler`` on its parsers. Handlers only translate arguments
and delegate to the service layer. Errors are caught once, here.

Exit codes:

====  ==========================================================
0     success
1     an unexpected internal error (run again with ``--verbose``)
2     bad command-line usage (argparse)
65    bad input data (invalid ID number, division code, record)
74    storage error
77    cryptographic check failed (data key missing, tampered row)
78    configuration error
130   interrupted (Ctrl-C)
====  ==========================================================
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from gateway import logs
from gateway.errors import GatewayError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    # Imported here so that `tongban --help` stays the one place that lists every group.
    from gateway.cli import (
        audit,
        backup,
        bench,
        case,
        cases,
        county,
        custody,
        demo,
        divisions,
        ids,
        node,
        outbox,
        purposes,
        reconcile,
        roster,
        synth,
        web,
    )

    parser = argparse.ArgumentParser(
        prog="tongban",
        description="Tongban (通办): county node gateway for migrant children's records.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show tracebacks and debug logs")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for module in (
        node,
        roster,
        reconcile,
        outbox,
        audit,
        synth,
        demo,
        divisions,
        ids,
        purposes,
        cases,
        case,
        custody,
        county,
        web,
        backup,
        bench,
    ):
        module.register(groups)
    # Tools that sit beside the gateway (the operators' `keys` tool, the county-file adapters)
    # plug in through entry points, so that `gateway` never imports them (STYLE habit 10).
    for entry in sorted(entry_points(group="tongban.commands"), key=lambda e: e.name):
        entry.load()(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        # stderr, plus TONGBAN_LOG_FILE / TONGBAN_LOG_FORMAT; alembic quiet unless --verbose.
        logs.configure(args.verbose)
        return handler(args)
    except GatewayError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"tongban: error [{exc.code}]: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tongban: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the one top-level catch (STYLE habit 13)
        if args.verbose:
            traceback.print_exc()
        else:
            print(
                "tongban: internal error (no details are printed because they might contain "
                "personal data; run again with --verbose on a trusted terminal)",
                file=sys.stderr,
            )
        return 1
