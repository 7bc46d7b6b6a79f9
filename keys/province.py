"""A provincial operator's directory: signing key, node CA, public descriptor, working node list.

Layout of ``PROVINCE_DIR`` (created by :func:`init_province`)::

    operator-key.pem   Ed25519 key that signs this province's part of the directory  (secret, encrypted)
    ca-key.pem         ECDSA P-256 key of the node CA                                 (secret, encrypted)
    ca.crt.pem         the node CA certificate (public)
    province.json      the public descriptor, signed by the operator key: what the national root
                       operators put into the root (``keys root init/update --province``)
    nodes.json         the working list of enrolled nodes and the last published part version
    parts/<N>.json     every part this province has published (``keys province publish``)

``nodes.json`` is the operator's own working state, not a trust document: nodes only ever see
what :func:`publish_part` signs from it. Every rule a verifier applies to a part (entries inside the
prefix, certificates from this CA) is checked again here before signing, so a hand-edited list is
refused by the tool as well as by every node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.domain.divisions import DivisionTable
from gateway.errors import (
    CertificateInvalid,
    InputError,
    MalformedDocument,
    OperatorStateError,
    OutsidePrefix,
    WrongKey,
)
from gateway.trust import x509 as tx509
from gateway.trust.documents import (
    PART_TYPE,
    SPEC_VERSION,
    NodeEntry,
    NodeSigningKey,
    NodeStatus,
    ProvinceOperator,
    ProvincePart,
    decode,
    encode,
    format_time,
)
from gateway.trust.dsse import SignedDocument, sign_document, verify_threshold
from gateway.trust.signing import SIGNATURE_ALGORITHMS, PublicKey, Signer
from keys import ca
from keys.files import (
    new_signing_key,
    new_tls_key,
    private_dir,
    read_json,
    read_signed,
    refuse_existing,
    require,
    short_fingerprint,
    write_json,
    write_signed,
)

DESCRIPTOR_TYPE = "application/vnd.tongban.province-descriptor+json"
OPERATOR_KEY = "operator-key.pem"
CA_KEY = "ca-key.pem"
CA_CERT = "ca.crt.pem"
DESCRIPTOR = "province.json"
NODES = "nodes.json"
PARTS = "parts"


# --- the public descriptor ------------------------------------------------------------------------


def descriptor_payload(operator: ProvinceOperator) -> bytes:
    doc = {"type": "province-descriptor", "spec_version": SPEC_VERSION, "prefix": operator.prefix}
    return encode({**doc, **operator.to_json()})


def parse_descriptor(doc: SignedDocument) -> ProvinceOperator:
    """Read a province descriptor (``province.json``) as the root operators receive it.

    Checks, in order: the payload type; the payload's fields (strict: exactly prefix, name, keys,
    threshold, ca_certificate); the prefix is 2-6 digits; every key id is its key's real id; the
    CA certificate is a CA with an ECDSA key; then that the descriptor is signed by a threshold of
    its *own* keys (proof that whoever made it holds the operator key). Raises
    ``MalformedDocument``, ``CertificateInvalid`` or ``ThresholdNotMet``.

    A valid self-signature proves possession, not authority: the root operators must still confirm
    the descriptor's fingerprint (``keys province show``) with the province out of band.
    """
    if doc.payload_type != DESCRIPTOR_TYPE:
        raise MalformedDocument(f"expected a province descriptor ({DESCRIPTOR_TYPE}), got {doc.payload_type!r}")
    d = decode(doc.payload, "province descriptor")
    expected = {"type", "spec_version", "prefix", "name", "keys", "threshold", "ca_certificate"}
    if set(d) != expected or d["type"] != "province-descriptor" or d["spec_version"] != SPEC_VERSION:
        raise MalformedDocument(f"province descriptor must have exactly {sorted(expected)}")
    prefix, name, threshold, ca_pem = d["prefix"], d["name"], d["threshold"], d["ca_certificate"]
    if not (isinstance(prefix, str) and 2 <= len(prefix) <= 6 and prefix.isascii() and prefix.isdigit()):
        raise MalformedDocument("province descriptor prefix must be 2-6 digits")
    if not isinstance(name, str) or not name or not isinstance(ca_pem, str):
        raise MalformedDocument("province descriptor name and ca_certificate must be non-empty strings")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise MalformedDocument("province descriptor threshold must be an integer >= 1")
    if not isinstance(d["keys"], dict) or not d["keys"]:
        raise MalformedDocument("province descriptor keys must be a non-empty object")
    keys: dict[str, PublicKey] = {}
    for kid, kdoc in d["keys"].items():
        key = PublicKey.from_json(kdoc, f"province descriptor key {kid}")
        if key.algorithm not in SIGNATURE_ALGORITHMS or key.key_id != kid:
            raise MalformedDocument(f"province descriptor key {kid} is not a signature key with that id")
        keys[kid] = key
    _check_ca(tx509.load_certificate(ca_pem, f"province {prefix} CA certificate"), prefix)
    verify_threshold(doc, payload_type=DESCRIPTOR_TYPE, keys=keys, threshold=threshold, role=f"province {prefix}")
    return ProvinceOperator(prefix, name, keys, threshold, ca_pem)


def _check_ca(cert: x509.Certificate, prefix: str) -> None:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateInvalid(f"province {prefix} CA certificate is not a CA")
    if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        raise CertificateInvalid(f"province {prefix} CA certificate must have an ECDSA key")


def read_descriptor(path: Path) -> ProvinceOperator:
    """A verified descriptor from ``path`` (a ``province.json`` or the province directory)."""
    if path.is_dir():
        path = path / DESCRIPTOR
    return parse_descriptor(read_signed(path, "province descriptor"))


def ca_fingerprint(operator: ProvinceOperator) -> str:
    return tx509.fingerprint(tx509.load_certificate(operator.ca_certificate, f"province {operator.prefix} CA"))


# --- creating a province ---------------------------------------------------------------------------


def check_prefix(prefix: str, table: DivisionTable | None = None) -> str:
    """A prefix must be 2-6 digits and cover at least one current county-level division."""
    if not (2 <= len(prefix) <= 6 and prefix.isascii() and prefix.isdigit()):
        raise InputError(f"prefix {prefix!r} must be 2-6 digits")
    table = table or DivisionTable.load_default()
    if not any(d.code.startswith(prefix) for d in table.current_counties()):
        raise InputError(f"no current county-level division starts with {prefix}")
    return prefix


def init_province(
    province_dir: Path, *, prefix: str, name: str, passphrase: bytes, now: datetime, ca_days: int = 3650
) -> SignedDocument:
    """Create a province directory: operator key, CA key and certificate, descriptor, empty node list.

    Refuses (``OperatorStateError``) if any of the files exists; ``InputError`` for a prefix that
    governs no current county. Returns the signed descriptor (also written to ``province.json``).
    """
    check_prefix(prefix)
    if not name.strip():
        raise InputError("the province operator needs a name")
    paths = [province_dir / f for f in (OPERATOR_KEY, CA_KEY, CA_CERT, DESCRIPTOR, NODES)]
    refuse_existing(*paths)
    private_dir(province_dir)
    signer = new_signing_key(province_dir / OPERATOR_KEY, passphrase)
    ca_key = new_tls_key(province_dir / CA_KEY, passphrase)
    cert_pem = ca.pem(ca.create_ca(ca_key, prefix=prefix, name=name, now=now, days=ca_days))
    (province_dir / CA_CERT).write_text(cert_pem, encoding="ascii")
    operator = ProvinceOperator(prefix, name, {signer.public_key.key_id: signer.public_key}, 1, cert_pem)
    doc = sign_document(DESCRIPTOR_TYPE, descriptor_payload(operator), [signer])
    write_signed(province_dir / DESCRIPTOR, doc)
    ProvinceState(prefix, 0, {}).save(province_dir)
    return doc


# --- the working node list -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvinceState:
    """``nodes.json``: the nodes this province has enrolled, and the last part version it published."""

    prefix: str
    part_version: int
    nodes: Mapping[str, NodeEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "part_version": self.part_version,
            "nodes": {nid: e.to_json() for nid, e in sorted(self.nodes.items())},
        }

    @classmethod
    def load(cls, province_dir: Path) -> ProvinceState:
        doc = read_json(province_dir / NODES, "province node list")
        try:
            prefix, version, nodes = doc["prefix"], doc["part_version"], doc["nodes"]
        except KeyError:
            raise MalformedDocument(f"{province_dir / NODES} lacks prefix, part_version or nodes") from None
        if not isinstance(prefix, str) or not isinstance(version, int) or not isinstance(nodes, dict):
            raise MalformedDocument(f"{province_dir / NODES} is malformed")
        entries = {nid: NodeEntry.from_json(e, f"nodes.json[{nid}]") for nid, e in nodes.items()}
        for nid, e in entries.items():
            if e.node_id != nid:
                raise MalformedDocument(f"nodes.json: entry {nid} names node {e.node_id}")
        return cls(prefix, version, entries)

    def save(self, province_dir: Path) -> None:
        write_json(province_dir / NODES, self.to_json())

    def with_node(self, entry: NodeEntry) -> ProvinceState:
        return replace(self, nodes={**self.nodes, entry.node_id: entry})


@dataclass(frozen=True)
class Province:
    """An opened province directory (public parts only; private keys are loaded on demand)."""

    path: Path
    operator: ProvinceOperator
    state: ProvinceState

    @classmethod
    def open(cls, province_dir: Path) -> Province:
        require(province_dir / DESCRIPTOR, "is this a province directory? see keys province init")
        operator = read_descriptor(province_dir)
        state = ProvinceState.load(province_dir)
        if state.prefix != operator.prefix:
            raise MalformedDocument(f"nodes.json is for prefix {state.prefix}, the descriptor for {operator.prefix}")
        return cls(province_dir, operator, state)

    @property
    def prefix(self) -> str:
        return self.operator.prefix

    @property
    def ca_certificate(self) -> x509.Certificate:
        return tx509.load_certificate(self.operator.ca_certificate, f"province {self.prefix} CA certificate")

    def check_signer(self, signer: Signer) -> None:
        if signer.public_key.key_id not in self.operator.keys:
            raise WrongKey(f"key {signer.public_key.key_id} is not an operator key of province {self.prefix}")

    def save(self, state: ProvinceState) -> Province:
        state.save(self.path)
        return replace(self, state=state)


def prune_keys(entry: NodeEntry, now: datetime) -> NodeEntry:
    """Drop signing keys whose overlap window has ended: nothing they signed can verify any more."""
    keep = tuple(k for k in entry.signing_keys if k.refuse_after is None or k.refuse_after >= now)
    return replace(entry, signing_keys=keep) if keep else entry


def set_status(province_dir: Path, node_id: str, status: NodeStatus) -> tuple[NodeStatus, NodeStatus]:
    """Suspend, revoke or reinstate a node in ``nodes.json``; returns (old, new) status.

    Revocation is final: a revoked node cannot be suspended or reinstated (the county enrols again
    under a new node id). Takes effect for other nodes only once the province publishes a new part,
    the directory is rebuilt and signed, and they refresh it.
    """
    province = Province.open(province_dir)
    entry = province.state.nodes.get(node_id)
    if entry is None:
        raise OperatorStateError(f"node {node_id} is not enrolled in province {province.prefix}")
    if entry.status is NodeStatus.REVOKED and status is not NodeStatus.REVOKED:
        raise OperatorStateError(f"node {node_id} is revoked; revocation is final (enrol a new node id)")
    province.save(province.state.with_node(replace(entry, status=status)))
    return entry.status, status


# --- publishing the province's part ----------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    document: SignedDocument
    part: ProvincePart
    path: Path
    notes: tuple[str, ...]


def publish_part(province_dir: Path, signer: Signer, *, expires: datetime, now: datetime) -> Publication:
    """Sign the next version of this province's part from ``nodes.json``.

    Checks before signing, in order: ``signer`` is an operator key of this province (``WrongKey``);
    the expiry is in the future; every entry's division is inside the prefix (``OutsidePrefix``)
    and its certificate was issued by this province's CA (``CertificateInvalid``). Signing keys
    whose overlap window has ended are dropped. A node whose certificate has already expired is
    *left out* with a note, because the verifier rejects a whole directory that lists an expired
    certificate (and an unlisted node is refused just like a revoked one); a certificate that
    expires before the part does gets a warning note.

    Writes ``parts/<version>.json`` and the new version into ``nodes.json``, and returns the signed part.
    """
    province = Province.open(province_dir)
    province.check_signer(signer)
    if expires <= now:
        raise InputError("a part must expire in the future")
    ca_cert = province.ca_certificate
    notes: list[str] = []
    entries: list[NodeEntry] = []
    state_nodes: dict[str, NodeEntry] = {}
    for nid, entry in sorted(province.state.nodes.items()):
        if not entry.division.startswith(province.prefix):
            raise OutsidePrefix(f"node {nid} ({entry.division}) is outside prefix {province.prefix}")
        cert = tx509.load_certificate(entry.tls_certificate, f"node {nid} certificate")
        if cert.issuer != ca_cert.subject:
            raise CertificateInvalid(f"node {nid}: certificate was not issued by this province's CA")
        entry = prune_keys(entry, now)
        state_nodes[nid] = entry
        if cert.not_valid_after_utc < now:
            notes.append(f"warning: left out {nid}: its certificate expired at {format_time(cert.not_valid_after_utc)}")
            continue
        if cert.not_valid_after_utc < expires:
            notes.append(
                f"warning: {nid}'s certificate expires at {format_time(cert.not_valid_after_utc)}, before this "
                f"part does; the node must rotate (keys node rotate) before then"
            )
        entries.append(entry)
    version = province.state.part_version + 1
    part = ProvincePart(province.prefix, version, expires, tuple(entries))
    doc = sign_document(PART_TYPE, part.to_payload(), [signer])
    out = province.path / PARTS / f"{version}.json"
    refuse_existing(out)
    write_signed(out, doc)
    province.save(replace(province.state, part_version=version, nodes=state_nodes))
    return Publication(doc, part, out, tuple(notes))


# --- showing ---------------------------------------------------------------------------------------


def describe_province(province_dir: Path) -> list[str]:
    province = Province.open(province_dir)
    op = province.operator
    cert = province.ca_certificate
    descriptor = read_signed(province_dir / DESCRIPTOR, "province descriptor")
    counts = {s: sum(1 for e in province.state.nodes.values() if e.status is s) for s in NodeStatus}
    lines = [
        f"province {op.prefix} {op.name}",
        f"descriptor fingerprint: {short_fingerprint(descriptor.payload)}  (read it to the root operators)",
        f"operator keys (threshold {op.threshold}): {', '.join(sorted(op.keys))}",
        f"node CA: sha256 {ca_fingerprint(op)}, valid {format_time(cert.not_valid_before_utc)} .. "
        f"{format_time(cert.not_valid_after_utc)}",
        f"last published part: v{province.state.part_version}",
        "nodes: " + ", ".join(f"{n} {s.value}" for s, n in counts.items()),
    ]
    for nid, e in sorted(province.state.nodes.items()):
        end = tx509.load_certificate(e.tls_certificate, f"node {nid} certificate").not_valid_after_utc
        lines.append(f"  {nid}  {e.division}  {e.status.value:9}  {e.endpoint}")
        lines.append(f"    certificate valid until {format_time(end)}")
        lines.extend("    " + key_line(k) for k in e.signing_keys)
    return lines


def key_line(k: NodeSigningKey) -> str:
    text = f"signing key {k.key.key_id} valid from {format_time(k.valid_from)}"
    if k.retired_at is not None and k.refuse_after is not None:
        text += f", retired {format_time(k.retired_at)}, refused after {format_time(k.refuse_after)}"
    return text
