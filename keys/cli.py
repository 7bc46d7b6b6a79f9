"""``tongban keys``: the key tool of the national root officials, provincial operators and nodes.

Handlers only read arguments, call :mod:`keys.root`, :mod:`keys.province`, :mod:`keys.enrol` and
:mod:`keys.directory`, and print one line per result. Errors are :class:`~gateway.errors.GatewayError`
subclasses, mapped to exit codes once by ``gateway.cli.main``; ``keys directory verify`` alone
catches trust errors itself so that a failure is exactly one line, ``FAILED [code]: reason``.
No private key material is ever printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from datetime import datetime
from pathlib import Path

from gateway import config as config_mod
from gateway.config import NodeConfig
from gateway.errors import MalformedDocument, OperatorStateError, TrustError
from gateway.trust import keyfile
from gateway.trust import x509 as tx509
from gateway.trust.documents import Bundle as BundleDoc
from gateway.trust.documents import NodeStatus, Root, format_time, parse_time
from gateway.trust.verifier import TrustState
from keys import directory, enrol, province, root
from keys.files import (
    change_passphrase,
    days_after,
    load_signer,
    read_bytes,
    read_json,
    read_passphrase_file,
    read_signed,
    require,
    short_fingerprint,
    utc_now,
    write_signed,
)

ENV_CONFIG = "TONGBAN_CONFIG"

EXIT_CODES = """\
exit codes:
  0   done
  2   bad command-line usage
  65  bad input (a division code, prefix, threshold or number of days that breaks a rule)
  77  a trust check failed: signature, threshold, prefix, expiry, rollback, certificate,
      wrong key or wrong passphrase (nothing was written)
  78  the key directory is not in the state the command needs (a file is missing, or one it
      would create already exists: nothing is ever overwritten)
  1   internal error (run again with tongban --verbose)
"""

PASSPHRASE_HELP = (
    f"file holding the passphrase of the key files (default: env {keyfile.ENV_PASSPHRASE}, "
    f"or the file named by env {keyfile.ENV_PASSPHRASE_FILE})"
)


# --- helpers ---------------------------------------------------------------------------------------------


def _passphrase(args: argparse.Namespace) -> bytes:
    if getattr(args, "passphrase_file", None):
        return read_passphrase_file(Path(args.passphrase_file))
    return keyfile.passphrase_from_env()


def _config(args: argparse.Namespace) -> NodeConfig:
    path = Path(args.config)
    if path.is_dir():
        path = path / config_mod.CONFIG_FILE
    return config_mod.load(path)


def _note(line: str) -> None:
    print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)


def _at(value: str) -> datetime:
    try:
        return parse_time(value, "--at")
    except MalformedDocument:
        raise argparse.ArgumentTypeError("use a UTC time like 2026-11-23T00:00:00Z") from None


# --- root ------------------------------------------------------------------------------------------------


def _root_init(args: argparse.Namespace) -> int:
    now = utc_now()
    operators = []
    for path in args.province:
        doc = read_signed(Path(path), "province descriptor")
        op = province.parse_descriptor(doc)
        print(f"province {op.prefix} {op.name}: descriptor verified, fingerprint {short_fingerprint(doc.payload)}")
        operators.append(op)
    root_dir = Path(args.dir)
    doc = root.init_root(
        root_dir,
        keys=args.keys,
        threshold=args.threshold,
        expires=days_after(now, args.expires_days),
        provinces=operators,
        passphrase=_passphrase(args),
        now=now,
    )
    r = Root.from_payload(doc.payload)
    print(f"created root v1 in {root_dir}: {len(r.keys)} root keys, {r.threshold} must sign each new root")
    print(f"root fingerprint: {short_fingerprint(doc.payload)}; expires {format_time(r.expires)}")
    passphrase = _passphrase(args)
    for n in range(1, args.keys + 1):
        path = root.root_key_path(root_dir, n)
        kid = load_signer(path, passphrase).public_key.key_id
        print(f"  {path}  key {kid}  -> give to root official {n}, keep offline")
    kid = load_signer(root_dir / root.DIRECTORY_KEY, passphrase).public_key.key_id
    print(f"  {root_dir / root.DIRECTORY_KEY}  key {kid}  -> give to the directory publisher")
    print(f"  {root_dir / root.ROOT}  -> public: install on every node (keys node install --root)")
    print("each holder should set their own passphrase: tongban keys change-passphrase KEYFILE --new-passphrase-file F")
    return 0


def _root_update(args: argparse.Namespace) -> int:
    now = utc_now()
    operators = []
    for path in args.add_province:
        doc = read_signed(Path(path), "province descriptor")
        op = province.parse_descriptor(doc)
        print(f"province {op.prefix} {op.name}: descriptor verified, fingerprint {short_fingerprint(doc.payload)}")
        operators.append(op)
    change = root.RootChange(
        add_provinces=operators,
        remove_prefixes=args.remove_province,
        add_keys=args.add_keys,
        remove_key_ids=args.remove_key,
        threshold=args.threshold,
        expires=None if args.expires_days is None else days_after(now, args.expires_days),
        new_directory_key=args.new_directory_key,
    )
    needs_keys = bool(args.add_keys or args.new_directory_key)
    root_dir = Path(args.dir)
    _, old = root.current(root_dir)
    draft = root.draft_update(root_dir, change, passphrase=_passphrase(args) if needs_keys else None, now=now)
    new = draft.root
    print(f"wrote the draft of root v{new.version}: {root_dir / root.DRAFT} (unsigned)")
    for kid in sorted(set(new.keys) - set(old.keys)):
        print(f"  new root key {kid} in {draft.new_key_files[kid]}  -> give to a new root official, keep offline")
    for kid in sorted(set(old.keys) - set(new.keys)):
        print(f"  removed root key {kid}")
    for kid in sorted(set(new.directory_keys) - set(old.directory_keys)):
        print(f"  new directory key {kid} in {draft.new_key_files[kid]}  -> give to the directory publisher")
    for prefix in sorted(set(new.provinces) | set(old.provinces)):
        if prefix not in old.provinces:
            print(f"  adds province {prefix} {new.provinces[prefix].name}")
        elif prefix not in new.provinces:
            print(f"  removes province {prefix} {old.provinces[prefix].name}")
        elif new.provinces[prefix] != old.provinces[prefix]:
            print(f"  replaces the operator of province {prefix}")
    print(
        f"it needs {old.threshold} of the {len(old.keys)} current root keys and {new.threshold} of its "
        f"{len(new.keys)} own keys: each holder runs tongban keys root sign {root_dir} --key KEYFILE"
    )
    return 0


def _root_sign(args: argparse.Namespace) -> int:
    signer = load_signer(Path(args.key), _passphrase(args))
    status = root.sign_draft(Path(args.dir), signer)
    print(f"signed with key {signer.public_key.key_id}. {status.describe()}")
    if status.ready:
        print(f"ready to publish: tongban keys root publish {args.dir}")
    return 0


def _root_publish(args: argparse.Namespace) -> int:
    new = root.publish_draft(Path(args.dir), now=utc_now())
    print(f"published root v{new.version} (expires {format_time(new.expires)}): {Path(args.dir) / root.ROOT}")
    print("nodes receive it with the next directory: keys directory build --root ... then sign it")
    return 0


def _root_show(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if args.draft:
        require(path / root.DRAFT, "no draft")
        doc = read_signed(path / root.DRAFT, "root draft")
    else:
        doc = root.read_root_file(path)
    for line in root.describe_root(doc):
        print(line)
    if args.draft:
        print(root.draft_status(path).describe())
    return 0


# --- province --------------------------------------------------------------------------------------------


def _province_init(args: argparse.Namespace) -> int:
    pdir = Path(args.dir)
    doc = province.init_province(
        pdir, prefix=args.prefix, name=args.name, passphrase=_passphrase(args), now=utc_now(), ca_days=args.ca_days
    )
    print(f"created province {args.prefix} {args.name} in {pdir}")
    print(f"  {pdir / province.OPERATOR_KEY}, {pdir / province.CA_KEY}  -> secret: keep offline")
    print(f"  {pdir / province.DESCRIPTOR}  -> send to the root operators (keys root init/update --province)")
    print(f"descriptor fingerprint: {short_fingerprint(doc.payload)}  (read it to the root operators)")
    return 0


def _province_show(args: argparse.Namespace) -> int:
    for line in province.describe_province(Path(args.dir)):
        print(line)
    return 0


def _province_publish(args: argparse.Namespace) -> int:
    now = utc_now()
    pdir = Path(args.dir)
    signer = load_signer(Path(args.key) if args.key else pdir / province.OPERATOR_KEY, _passphrase(args))
    pub = province.publish_part(pdir, signer, expires=days_after(now, args.expires_days), now=now)
    for note in pub.notes:
        _note(note)
    if args.out:
        write_signed(Path(args.out), pub.document)
    counts = {s: sum(1 for n in pub.part.nodes if n.status is s) for s in NodeStatus}
    print(
        f"published province {pub.part.prefix} part v{pub.part.version}: "
        + ", ".join(f"{n} {s.value}" for s, n in counts.items())
        + f", expires {format_time(pub.part.expires)}"
    )
    print(f"  {pub.path}" + (f" and {args.out}" if args.out else "") + "  -> send to the directory publisher")
    return 0


# --- node ------------------------------------------------------------------------------------------------


def _node_request(args: argparse.Namespace) -> int:
    cfg = _config(args)
    doc = enrol.create_enrolment_request(cfg, endpoint=args.endpoint, passphrase=_passphrase(args), now=utc_now())
    if args.endpoint and args.endpoint != cfg.endpoint:  # only once the request exists (nothing else changed)
        enrol.set_config_value(cfg.path, "node", "endpoint", args.endpoint)
        print(f"[node] endpoint = {args.endpoint!r} in {cfg.path}")
    out = Path(args.out) if args.out else cfg.base_dir / enrol.REQUEST_FILE
    keyfile.write_public(out, doc.to_bytes())
    print(f"generated the keys of node {cfg.node_id} ({cfg.division}), encrypted, on this machine only:")
    for path in (cfg.tls_key, cfg.signing_key, cfg.encryption_key):
        print(f"  {path}")
    print(f"enrolment request: {out}  -> send to your provincial operator")
    print(f"request fingerprint: {enrol.request_fingerprint(doc)}  (read it to the operator by phone)")
    return 0


def _node_rotate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    doc = enrol.create_rotation_request(cfg, new_tls=args.tls, passphrase=_passphrase(args), now=utc_now())
    out = Path(args.out) if args.out else cfg.base_dir / enrol.ROTATION_FILE
    keyfile.write_public(out, doc.to_bytes())
    request = enrol.Request.from_document(doc)
    print(f"new signing key {request.signing_key.key_id} waits in {enrol.pending(cfg.signing_key)}")
    if args.tls:
        print(f"new TLS key waits in {enrol.pending(cfg.tls_key)}")
    print("the node keeps signing with its current key until the operator's response is installed")
    print(f"rotation request: {out}  -> send to your provincial operator")
    print(f"request fingerprint: {enrol.request_fingerprint(doc)}  (read it to the operator by phone)")
    return 0


def _node_issue(args: argparse.Namespace) -> int:
    now = utc_now()
    issued = enrol.issue(
        Path(args.province_dir),
        read_signed(Path(args.request), "request"),
        passphrase=_passphrase(args),
        now=now,
        days=args.days,
        overlap_days=args.overlap_days,
        expected_fingerprint=args.fingerprint,
    )
    e, r = issued.entry, issued.response
    print(f"request fingerprint: {issued.fingerprint}")
    cert_end = tx509.load_certificate(r.certificate, "certificate").not_valid_after_utc
    what = {"enrolment": "re-issued" if issued.reissued else "enrolled", "rotation": "rotated"}[r.kind]
    print(f"{what} node {e.node_id} ({e.division}) at {e.endpoint}: certificate valid until {format_time(cert_end)}")
    for k in e.signing_keys:
        print(f"  {province.key_line(k)}")
    keyfile.write_public(Path(args.out), r.to_bytes())
    print(f"response: {args.out}  -> send to the node (keys node install)")
    print(f"then publish: tongban keys province publish {args.province_dir}")
    return 0


def _node_install(args: argparse.Namespace) -> int:
    cfg = _config(args)
    response = enrol.Response.parse(read_bytes(Path(args.response), "response"))
    root_bytes = read_bytes(Path(args.root), "root") if args.root else None
    for line in enrol.install(
        cfg,
        response,
        root_bytes=root_bytes,
        directory_source=args.directory,
        passphrase=_passphrase(args),
        now=utc_now(),
    ):
        print(line)
    print(f"node {cfg.node_id} is enrolled; it serves mutual TLS from its next start")
    return 0


def _node_revoke(args: argparse.Namespace) -> int:
    status = NodeStatus.SUSPENDED if args.suspend else NodeStatus.REVOKED
    before, after = province.set_status(Path(args.province_dir), args.node_id, status)
    print(f"node {args.node_id}: {before.value} -> {after.value} in {Path(args.province_dir) / province.NODES}")
    print(
        "takes effect when you publish (keys province publish), the directory is rebuilt and signed, "
        "and the nodes refresh it"
    )
    return 0


def _node_reinstate(args: argparse.Namespace) -> int:
    before, after = province.set_status(Path(args.province_dir), args.node_id, NodeStatus.ACTIVE)
    print(f"node {args.node_id}: {before.value} -> {after.value}; publish to take effect")
    return 0


# --- directory -------------------------------------------------------------------------------------------


def _directory_build(args: argparse.Namespace) -> int:
    now = utc_now()
    out = Path(args.out)
    if out.exists() and args.previous is None and args.version is None:
        raise OperatorStateError(f"{out} exists: pass --previous {out} to build its next version (or --version N)")
    previous = BundleDoc.parse(read_bytes(Path(args.previous), "previous directory")) if args.previous else None
    built = directory.build_bundle(
        root.history(Path(args.root)),
        [read_signed(Path(p), "province part") for p in args.part],
        expires=days_after(now, args.expires_days),
        now=now,
        previous=previous,
        version=args.version,
    )
    for note in built.notes:
        _note(note)
    keyfile.write_public(out, built.bundle.to_bytes())
    m = built.manifest
    parts = ", ".join(f"{p} v{r.version}" for p, r in sorted(m.parts.items())) or "none"
    print(f"built directory v{m.version} for root v{m.root_version} (parts: {parts}), expires {format_time(m.expires)}")
    print(f"{out}: the manifest is UNSIGNED; sign it with: tongban keys directory sign {out} --key DIRECTORY_KEY")
    return 0


def _directory_sign(args: argparse.Namespace) -> int:
    path = Path(args.bundle)
    bundle = BundleDoc.parse(read_bytes(path, "directory"))
    signed, count, threshold = directory.sign_bundle(bundle, load_signer(Path(args.key), _passphrase(args)))
    keyfile.write_public(path, signed.to_bytes())
    print(f"signed {path}: {count} of {threshold} required directory signature(s)")
    if count >= threshold:
        print(f"check it as a node would: tongban keys directory verify {path} --root ROOT_JSON")
    return 0


def _directory_verify(args: argparse.Namespace) -> int:
    at = args.at or utc_now()
    try:
        bundle_bytes = read_bytes(Path(args.bundle), "directory")
        if args.state:
            state = TrustState.from_json(read_json(Path(args.state), "trust state"))
        else:
            pinned = Path(args.root) / root.ROOT if Path(args.root).is_dir() else Path(args.root)
            state = TrustState.from_pinned_root(read_bytes(pinned, "pinned root"), at)
        _, d = directory.verify_bundle(bundle_bytes, state, at)
    except TrustError as exc:
        reason = " ".join(str(exc).split())  # one line, whatever the detail holds
        print(f"FAILED [{exc.code}]: {reason}")
        return exc.exit_code
    print(f"OK: directory v{d.version}, {len(d)} nodes, expires {format_time(d.expires)} (root v{d.root.version})")
    return 0


def _directory_show(args: argparse.Namespace) -> int:
    for line in directory.describe_bundle(BundleDoc.parse(read_bytes(Path(args.bundle), "directory"))):
        print(line)
    return 0


def _change_passphrase(args: argparse.Namespace) -> int:
    old = _passphrase(args)
    new = read_passphrase_file(Path(args.new_passphrase_file))
    for path in args.keyfile:
        change_passphrase(Path(path), old, new)
        print(f"re-encrypted {path} under the new passphrase")
    return 0


# --- the parser ------------------------------------------------------------------------------------------


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    # Raw formatting keeps the exit-code table's layout; the description is wrapped here instead.
    return sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 92),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _with_passphrase(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--passphrase-file", metavar="FILE", help=PASSPHRASE_HELP)
    return p


def _with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--config",
        default=os.environ.get(ENV_CONFIG, config_mod.CONFIG_FILE),
        help=f"the node's node.toml or its directory (env {ENV_CONFIG}; default: %(default)s)",
    )
    return p


def _register_root(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(
        groups,
        "root",
        "the national root of trust (k of n root keys)",
        "The national root: the root keys (k of n must sign every new version), the directory "
        "publisher's key, and the provincial operators with the division-code prefix each governs.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    init = _with_passphrase(
        _parser(
            sub,
            "init",
            "create root v1: N root keys, the directory key, root.json",
            "Create root version 1 in DIR. Writes DIR/root-key-1.pem .. root-key-N.pem and "
            "DIR/directory-key.pem (encrypted private keys), DIR/root.json signed by all N keys and "
            "DIR/root-history/1.json. The keys are generated together for convenience: move each "
            "root-key-*.pem to a different official, who keeps it offline and sets their own passphrase "
            "(keys change-passphrase). Reads the provinces' descriptors (province.json). Refuses to "
            "overwrite anything.",
        )
    )
    init.add_argument("dir", metavar="DIR", help="the root directory to create")
    init.add_argument("--keys", type=int, required=True, metavar="N", help="number of root keys (officials)")
    init.add_argument("--threshold", type=int, required=True, metavar="K", help="how many must sign a new root")
    init.add_argument("--expires-days", type=int, default=365, metavar="D", help="validity (default: %(default)s)")
    init.add_argument(
        "--province", action="append", default=[], metavar="FILE", help="a province.json to include (repeatable)"
    )
    init.set_defaults(handler=_root_init)

    update = _with_passphrase(
        _parser(
            sub,
            "update",
            "draft the next root version (unsigned)",
            "Write DIR/root-draft.json: the current root (DIR/root.json) with the changes below, "
            "version + 1, unsigned. New root keys (--add-keys) are generated into DIR as the next free "
            "root-key-N.pem; a new directory key as DIR/directory-key-vV.pem (both need the passphrase). "
            "Then the holders sign it (keys root sign) and it is published (keys root publish).",
        )
    )
    update.add_argument("dir", metavar="DIR", help="the root directory")
    update.add_argument(
        "--add-province",
        action="append",
        default=[],
        metavar="FILE",
        help="province.json to add, or to replace the operator of its prefix (repeatable)",
    )
    update.add_argument(
        "--remove-province", action="append", default=[], metavar="PREFIX", help="prefix to drop (repeatable)"
    )
    update.add_argument("--add-keys", type=int, default=0, metavar="N", help="generate N new root keys")
    update.add_argument(
        "--remove-key", action="append", default=[], metavar="KEY_ID", help="root key id to drop (repeatable)"
    )
    update.add_argument("--threshold", type=int, metavar="K", help="new threshold (default: unchanged)")
    update.add_argument("--expires-days", type=int, metavar="D", help="new expiry from today (default: unchanged)")
    update.add_argument("--new-directory-key", action="store_true", help="replace the directory publisher's key")
    update.set_defaults(handler=_root_update)

    sign = _with_passphrase(
        _parser(
            sub,
            "sign",
            "add one root key's signature to the draft",
            "Add the signature of KEYFILE to DIR/root-draft.json and say how many old and new keys have "
            "signed. The key must be a key of the current root or of the draft.",
        )
    )
    sign.add_argument("dir", metavar="DIR", help="the root directory (with root-draft.json)")
    sign.add_argument("--key", required=True, metavar="KEYFILE", help="a root key file (root-key-N.pem)")
    sign.set_defaults(handler=_root_sign)

    publish = _parser(
        sub,
        "publish",
        "promote a fully signed draft to root.json",
        "Check DIR/root-draft.json exactly as every node will (a threshold of the current root's keys "
        "AND of its own keys, version + 1) and, if it passes, write it to DIR/root.json and "
        "DIR/root-history/V.json. Refuses with the signature counts otherwise (exit 77).",
    )
    publish.add_argument("dir", metavar="DIR", help="the root directory")
    publish.set_defaults(handler=_root_publish)

    show = _parser(
        sub,
        "show",
        "print a root: version, expiry, keys, provinces",
        "Print a root document (a root.json, or a root directory's root.json; --draft for its draft): "
        "version, expiry, threshold, key ids, directory keys, provinces with their prefixes, operator "
        "keys and CA fingerprints. Reads only public files.",
    )
    show.add_argument("path", metavar="FILE_OR_DIR", help="root.json or the root directory")
    show.add_argument("--draft", action="store_true", help="show DIR/root-draft.json and its signature counts")
    show.set_defaults(handler=_root_show)


def _register_province(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(
        groups,
        "province",
        "a provincial operator: signing key, node CA, node list, published parts",
        "A provincial operator enrols the nodes of its own prefix and publishes its signed part of the directory.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    init = _with_passphrase(
        _parser(
            sub,
            "init",
            "create a province: operator key, CA, descriptor",
            "Create DIR with operator-key.pem and ca-key.pem (encrypted private keys, keep offline), "
            "ca.crt.pem, province.json (the public descriptor for the root operators, signed by the "
            "operator key) and an empty nodes.json. Refuses to overwrite anything.",
        )
    )
    init.add_argument("dir", metavar="DIR", help="the province directory to create")
    init.add_argument("--prefix", required=True, help="division-code prefix it governs, e.g. 50")
    init.add_argument("--name", required=True, help="operator name, e.g. 重庆市民政局")
    init.add_argument("--ca-days", type=int, default=3650, help="CA certificate validity (default: %(default)s)")
    init.set_defaults(handler=_province_init)

    show = _parser(
        sub,
        "show",
        "print a province: keys, CA, descriptor fingerprint, nodes",
        "Print DIR's descriptor fingerprint (to read to the root operators), operator keys, CA "
        "fingerprint and validity, and its nodes with their status and keys. Reads only public files.",
    )
    show.add_argument("dir", metavar="DIR", help="the province directory")
    show.set_defaults(handler=_province_show)

    publish = _with_passphrase(
        _parser(
            sub,
            "publish",
            "sign the next version of this province's part",
            "Sign the next version of the province's part from DIR/nodes.json with the operator key and "
            "write it to DIR/parts/V.json (and --out). Signing keys past their overlap window are dropped; "
            "nodes whose certificate has expired are left out (with a warning). Send the part to the "
            "directory publisher (keys directory build --part).",
        )
    )
    publish.add_argument("dir", metavar="DIR", help="the province directory")
    publish.add_argument("--out", metavar="PART_JSON", help="also write the signed part here")
    publish.add_argument("--expires-days", type=int, default=30, metavar="D", help="validity (default: %(default)s)")
    publish.add_argument("--key", metavar="KEYFILE", help="operator key (default: DIR/operator-key.pem)")
    publish.set_defaults(handler=_province_publish)


def _register_node(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(
        groups,
        "node",
        "enrol, rotate and revoke county nodes",
        "request, rotate and install run ON the node; issue, revoke and reinstate at the provincial operator.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    request = _with_config(
        _with_passphrase(
            _parser(
                sub,
                "request",
                "(on the node) generate the node's keys and an enrolment request",
                "Generate the node's TLS key (ECDSA P-256), message-signing key (Ed25519) and encryption "
                "key (X25519), encrypted, at the paths [keys] in node.toml names; they never leave this "
                "machine. Write the enrolment request (public: node id, division, endpoint, CSR, public "
                "keys, signed by the new signing key) to CONFIG_DIR/enrolment-request.json or --out. "
                "Refuses if any key or the certificate already exists.",
            )
        )
    )
    request.add_argument("--endpoint", metavar="HOST:PORT", help="address peers dial (default: [node] endpoint)")
    request.add_argument("--out", metavar="FILE", help="where to write the request")
    request.set_defaults(handler=_node_request)

    rotate = _with_config(
        _with_passphrase(
            _parser(
                sub,
                "rotate",
                "(on the node) new signing key; request signed by the old and new keys",
                "Generate a new signing key (and with --tls a new TLS key) beside the current one as "
                "<file>.new, and write a rotation request signed by the current key (authorisation) and "
                "the new one (possession) to CONFIG_DIR/rotation-request.json or --out. The node keeps "
                "using its current keys until keys node install promotes the new ones. Also renews the "
                "TLS certificate.",
            )
        )
    )
    rotate.add_argument("--tls", action="store_true", help="also replace the TLS key")
    rotate.add_argument("--out", metavar="FILE", help="where to write the request")
    rotate.set_defaults(handler=_node_rotate)

    issue = _with_passphrase(
        _parser(
            sub,
            "issue",
            "(at the operator) issue a certificate for a request",
            "Check REQUEST (proof of possession, CSR, division inside the prefix — else exit 77, an "
            "enrolled node id only with its own keys or by rotation), issue the node certificate with "
            "PROVINCE_DIR/ca-key.pem, record the node in PROVINCE_DIR/nodes.json (a rotation retires "
            "the old signing key now and refuses it after the overlap) and write the response for the "
            "node to --out.",
        )
    )
    issue.add_argument("province_dir", metavar="PROVINCE_DIR", help="the province directory")
    issue.add_argument("request", metavar="REQUEST", help="enrolment-request.json or rotation-request.json")
    issue.add_argument("--out", required=True, metavar="RESPONSE", help="where to write the response")
    issue.add_argument("--days", type=int, default=398, help="certificate validity (default: %(default)s)")
    issue.add_argument(
        "--overlap-days",
        type=int,
        default=7,
        help="rotation: days the old key still verifies messages it signed before (default: %(default)s)",
    )
    issue.add_argument("--fingerprint", metavar="HEX", help="refuse unless the request has this fingerprint")
    issue.set_defaults(handler=_node_issue)

    install = _with_config(
        _with_passphrase(
            _parser(
                sub,
                "install",
                "(on the node) install the operator's response and the pinned root",
                "Check RESPONSE against the root (its province's CA, this node's id, division and keys), "
                "then write the certificate to [keys] tls_certificate, promote keys waiting as .new (the "
                "old signing key is deleted), pin ROOT_JSON at [trust] root if no root is pinned yet, and "
                "with --directory set [trust] directory in node.toml.",
            )
        )
    )
    install.add_argument("response", metavar="RESPONSE", help="the response from keys node issue")
    install.add_argument("--root", metavar="ROOT_JSON", help="the root to pin (required the first time)")
    install.add_argument(
        "--directory", metavar="SOURCE", help="where the signed directory is published: a file path or http(s) URL"
    )
    install.set_defaults(handler=_node_install)

    revoke = _parser(
        sub,
        "revoke",
        "(at the operator) revoke or suspend a node",
        "Mark NODE_ID revoked (final) or, with --suspend, suspended in PROVINCE_DIR/nodes.json. Takes "
        "effect once the province publishes, the directory is rebuilt and signed, and nodes refresh: "
        "then the node's connections and messages are refused.",
    )
    revoke.add_argument("province_dir", metavar="PROVINCE_DIR", help="the province directory")
    revoke.add_argument("node_id", metavar="NODE_ID")
    revoke.add_argument("--suspend", action="store_true", help="suspend (reversible) instead of revoking")
    revoke.set_defaults(handler=_node_revoke)

    reinstate = _parser(
        sub,
        "reinstate",
        "(at the operator) make a suspended node active again",
        "Mark a suspended NODE_ID active in PROVINCE_DIR/nodes.json (a revoked node cannot be reinstated).",
    )
    reinstate.add_argument("province_dir", metavar="PROVINCE_DIR", help="the province directory")
    reinstate.add_argument("node_id", metavar="NODE_ID")
    reinstate.set_defaults(handler=_node_reinstate)


def _register_directory(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(
        groups,
        "directory",
        "build, sign, verify and show directory bundles",
        "The directory bundle nodes fetch: the root history, a manifest signed by the directory "
        "publisher, and the provinces' signed parts.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    build = _parser(
        sub,
        "build",
        "assemble a bundle (manifest unsigned)",
        "Read the root history (ROOT_DIR/root-history, or root-history beside ROOT_JSON) and the "
        "province parts, check them, and write a bundle with an UNSIGNED manifest to --out. Parts of "
        "--previous that no --part replaces are carried over; the version is --previous's + 1, or "
        "--version. No private key is needed.",
    )
    build.add_argument("--root", required=True, metavar="ROOT_DIR_OR_JSON", help="root directory or its root.json")
    build.add_argument("--part", action="append", default=[], metavar="PART_JSON", help="a signed part (repeatable)")
    build.add_argument("--out", required=True, metavar="BUNDLE_JSON", help="where to write the bundle")
    build.add_argument("--previous", metavar="BUNDLE_JSON", help="the last published bundle (may be --out itself)")
    build.add_argument("--version", type=int, metavar="N", help="directory version (default: previous + 1, or 1)")
    build.add_argument("--expires-days", type=int, default=7, metavar="D", help="validity (default: %(default)s)")
    build.set_defaults(handler=_directory_build)

    sign = _with_passphrase(
        _parser(
            sub,
            "sign",
            "sign a bundle's manifest with the directory key",
            "Add the directory publisher's signature to BUNDLE's manifest (rewriting BUNDLE). The key "
            "must be a directory key of the bundle's newest root.",
        )
    )
    sign.add_argument("bundle", metavar="BUNDLE_JSON")
    sign.add_argument("--key", required=True, metavar="KEYFILE", help="the directory key (directory-key.pem)")
    sign.set_defaults(handler=_directory_sign)

    verify = _parser(
        sub,
        "verify",
        "verify a bundle offline, exactly as a node does",
        "Run the node's verifier on BUNDLE, offline, from a pinned root (--root) or a node's saved "
        "trust state (--state, which adds rollback checks). Prints 'OK: directory vN, M nodes, expires "
        "...' or exactly one line 'FAILED [code]: reason' (exit 77).",
    )
    verify.add_argument("bundle", metavar="BUNDLE_JSON")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", metavar="ROOT_JSON", help="the root a node pins (or a root directory)")
    source.add_argument("--state", metavar="STATE_JSON", help="a node's trust/state.json")
    verify.add_argument("--at", type=_at, metavar="TIME", help="verify as of this UTC time, e.g. 2026-11-23T00:00:00Z")
    verify.set_defaults(handler=_directory_verify)

    show = _parser(
        sub,
        "show",
        "print a bundle's nodes (no verification)",
        "Print what BUNDLE says — directory version and expiry, parts, and each node's id, division, "
        "status, endpoint, certificate and keys with rotation dates. Checks nothing: use verify.",
    )
    show.add_argument("bundle", metavar="BUNDLE_JSON")
    show.set_defaults(handler=_directory_show)


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = _parser(
        groups,
        "keys",
        "root, province, node and directory keys (SPEC §2)",
        "The key tool of the national root officials, provincial operators and county nodes. Private "
        f"keys are written encrypted (passphrase from env {keyfile.ENV_PASSPHRASE} or "
        f"{keyfile.ENV_PASSPHRASE_FILE}, or --passphrase-file) with mode 0600, and never printed. "
        "See docs/operators.md.",
    )
    sub = keys.add_subparsers(dest="keys_group", metavar="GROUP", required=True)
    _register_root(sub)
    _register_province(sub)
    _register_node(sub)
    _register_directory(sub)
    change = _with_passphrase(
        _parser(
            sub,
            "change-passphrase",
            "re-encrypt key files under a new passphrase",
            "Re-encrypt each KEYFILE (read with the current passphrase) under the passphrase in "
            "--new-passphrase-file. Each root official does this for their root key.",
        )
    )
    change.add_argument("keyfile", nargs="+", metavar="KEYFILE")
    change.add_argument("--new-passphrase-file", required=True, metavar="FILE", help="file holding the new passphrase")
    change.set_defaults(handler=_change_passphrase)
