"""``tongban purposes``: the purpose profiles this node enforces (SPEC §3).

* ``purposes list`` — one line per purpose: name, version, direction, payload type.
* ``purposes show NAME`` — everything a profile declares, fields in schema order.
* ``purposes render [--out FILE] [--check]`` — write ``docs/purposes.md`` from
  ``gateway/data/purposes.toml`` (``--check``: write nothing, exit 1 if the file differs), so the
  docs table is never written by hand.

An unknown or reserved purpose is :class:`~gateway.errors.PurposeNotAllowed`, a broken table a
:class:`~gateway.errors.ConfigError`; both are mapped to exit codes once, at the top.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.generated import docs_path, write_or_check
from gateway.exchange.purposes import PurposeProfile, load_profiles, ordered_fields, render_markdown

DEFAULT_DOCS = docs_path("purposes.md")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "purposes",
        help="purpose profiles: which fields each kind of message may carry (list, show, render)",
        description="The purpose profiles of gateway/data/purposes.toml.",
    )
    commands = parser.add_subparsers(dest="purposes_command", metavar="SUBCOMMAND", required=True)

    listing = commands.add_parser("list", help="one line per purpose")
    listing.set_defaults(handler=_list)

    show = commands.add_parser("show", help="everything one purpose declares")
    show.add_argument("name", metavar="NAME", help="purpose name, e.g. migrant_notice")
    show.set_defaults(handler=_show)

    render = commands.add_parser("render", help="write docs/purposes.md from the profiles")
    render.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DOCS,
        metavar="FILE",
        help="where to write (default: %(default)s)",
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if FILE differs")
    render.set_defaults(handler=_render)


def _direction(p: PurposeProfile) -> str:
    return f"{p.sender_role.value} -> {p.recipient_role.value}"


def _list(args: argparse.Namespace) -> int:
    profiles = load_profiles()
    for p in profiles.all():
        print(f"{p.name:<18} v{p.version}  {_direction(p):<28} {p.payload_type}")
    for r in profiles.reserved():
        print(f"{r.name:<18} v{r.version}  {r.sender_role.value + ' -> ' + r.recipient_role.value:<28} (reserved)")
    return 0


def _show(args: argparse.Namespace) -> int:
    profiles = load_profiles()
    reserved = {r.name: r for r in profiles.reserved()}
    if args.name in reserved:
        r = reserved[args.name]
        print(f"{r.name} (version {r.version}, reserved: refused if used)")
        print(f"  {r.summary}")
        print(f"  direction:     {r.sender_role.value} -> {r.recipient_role.value}")
        print(f"  reserved until {r.reserved_until}")
        return 0
    p = profiles.get(args.name)  # PurposeNotAllowed for an unknown name
    print(f"{p.name} (version {p.version})")
    print(f"  {p.summary}")
    print(f"  direction:     {_direction(p)}")
    print(f"  payload:       {p.payload_type}")
    print(f"  personal data: {'yes' if p.personal else 'no'}")
    print(f"  encrypted:     {'yes (HPKE to the recipient node)' if p.encrypted else 'no'}")
    print(f"  max. lifetime: {p.max_lifetime_seconds} s ({p.max_lifetime_seconds / 86_400:g} days)")
    print("  may carry (nothing else):")
    for path in ordered_fields(p):
        print(f"    {path}")
    return 0


def _render(args: argparse.Namespace) -> int:
    text = render_markdown(load_profiles())
    return write_or_check(
        args.out, text, check=args.check, command="tongban purposes render", source="the purpose profiles"
    )
