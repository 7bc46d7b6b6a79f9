"""Node TLS certificates: how a certificate names a node, and how it is checked against its CA.

A node certificate (issued by its provincial operator's CA, see ``keys.ca``) carries:

* SAN DNS name ``<node_id>.node.tongban`` — what a connecting peer verifies as the server name;
* SAN URI ``urn:tongban:node:<node_id>`` and ``urn:tongban:division:<code>`` — the identity every
  verifier reads;
* extended key usage serverAuth *and* clientAuth (nodes are both, over mutual TLS).

Checks take an explicit time (never the wall clock) so that verification is reproducible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import CertificateInvalid

NODE_DNS_SUFFIX = ".node.tongban"
NODE_URI = "urn:tongban:node:"
DIVISION_URI = "urn:tongban:division:"


def node_dns_name(node_id: str) -> str:
    return node_id + NODE_DNS_SUFFIX


def load_certificate(pem: str | bytes, what: str) -> x509.Certificate:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateInvalid(f"{what} is not an X.509 certificate") from None


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    division: str


def node_identity(cert: x509.Certificate) -> NodeIdentity:
    """The node id and division a node certificate names (exactly one of each, consistent DNS)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateInvalid("node certificate has no subjectAltName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    nodes = [u.removeprefix(NODE_URI) for u in uris if u.startswith(NODE_URI)]
    divisions = [u.removeprefix(DIVISION_URI) for u in uris if u.startswith(DIVISION_URI)]
    if len(nodes) != 1 or len(divisions) != 1:
        raise CertificateInvalid("node certificate must name exactly one node and one division")
    node_id, division = nodes[0], divisions[0]
    if node_dns_name(node_id) not in san.get_values_for_type(x509.DNSName):
        raise CertificateInvalid("node certificate's DNS name does not match its node id")
    if len(division) != 6 or not division.isascii() or not division.isdigit():
        raise CertificateInvalid("node certificate's division is not a six-digit code")
    return NodeIdentity(node_id, division)


def check_validity(cert: x509.Certificate, at: datetime, what: str) -> None:
    _within(cert, at, what)


def _within(cert: x509.Certificate, at: datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateInvalid(f"{what} is not valid at {at:%Y-%m-%dT%H:%M:%SZ}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_node_certificate(
    cert: x509.Certificate, ca: x509.Certificate, at: datetime, *, check_validity: bool = True
) -> NodeIdentity:
    """Check that ``cert`` is a node certificate issued directly by ``ca`` and valid at ``at``.

    In order: the CA is a CA and valid at ``at``; ``cert`` is not a CA, names ``ca`` as issuer and
    carries its signature; ``cert`` is valid at ``at`` (skipped with ``check_validity=False``: the
    directory checks a node certificate's dates when the node is used, see
    ``Directory.active``); it allows both serverAuth and clientAuth; it names one node and one
    division. Returns that identity or raises ``CertificateInvalid``.
    """
    if not _is_ca(ca):
        raise CertificateInvalid("the province CA certificate is not a CA")
    _within(ca, at, "the province CA certificate")
    if _is_ca(cert):
        raise CertificateInvalid("a node certificate must not be a CA")
    if cert.issuer != ca.subject:
        raise CertificateInvalid("node certificate was not issued by this province's CA")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateInvalid("node certificate's signature does not verify with the province CA") from None
    if check_validity:
        _within(cert, at, "node certificate")
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    if not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages:
        raise CertificateInvalid("node certificate must allow serverAuth and clientAuth")
    return node_identity(cert)
