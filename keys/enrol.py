"""Node enrolment and key rotation: requests made on the node, certificates issued by the province.

The flow (SPEC §2: a node generates its own keys and private keys never leave it)::

    node                                   provincial operator
    ----                                   -------------------
    keys node request  ── request.json ──▶ keys node issue   (checks, certificate, nodes.json)
    keys node install  ◀── response.json ──
    keys node rotate   ── request.json ──▶ keys node issue --overlap-days 7
    keys node install  ◀── response.json ──

An **enrolment request** is a signed document (:data:`REQUEST_TYPE`) naming the node id, division,
endpoint, a PKCS#10 signing request for the node's TLS key, its Ed25519 message-signing key and its
X25519 encryption key, signed by that new signing key: the signature proves possession of the
signing key and the CSR's signature proves possession of the TLS key. (An X25519 key cannot sign;
it is bound to the node by being inside the signed request.)

A **rotation request** (:data:`ROTATION_TYPE`) names a new signing key and a fresh CSR (for the
same TLS key, or a new one with ``--tls``), and is signed by the node's *current* signing key —
the authorisation, checked against the province's records — and by the new key (possession).

A request proves key possession, not *who* sent it: the operator compares the request's
fingerprint with the one the county reads out over a separate channel (``--fingerprint``).

On the node, new keys of a rotation wait beside the current ones as ``<key file>.new`` until the
operator's response is installed; then they replace the current files. The old signing key is
deleted at that moment rather than kept: after the operator's rotation time nothing may be signed
with it, and the overlap window concerns *verifying* old messages, for which the public key in
the directory suffices.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from gateway import config as config_mod
from gateway.config import NodeConfig
from gateway.domain.divisions import DivisionTable
from gateway.errors import (
    CertificateInvalid,
    ConfigError,
    DuplicateNode,
    InputError,
    KeyNotValid,
    MalformedDocument,
    NodeNotActive,
    OperatorStateError,
    OutsidePrefix,
    PeerMismatch,
    UnknownNode,
    UnknownProvince,
)
from gateway.trust import x509 as tx509
from gateway.trust.documents import (
    SPEC_VERSION,
    NodeEntry,
    NodeSigningKey,
    NodeStatus,
    Root,
    decode,
    encode,
    format_time,
    parse_time,
)
from gateway.trust.dsse import SignedDocument, sign_document, verify_threshold
from gateway.trust.keyfile import write_public
from gateway.trust.signing import ED25519, X25519_HPKE, PublicKey
from gateway.trust.verifier import TrustState
from keys import ca
from keys.files import (
    load_signer,
    load_tls_key,
    new_encryption_key,
    new_signing_key,
    new_tls_key,
    read_bytes,
    read_json,
    refuse_existing,
    replace_file,
    require,
    short_fingerprint,
)
from keys.province import CA_KEY, Province, prune_keys

REQUEST_TYPE = "application/vnd.tongban.enrolment-request+json"
ROTATION_TYPE = "application/vnd.tongban.rotation-request+json"
REQUEST_FILE = "enrolment-request.json"
ROTATION_FILE = "rotation-request.json"
NEW = ".new"
MAX_OVERLAP_DAYS = 90
_ENDPOINT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")

Kind = Literal["enrolment", "rotation"]


def pending(path: Path) -> Path:
    """Where a rotation's new key waits until the operator's response is installed."""
    return path.with_name(path.name + NEW)


# --- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    kind: Kind
    node_id: str
    division: str
    endpoint: str
    csr_pem: str
    signing_key: PublicKey
    created: datetime
    encryption_key: PublicKey | None = None  # enrolment only
    previous_signing_key_id: str | None = None  # rotation only

    def __post_init__(self) -> None:
        enrolment = self.encryption_key is not None and self.previous_signing_key_id is None
        rotation = self.encryption_key is None and self.previous_signing_key_id is not None
        if not (enrolment if self.kind == "enrolment" else rotation):
            raise MalformedDocument("an enrolment request names an encryption key, a rotation the previous key")

    @property
    def payload_type(self) -> str:
        return REQUEST_TYPE if self.kind == "enrolment" else ROTATION_TYPE

    def to_payload(self) -> bytes:
        doc: dict[str, Any] = {
            "type": f"{self.kind}-request",
            "spec_version": SPEC_VERSION,
            "node_id": self.node_id,
            "division": self.division,
            "endpoint": self.endpoint,
            "csr": self.csr_pem,
            "signing_key": self.signing_key.to_json(),
            "created": format_time(self.created),
        }
        if self.encryption_key is not None:
            doc["encryption_key"] = self.encryption_key.to_json()
        if self.previous_signing_key_id is not None:
            doc["previous_signing_key_id"] = self.previous_signing_key_id
        return encode(doc)

    @classmethod
    def from_document(cls, doc: SignedDocument) -> Request:
        """Parse (strictly) — signatures are checked by :func:`read_request`, not here."""
        kinds: dict[str, Kind] = {REQUEST_TYPE: "enrolment", ROTATION_TYPE: "rotation"}
        kind = kinds.get(doc.payload_type)
        if kind is None:
            raise MalformedDocument(f"not an enrolment or rotation request: {doc.payload_type!r}")
        d = decode(doc.payload, f"{kind} request")
        common = {"type", "spec_version", "node_id", "division", "endpoint", "csr", "signing_key", "created"}
        extra = {"encryption_key"} if kind == "enrolment" else {"previous_signing_key_id"}
        if set(d) != common | extra:
            raise MalformedDocument(f"{kind} request must have exactly {sorted(common | extra)}")
        if d["type"] != f"{kind}-request" or d["spec_version"] != SPEC_VERSION:
            raise MalformedDocument(f"{kind} request has the wrong type or spec version")
        for name in ("node_id", "division", "endpoint", "csr"):
            if not isinstance(d[name], str) or not d[name]:
                raise MalformedDocument(f"{kind} request: {name} must be a non-empty string")
        signing = PublicKey.from_json(d["signing_key"], "request signing_key")
        if signing.algorithm != ED25519:
            raise MalformedDocument("request signing_key must be an ed25519 key")
        encryption = None
        previous = None
        if kind == "enrolment":
            encryption = PublicKey.from_json(d["encryption_key"], "request encryption_key")
            if encryption.algorithm != X25519_HPKE:
                raise MalformedDocument(f"request encryption_key must be an {X25519_HPKE} key")
        else:
            previous = d["previous_signing_key_id"]
            if not isinstance(previous, str) or not previous:
                raise MalformedDocument("rotation request: previous_signing_key_id must be a key id")
        return cls(
            kind,
            d["node_id"],
            d["division"],
            d["endpoint"],
            d["csr"],
            signing,
            parse_time(d["created"], f"{kind} request created"),
            encryption,
            previous,
        )


def check_endpoint(endpoint: str) -> str:
    if not _ENDPOINT.match(endpoint):
        raise InputError(f"endpoint {endpoint!r} must be HOST:PORT")
    return endpoint


def _csr_pem(key: ec.EllipticCurvePrivateKey, node_id: str, division: str) -> str:
    csr = ca.create_csr(key, node_id=node_id, division=division)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _x25519_public(key: x25519.X25519PrivateKey) -> PublicKey:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(X25519_HPKE, raw)


def create_enrolment_request(
    cfg: NodeConfig, *, endpoint: str | None, passphrase: bytes, now: datetime
) -> SignedDocument:
    """Generate the node's TLS, signing and encryption keys (encrypted, at the paths ``cfg`` names)
    and return the enrolment request, signed by the new signing key.

    Refuses (``OperatorStateError``) before generating anything if any key file or the certificate
    already exists: a node's keys are never overwritten (a node that is already enrolled rotates).
    """
    endpoint = check_endpoint(endpoint or cfg.endpoint)
    refuse_existing(cfg.tls_key, cfg.signing_key, cfg.encryption_key, cfg.tls_certificate)
    tls_key = new_tls_key(cfg.tls_key, passphrase)
    signer = new_signing_key(cfg.signing_key, passphrase)
    enc = new_encryption_key(cfg.encryption_key, passphrase)
    request = Request(
        "enrolment",
        cfg.node_id,
        cfg.division,
        endpoint,
        _csr_pem(tls_key, cfg.node_id, cfg.division),
        signer.public_key,
        now,
        encryption_key=_x25519_public(enc),
    )
    return sign_document(REQUEST_TYPE, request.to_payload(), [signer])


def create_rotation_request(cfg: NodeConfig, *, new_tls: bool, passphrase: bytes, now: datetime) -> SignedDocument:
    """Generate a new signing key (and with ``new_tls`` a new TLS key) as ``<file>.new`` and return a
    rotation request signed by the current signing key (authorisation) and the new one (possession).

    The node keeps signing with its current key until the response is installed. Refuses
    (``OperatorStateError``) if the node is not enrolled or a rotation is already pending.
    """
    require(cfg.signing_key, "the node is not enrolled: keys node request")
    require(cfg.tls_certificate, "the node is not enrolled: keys node install")
    refuse_existing(pending(cfg.signing_key), pending(cfg.tls_key))
    current = load_signer(cfg.signing_key, passphrase)
    tls_key = new_tls_key(pending(cfg.tls_key), passphrase) if new_tls else load_tls_key(cfg.tls_key, passphrase)
    new = new_signing_key(pending(cfg.signing_key), passphrase)
    request = Request(
        "rotation",
        cfg.node_id,
        cfg.division,
        check_endpoint(cfg.endpoint),
        _csr_pem(tls_key, cfg.node_id, cfg.division),
        new.public_key,
        now,
        previous_signing_key_id=current.public_key.key_id,
    )
    return sign_document(ROTATION_TYPE, request.to_payload(), [current, new])


def read_request(doc: SignedDocument) -> tuple[Request, x509.CertificateSigningRequest]:
    """Parse a request and check what it can prove by itself.

    In order: the payload type (enrolment or rotation) and strict fields (``MalformedDocument``);
    a valid signature by the *new* signing key the request names (``ThresholdNotMet`` — the key is
    taken from the payload, which is inherent to a proof of possession; nothing else is trusted
    until it verifies); the CSR parses, its signature verifies, its key is ECDSA P-256, and it names
    exactly the node and division of the request (``CertificateInvalid``). A rotation's
    authorisation (the current key's signature) needs the province's records: see :func:`issue`.
    """
    request = Request.from_document(doc)
    key = request.signing_key
    verify_threshold(
        doc, payload_type=doc.payload_type, keys={key.key_id: key}, threshold=1, role="the request's new signing key"
    )
    try:
        csr = x509.load_pem_x509_csr(request.csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CertificateInvalid("the request's CSR is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CertificateInvalid("the request's CSR signature does not verify")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise CertificateInvalid("the request's TLS key must be ECDSA P-256")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateInvalid("the request's CSR names no node") from None
    uris = set(san.get_values_for_type(x509.UniformResourceIdentifier))
    if uris != {tx509.NODE_URI + request.node_id, tx509.DIVISION_URI + request.division}:
        raise CertificateInvalid("the request's CSR names another node or division than the request")
    return request, csr


def request_fingerprint(doc: SignedDocument) -> str:
    return short_fingerprint(doc.payload)


# --- issuing (at the province) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """What the operator sends back: the certificate, the CA, and which signing key it covers."""

    kind: Kind
    node_id: str
    division: str
    certificate: str
    ca_certificate: str
    signing_key_id: str

    def to_bytes(self) -> bytes:
        doc = {
            "tongban_enrolment_response": SPEC_VERSION,
            "kind": self.kind,
            "node_id": self.node_id,
            "division": self.division,
            "certificate": self.certificate,
            "ca_certificate": self.ca_certificate,
            "signing_key_id": self.signing_key_id,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Response:
        d = decode(data, "enrolment response")
        fields = {"kind", "node_id", "division", "certificate", "ca_certificate", "signing_key_id"}
        if set(d) != fields | {"tongban_enrolment_response"} or d["tongban_enrolment_response"] != SPEC_VERSION:
            raise MalformedDocument("not an enrolment response")
        if d["kind"] not in ("enrolment", "rotation") or not all(isinstance(d[f], str) for f in fields):
            raise MalformedDocument("enrolment response fields must be strings; kind enrolment or rotation")
        kind: Kind = "enrolment" if d["kind"] == "enrolment" else "rotation"
        return cls(kind, d["node_id"], d["division"], d["certificate"], d["ca_certificate"], d["signing_key_id"])


@dataclass(frozen=True)
class Issued:
    response: Response
    entry: NodeEntry
    fingerprint: str
    reissued: bool  # an enrolment request for keys already enrolled (a lost response): new certificate


def issue(
    province_dir: Path,
    doc: SignedDocument,
    *,
    passphrase: bytes,
    now: datetime,
    days: int = 398,
    overlap_days: int = 7,
    expected_fingerprint: str | None = None,
    table: DivisionTable | None = None,
) -> Issued:
    """Issue a node certificate for a request and record the node in ``nodes.json``.

    Checks, in order, and changes nothing unless all pass:

    1. :func:`read_request` (type, fields, proof of possession, CSR);
    2. with ``expected_fingerprint``, that it is this request's (``PeerMismatch``);
    3. the node id is well formed and the division a current county-level code (``InputError``);
    4. the division starts with this province's prefix (``OutsidePrefix``) — every verifier
       checks this again;
    5. against ``nodes.json``: an **enrolment** for a new node id must not reuse another node's
       signing key (``DuplicateNode``); for an enrolled node id it is accepted only with exactly the
       enrolled keys (a lost response: the certificate is re-issued), otherwise ``DuplicateNode``;
       a revoked node is never re-enrolled (``NodeNotActive``). A **rotation** needs an enrolled,
       not revoked node in the same division (``UnknownNode``, ``NodeNotActive``), whose *current*
       signing key is the one the request names (``KeyNotValid``) and has signed it
       (``ThresholdNotMet``); the old key is retired now and refused after ``overlap_days``.
    6. :func:`keys.ca.issue_node_certificate` (which refuses a division outside the prefix again).
    """
    if not 1 <= days <= 825:
        raise InputError("--days must be between 1 and 825")
    if not 0 <= overlap_days <= MAX_OVERLAP_DAYS:
        raise InputError(f"--overlap-days must be between 0 and {MAX_OVERLAP_DAYS}")
    province = Province.open(province_dir)
    request, csr = read_request(doc)
    fingerprint = request_fingerprint(doc)
    if expected_fingerprint is not None and _norm(expected_fingerprint) != _norm(fingerprint):
        raise PeerMismatch(f"the request's fingerprint is {fingerprint}, not the one given")
    try:
        config_mod.validate_node_id(request.node_id)
    except ConfigError:
        raise InputError("the request's node id is not a valid node id") from None
    if not request.division.startswith(province.prefix):
        raise OutsidePrefix(f"province {province.prefix} cannot enrol division {request.division}")
    (table or DivisionTable.load_default()).current(request.division)
    check_endpoint(request.endpoint)

    nodes = province.state.nodes
    existing = nodes.get(request.node_id)
    key_owners = {k.key.key_id: e.node_id for e in nodes.values() for k in e.signing_keys}
    owner = key_owners.get(request.signing_key.key_id)
    reissued = False
    if request.encryption_key is not None:  # an enrolment (see Request.__post_init__)
        if existing is None:
            if owner is not None:
                raise DuplicateNode(f"the request's signing key is already enrolled for node {owner}")
            signing_keys: tuple[NodeSigningKey, ...] = (NodeSigningKey(request.signing_key, now),)
            status = NodeStatus.ACTIVE
        else:
            if existing.status is NodeStatus.REVOKED:
                raise NodeNotActive(f"node {request.node_id} was revoked; enrol the county under a new node id")
            same = (
                existing.division == request.division
                and existing.encryption_key == request.encryption_key
                and _current_key(existing) == request.signing_key
            )
            if not same:
                raise DuplicateNode(
                    f"node {request.node_id} is already enrolled with other keys; an enrolled node changes keys "
                    f"with keys node rotate, or is revoked and enrolled under a new id"
                )
            signing_keys, status, reissued = existing.signing_keys, existing.status, True
        encryption_key = request.encryption_key
    else:
        if existing is None:
            raise UnknownNode(f"node {request.node_id} is not enrolled in province {province.prefix}")
        if existing.status is NodeStatus.REVOKED:
            raise NodeNotActive(f"node {request.node_id} is revoked")
        if existing.division != request.division:
            raise InputError(f"node {request.node_id} is enrolled for {existing.division}, not {request.division}")
        current = _current_key(existing)
        if current is None or current.key_id != request.previous_signing_key_id:
            raise KeyNotValid(f"the rotation is not signed off by node {request.node_id}'s current signing key")
        verify_threshold(
            doc,
            payload_type=ROTATION_TYPE,
            keys={current.key_id: current},
            threshold=1,
            role=f"node {request.node_id}'s current signing key",
        )
        if owner is not None:
            raise DuplicateNode(f"the new signing key is already enrolled for node {owner}")
        until = now + timedelta(days=overlap_days)
        retired = tuple(
            replace(k, retired_at=now, refuse_after=until) if k.retired_at is None else k for k in existing.signing_keys
        )
        signing_keys = (*retired, NodeSigningKey(request.signing_key, now))
        status, encryption_key = existing.status, existing.encryption_key

    ca_key = load_tls_key(province.path / CA_KEY, passphrase)
    certificate = ca.pem(
        ca.issue_node_certificate(
            csr,
            ca_key=ca_key,
            ca_cert=province.ca_certificate,
            prefix=province.prefix,
            node_id=request.node_id,
            division=request.division,
            now=now,
            days=days,
        )
    )
    entry = prune_keys(
        NodeEntry(
            node_id=request.node_id,
            division=request.division,
            endpoint=request.endpoint,
            status=status,
            tls_certificate=certificate,
            signing_keys=signing_keys,
            encryption_key=encryption_key,
        ),
        now,
    )
    province.save(province.state.with_node(entry))
    response = Response(
        request.kind,
        request.node_id,
        request.division,
        certificate,
        province.operator.ca_certificate,
        request.signing_key.key_id,
    )
    return Issued(response, entry, fingerprint, reissued)


def _norm(fingerprint: str) -> str:
    return "".join(fingerprint.split()).lower()


def _current_key(entry: NodeEntry) -> PublicKey | None:
    current = [k.key for k in entry.signing_keys if k.retired_at is None]
    return current[-1] if current else None


# --- installing (on the node) ----------------------------------------------------------------------------


def _trusted_root(cfg: NodeConfig, root_bytes: bytes | None, now: datetime) -> tuple[Root, bytes | None]:
    """The root to check the certificate against, and the root to pin (if none is pinned yet)."""
    if cfg.trust_state.exists():
        state = TrustState.from_json(read_json(cfg.trust_state, "trust state"))
    elif cfg.trust_root.exists():
        state = TrustState.from_pinned_root(read_bytes(cfg.trust_root, "pinned root"), now)
    else:
        if root_bytes is None:
            raise OperatorStateError("the node has no pinned root yet: pass --root ROOT_JSON (from the root operators)")
        return TrustState.from_pinned_root(root_bytes, now).root, root_bytes
    if root_bytes is not None and root_bytes != read_bytes(cfg.trust_root, "pinned root"):
        raise OperatorStateError(
            f"the node already pins a root ({cfg.trust_root}); after that, roots change only through the "
            "directory's chain of signed rotations"
        )
    return state.root, None


def _public_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def install(
    cfg: NodeConfig,
    response: Response,
    *,
    root_bytes: bytes | None,
    directory_source: str | None,
    passphrase: bytes,
    now: datetime,
) -> list[str]:
    """Install the operator's response on the node; returns what was done, one line each.

    Checks first, in order, and writes nothing unless all pass: the response is for this node id
    and division (``PeerMismatch``); the trusted root (the saved trust state, else the pinned root,
    else ``root_bytes``, which must be signed by a threshold of its own keys and unexpired) names a
    province for the division (``UnknownProvince``) whose CA is the response's (``CertificateInvalid``);
    the certificate is issued by that CA, valid now, and names this node (``CertificateInvalid``);
    it certifies this node's TLS key, or the pending new one (``CertificateInvalid``); the signing
    key the operator enrolled is this node's (enrolment) or the pending new one (rotation,
    ``KeyNotValid``).

    Then writes the certificate, promotes pending ``.new`` keys over the current ones (deleting
    the old signing key), pins the root if none was pinned, and sets ``[trust] directory`` in
    ``node.toml`` if ``directory_source`` is given.
    """
    if (response.node_id, response.division) != (cfg.node_id, cfg.division):
        raise PeerMismatch(f"the response is for {response.node_id} ({response.division}), this node is {cfg.node_id}")
    root, pin = _trusted_root(cfg, root_bytes, now)
    operator = root.operator_for(cfg.division)
    if operator is None:
        raise UnknownProvince(f"root v{root.version} names no operator for division {cfg.division}")
    if operator.ca_certificate.strip() != response.ca_certificate.strip():
        raise CertificateInvalid(f"the response's CA is not the one root v{root.version} names for {operator.prefix}")
    ca_cert = tx509.load_certificate(operator.ca_certificate, f"province {operator.prefix} CA")
    cert = tx509.load_certificate(response.certificate, "the issued certificate")
    identity = tx509.verify_node_certificate(cert, ca_cert, now)
    if (identity.node_id, identity.division) != (cfg.node_id, cfg.division):
        raise CertificateInvalid("the certificate names another node or division")

    cert_key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new_tls = pending(cfg.tls_key)
    if new_tls.exists() and _public_der(load_tls_key(new_tls, passphrase)) == cert_key:
        promote_tls = True
    elif _public_der(load_tls_key(cfg.tls_key, passphrase)) == cert_key:
        promote_tls = False
    else:
        raise CertificateInvalid("the certificate is not for this node's TLS key")

    new_signing = pending(cfg.signing_key)
    if response.kind == "rotation":
        require(new_signing, "no rotation is pending on this node")
        if load_signer(new_signing, passphrase).public_key.key_id != response.signing_key_id:
            raise KeyNotValid("the response is for another rotation than the one pending on this node")
    elif load_signer(cfg.signing_key, passphrase).public_key.key_id != response.signing_key_id:
        raise KeyNotValid("the operator enrolled another signing key than this node's")

    done = []
    if promote_tls:
        replace_file(new_tls, cfg.tls_key)
        done.append(f"TLS key: the new key replaced {cfg.tls_key}")
    write_public(cfg.tls_certificate, response.certificate.encode("ascii"))
    done.append(f"certificate: {cfg.tls_certificate} (valid until {format_time(cert.not_valid_after_utc)})")
    if response.kind == "rotation":
        replace_file(new_signing, cfg.signing_key)
        done.append(f"signing key: now {response.signing_key_id}; the old private key was deleted")
    if pin is not None:
        write_public(cfg.trust_root, pin)
        done.append(f"pinned root v{root.version}: {cfg.trust_root}")
    if directory_source is not None:
        set_config_value(cfg.path, "trust", "directory", directory_source)
        done.append(f"[trust] directory = {directory_source!r} in {cfg.path}")
    return done


# --- node.toml ---------------------------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_config_value(path: Path, section: str, key: str, value: str) -> None:
    """Set ``[section] key = "value"`` in a TOML file, editing only that line (comments and the
    rest of the file are kept), then re-load the file to make sure it is still a valid config."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    line = f"{key} = {_toml_string(value)}"
    start = next((i for i, text in enumerate(lines) if (m := header.match(text)) and m.group(1) == section), None)
    if start is None:
        lines += ["", f"[{section}]", line]
    else:
        end = next((i for i in range(start + 1, len(lines)) if header.match(lines[i])), len(lines))
        at = next((i for i in range(start + 1, end) if assignment.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, line)
        else:
            lines[at] = line
    original = path.read_bytes()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        config_mod.load(path)
    except ConfigError:
        path.write_bytes(original)
        raise
