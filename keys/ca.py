"""Provincial certificate authorities: create a CA, issue node certificates from signing requests.

Node certificates follow the conventions of :mod:`gateway.trust.x509` (SAN DNS
``<node>.node.tongban``, SAN URIs naming node and division, serverAuth + clientAuth). TLS keys are
ECDSA P-256, which every TLS stack (including gRPC's BoringSSL) supports for mutual TLS.
The issuing tool refuses a division outside the CA's prefix; every verifier refuses it again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import CertificateInvalid, OutsidePrefix
from gateway.trust.x509 import DIVISION_URI, NODE_URI, node_dns_name


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(
    key: ec.EllipticCurvePrivateKey, *, prefix: str, name: str, now: datetime, days: int = 3650
) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tongban"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"province {prefix}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Tongban node CA {prefix} {name}"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def create_csr(key: ec.EllipticCurvePrivateKey, *, node_id: str, division: str) -> x509.CertificateSigningRequest:
    """A node's certificate signing request: proves possession of its TLS key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(_san(node_id, division), critical=False)
        .sign(key, hashes.SHA256())
    )


def _san(node_id: str, division: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName(
        [
            x509.DNSName(node_dns_name(node_id)),
            x509.UniformResourceIdentifier(NODE_URI + node_id),
            x509.UniformResourceIdentifier(DIVISION_URI + division),
        ]
    )


def issue_node_certificate(
    csr: x509.CertificateSigningRequest,
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    prefix: str,
    node_id: str,
    division: str,
    now: datetime,
    days: int = 398,
) -> x509.Certificate:
    """Issue a node certificate. The CSR must be self-consistent (its signature verifies) and the
    division inside the CA's prefix; the certificate carries the identity the *operator* approved,
    not whatever the request asked for."""
    if not division.startswith(prefix):
        raise OutsidePrefix(f"province {prefix} cannot enrol division {division}")
    if not csr.is_signature_valid:
        raise CertificateInvalid("the signing request's signature does not verify")
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san(node_id, division), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
