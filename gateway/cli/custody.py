"""``tongban custody``: who holds a case, with the proof (SPEC §6).

* ``show CASE --config DIR`` — this node's view of the case: holder (or the pending offer), head
  hash, each event of the chain, and any event kept beside it (waiting for its predecessor, an
  equivocation proof, a conflict). Case ids and node ids only: no personal data.
* ``export CASE --config DIR --out FILE`` — the chain as a file (``gateway.custody.export``: JSON
  holding the signed bytes unchanged), mode 0600 is not needed (no personal data) but the file is
  written atomically.
* ``verify FILE --directory PATH [--root ROOT]`` — offline, from public material only: the signed
  directory bundle (``PATH`` or ``PATH/directory.json``) and the pinned national root (``ROOT``,
  default ``root.json`` or ``root/root.json`` beside the bundle). Prints the holder and the head
  hash; otherwise the exact reason (``custody_*`` errors exit 65, a directory or root that does not
  verify exits 77). This is how a provincial operator checks a chain a node of its province exported.
* ``override CASE --lost NODE --to NODE --province-dir DIR --chain FILE --out FILE`` — offline, at
  the provincial operator's machine: verifies the chain file (exported by any node that holds the
  case) against the signed directory (``--directory``, default ``DIR/directory.json``, with its
  root beside it or ``--root``), refuses unless that directory shows ``NODE`` revoked and inside
  the province, signs an override with the province's operator key (``--key``, default
  ``DIR/operator-key.pem``; passphrase from ``TONGBAN_KEY_PASSPHRASE`` or
  ``TONGBAN_KEY_PASSPHRASE_FILE``) as ``operator:<prefix>``, and writes the chain with the override
  to ``--out``. See docs/operators.md, "Reassigning a lost node's cases".
* ``import FILE --config DIR`` — at the node taking over: appends the override file's events
  (verified against the node's directory) and sends the chain on to the other nodes it names.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from gateway import config as config_mod
from gateway.cli.node import add_config_argument, config_path
from gateway.custody import export, store
from gateway.custody.chain import CustodyState, verify_chain
from gateway.custody.events import SignedEvent
from gateway.custody.service import CustodyService, sign_override
from gateway.errors import ConfigError
from gateway.exchange.purposes import load_profiles
from gateway.node import open_node
from gateway.store.db import make_engine, require_current_schema
from gateway.trust.keyfile import passphrase_from_env, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.verifier import TrustState

OPERATOR_KEY = "operator-key.pem"  # the province directory's operator key (keys/province.py)


def describe_holder(state: CustodyState) -> str:
    """Who holds the case, as `custody show` and `case show` print it."""
    if state.closed:
        return f"closed (last holder {state.holder})"
    if state.pending is not None:
        return f"nobody (offer pending: {state.pending.from_node} -> {state.pending.to_node})"
    return str(state.holder)


def _show(args: argparse.Namespace) -> int:
    cfg = config_mod.load(config_path(args))
    directory = TrustStore.from_config(cfg).ensure_usable()
    engine = make_engine(cfg.database_url)
    try:
        require_current_schema(engine)
        with engine.connect() as conn:
            state = store.view(conn, args.case, directory)
            beside = store.held(conn, args.case)
    finally:
        engine.dispose()
    if state is None:
        print(f"case {args.case}: no custody chain on {cfg.node_id}")
        for signed, outcome in beside:
            print(f"  held   {outcome.value:<12} {signed.hash}  by {signed.signer}")
        return 1 if not beside else 0
    print(f"case    {state.case_id} ({state.genesis.case_type.value}, accepted {state.genesis.accepted_on})")
    print(f"holder  {describe_holder(state)}")
    print(f"head    {state.head}")
    for i, e in enumerate(state.chain):
        print(f"  {i:>3}  {e.kind.value:<8} by {e.signer:<24} {e.created.isoformat(timespec='seconds')}  {e.hash}")
    for signed, outcome in beside:
        print(f"  held   {outcome.value:<12} {signed.hash}  by {signed.signer}")
    for proof in state.equivocations:
        print(f"equivocation by {proof.signer}: {proof.first.hash} and {proof.second.hash}")
    return 0


def _export(args: argparse.Namespace) -> int:
    cfg = config_mod.load(config_path(args))
    engine = make_engine(cfg.database_url)
    try:
        require_current_schema(engine)
        with engine.connect() as conn:
            events = store.chain(conn, args.case)
    finally:
        engine.dispose()
    if not events:
        raise ConfigError(f"node {cfg.node_id} holds no custody chain for case {args.case}")
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(export.dumps(args.case, events), encoding="utf-8")
    tmp.replace(out)
    print(f"case {args.case}: {len(events)} event(s) written to {out}")
    return 0


def _public_material(directory: Path, root: Path | None) -> tuple[bytes, bytes]:
    bundle = directory / "directory.json" if directory.is_dir() else directory
    base = bundle.parent
    if root is None:
        root = next((p for p in (base / "root.json", base / "root" / "root.json") if p.exists()), base / "root.json")
    try:
        return bundle.read_bytes(), root.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the directory or the root ({exc.strerror})") from None


def _verify(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    bundle, root = _public_material(Path(args.directory), Path(args.root) if args.root else None)
    directory = TrustState.from_pinned_root(root, now).accept(bundle, now)[1]
    case_id, events = _read_chain(Path(args.file))
    state = verify_chain(events, directory, now, known_head=args.head)
    print(f"case    {case_id}: chain of {len(state)} event(s) verifies against directory v{directory.version}")
    print(f"holder  {describe_holder(state)}")
    print(f"head    {state.head}")
    return 0


def _read_chain(path: Path) -> tuple[str, tuple[SignedEvent, ...]]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror})") from None
    return export.loads(text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _override(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    pdir = Path(args.province_dir)
    bundle, root = _public_material(
        Path(args.directory) if args.directory else pdir / "directory.json", Path(args.root) if args.root else None
    )
    directory = TrustState.from_pinned_root(root, now).accept(bundle, now)[1]
    case_id, events = _read_chain(Path(args.chain))
    if case_id != args.case:
        raise ConfigError(f"{args.chain} is the chain of case {case_id}, not {args.case}")
    signer = Ed25519Signer(read_signing_key(Path(args.key) if args.key else pdir / OPERATOR_KEY, passphrase_from_env()))
    override, state = sign_override(
        events, lost_node=args.lost, to_node=args.to, signer=signer, directory=directory, now=now
    )
    _write(Path(args.out), export.dumps(case_id, (*events, override)))
    print(f"case    {case_id}: override by {override.signer}: {args.lost} -> {args.to}")
    print(f"holder  {describe_holder(state)}")
    print(f"head    {state.head}")
    print(f"then, at {args.to}: tongban custody import {args.out} --config DIR")
    return 0


def _import(args: argparse.Namespace) -> int:
    cfg = config_mod.load(config_path(args))
    case_id, events = _read_chain(Path(args.file))
    node = open_node(cfg)
    try:
        directory = TrustStore.from_config(cfg).ensure_usable()
        signer = Ed25519Signer(read_signing_key(cfg.signing_key, passphrase_from_env()))
        service = CustodyService(
            node_id=cfg.node_id,
            engine=node.engine,
            keyring=node.keyring,
            signer=signer,
            directory=lambda: directory,
            profiles=load_profiles(),
            clock=utc_now,
        )
        state = service.import_override(case_id, events)
    finally:
        node.engine.dispose()
    print(f"case    {case_id}: override imported ({len(state)} event(s))")
    print(f"holder  {describe_holder(state)}")
    print(f"head    {state.head}")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser("custody", help="who holds a case, with the proof (custody chains)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="this node's view of a case: holder, head, events, proofs")
    show.add_argument("case", help="the case id (a UUID)")
    add_config_argument(show)
    show.set_defaults(handler=_show)
    exp = sub.add_parser("export", help="write the case's chain to a file anyone can verify offline")
    exp.add_argument("case", help="the case id (a UUID)")
    add_config_argument(exp)
    exp.add_argument("--out", required=True, help="the chain file to write (JSON)")
    exp.set_defaults(handler=_export)
    ver = sub.add_parser("verify", help="verify a chain file offline with the signed directory and root")
    ver.add_argument("file", help="a chain file written by `tongban custody export`")
    ver.add_argument(
        "--directory", required=True, help="the signed directory bundle, or a folder holding directory.json"
    )
    ver.add_argument("--root", help="the pinned national root (default: root.json or root/root.json beside the bundle)")
    ver.add_argument("--head", help="a head hash learned elsewhere that the chain must reach")
    ver.set_defaults(handler=_verify)
    ovr = sub.add_parser("override", help="provincial operator, offline: reassign a revoked node's case")
    ovr.add_argument("case", help="the case id (a UUID)")
    ovr.add_argument("--lost", required=True, metavar="NODE", help="the lost node (revoked in the directory)")
    ovr.add_argument("--to", required=True, metavar="NODE", help="the node that takes the case over")
    ovr.add_argument("--province-dir", required=True, metavar="DIR", help="the province directory (keys province init)")
    ovr.add_argument("--chain", required=True, metavar="FILE", help="the case's chain (tongban custody export)")
    ovr.add_argument("--out", required=True, metavar="FILE", help="the chain with the override, to import")
    ovr.add_argument("--directory", metavar="BUNDLE", help="the signed directory (default: DIR/directory.json)")
    ovr.add_argument("--root", help="the pinned national root (default: beside the directory)")
    ovr.add_argument("--key", metavar="FILE", help="the operator key (default: DIR/operator-key.pem)")
    ovr.set_defaults(handler=_override)
    imp = sub.add_parser("import", help="take over a case from an operator's override file")
    imp.add_argument("file", help="a chain file written by `tongban custody override`")
    add_config_argument(imp)
    imp.set_defaults(handler=_import)
