"""``tongban divisions``: look up, resolve and rebuild the division table (GB/T 2260).

* ``divisions show CODE`` — name, level, province, validity and successor links of a code.
* ``divisions resolve CODE [--hint CODE] [--all]`` — the current routing code for a code.
* ``divisions build [--source DIR] [--check]`` — regenerate the shipped table from the reference
  data (``--check``: exit 1 if the shipped files differ from a rebuild).

``show`` and ``resolve`` accept ``--links FILE``: an operator's overlay of successor links (same
columns as ``gateway/data/division_links.tsv``, basis ``operator``), applied before answering.
Domain failures are raised as :mod:`gateway.errors` and mapped to exit codes once, at the top.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.domain import divisions_build
from gateway.domain.divisions import Division, DivisionTable, load_links_file


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "divisions",
        help="administrative division codes (GB/T 2260): show, resolve, build",
        description="The dated division table with successor links.",
    )
    commands = parser.add_subparsers(dest="divisions_command", metavar="SUBCOMMAND", required=True)

    show = commands.add_parser("show", help="name, level, province, validity and successors of a code")
    show.add_argument("code", metavar="CODE", help="six-digit division code (any era)")
    _add_links_option(show)
    show.set_defaults(handler=_show)

    resolve = commands.add_parser("resolve", help="the current routing code for a (possibly retired) code")
    resolve.add_argument("code", metavar="CODE", help="six-digit division code (any era)")
    resolve.add_argument(
        "--hint",
        metavar="CODE",
        help="the successor the record itself names, when a retired code has several",
    )
    resolve.add_argument(
        "--all",
        action="store_true",
        help="print every current code the successor links reach, one per line",
    )
    _add_links_option(resolve)
    resolve.set_defaults(handler=_resolve)

    build = commands.add_parser(
        "build",
        help="rebuild gateway/data/divisions.tsv and division_links.tsv from the reference data",
    )
    build.add_argument(
        "--source",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"reference data directory (default: {divisions_build.DEFAULT_SOURCE})",
    )
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the shipped files differ from a rebuild",
    )
    build.set_defaults(handler=_build)


def _add_links_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--links",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an operator's successor-link overlay (TSV) to apply first; may be repeated",
    )


def _table(args: argparse.Namespace) -> DivisionTable:
    table = DivisionTable.load_default()
    for path in args.links:
        table = table.with_links(load_links_file(path))
    return table


def _validity(d: Division) -> str:
    if d.valid_until is None:
        return f"{d.valid_from} .. (in force)"
    return f"{d.valid_from} .. {d.valid_until} (retired: absent from edition {d.valid_until} on)"


def _show(args: argparse.Namespace) -> int:
    table = _table(args)
    code: str = args.code
    history = table.history(code)
    latest = history[-1]
    province = table.province_of(code)
    print(f"{latest.code} {latest.name}")
    print(f"  level:      {latest.level.value}")
    print(f"  province:   {province.code} {province.name}")
    print(f"  valid:      {_validity(latest)}")
    print(f"  routing:    {'yes' if table.is_current(code) else 'no'}")
    if not latest.current:
        _print_links(table, latest)
        routes = table.resolve_all(code)
        print(f"  routes to:  {', '.join(routes) if routes else 'successor unknown'}")
    for earlier in reversed(history[:-1]):
        print(f"  earlier use: {earlier.name}, {_validity(earlier)}")
        _print_links(table, earlier, indent="    ")
    return 0


def _print_links(table: DivisionTable, division: Division, *, indent: str = "  ") -> None:
    links = table.links_of(division)
    if not links:
        print(f"{indent}successors: unknown (a provincial operator may add a link)")
        return
    print(f"{indent}successors:")
    for link in links:
        name = table.lookup(link.new).name
        print(
            f"{indent}  {link.new} {name}  effective {link.effective}  [{link.basis.value}]  {link.note}",
        )


def _resolve(args: argparse.Namespace) -> int:
    table = _table(args)
    if args.all:
        codes = table.resolve_all(args.code)
        if not codes:
            table.resolve(args.code)  # raises SuccessorUnknown with the details
        for code in codes:
            print(code)
        return 0
    print(table.resolve(args.code, hint=args.hint))
    return 0


def _build(args: argparse.Namespace) -> int:
    argv: list[str] = []
    if args.source is not None:
        argv += ["--source", str(args.source)]
    if args.check:
        argv.append("--check")
    return divisions_build.main(argv)
