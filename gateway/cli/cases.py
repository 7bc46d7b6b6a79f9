"""``tongban cases``: the case lifecycle's documentation (SPEC §6).

* ``cases render-docs [--out FILE] [--check]`` — write ``docs/case-lifecycle.md`` from the
  transition table, the reason codes and the statutory clocks (``--check``: write nothing, exit 1
  if the file differs), so the table is never written by hand.

The case workflow itself (filing, inbox, decisions) arrives with transport and storage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cases.lifecycle import render_markdown
from gateway.cli.generated import docs_path, write_or_check

DEFAULT_DOCS = docs_path("case-lifecycle.md")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "cases",
        help="cross-province cases: the lifecycle documentation (render-docs)",
        description="Cross-province cases (跨省通办).",
    )
    commands = parser.add_subparsers(dest="cases_command", metavar="SUBCOMMAND", required=True)
    render = commands.add_parser("render-docs", help="write docs/case-lifecycle.md from the lifecycle table")
    render.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DOCS,
        metavar="FILE",
        help="where to write (default: %(default)s)",
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if FILE differs")
    render.set_defaults(handler=_render)


def _render(args: argparse.Namespace) -> int:
    text = render_markdown()
    return write_or_check(
        args.out, text, check=args.check, command="tongban cases render-docs", source="the case lifecycle"
    )
