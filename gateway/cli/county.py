"""``tongban county``: API tokens for the county API, and its permission table's documentation.

* ``county token create --role ROLE --label TEXT [--division CODE]`` — create a token and print it
  **once** (the node keeps only its hash; see :mod:`gateway.county.auth`). Give it to the county
  system or person named by the label; it is sent as ``authorization: Bearer <token>``.
* ``county token list`` — every token's id, role, label, scope, created and revoked times (never
  the token: the node does not have it).
* ``county token revoke ID`` — revoke at once: the next call with the token is ``UNAUTHENTICATED``.
* ``county render-docs [--out FILE] [--check]`` — write ``docs/county-permissions.md`` from
  ``gateway/data/county_permissions.toml`` (``--check``: write nothing, exit 1 if the file differs).

Creating and revoking a token are recorded in the audit trail (by token id).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from gateway import config as config_mod
from gateway.cli.generated import docs_path, write_or_check
from gateway.cli.node import add_config_argument, config_path
from gateway.county import auth
from gateway.county.permissions import Role, load_permissions, render_markdown
from gateway.store.db import make_engine, require_current_schema

DEFAULT_DOCS = docs_path("county-permissions.md")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "county",
        help="the county API: API tokens (create, list, revoke) and the permission table (render-docs)",
        description="The county API (tongban.v1.County) of this node.",
    )
    commands = parser.add_subparsers(dest="county_command", metavar="SUBCOMMAND", required=True)

    token = commands.add_parser("token", help="API tokens for county systems, staff and operators")
    tokens = token.add_subparsers(dest="token_command", metavar="SUBCOMMAND", required=True)
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role], help="what the caller may do")
    create.add_argument("--label", required=True, help="who holds it (a system or a person's post), up to 80 chars")
    create.add_argument(
        "--division", default="", help="scope: the province (2 digits) for provincial_operator, else a county"
    )
    add_config_argument(create)
    create.set_defaults(handler=_create)
    listing = tokens.add_parser("list", help="every token: id, role, label, scope, created, revoked")
    add_config_argument(listing)
    listing.set_defaults(handler=_list)
    revoke = tokens.add_parser("revoke", help="revoke a token by id (refused from its next call on)")
    revoke.add_argument("token_id", metavar="ID", help="the token's id (ct-…), from `token list`")
    add_config_argument(revoke)
    revoke.set_defaults(handler=_revoke)

    render = commands.add_parser("render-docs", help="write docs/county-permissions.md from the permission table")
    render.add_argument(
        "--out", type=Path, default=DEFAULT_DOCS, metavar="FILE", help="where to write (default: %(default)s)"
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if FILE differs")
    render.set_defaults(handler=_render)


def _engine(args: argparse.Namespace) -> Engine:
    cfg = config_mod.load(config_path(args))
    engine = make_engine(cfg.database_url)
    require_current_schema(engine)
    return engine


def _time(at: datetime | None) -> str:
    return "-" if at is None else at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _create(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        token, info = auth.create(engine, role=Role(args.role), label=args.label, division=args.division)
    finally:
        engine.dispose()
    print(f"created {info.token_id} (role {info.role.value}, label {info.label})")
    print("the token, shown this once (the node keeps only its hash):")
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        rows = auth.list_tokens(engine)
    finally:
        engine.dispose()
    print(f"{'id':<20} {'role':<20} {'scope':<6} {'created':<20} {'revoked':<20} label")
    for t in rows:
        scope = t.division or "-"
        created, revoked = _time(t.created_at), _time(t.revoked_at)
        print(f"{t.token_id:<20} {t.role.value:<20} {scope:<6} {created:<20} {revoked:<20} {t.label}")
    if not rows:
        print("(no tokens)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        info = auth.revoke(engine, args.token_id)
    finally:
        engine.dispose()
    print(f"revoked {info.token_id} at {_time(info.revoked_at)}")
    return 0


def _render(args: argparse.Namespace) -> int:
    text = render_markdown(load_permissions())
    return write_or_check(
        args.out, text, check=args.check, command="tongban county render-docs", source="the county permission table"
    )
