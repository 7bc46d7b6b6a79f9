"""``tongban county``: API tokens for the county API, and its permission table's documentation.

* ``county token create --role ROLE --label TEXT [--division CODE]`` — create a token and print it
  **once** (the node keeps only its hash; see :mod:`gateway.county.auth`). Give it to the county
  system or person named by the label; it is sent as ``authorization: Bearer <token>``.
* ``county token list`` — every token's id, role, label, scope, created and revoked times (never
  the token: the node does not have it).
* ``county token revoke ID`` — revoke at once: the next call with the token is ``UNAUTHENTICATED``.
* ``county cert issue --role ROLE --label TEXT [--division CODE] --out DIR`` — a client certificate
  of the node's county CA (created on first use; see :mod:`gateway.county.certs`) for the county
  API's mutual-TLS mode (``[county] tls = true``): ``DIR/client.key.pem`` (mode 0600, the only copy
  of the key), ``DIR/client.crt.pem`` and ``DIR/ca.crt.pem``. ``county cert list`` and
  ``county cert revoke ID`` as for tokens.
* ``county render-docs [--out FILE] [--check]`` — write ``docs/county-permissions.md`` from
  ``gateway/data/county_permissions.toml`` (``--check``: write nothing, exit 1 if the file differs).

Creating and revoking a token, issuing and revoking a certificate are recorded in the audit trail
(by id).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli.generated import docs_path, write_or_check
from gateway.cli.node import add_config_argument, node_database, utc_text
from gateway.county import auth, certs
from gateway.county.permissions import Role, load_permissions, render_markdown

DEFAULT_DOCS = docs_path("county-permissions.md")


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "county",
        help="the county API: API tokens and client certificates (issue, list, revoke), the permission table",
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

    cert = commands.add_parser("cert", help="client certificates of the node's county CA (mutual-TLS mode)")
    cert_commands = cert.add_subparsers(dest="cert_command", metavar="SUBCOMMAND", required=True)
    issue = cert_commands.add_parser("issue", help="issue a client certificate; write its key, certificate and CA")
    issue.add_argument("--role", required=True, choices=[r.value for r in Role], help="what the caller may do")
    issue.add_argument("--label", required=True, help="who holds it (a system or a post), up to 80 chars")
    issue.add_argument(
        "--division", default="", help="scope: the province (2 digits) for provincial_operator, else a county"
    )
    issue.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the key and certificates")
    add_config_argument(issue)
    issue.set_defaults(handler=_cert_issue)
    cert_list = cert_commands.add_parser("list", help="every client certificate: id, role, label, scope, times")
    add_config_argument(cert_list)
    cert_list.set_defaults(handler=_cert_list)
    cert_revoke = cert_commands.add_parser("revoke", help="revoke a client certificate by id")
    cert_revoke.add_argument("cert_id", metavar="ID", help="the certificate's id (cc-…), from `cert list`")
    add_config_argument(cert_revoke)
    cert_revoke.set_defaults(handler=_cert_revoke)

    render = commands.add_parser("render-docs", help="write docs/county-permissions.md from the permission table")
    render.add_argument(
        "--out", type=Path, default=DEFAULT_DOCS, metavar="FILE", help="where to write (default: %(default)s)"
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 if FILE differs")
    render.set_defaults(handler=_render)


def _create(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        token, info = auth.create(engine, role=Role(args.role), label=args.label, division=args.division)
    finally:
        engine.dispose()
    print(f"created {info.token_id} (role {info.role.value}, label {info.label})")
    print("the token, shown this once (the node keeps only its hash):")
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        rows = auth.list_tokens(engine)
    finally:
        engine.dispose()
    print(f"{'id':<20} {'role':<20} {'scope':<6} {'created':<20} {'revoked':<20} label")
    for t in rows:
        scope = t.division or "-"
        created, revoked = utc_text(t.created_at), utc_text(t.revoked_at)
        print(f"{t.token_id:<20} {t.role.value:<20} {scope:<6} {created:<20} {revoked:<20} {t.label}")
    if not rows:
        print("(no tokens)")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        info = auth.revoke(engine, args.token_id)
    finally:
        engine.dispose()
    print(f"revoked {info.token_id} at {utc_text(info.revoked_at)}")
    return 0


def _cert_issue(args: argparse.Namespace) -> int:
    cfg, engine = node_database(args)
    try:
        issued = certs.issue(engine, cfg, role=Role(args.role), label=args.label, division=args.division)
    finally:
        engine.dispose()
    written = certs.write_bundle(issued, args.out)
    info = issued.info
    print(f"issued {info.cert_id} (role {info.role.value}, label {info.label}), valid until {utc_text(info.not_after)}")
    for path in written:
        print(f"  {path}")
    print(f"the key ({written[0].name}, mode 0600) is the only copy: the node keeps only the certificate's fingerprint")
    if not cfg.county_tls:
        print("note: this node's county API is plaintext; set [county] tls = true to use certificates")
    return 0


def _cert_list(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        rows = certs.list_certs(engine)
    finally:
        engine.dispose()
    print(f"{'id':<20} {'role':<20} {'scope':<6} {'created':<20} {'not after':<20} {'revoked':<20} label")
    for c in rows:
        times = f"{utc_text(c.created_at):<20} {utc_text(c.not_after):<20} {utc_text(c.revoked_at):<20}"
        print(f"{c.cert_id:<20} {c.role.value:<20} {c.division or '-':<6} {times} {c.label}")
    if not rows:
        print("(no certificates)")
    return 0


def _cert_revoke(args: argparse.Namespace) -> int:
    _, engine = node_database(args)
    try:
        info = certs.revoke(engine, args.cert_id)
    finally:
        engine.dispose()
    print(f"revoked {info.cert_id} at {utc_text(info.revoked_at)}")
    return 0


def _render(args: argparse.Namespace) -> int:
    text = render_markdown(load_permissions())
    return write_or_check(
        args.out, text, check=args.check, command="tongban county render-docs", source="the county permission table"
    )
