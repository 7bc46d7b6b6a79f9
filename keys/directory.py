"""Directory bundles: assembling, signing, verifying and showing what nodes fetch.

A bundle (:class:`gateway.trust.documents.Bundle`) is every root since version 1, a manifest naming
each province part by version and digest, and the signed parts. :func:`build_bundle` assembles it
with the manifest *unsigned*; the directory publisher signs it separately (:func:`sign_bundle`), so
the key never has to be on the machine that collects the parts. :func:`verify_bundle` is the real
verifier (:meth:`gateway.trust.verifier.TrustState.accept`), nothing less: what it accepts, nodes
accept.

``build`` checks what it can early — the root chain, each part's signature, prefix rules, expiry,
rollback against the previous bundle — so a mistake is found at the publisher, not by every node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.errors import (
    DocumentExpired,
    InputError,
    MalformedDocument,
    RollbackRefused,
    WrongKey,
)
from gateway.trust import x509 as tx509
from gateway.trust.documents import (
    MANIFEST_TYPE,
    PART_TYPE,
    Bundle,
    Manifest,
    PartRef,
    ProvincePart,
    Root,
    format_time,
)
from gateway.trust.dsse import SignedDocument, add_signature
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory, TrustState, verify_part, verify_root_signatures
from keys.province import key_line


def verify_chain(roots: Sequence[SignedDocument]) -> Root:
    """Walk a root history as a node pinned at version 1 would, and return the newest root.

    Version 1 must be signed by a threshold of its own keys; every next one by a threshold of the
    previous keys and of its own, at exactly version + 1 (``ThresholdNotMet``,
    ``RootVersionNotNext``). Expiry is not checked here: old roots are expected to have expired.
    """
    if not roots:
        raise MalformedDocument("a directory needs the root history (at least root v1)")
    root = verify_root_signatures(roots[0], previous=None)
    if root.version != 1:
        raise MalformedDocument(f"the root history must start at version 1, not {root.version}")
    for doc in roots[1:]:
        root = verify_root_signatures(doc, previous=root)
    return root


def part_of(doc: SignedDocument) -> ProvincePart:
    if doc.payload_type != PART_TYPE:
        raise MalformedDocument(f"not a province part: {doc.payload_type!r}")
    return ProvincePart.from_payload(doc.payload)


@dataclass(frozen=True)
class Built:
    bundle: Bundle
    manifest: Manifest
    notes: tuple[str, ...]


def build_bundle(
    roots: Sequence[SignedDocument],
    parts: Sequence[SignedDocument],
    *,
    expires: datetime,
    now: datetime,
    previous: Bundle | None = None,
    version: int | None = None,
) -> Built:
    """Assemble a bundle with an unsigned manifest.

    The version is ``version`` if given, else the previous bundle's + 1, else 1. Parts of the
    previous bundle whose province is still in the root and that ``parts`` does not replace are
    carried over. Checks, in order: the root chain (:func:`verify_chain`) and that the newest root
    is not expired; the manifest expiry is after ``now`` (``InputError``); for each part: one per
    prefix (``InputError``), then everything every node will check
    (:func:`gateway.trust.verifier.verify_part`: a province of the root, a threshold of that
    operator's keys, not expired, entries inside the prefix, certificates from the province's CA
    naming their node), and not older than the previous bundle's part (``RollbackRefused``).
    Notes warn of parts or a root that expire before the manifest.
    """
    root = verify_chain(roots)
    if root.expires < now:
        raise DocumentExpired(f"root v{root.version} expired at {format_time(root.expires)}")
    if expires <= now:
        raise InputError("the directory must expire in the future")
    notes: list[str] = []
    previous_parts: dict[str, SignedDocument] = dict(previous.parts) if previous else {}
    previous_version = Manifest.from_payload(previous.manifest.payload).version if previous else 0
    if version is None:
        version = previous_version + 1
    if version < 1:
        raise InputError("the directory version must be at least 1")
    if previous is not None and version <= previous_version:
        raise RollbackRefused(f"the previous directory is v{previous_version}; the next must be newer")

    given: dict[str, SignedDocument] = {}
    for doc in parts:
        prefix = part_of(doc).prefix
        if prefix in given:
            raise InputError(f"two parts for province {prefix}")
        given[prefix] = doc
    chosen = dict(given)
    for prefix, doc in sorted(previous_parts.items()):
        if prefix in chosen:
            continue
        if prefix in root.provinces:
            chosen[prefix] = doc
            notes.append(f"province {prefix}: part v{part_of(doc).version} carried over from the previous directory")
        else:
            notes.append(f"province {prefix}: left out, the root no longer names it")

    refs: dict[str, PartRef] = {}
    for prefix, doc in sorted(chosen.items()):
        part = verify_part(doc, prefix, root, now)  # exactly what every node will check
        if part.expires < expires:
            notes.append(
                f"warning: province {prefix} part expires at {format_time(part.expires)}, before the directory"
            )
        before = previous_parts.get(prefix)
        if before is not None and part.version < part_of(before).version:
            raise RollbackRefused(f"province {prefix} part v{part.version} is older than v{part_of(before).version}")
        refs[prefix] = PartRef(part.version, hashlib.sha256(doc.payload).hexdigest())
    for prefix in sorted(set(root.provinces) - set(refs)):
        notes.append(f"province {prefix}: no part yet (its nodes are not in this directory)")
    if root.expires < expires:
        notes.append(f"warning: root v{root.version} expires at {format_time(root.expires)}, before the directory")
    manifest = Manifest(version, expires, root.version, refs)
    bundle = Bundle(tuple(roots), SignedDocument(MANIFEST_TYPE, manifest.to_payload()), chosen)
    return Built(bundle, manifest, tuple(notes))


def newest_root(bundle: Bundle) -> Root:
    if not bundle.roots:
        raise MalformedDocument("the bundle has no roots")
    return max((Root.from_payload(d.payload) for d in bundle.roots), key=lambda r: r.version)


def sign_bundle(bundle: Bundle, signer: Signer) -> tuple[Bundle, int, int]:
    """Add the directory publisher's signature to the manifest; returns the bundle and (valid
    signatures by directory keys, threshold). The key must be a directory key of the bundle's
    newest root (``WrongKey``) — a key the nodes would not count is refused here."""
    root = newest_root(bundle)
    kid = signer.public_key.key_id
    if kid not in root.directory_keys:
        raise WrongKey(f"key {kid} is not a directory key of root v{root.version}")
    signed = replace(bundle, manifest=add_signature(bundle.manifest, signer))
    count = sum(1 for s in signed.manifest.signatures if s.key_id in root.directory_keys)
    return signed, count, root.directory_threshold


def verify_bundle(bundle_bytes: bytes, state: TrustState, at: datetime) -> tuple[TrustState, Directory]:
    """Exactly what a node does on refresh: :meth:`TrustState.accept` at time ``at``."""
    return state.accept(bundle_bytes, at)


def describe_bundle(bundle: Bundle) -> list[str]:
    """What the bundle *says* — no signature is checked here (see ``keys directory verify``)."""
    manifest = Manifest.from_payload(bundle.manifest.payload)
    root_versions = [Root.from_payload(d.payload).version for d in bundle.roots]
    lines = [
        "UNVERIFIED: this shows what the bundle says; `tongban keys directory verify` checks it",
        f"directory v{manifest.version}, expires {format_time(manifest.expires)}, made for root "
        f"v{manifest.root_version} (bundle holds roots {', '.join(f'v{v}' for v in root_versions)})",
        f"manifest signatures: {len(bundle.manifest.signatures)}",
    ]
    for prefix, doc in sorted(bundle.parts.items()):
        part = part_of(doc)
        lines.append(
            f"province {prefix}: part v{part.version}, expires {format_time(part.expires)}, {len(part.nodes)} node(s)"
        )
        for e in part.nodes:
            cert = tx509.load_certificate(e.tls_certificate, f"node {e.node_id} certificate")
            lines.append(f"  {e.node_id}  {e.division}  {e.status.value:9}  {e.endpoint}")
            lines.append(
                f"    certificate sha256 {tx509.fingerprint(cert)[:32]}…, valid until "
                f"{format_time(cert.not_valid_after_utc)}"
            )
            lines.extend("    " + key_line(k) for k in e.signing_keys)
            lines.append(f"    encryption key {e.encryption_key.key_id} ({e.encryption_key.algorithm})")
    return lines
