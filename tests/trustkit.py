"""An in-memory PKI for tests: a national root, provinces with CAs, enrolled nodes, signed bundles.

Built from the real primitives (``keys.ca``, ``gateway.trust.dsse``, ``gateway.trust.documents``),
so a test that forges something — a part signed by the wrong operator, a node outside its prefix —
does it the way an attacker would, and the real verifier judges it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from gateway.trust.documents import (
    MANIFEST_TYPE,
    PART_TYPE,
    ROOT_TYPE,
    Bundle,
    Manifest,
    NodeEntry,
    NodeSigningKey,
    NodeStatus,
    PartRef,
    ProvinceOperator,
    ProvincePart,
    Root,
)
from gateway.trust.dsse import SignedDocument, sign_document
from gateway.trust.signing import X25519_HPKE, Ed25519Signer, PublicKey
from keys import ca

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def keymap(signers: list[Ed25519Signer]) -> dict[str, PublicKey]:
    return {s.public_key.key_id: s.public_key for s in signers}


@dataclass
class Node:
    node_id: str
    division: str
    tls_key: ec.EllipticCurvePrivateKey
    tls_cert_pem: str
    signers: list[Ed25519Signer]
    encryption_key: x25519.X25519PrivateKey
    status: NodeStatus = NodeStatus.ACTIVE
    endpoint: str = "127.0.0.1:0"
    rotations: list[tuple[datetime, datetime]] = field(default_factory=list)  # (retired_at, refuse_after)

    @property
    def tls_key_pem(self) -> bytes:
        return self.tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def entry(self) -> NodeEntry:
        keys = []
        for i, s in enumerate(self.signers):
            retired = self.rotations[i] if i < len(self.rotations) else (None, None)
            keys.append(NodeSigningKey(s.public_key, NOW - timedelta(days=30), retired[0], retired[1]))
        raw = self.encryption_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return NodeEntry(
            node_id=self.node_id,
            division=self.division,
            endpoint=self.endpoint,
            status=self.status,
            tls_certificate=self.tls_cert_pem,
            signing_keys=tuple(keys),
            encryption_key=PublicKey(X25519_HPKE, raw),
        )


@dataclass
class Province:
    prefix: str
    name: str
    signers: list[Ed25519Signer]
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert_pem: str
    nodes: dict[str, Node] = field(default_factory=dict)
    version: int = 1

    def operator(self) -> ProvinceOperator:
        return ProvinceOperator(self.prefix, self.name, keymap(self.signers), 1, self.ca_cert_pem)

    def enrol(self, node_id: str, division: str, *, check_prefix: bool = True, now: datetime = NOW) -> Node:
        """Enrol a node with the real issuing code; ``check_prefix=False`` forges an out-of-prefix
        certificate the way a compromised tool would (bypassing the issuer's refusal)."""
        tls_key = ca.new_tls_key()
        csr = ca.create_csr(tls_key, node_id=node_id, division=division)
        ca_cert = ca.x509.load_pem_x509_certificate(self.ca_cert_pem.encode())
        cert = ca.issue_node_certificate(
            csr,
            ca_key=self.ca_key,
            ca_cert=ca_cert,
            prefix=self.prefix if check_prefix else division[: len(self.prefix)],
            node_id=node_id,
            division=division,
            now=now,
        )
        node = Node(
            node_id, division, tls_key, ca.pem(cert), [Ed25519Signer.generate()], x25519.X25519PrivateKey.generate()
        )
        self.nodes[node_id] = node
        return node

    def part(self, *, expires: datetime | None = None) -> ProvincePart:
        return ProvincePart(
            self.prefix,
            self.version,
            expires or NOW + timedelta(days=30),
            tuple(n.entry() for n in self.nodes.values()),
        )

    def signed_part(
        self, *, signers: list[Ed25519Signer] | None = None, expires: datetime | None = None
    ) -> SignedDocument:
        return sign_document(PART_TYPE, self.part(expires=expires).to_payload(), signers or self.signers)


def new_province(prefix: str, name: str) -> Province:
    key = ca.new_tls_key()
    cert = ca.create_ca(key, prefix=prefix, name=name, now=NOW - timedelta(days=1))
    return Province(prefix, name, [Ed25519Signer.generate()], key, ca.pem(cert))


@dataclass
class Pki:
    root_signers: list[Ed25519Signer]
    threshold: int
    directory_signers: list[Ed25519Signer]
    provinces: dict[str, Province]
    root_version: int = 1
    directory_version: int = 1
    roots: list[SignedDocument] = field(default_factory=list)

    def root(self, *, version: int | None = None, expires: datetime | None = None) -> Root:
        return Root(
            version=version or self.root_version,
            expires=expires or NOW + timedelta(days=365),
            keys=keymap(self.root_signers),
            threshold=self.threshold,
            directory_keys=keymap(self.directory_signers),
            directory_threshold=1,
            provinces={p: prov.operator() for p, prov in self.provinces.items()},
        )

    def signed_root(self, *, signers: list[Ed25519Signer] | None = None, **kw: object) -> SignedDocument:
        return sign_document(ROOT_TYPE, self.root(**kw).to_payload(), signers or self.root_signers)  # type: ignore[arg-type]

    def publish_root(self) -> SignedDocument:
        doc = self.signed_root()
        self.roots.append(doc)
        return doc

    def bundle(
        self,
        *,
        parts: dict[str, SignedDocument] | None = None,
        manifest: Manifest | None = None,
        manifest_signers: list[Ed25519Signer] | None = None,
        expires: datetime | None = None,
        roots: list[SignedDocument] | None = None,
    ) -> bytes:
        parts = parts if parts is not None else {p: prov.signed_part() for p, prov in self.provinces.items()}
        if manifest is None:
            refs = {}
            for p, doc in parts.items():
                # Read the version without validating: a case may deliberately carry a malformed part.
                version = json.loads(doc.payload)["version"]
                refs[p] = PartRef(version, hashlib.sha256(doc.payload).hexdigest())
            manifest = Manifest(self.directory_version, expires or NOW + timedelta(days=7), self.root_version, refs)
        signed_manifest = sign_document(
            MANIFEST_TYPE, manifest.to_payload(), manifest_signers or self.directory_signers
        )
        return Bundle(tuple(roots if roots is not None else self.roots), signed_manifest, parts).to_bytes()


def new_pki(
    root_keys: int = 3,
    threshold: int = 2,
    provinces: tuple[tuple[str, str], ...] = (("50", "重庆市"), ("51", "四川省")),
) -> Pki:
    pki = Pki(
        [Ed25519Signer.generate() for _ in range(root_keys)],
        threshold,
        [Ed25519Signer.generate()],
        {p: new_province(p, n) for p, n in provinces},
    )
    pki.publish_root()
    return pki


def standard_pki() -> Pki:
    """Two provinces, three nodes: cq-liangjiang (500157), cq-beibei (500109), sc-nanbu (511321)."""
    pki = new_pki()
    pki.provinces["50"].enrol("cq-liangjiang", "500157")
    pki.provinces["50"].enrol("cq-beibei", "500109")
    pki.provinces["51"].enrol("sc-nanbu", "511321")
    return pki


__all__ = ["NOW", "Node", "Pki", "Province", "keymap", "new_pki", "new_province", "replace", "standard_pki"]
