"""``tongban web``: staff accounts and one-time sign-in codes of the web inbox (:mod:`gateway.web`).

* ``web staff add USER --name 显示名 --role registration_staff|case_officer [--division CODE]
  [--password-stdin]`` — create an account for the node's county (or ``--division``); without a
  password it signs in with one-time codes only.
* ``web staff list`` — every account: id, user name, role, county, password set, locked, disabled.
* ``web staff password USER`` — set a password (read from standard input, at least 12 characters).
* ``web staff disable USER`` — disable an account and end its sessions.
* ``web code USER`` — issue a one-time sign-in code (shown once; valid 24 hours; usable once).

Every change is recorded in the audit trail (by account id); the inbox's address is ``[web] listen``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.cli.node import add_config_argument, node_database, utc_text
from gateway.errors import InputError
from gateway.web import accounts
from gateway.web.accounts import StaffRole


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "web",
        help="the web inbox: staff accounts and one-time sign-in codes",
        description="Staff accounts of this node's web inbox (跨省通办收件箱).",
    )
    commands = parser.add_subparsers(dest="web_command", metavar="SUBCOMMAND", required=True)
    staff = commands.add_parser("staff", help="staff accounts: add, list, password, disable")
    staffs = staff.add_subparsers(dest="staff_command", metavar="SUBCOMMAND", required=True)
    add = staffs.add_parser("add", help="create a staff account")
    add.add_argument("username", metavar="USER", help="3-40 characters of a-z, 0-9, '.', '_', '-'")
    add.add_argument("--name", required=True, help="the name shown on the pages (e.g. 南部县民政局 张科员)")
    add.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    add.add_argument("--division", default="", help="the county whose cases it may open (default: the node's)")
    add.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    add_config_argument(add)
    add.set_defaults(handler=_add)
    listing = staffs.add_parser("list", help="every staff account")
    add_config_argument(listing)
    listing.set_defaults(handler=_list)
    password = staffs.add_parser("password", help="set an account's password (read from standard input)")
    password.add_argument("username", metavar="USER")
    add_config_argument(password)
    password.set_defaults(handler=_password)
    disable = staffs.add_parser("disable", help="disable an account and end its sessions")
    disable.add_argument("username", metavar="USER")
    add_config_argument(disable)
    disable.set_defaults(handler=_disable)
    code = commands.add_parser("code", help="issue a one-time sign-in code for an account (shown once)")
    code.add_argument("username", metavar="USER")
    add_config_argument(code)
    code.set_defaults(handler=_code)


def _read_password() -> str:
    if sys.stdin.isatty():
        first, second = getpass.getpass("password: "), getpass.getpass("again: ")
        if first != second:
            raise InputError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _add(args: argparse.Namespace) -> int:
    cfg, engine = node_database(args)
    try:
        password = _read_password() if args.password_stdin else None
        staff = accounts.create_staff(
            engine,
            username=args.username,
            display_name=args.name,
            role=StaffRole(args.role),
            division=args.division or cfg.division,
            password=password,
        )
    finally:
        engine.dispose()
    print(f"created {staff.staff_id} {staff.username} ({staff.role.value}, {staff.division})")
    if not staff.has_password:
        print(f"no password: issue a one-time sign-in code with `tongban web code {staff.username}`")
    return 0


def _list(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        rows = accounts.list_staff(engine)
    finally:
        engine.dispose()
    print(f"{'id':<20} {'user':<20} {'role':<19} {'county':<7} {'password':<8} {'locked until':<21} disabled")
    for s in rows:
        pw = "yes" if s.has_password else "no"
        print(
            f"{s.staff_id:<20} {s.username:<20} {s.role.value:<19} {s.division:<7} {pw:<8} "
            f"{utc_text(s.locked_until):<21} {utc_text(s.disabled_at)}"
        )
    return 0


def _password(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        staff = accounts.set_password(engine, args.username, _read_password())
    finally:
        engine.dispose()
    print(f"password set for {staff.staff_id}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        staff = accounts.disable(engine, args.username)
    finally:
        engine.dispose()
    print(f"disabled {staff.staff_id} at {utc_text(staff.disabled_at)}; its sessions have ended")
    return 0


def _code(args: argparse.Namespace) -> int:
    cfg, engine = node_database(args)
    try:
        code, expires = accounts.issue_code(engine, args.username)
    finally:
        engine.dispose()
    print(f"one-time sign-in code: {code}")
    print(f"valid until {utc_text(expires)}, once; sign in at the web inbox ([web] listen = {cfg.web_listen or 'off'})")
    return 0
