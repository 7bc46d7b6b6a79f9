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
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from gateway import config as config_mod
from gateway.cli.node import add_config_argument, config_path
from gateway.custody import export, store
from gateway.custody.chain import CustodyState, verify_chain
from gateway.errors import ConfigError
from gateway.store.db import make_engine, require_current_schema
from gateway.trust.store import TrustStore
from gateway.trust.verifier import TrustState


def _describe(state: CustodyState) -> str:
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
    print(f"holder  {_describe(state)}")
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
    try:
        text = Path(args.file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file} ({exc.strerror})") from None
    case_id, events = export.loads(text)
    state = verify_chain(events, directory, now, known_head=args.head)
    print(f"case    {case_id}: chain of {len(state)} event(s) verifies against directory v{directory.version}")
    print(f"holder  {_describe(state)}")
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
