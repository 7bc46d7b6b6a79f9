"""Client certificates for the county API, issued by the node's own county CA (issue 7).

With ``[county] tls = true`` the county listener serves mutual TLS. Its only trust anchor is the
node's **county CA**: an ECDSA P-256 CA created on first use (by ``tongban county cert issue`` or by
the server starting in TLS mode) under the node's data directory, ``county-ca/``, its key sealed
with the node's key passphrase like every other key file. It is separate from the directory's
provincial CAs on purpose: a node certificate (another node, or this one) is no county credential,
and a county client certificate is no node credential — each listener trusts only its own CA.

**A client certificate** (``tongban county cert issue --role R --label L [--division D] --out DIR``)
names, in its subject alternative name, ``urn:tongban:county-cert:<id>`` (``cc-`` and 16 hex
digits: what ``list``, ``revoke`` and the audit trail name), ``urn:tongban:county-role:<role>``,
``urn:tongban:county-division:<code>`` when scoped, and ``urn:tongban:node:<node id>`` (the node it
is for, which also gives the client the server name to expect, :func:`server_name`). The node keeps
its record — id, SHA-256 fingerprint, role, label, scope, times — never its key, which is written
once to ``DIR/client.key.pem`` (unencrypted PKCS#8, mode 0600: what any gRPC client reads) beside
``client.crt.pem`` and the CA's ``ca.crt.pem``.

:func:`authenticate_certificate` checks, in order: the certificate parses; it was issued by this
node's county CA and its signature verifies; it is within its validity; it is no CA and allows
clientAuth; it names exactly one certificate id; the node has a record with that id **and that
fingerprint**; the record is not revoked. Any failure is :class:`ClientCertificateInvalid` — one
error for all, like a token's. The role and scope applied are the **record's** (the certificate's
own URIs are informative): an operator's revocation or the record is what counts, never what a
certificate says about itself.

The server's own certificate (``county-ca/server.*``) is issued by the same CA for
``<node id>.county.tongban``, ``localhost``, 127.0.0.1 and ::1, and renewed when it has less than 30
days left.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, select

from gateway import audit
from gateway.config import NodeConfig
from gateway.county import auth
from gateway.county.auth import Caller
from gateway.county.permissions import Role
from gateway.errors import CertificateInvalid, ClientCertificateInvalid, InputError, KeyFileError
from gateway.store.schema import county_certs
from gateway.trust import keyfile
from gateway.trust.x509 import NODE_URI, load_certificate

CA_DIR = "county-ca"
CERT_URI = "urn:tongban:county-cert:"
ROLE_URI = "urn:tongban:county-role:"
SCOPE_URI = "urn:tongban:county-division:"
SERVER_DNS_SUFFIX = ".county.tongban"
CA_DAYS, CERT_DAYS = 3650, 398
RENEW_BEFORE = timedelta(days=30)
CLIENT_KEY, CLIENT_CERT, CA_CERT = "client.key.pem", "client.crt.pem", "ca.crt.pem"
_CERT_ID = re.compile(r"^cc-[0-9a-f]{16}$")


def server_name(node_id: str) -> str:
    """The name the county listener's certificate carries, and a client verifies."""
    return node_id + SERVER_DNS_SUFFIX


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


# --- the CA ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountyCa:
    """A node's county CA: its certificate, and its key in memory (never in a repr)."""

    node_id: str
    directory: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def pem(self) -> bytes:
        return _pem(self.certificate)

    def sign(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            builder.issuer_name(self.certificate.subject)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def ca_directory(cfg: NodeConfig) -> Path:
    return cfg.base_dir / CA_DIR


def _new_ca(node_id: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "county API"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Tongban county API CA {node_id}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(NODE_URI + node_id)]), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def ensure_ca(cfg: NodeConfig, *, now: datetime, passphrase: bytes | None = None) -> CountyCa:
    """The node's county CA, created on first use (key sealed with the key passphrase, from
    ``passphrase`` or the environment: ``KeyFileError`` without one). An existing CA is loaded and
    checked: its key matches its certificate, which is a CA for this node (``KeyFileError`` /
    ``CertificateInvalid``)."""
    directory = ca_directory(cfg)
    key_path, cert_path = directory / "ca.key.pem", directory / "ca.crt.pem"
    secret = passphrase if passphrase is not None else keyfile.passphrase_from_env()
    if not cert_path.exists():
        key, cert = _new_ca(cfg.node_id, now)
        keyfile.write_private_key(key_path, key, secret)  # the key first: a certificate never exists alone
        keyfile.write_public(cert_path, _pem(cert))
        directory.chmod(0o700)
        return CountyCa(cfg.node_id, directory, cert, key)
    key = keyfile.read_tls_key(key_path, secret)
    cert = load_certificate(cert_path.read_bytes(), "the county CA certificate")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or _public_der(public) != _public_der(key.public_key()):
        raise KeyFileError("the county CA key does not belong to its certificate")
    if _uris(cert, NODE_URI) != [cfg.node_id]:
        raise CertificateInvalid("the county CA certificate is not this node's")
    return CountyCa(cfg.node_id, directory, cert, key)


def server_identity(ca: CountyCa, *, now: datetime, passphrase: bytes | None = None) -> tuple[bytes, bytes]:
    """The county listener's key and certificate (PEM; the key only in memory): the stored ones
    while valid for more than :data:`RENEW_BEFORE` and issued by ``ca``, else a new pair."""
    key_path, cert_path = ca.directory / "server.key.pem", ca.directory / "server.crt.pem"
    secret = passphrase if passphrase is not None else keyfile.passphrase_from_env()
    if key_path.exists() and cert_path.exists():
        cert = load_certificate(cert_path.read_bytes(), "the county server certificate")
        if cert.issuer == ca.certificate.subject and cert.not_valid_after_utc - RENEW_BEFORE > now:
            try:
                cert.verify_directly_issued_by(ca.certificate)
                key = keyfile.read_tls_key(key_path, secret)
                return _private_pem(key), _pem(cert)
            except (InvalidSignature, ValueError, TypeError):
                pass  # issued by an older CA of the same name: issue a new one
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name(ca.node_id))])
    names: list[x509.GeneralName] = [
        x509.DNSName(server_name(ca.node_id)),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = _leaf(ca, key, subject, names, ExtendedKeyUsageOID.SERVER_AUTH, now)
    keyfile.write_private_key(key_path, key, secret)
    keyfile.write_public(cert_path, _pem(cert))
    return _private_pem(key), _pem(cert)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- client certificates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    """What the node knows about a client certificate: everything but its key."""

    cert_id: str
    role: Role
    label: str
    division: str
    created_at: datetime
    not_after: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def caller(self) -> Caller:
        return Caller(self.cert_id, self.role, self.division)


@dataclass(frozen=True)
class IssuedCertificate:
    info: CertInfo
    certificate_pem: bytes
    ca_pem: bytes
    key_pem: bytes = field(repr=False)


def _info(r: Any) -> CertInfo:
    return CertInfo(
        cert_id=r.cert_id,
        role=Role(r.role),
        label=r.label,
        division=r.division,
        created_at=_utc(r.created_at) or r.created_at,
        not_after=_utc(r.not_after) or r.not_after,
        revoked_at=_utc(r.revoked_at),
    )


def _uris(cert: x509.Certificate, prefix: str) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        u.removeprefix(prefix) for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(prefix)
    ]


def client_certificate(
    ca: CountyCa, key: ec.EllipticCurvePrivateKey, *, cert_id: str, role: Role, division: str, now: datetime
) -> x509.Certificate:
    """A client certificate of ``ca`` for ``key`` (pure but for the CA's signature; no record)."""
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(CERT_URI + cert_id),
        x509.UniformResourceIdentifier(ROLE_URI + role.value),
        x509.UniformResourceIdentifier(NODE_URI + ca.node_id),
    ]
    if division:
        names.append(x509.UniformResourceIdentifier(SCOPE_URI + division))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban county API"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, cert_id),
        ]
    )
    return _leaf(ca, key, subject, names, ExtendedKeyUsageOID.CLIENT_AUTH, now)


def _leaf(
    ca: CountyCa,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: datetime,
) -> x509.Certificate:
    """An end-entity certificate of ``ca`` for ``key``: valid from five minutes ago for
    :data:`CERT_DAYS` (never beyond the CA), not a CA, for ``usage`` (server or client auth)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=CERT_DAYS), ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    return ca.sign(builder)


def issue(
    engine: Engine,
    cfg: NodeConfig,
    *,
    role: Role,
    label: str,
    division: str = "",
    now: datetime | None = None,
    passphrase: bytes | None = None,
) -> IssuedCertificate:
    """Issue a client certificate (creating the county CA on first use) and record it with an audit
    entry ``county_cert_issued``, in one transaction. The key is returned, never stored."""
    label, division = auth.check_label(label), auth.check_scope(role, division)
    at = _utc(now) or datetime.now(UTC)
    ca = ensure_ca(cfg, now=at, passphrase=passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_id = "cc-" + secrets.token_hex(8)
    cert = client_certificate(ca, key, cert_id=cert_id, role=role, division=division, now=at)
    values = {
        "cert_id": cert_id,
        "fingerprint": _fingerprint(cert),
        "role": role.value,
        "label": label,
        "division": division,
        "created_at": at,
        "not_after": cert.not_valid_after_utc,
        "revoked_at": None,
    }
    with engine.begin() as conn:
        auth.record_credential(
            conn, county_certs, values, action=audit.Action.COUNTY_CERT_ISSUED, reference=cert_id, role=role, at=at
        )
    info = CertInfo(cert_id, role, label, division, at, cert.not_valid_after_utc, None)
    return IssuedCertificate(info, _pem(cert), ca.pem, _private_pem(key))


def write_bundle(issued: IssuedCertificate, out: Path) -> list[Path]:
    """Write the key (mode 0600, refusing to overwrite one), the certificate and the CA certificate."""
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / CLIENT_KEY
    if key_path.exists():
        raise InputError(f"{key_path} already exists; choose an empty --out directory")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(issued.key_pem)
    keyfile.write_public(out / CLIENT_CERT, issued.certificate_pem)
    keyfile.write_public(out / CA_CERT, issued.ca_pem)
    return [key_path, out / CLIENT_CERT, out / CA_CERT]


def list_certs(engine: Engine) -> list[CertInfo]:
    """Every client certificate, active or revoked, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(county_certs).order_by(county_certs.c.created_at, county_certs.c.cert_id))
        return [_info(r) for r in rows]


def revoke(engine: Engine, cert_id: str, *, now: datetime | None = None) -> CertInfo:
    """Revoke a client certificate by id (``RecordNotFound`` for an unknown one); refused from its
    next call on, even on a connection already open. Revoking twice keeps the first time."""
    if not _CERT_ID.match(cert_id):
        raise InputError("a certificate id looks like cc- followed by 16 hex digits")
    at = _utc(now) or datetime.now(UTC)
    row = auth.revoke_credential(
        engine,
        county_certs,
        county_certs.c.cert_id,
        cert_id,
        action=audit.Action.COUNTY_CERT_REVOKED,
        at=at,
        unknown="no county API client certificate with this id",
    )
    return _info(row)


def authenticate_certificate(engine: Engine, ca: x509.Certificate, pem: bytes, *, now: datetime) -> CertInfo:
    """The active record of a client certificate, or ``ClientCertificateInvalid`` (see the module
    docstring for the checks, in order)."""
    try:
        cert = load_certificate(pem, "the client certificate")
    except CertificateInvalid:
        raise ClientCertificateInvalid("not a certificate") from None
    if cert.issuer != ca.subject:
        raise ClientCertificateInvalid("issued by another CA")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise ClientCertificateInvalid("signature does not verify with the county CA") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ClientCertificateInvalid("outside its validity")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        raise ClientCertificateInvalid("not a client certificate") from None
    if is_ca or ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise ClientCertificateInvalid("not a client certificate")
    ids = _uris(cert, CERT_URI)
    if len(ids) != 1 or not _CERT_ID.match(ids[0]):
        raise ClientCertificateInvalid("names no certificate id")
    with engine.connect() as conn:
        row = conn.execute(select(county_certs).where(county_certs.c.cert_id == ids[0])).first()
    if row is None or bytes(row.fingerprint) != _fingerprint(cert):
        raise ClientCertificateInvalid("not issued by this node")
    info = _info(row)
    if not info.active:
        raise ClientCertificateInvalid("revoked")
    return info


def node_of(certificate_pem: bytes) -> str:
    """The node a client certificate was issued for (``CertificateInvalid`` if it names none)."""
    nodes = _uris(load_certificate(certificate_pem, "the client certificate"), NODE_URI)
    if len(nodes) != 1:
        raise CertificateInvalid("the client certificate names no node")
    return nodes[0]
