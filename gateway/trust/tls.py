"""Mutual TLS between nodes (SPEC §2): whom a node accepts, and whom it believes it has reached.

The only trust anchors are the provincial CAs named in the verified directory's root — never the
operating system's CA store, never a file beside the node.

**Server side** (:func:`server_credentials`). gRPC calls the certificate fetcher before *every* new
TLS handshake; it returns a new configuration only when the CA set of the current directory has
changed, so a province added by a root rotation is trusted at the next connection without a
restart. Client authentication is required: a client without a certificate, or with one no
provincial CA issued, never completes the handshake. The handshake proves only "some certificate
from some provincial CA"; binding it to a directory entry (the listed certificate of an active
node) is the job of :mod:`gateway.trust.interceptor`, on every call, so a revocation also reaches
connections that are already open.

**Client side** (:func:`secure_channel_to`). A node dials a peer only if the peer is active in a
fresh directory; the channel trusts only the CA of the province that governs the peer's division
(so another province's CA cannot impersonate it) and requires the server certificate to name
``<peer>.node.tongban`` (gRPC's ``ssl_target_name_override``), whatever address is dialled.

Private keys stay in memory: :meth:`TlsIdentity.load` decrypts the node's key file and hands
gRPC an unencrypted PEM that is never written anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import CertificateInvalid, GatewayError, KeyFileError, UnknownProvince
from gateway.trust import keyfile
from gateway.trust import x509 as tx509
from gateway.trust.documents import NodeEntry
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.tls")


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class TlsIdentity:
    """A node's TLS key and certificate, as the PEM bytes gRPC wants. The key is unencrypted and
    lives only in memory (it is excluded from ``repr``)."""

    node_id: str
    certificate_pem: bytes
    private_key_pem: bytes = field(repr=False)

    @classmethod
    def from_key(
        cls, key: ec.EllipticCurvePrivateKey, certificate: str | bytes, *, node_id: str | None = None
    ) -> TlsIdentity:
        """Pair a key with its certificate. Checked: the certificate parses and names exactly one
        node (``CertificateInvalid``), that node is ``node_id`` when given (``CertificateInvalid``),
        and the certificate's public key is this key's (``KeyFileError``)."""
        cert = tx509.load_certificate(certificate, "TLS certificate")
        named = tx509.node_identity(cert).node_id
        if node_id is not None and named != node_id:
            raise CertificateInvalid(f"the TLS certificate names node {named}, this node is {node_id}")
        cert_key = cert.public_key()
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or _public_der(cert_key) != _public_der(
            key.public_key()
        ):
            raise KeyFileError("the TLS key does not belong to the TLS certificate")
        return cls(
            node_id=named,
            certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )

    @classmethod
    def load(
        cls, key_path: Path, certificate_path: Path, *, node_id: str | None = None, passphrase: bytes | None = None
    ) -> TlsIdentity:
        """Read the node's encrypted TLS key file (passphrase from the argument or from
        ``TONGBAN_KEY_PASSPHRASE`` / ``_FILE``) and its certificate; then :meth:`from_key`.
        Raises ``KeyFileError`` (missing passphrase, unreadable or unencrypted key file, wrong
        passphrase, key and certificate that do not match) or ``CertificateInvalid``."""
        key = keyfile.read_tls_key(key_path, passphrase if passphrase is not None else keyfile.passphrase_from_env())
        try:
            certificate = certificate_path.read_bytes()
        except OSError:
            raise KeyFileError(f"cannot read the TLS certificate {certificate_path}") from None
        return cls.from_key(key, certificate, node_id=node_id)


# --- server ------------------------------------------------------------------------------------------


def server_credentials(identity: TlsIdentity, client_roots: Callable[[], bytes]) -> grpc.ServerCredentials:
    """Mutual-TLS server credentials whose client trust anchors follow the directory.

    ``client_roots`` returns the PEM CA bundle to trust (normally
    :meth:`~gateway.trust.store.TrustStore.ca_bundle_pem`). It is called once here — its error,
    e.g. ``DirectoryUnavailable``, propagates: a server never starts without anchors — and then
    before every handshake. If it fails later, the previous anchors stay in force (the
    interceptor refuses calls while the directory is unusable, with a reason).
    """
    pairs = [(identity.private_key_pem, identity.certificate_pem)]
    initial = client_roots()
    lock = threading.Lock()
    in_force = [initial]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            roots = client_roots()
        except GatewayError:
            return None  # keep the anchors in force
        with lock:
            if roots == in_force[0]:
                return None  # unchanged: gRPC keeps its current SSL context
            in_force[0] = roots
        log.info("TLS client trust anchors changed: %d provincial CA certificate(s)", roots.count(b"-----BEGIN"))
        return grpc.ssl_server_certificate_configuration(pairs, root_certificates=roots)

    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration(pairs, root_certificates=initial),
        # grpc-stubs omit that the fetcher may return None ("no change"), which gRPC documents.
        cast(Callable[[], grpc.ServerCertificateConfiguration], fetch),
        require_client_authentication=True,
    )


# --- client ------------------------------------------------------------------------------------------


def peer_ca_pem(entry: NodeEntry, directory: Directory) -> bytes:
    """The CA certificate of the province governing ``entry``'s division (``UnknownProvince``)."""
    operator = directory.root.operator_for(entry.division)
    if operator is None:
        raise UnknownProvince(f"no province governs division {entry.division} of node {entry.node_id}")
    return operator.ca_certificate.encode("ascii")


def secure_channel_to(
    peer: NodeEntry | str,
    directory: Directory,
    identity: TlsIdentity,
    *,
    now: datetime,
    target: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """Open a mutual-TLS channel to the node ``peer`` (an entry or a node id).

    Checked before dialling, in order: the directory is fresh at ``now`` (``DocumentExpired``);
    the peer is in it (``UnknownNode``) and active (``NodeNotActive``) — an entry passed in is
    looked up again by id, so a stale copy cannot bypass a revocation; its province has a CA
    (``UnknownProvince``). The channel then presents ``identity`` and trusts only that CA, and
    the server certificate must name ``<peer>.node.tongban``; a server that is not that node fails
    the handshake, which surfaces as ``grpc.StatusCode.UNAVAILABLE`` on the first call.

    ``target`` overrides the address (default: the entry's endpoint) without relaxing any check.
    """
    node_id = peer.node_id if isinstance(peer, NodeEntry) else peer
    entry = directory.active(node_id, now)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=peer_ca_pem(entry, directory),
        private_key=identity.private_key_pem,
        certificate_chain=identity.certificate_pem,
    )
    return grpc.secure_channel(
        target or entry.endpoint,
        credentials,
        options=[*options, ("grpc.ssl_target_name_override", tx509.node_dns_name(entry.node_id))],
    )
