"""The national root of trust: creating it, drafting a new version, collecting signatures, publishing.

Layout of ``ROOT_DIR``::

    root-key-1.pem … root-key-N.pem   the N root keys (secret, encrypted). Generated together by
                                      ``init`` for convenience, then each is moved to a different
                                      official and kept offline; k of them sign every new root.
    directory-key.pem                 the directory publisher's key (secret, encrypted): signs each
                                      directory manifest (``keys directory sign``); held by the
                                      publishing operator, not by the root officials.
    root.json                         the current root, signed (public)
    root-history/<V>.json             every root ever published, version 1 onwards (public): a
                                      directory bundle carries them all so that any node, however
                                      old its pinned root, can walk the chain of rotations
    root-draft.json                   the next version while it collects signatures (public)

A root changes only through a draft: ``update`` writes version + 1 unsigned; officials add
signatures one at a time (``sign``); ``publish`` promotes the draft only when the *real* verifier
(:func:`gateway.trust.verifier.verify_root_signatures`) accepts it as the successor of the current
root — a threshold of the old keys **and** a threshold of the new keys, version exactly + 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from gateway.errors import (
    BadSignature,
    DocumentExpired,
    InputError,
    MalformedDocument,
    OperatorStateError,
    UnknownAlgorithm,
    WrongKey,
)
from gateway.trust.documents import ROOT_TYPE, ProvinceOperator, Root, format_time
from gateway.trust.dsse import SignedDocument, add_signature, sign_document
from gateway.trust.signing import PublicKey, Signer, verify
from gateway.trust.verifier import verify_root_signatures
from keys.files import (
    new_signing_key,
    private_dir,
    read_signed,
    refuse_existing,
    require,
    short_fingerprint,
    write_signed,
)
from keys.province import ca_fingerprint

ROOT = "root.json"
DRAFT = "root-draft.json"
HISTORY = "root-history"
DIRECTORY_KEY = "directory-key.pem"
MAX_ROOT_KEYS = 15
_ROOT_KEY = re.compile(r"^root-key-(\d+)\.pem$")


def root_key_path(root_dir: Path, n: int) -> Path:
    return root_dir / f"root-key-{n}.pem"


def _check_provinces(provinces: Iterable[ProvinceOperator]) -> dict[str, ProvinceOperator]:
    by_prefix: dict[str, ProvinceOperator] = {}
    for op in provinces:
        if op.prefix in by_prefix:
            raise InputError(f"two provinces for prefix {op.prefix}")
        by_prefix[op.prefix] = op
    for a in by_prefix:
        for b in by_prefix:
            if a != b and b.startswith(a):
                raise InputError(f"prefixes {a} and {b} overlap: a division must have exactly one operator")
    return by_prefix


def _check_threshold(threshold: int, keys: int) -> None:
    if not 1 <= threshold <= keys:
        raise InputError(f"the threshold must be between 1 and the number of root keys ({keys}), not {threshold}")


def _keymap(keys: Iterable[PublicKey]) -> dict[str, PublicKey]:
    return {k.key_id: k for k in keys}


# --- reading ---------------------------------------------------------------------------------------


def current(root_dir: Path) -> tuple[SignedDocument, Root]:
    """The current root of ``root_dir`` (re-verified against its own keys: a local file is not trusted
    blindly either)."""
    require(root_dir / ROOT, "see keys root init")
    doc = read_signed(root_dir / ROOT, "root")
    return doc, verify_root_signatures(doc, previous=None)


def history(path: Path) -> list[SignedDocument]:
    """Every published root, version 1 first, from a root directory or from a ``root.json`` beside
    its ``root-history/``. Checks the versions are 1, 2, … with no gap (``MalformedDocument``); the
    signatures are checked by whoever uses the chain (``keys directory build``, every node)."""
    root_dir = path if path.is_dir() else path.parent
    hist = root_dir / HISTORY
    if not hist.is_dir():
        if path.is_dir():
            raise OperatorStateError(f"{hist} does not exist (is {path} a root directory?)")
        docs = [read_signed(path, "root")]
    else:
        docs = [read_signed(p, "root") for p in hist.glob("*.json")]
    versions = [Root.from_payload(d.payload).version for d in docs]
    ordered = [d for _, d in sorted(zip(versions, docs, strict=True), key=lambda vd: vd[0])]
    if sorted(versions) != list(range(1, len(docs) + 1)):
        raise MalformedDocument(f"root history in {root_dir} must hold versions 1..N without gaps, found {versions}")
    return ordered


# --- creating --------------------------------------------------------------------------------------


def init_root(
    root_dir: Path,
    *,
    keys: int,
    threshold: int,
    expires: datetime,
    provinces: Sequence[ProvinceOperator],
    passphrase: bytes,
    now: datetime,
) -> SignedDocument:
    """Create root version 1 in ``root_dir``: N root keys, the directory key, ``root.json`` signed by
    all N keys, and ``root-history/1.json``.

    Refuses (before writing anything): a threshold outside 1..N, more than 15 keys, two provinces
    for one prefix or overlapping prefixes (``InputError``), an expiry not in the future, or an
    existing root (``OperatorStateError``). Province descriptors must already be verified
    (:func:`keys.province.read_descriptor`).
    """
    if not 1 <= keys <= MAX_ROOT_KEYS:
        raise InputError(f"a root has 1 to {MAX_ROOT_KEYS} keys")
    _check_threshold(threshold, keys)
    by_prefix = _check_provinces(provinces)
    if expires <= now:
        raise InputError("the root must expire in the future")
    refuse_existing(
        root_dir / ROOT,
        root_dir / HISTORY,
        root_dir / DIRECTORY_KEY,
        *(root_key_path(root_dir, n) for n in range(1, keys + 1)),
    )
    private_dir(root_dir)
    signers = [new_signing_key(root_key_path(root_dir, n), passphrase) for n in range(1, keys + 1)]
    directory = new_signing_key(root_dir / DIRECTORY_KEY, passphrase)
    root = Root(
        version=1,
        expires=expires,
        keys=_keymap(s.public_key for s in signers),
        threshold=threshold,
        directory_keys=_keymap([directory.public_key]),
        directory_threshold=1,
        provinces=by_prefix,
    )
    doc = sign_document(ROOT_TYPE, root.to_payload(), signers)
    verify_root_signatures(doc, previous=None)  # the verifier's own parse (and rules) before we publish
    write_signed(root_dir / HISTORY / "1.json", doc)
    write_signed(root_dir / ROOT, doc)
    return doc


@dataclass(frozen=True)
class RootChange:
    """What ``keys root update`` changes; everything not named stays as in the current root."""

    add_provinces: Sequence[ProvinceOperator] = ()  # added, or replacing the operator of that prefix
    remove_prefixes: Sequence[str] = ()
    add_keys: int = 0  # new root keys generated into ROOT_DIR
    remove_key_ids: Sequence[str] = ()
    threshold: int | None = None
    expires: datetime | None = None
    new_directory_key: bool = False

    @property
    def empty(self) -> bool:
        return self == RootChange()


@dataclass(frozen=True)
class Draft:
    root: Root
    new_key_files: Mapping[str, Path]  # key id -> the file generated for it (root and directory keys)


def draft_update(root_dir: Path, change: RootChange, *, passphrase: bytes | None, now: datetime) -> Draft:
    """Write ``root-draft.json``: the current root with ``change`` applied, version + 1, unsigned.

    Refuses (``OperatorStateError``) when a draft already exists (publish or delete it first) or
    the change is empty; (``InputError``) when it removes a key or province that is not there,
    leaves a threshold outside 1..N, or an expiry not in the future. New keys (root or directory)
    are generated into ``root_dir`` only after every check passed; ``passphrase`` is needed then.
    """
    if (root_dir / DRAFT).exists():
        raise OperatorStateError(f"{root_dir / DRAFT} exists: publish it (keys root publish) or delete it first")
    if change.empty:
        raise OperatorStateError("nothing to change: name a province, a key, a threshold or an expiry")
    _, old = current(root_dir)
    for kid in change.remove_key_ids:
        if kid not in old.keys:
            raise InputError(f"key {kid} is not a key of root v{old.version}")
    for prefix in change.remove_prefixes:
        if prefix not in old.provinces:
            raise InputError(f"root v{old.version} has no province {prefix}")
    provinces = {p: op for p, op in old.provinces.items() if p not in change.remove_prefixes}
    provinces.update({op.prefix: op for op in change.add_provinces})
    provinces = _check_provinces(provinces.values())
    remaining = len(old.keys) - len(set(change.remove_key_ids)) + change.add_keys
    if remaining > MAX_ROOT_KEYS or remaining < 1:
        raise InputError(f"a root has 1 to {MAX_ROOT_KEYS} keys, this change leaves {remaining}")
    threshold = old.threshold if change.threshold is None else change.threshold
    _check_threshold(threshold, remaining)
    expires = old.expires if change.expires is None else change.expires
    if expires <= now:
        raise InputError(f"the new root would expire at {format_time(expires)}, which is not in the future")

    keys = {kid: k for kid, k in old.keys.items() if kid not in change.remove_key_ids}
    directory_keys: Mapping[str, PublicKey] = old.directory_keys
    files: dict[str, Path] = {}
    if change.add_keys or change.new_directory_key:
        if passphrase is None:
            raise OperatorStateError("new keys need a passphrase")
        taken = {int(m.group(1)) for p in root_dir.iterdir() if (m := _ROOT_KEY.match(p.name))}
        numbers = [n for n in range(1, MAX_ROOT_KEYS * 4) if n not in taken][: change.add_keys]
        dir_key_path = root_dir / f"directory-key-v{old.version + 1}.pem"
        refuse_existing(*(root_key_path(root_dir, n) for n in numbers))
        if change.new_directory_key:
            refuse_existing(dir_key_path)
        for n in numbers:
            key = new_signing_key(root_key_path(root_dir, n), passphrase).public_key
            keys[key.key_id] = key
            files[key.key_id] = root_key_path(root_dir, n)
        if change.new_directory_key:
            key = new_signing_key(dir_key_path, passphrase).public_key
            directory_keys = _keymap([key])
            files[key.key_id] = dir_key_path
    new = replace(
        old,
        version=old.version + 1,
        expires=expires,
        keys=keys,
        threshold=threshold,
        directory_keys=directory_keys,
        provinces=provinces,
    )
    write_signed(root_dir / DRAFT, SignedDocument(ROOT_TYPE, new.to_payload()))
    return Draft(new, files)


# --- signing and publishing ------------------------------------------------------------------------


def _valid_signers(doc: SignedDocument, keys: Mapping[str, PublicKey]) -> set[str]:
    """Key ids of ``keys`` with a valid signature on ``doc`` (for progress reports; the decision to
    accept is always the verifier's)."""
    good: set[str] = set()
    for sig in doc.signatures:
        key = keys.get(sig.key_id)
        if key is None:
            continue
        try:
            verify(key, sig.algorithm, doc.signed_bytes(), sig.value)
        except (BadSignature, UnknownAlgorithm):
            continue
        good.add(sig.key_id)
    return good


@dataclass(frozen=True)
class DraftStatus:
    version: int
    old_signed: int
    old_threshold: int
    old_keys: int
    new_signed: int
    new_threshold: int
    new_keys: int

    @property
    def ready(self) -> bool:
        return self.old_signed >= self.old_threshold and self.new_signed >= self.new_threshold

    def describe(self) -> str:
        return (
            f"root v{self.version} draft: {self.old_signed} of {self.old_keys} old keys signed "
            f"(need {self.old_threshold}), {self.new_signed} of {self.new_keys} new keys signed "
            f"(need {self.new_threshold})"
        )


def draft_status(root_dir: Path) -> DraftStatus:
    require(root_dir / DRAFT, "no draft: start one with keys root update")
    _, old = current(root_dir)
    draft = read_signed(root_dir / DRAFT, "root draft")
    new = Root.from_payload(draft.payload)
    return DraftStatus(
        new.version,
        len(_valid_signers(draft, old.keys)),
        old.threshold,
        len(old.keys),
        len(_valid_signers(draft, new.keys)),
        new.threshold,
        len(new.keys),
    )


def sign_draft(root_dir: Path, signer: Signer) -> DraftStatus:
    """Add ``signer``'s signature to the draft. The key must be a key of the current root or of the
    draft (``WrongKey``): a signature nobody counts is refused rather than silently collected."""
    require(root_dir / DRAFT, "no draft: start one with keys root update")
    _, old = current(root_dir)
    draft = read_signed(root_dir / DRAFT, "root draft")
    new = Root.from_payload(draft.payload)
    kid = signer.public_key.key_id
    if kid not in old.keys and kid not in new.keys:
        raise WrongKey(f"key {kid} is not a root key of v{old.version} or of the v{new.version} draft")
    write_signed(root_dir / DRAFT, add_signature(draft, signer))
    return draft_status(root_dir)


def publish_draft(root_dir: Path, *, now: datetime) -> Root:
    """Promote the draft to ``root.json`` and ``root-history/<V>.json``.

    The draft goes through :func:`~gateway.trust.verifier.verify_root_signatures` with the current
    root as ``previous`` — exactly what every node will do — so this raises ``ThresholdNotMet``
    (with the count) when the old or the new threshold is not reached, and ``RootVersionNotNext``
    if the draft is not version + 1. An expired draft raises ``DocumentExpired``.
    """
    require(root_dir / DRAFT, "no draft: start one with keys root update")
    _, old = current(root_dir)
    draft = read_signed(root_dir / DRAFT, "root draft")
    new = verify_root_signatures(draft, previous=old)
    if new.expires <= now:
        raise DocumentExpired(f"the v{new.version} draft expired at {format_time(new.expires)}")
    out = root_dir / HISTORY / f"{new.version}.json"
    refuse_existing(out)
    write_signed(out, draft)
    write_signed(root_dir / ROOT, draft)
    (root_dir / DRAFT).unlink()
    return new


# --- showing ---------------------------------------------------------------------------------------


def describe_root(doc: SignedDocument) -> list[str]:
    """Human-readable lines for a root or a draft. Says how many of its own keys signed it, which
    is not the rotation check (that needs the previous root: ``keys root publish``)."""
    root = Root.from_payload(doc.payload)
    own = _valid_signers(doc, root.keys)
    lines = [
        f"root v{root.version}, expires {format_time(root.expires)}",
        f"fingerprint: {short_fingerprint(doc.payload)}",
        f"root keys ({root.threshold} of {len(root.keys)} must sign):",
        *(f"  {kid}{'  signed' if kid in own else ''}" for kid in sorted(root.keys)),
        f"directory keys ({root.directory_threshold} of {len(root.directory_keys)} must sign each directory):",
        *(f"  {kid}" for kid in sorted(root.directory_keys)),
        f"signatures: {len(doc.signatures)} ({len(own)} valid by this root's own keys)",
        f"provinces ({len(root.provinces)}):",
    ]
    for prefix, op in sorted(root.provinces.items()):
        lines.append(f"  {prefix}  {op.name}")
        lines.append(f"      operator keys ({op.threshold} must sign): {', '.join(sorted(op.keys))}")
        lines.append(f"      node CA sha256: {ca_fingerprint(op)}")
    return lines


def read_root_file(path: Path) -> SignedDocument:
    """A root document from a file, or the current ``root.json`` of a root directory."""
    if path.is_dir():
        path = path / ROOT
    doc = read_signed(path, "root")
    if doc.payload_type != ROOT_TYPE:
        raise MalformedDocument(f"{path} is not a root document ({doc.payload_type})")
    return doc
