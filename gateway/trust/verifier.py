"""The trusted-directory state machine (modelled on python-tuf's trusted metadata set).

Pure: bytes and an explicit time in, a verified :class:`Directory` and a new :class:`TrustState`
out; no files, no sockets, no clock. A node persists the state between refreshes (``store``) so
that rollback protection survives restarts.

Accepting a directory bundle checks, in this order, and stores nothing unless every check passes:

1. **Roots.** Every root in the bundle newer than the trusted one is applied in order. A new root
   must have exactly the next version (:class:`RootVersionNotNext`) and be signed by a threshold of
   the *old* root's keys **and** a threshold of its *own* keys (:class:`ThresholdNotMet`). The
   resulting root must not be expired (:class:`DocumentExpired`).
2. **Manifest.** Signed by a threshold of the root's directory keys; made for this root version;
   not older than the last accepted directory (:class:`RollbackRefused` — an equal version is
   accepted only if it is byte-identical); not expired.
3. **Province parts.** Each part the manifest lists must be present, match its digest
   (:class:`DigestMismatch`), be governed by a provincial operator of the root
   (:class:`UnknownProvince`), be signed by a threshold of that operator's keys, carry the version
   the manifest names and not roll back that province, and not be expired.
4. **Entries.** Every node's division starts with its part's prefix (:class:`OutsidePrefix` — the
   rule that a province can only enrol its own counties is enforced here, at every verifier, not
   only by the tool that issues); node ids and signing-key ids are unique across the directory
   (:class:`DuplicateNode`); each TLS certificate was issued by that province's CA and names
   exactly this node and division (:class:`CertificateInvalid`). A certificate that is merely
   outside its validity dates does *not* reject the directory — one county missing a renewal
   must not cut off every node in the country — but that node is refused whenever it is used
   (:meth:`Directory.active`), exactly like a suspended node.

After acceptance, :class:`Directory` answers who a peer is (:meth:`Directory.authenticate_peer`)
and which key may have signed a message (:meth:`Directory.signing_key`), applying revocation and
the key-rotation overlap window.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from gateway.errors import (
    CertificateInvalid,
    DigestMismatch,
    DocumentExpired,
    DuplicateNode,
    KeyNotValid,
    MalformedDocument,
    NodeNotActive,
    OutsidePrefix,
    PeerMismatch,
    RollbackRefused,
    RootVersionNotNext,
    TrustError,
    UnknownNode,
    UnknownProvince,
)
from gateway.trust import x509 as tx509
from gateway.trust.documents import (
    MANIFEST_TYPE,
    PART_TYPE,
    ROOT_TYPE,
    Bundle,
    Manifest,
    NodeEntry,
    NodeStatus,
    ProvincePart,
    Root,
    format_time,
)
from gateway.trust.dsse import SignedDocument, verify_threshold
from gateway.trust.signing import PublicKey


def _expired(expires: datetime, now: datetime, what: str) -> None:
    if now > expires:
        raise DocumentExpired(f"{what} expired at {format_time(expires)}")


def verify_root_signatures(doc: SignedDocument, *, previous: Root | None) -> Root:
    """Verify a root document's signatures and return it parsed.

    With ``previous`` (a rotation): threshold of the previous root's keys, then the version must be
    ``previous.version + 1``, then threshold of the new root's own keys. Without (the pinned root a
    node is installed with): threshold of its own keys.
    """
    if previous is not None:
        verify_threshold(
            doc,
            payload_type=ROOT_TYPE,
            keys=previous.keys,
            threshold=previous.threshold,
            role=f"root v{previous.version} keys",
        )
    root = Root.from_payload(doc.payload)
    if previous is not None and root.version != previous.version + 1:
        raise RootVersionNotNext(f"trusted root is v{previous.version}, offered v{root.version}")
    verify_threshold(
        doc,
        payload_type=ROOT_TYPE,
        keys=root.keys,
        threshold=root.threshold,
        role=f"root v{root.version} keys",
    )
    return root


@dataclass(frozen=True)
class TrustState:
    """What a node remembers between refreshes: the trusted root and the versions accepted."""

    root_document: SignedDocument = field(repr=False)
    root: Root = field(repr=False)
    directory_version: int = 0
    manifest_sha256: str | None = None
    part_versions: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_pinned_root(cls, root_bytes: bytes, now: datetime) -> TrustState:
        """Start from the root a node was installed with (signed by a threshold of its own keys)."""
        doc = SignedDocument.parse(root_bytes, "root")
        root = verify_root_signatures(doc, previous=None)
        _expired(root.expires, now, f"root v{root.version}")
        return cls(doc, root)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root_document.to_json(),
            "directory_version": self.directory_version,
            "manifest_sha256": self.manifest_sha256,
            "part_versions": dict(sorted(self.part_versions.items())),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TrustState:
        """Restore a persisted state. Its root is re-verified (threshold of its own keys)."""
        try:
            root_doc = SignedDocument.from_json(doc["root"], "state.root")
            versions = {str(k): int(v) for k, v in doc["part_versions"].items()}
            return cls(
                root_doc,
                verify_root_signatures(root_doc, previous=None),
                int(doc["directory_version"]),
                doc["manifest_sha256"],
                versions,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedDocument("the saved trust state is malformed") from None

    # --- updates ---------------------------------------------------------------------------------

    def with_root(self, doc: SignedDocument) -> TrustState:
        """Apply one root rotation (version + 1, old and new thresholds)."""
        root = verify_root_signatures(doc, previous=self.root)
        return replace(self, root_document=doc, root=root)

    def accept(self, bundle_bytes: bytes, now: datetime) -> tuple[TrustState, Directory]:
        """Verify a directory bundle (see the module docstring for the order of checks)."""
        bundle = Bundle.parse(bundle_bytes)
        state = self
        for doc in bundle.roots:
            version = Root.from_payload(doc.payload).version
            if version > state.root.version:
                state = state.with_root(doc)
        root = state.root
        _expired(root.expires, now, f"root v{root.version}")

        verify_threshold(
            bundle.manifest,
            payload_type=MANIFEST_TYPE,
            keys=root.directory_keys,
            threshold=root.directory_threshold,
            role="directory publisher",
        )
        manifest = Manifest.from_payload(bundle.manifest.payload)
        manifest_digest = hashlib.sha256(bundle.manifest.payload).hexdigest()
        if manifest.root_version != root.version:
            raise RollbackRefused(
                f"directory was made for root v{manifest.root_version}, trusted root is v{root.version}"
            )
        if manifest.version < state.directory_version or (
            manifest.version == state.directory_version and manifest_digest != state.manifest_sha256
        ):
            raise RollbackRefused(f"directory v{manifest.version} offered, v{state.directory_version} already trusted")
        _expired(manifest.expires, now, f"directory v{manifest.version}")

        if set(bundle.parts) != set(manifest.parts):
            raise DigestMismatch("the bundle's province parts are not the ones the directory lists")
        entries: dict[str, NodeEntry] = {}
        key_owner: dict[str, str] = {}
        part_versions = dict(state.part_versions)
        for prefix, ref in sorted(manifest.parts.items()):
            doc = bundle.parts[prefix]
            if hashlib.sha256(doc.payload).hexdigest() != ref.sha256:
                raise DigestMismatch(f"province part {prefix}")
            part = verify_part(doc, prefix, root, now)
            if part.version != ref.version:
                raise DigestMismatch(f"province part {prefix} is not the version the directory lists")
            if part.version < state.part_versions.get(prefix, 0):
                raise RollbackRefused(
                    f"province {prefix} part v{part.version} offered, v{state.part_versions[prefix]} already trusted"
                )
            for entry in part.nodes:
                if entry.node_id in entries:
                    raise DuplicateNode(f"node {entry.node_id}")
                entries[entry.node_id] = entry
                for k in entry.signing_keys:
                    if key_owner.setdefault(k.key.key_id, entry.node_id) != entry.node_id:
                        raise DuplicateNode(f"signing key {k.key.key_id} is listed for two nodes")
            part_versions[prefix] = part.version

        new_state = replace(
            state,
            directory_version=manifest.version,
            manifest_sha256=manifest_digest,
            part_versions=part_versions,
        )
        return new_state, Directory(manifest.version, manifest.expires, root, entries)


def verify_part(doc: SignedDocument, prefix: str, root: Root, now: datetime) -> ProvincePart:
    """Verify one province's signed part against ``root`` at ``now`` and return it parsed.

    In order: a provincial operator of the root governs ``prefix`` (``UnknownProvince``); a
    threshold of that operator's keys signed the part (``ThresholdNotMet``); the part is for this
    prefix (``DigestMismatch``) and not expired (``DocumentExpired``); every entry's division lies
    inside the prefix (``OutsidePrefix``) and its certificate was issued by the province's CA for
    exactly that node and division (``CertificateInvalid``). Used by every node and, before
    publishing, by the directory builder — one rule, one implementation.
    """
    operator = root.provinces.get(prefix)
    if operator is None:
        raise UnknownProvince(f"prefix {prefix}")
    verify_threshold(
        doc,
        payload_type=PART_TYPE,
        keys=operator.keys,
        threshold=operator.threshold,
        role=f"province {prefix} operator",
    )
    part = ProvincePart.from_payload(doc.payload)
    if part.prefix != prefix:
        raise DigestMismatch(f"the part listed for province {prefix} is the part of {part.prefix}")
    _expired(part.expires, now, f"province {prefix} part v{part.version}")
    ca = tx509.load_certificate(operator.ca_certificate, f"province {prefix} CA certificate")
    for entry in part.nodes:
        _check_entry(entry, prefix, ca, now)
    return part


def _check_entry(entry: NodeEntry, prefix: str, ca: x509.Certificate, now: datetime) -> None:
    if not entry.division.startswith(prefix):
        raise OutsidePrefix(f"node {entry.node_id} ({entry.division}) in the part of prefix {prefix}")
    cert = tx509.load_certificate(entry.tls_certificate, f"node {entry.node_id} certificate")
    try:
        identity = tx509.verify_node_certificate(cert, ca, now, check_validity=False)
    except CertificateInvalid as exc:
        raise CertificateInvalid(f"node {entry.node_id}: {exc.detail}") from None
    if (identity.node_id, identity.division) != (entry.node_id, entry.division):
        raise CertificateInvalid(f"node {entry.node_id}: certificate names another node or division")


class Directory:
    """A verified directory: who is who, with which keys, until ``expires``."""

    def __init__(self, version: int, expires: datetime, root: Root, entries: Mapping[str, NodeEntry]) -> None:
        self.version = version
        self.expires = expires
        self.root = root
        self._entries = dict(entries)
        self._certificates = {nid: tx509.load_certificate(e.tls_certificate, nid) for nid, e in entries.items()}
        self._fingerprints = {nid: tx509.fingerprint(cert) for nid, cert in self._certificates.items()}

    def __len__(self) -> int:
        return len(self._entries)

    def nodes(self) -> list[NodeEntry]:
        return sorted(self._entries.values(), key=lambda e: e.node_id)

    def serving(self, now: datetime) -> dict[str, NodeEntry]:
        """The node that serves each division now: of the nodes :meth:`active` admits, the first by
        node id. A division no usable node serves is absent (routing reports it, never guesses)."""
        out: dict[str, NodeEntry] = {}
        for entry in self.nodes():
            if entry.division in out or entry.status is not NodeStatus.ACTIVE:
                continue
            try:
                out[entry.division] = self.active(entry.node_id, now)
            except TrustError:
                continue
        return out

    def check_fresh(self, now: datetime) -> None:
        _expired(self.expires, now, f"directory v{self.version}")

    def entry(self, node_id: str) -> NodeEntry:
        entry = self._entries.get(node_id)
        if entry is None:
            raise UnknownNode(f"node {node_id}")
        return entry

    def active(self, node_id: str, now: datetime) -> NodeEntry:
        """The node's entry if the directory is fresh, the node active and its certificate within
        its validity dates; raises ``DocumentExpired`` / ``UnknownNode`` / ``NodeNotActive``."""
        self.check_fresh(now)
        entry = self.entry(node_id)
        if entry.status is not NodeStatus.ACTIVE:
            raise NodeNotActive(f"node {node_id} is {entry.status.value}")
        try:
            tx509.check_validity(self._certificates[node_id], now, "certificate")
        except CertificateInvalid:
            raise NodeNotActive(f"node {node_id}'s certificate is outside its validity dates") from None
        return entry

    def signing_key(self, node_id: str, key_id: str, *, signed_at: datetime, now: datetime) -> PublicKey:
        """The public key ``node_id`` may have used to sign a message created at ``signed_at``.

        Refused when: the directory is expired or the node not active; the key is not the node's;
        the message claims a time before the key was valid; the key was retired (rotated) before
        the message was signed; or the overlap window after rotation has ended.
        """
        entry = self.active(node_id, now)
        for k in entry.signing_keys:
            if k.key.key_id != key_id:
                continue
            if signed_at < k.valid_from:
                raise KeyNotValid(f"key {key_id} of {node_id} was not yet valid at the signing time")
            if k.retired_at is not None and signed_at > k.retired_at:
                raise KeyNotValid(f"key {key_id} of {node_id} was rotated before the signing time")
            if k.refuse_after is not None and now > k.refuse_after:
                raise KeyNotValid(f"key {key_id} of {node_id}: the rotation overlap window has ended")
            return k.key
        raise KeyNotValid(f"key {key_id} is not a signing key of {node_id}")

    def authenticate_peer(self, certificate: str | bytes, now: datetime) -> NodeEntry:
        """Map a TLS peer certificate to an active directory entry.

        The certificate must be byte-for-byte the one the directory lists for the node it names
        (so a certificate from an unknown CA, a superseded certificate, or a valid certificate of
        another node are all refused), and the node must be active in a fresh directory.
        """
        cert = tx509.load_certificate(certificate, "peer certificate")
        identity = tx509.node_identity(cert)
        entry = self.active(identity.node_id, now)
        if tx509.fingerprint(cert) != self._fingerprints[identity.node_id]:
            raise PeerMismatch(f"certificate presented for {identity.node_id} is not the one in the directory")
        return entry

    def require_sender(self, authenticated: NodeEntry, claimed_sender: str) -> None:
        """The TLS peer must be the sender a message claims to come from."""
        if authenticated.node_id != claimed_sender:
            raise PeerMismatch(f"TLS peer {authenticated.node_id} claims to send as {claimed_sender}")

    def ca_bundle_pem(self) -> bytes:
        """The provincial CA certificates: the only trust anchors for node-to-node TLS."""
        return "".join(op.ca_certificate for _, op in sorted(self.root.provinces.items())).encode("ascii")

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "expires": format_time(self.expires),
            "root_version": self.root.version,
            "nodes": len(self._entries),
            "provinces": sorted(self.root.provinces),
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), sort_keys=True)
