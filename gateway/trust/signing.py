"""Signatures over exact bytes: algorithms, key ids, the pre-authentication encoding, signers.

Everything signed in Tongban is signed over a **pre-authentication encoding** (PAE, as in DSSE):

    PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body

so a signature binds the payload *type* (domain separation: a root signature can never be
replayed as a directory signature) and the exact payload bytes. Verifiers check the bytes they
received and parse them only afterwards; nothing is re-serialised to be verified.

Every public key and every signature names its algorithm. The registry below is the allow-list:
an algorithm it does not know is refused (:class:`~gateway.errors.UnknownAlgorithm`), never skipped.
Ed25519 is the default suite; the national suite (SM2/SM3) and hardware modules plug in behind the
same :class:`Signer` protocol and :func:`verify` registry.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import BadSignature, MalformedDocument, UnknownAlgorithm

ED25519 = "ed25519"
X25519_HPKE = "x25519-hpke"  # encryption keys (SPEC §3): named here so documents can validate them

SIGNATURE_ALGORITHMS = frozenset({ED25519})
ENCRYPTION_ALGORITHMS = frozenset({X25519_HPKE})
_RAW_KEY_BYTES = {ED25519: 32, X25519_HPKE: 32}


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding of ``body`` under ``payload_type``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def key_id(algorithm: str, raw: bytes) -> str:
    """A key's id: a domain-separated SHA-256 of its algorithm and raw public bytes (32 hex chars)."""
    return hashlib.sha256(b"tongban.key-id\x00" + algorithm.encode("ascii") + b"\x00" + raw).hexdigest()[:32]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedDocument(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedDocument(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class PublicKey:
    """A public key as documents list it: algorithm and raw bytes; ``key_id`` is derived."""

    algorithm: str
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        expected = _RAW_KEY_BYTES.get(self.algorithm)
        if expected is None:
            raise UnknownAlgorithm(f"key algorithm {self.algorithm!r}")
        if len(self.raw) != expected:
            raise MalformedDocument(f"{self.algorithm} public key must be {expected} bytes")

    @property
    def key_id(self) -> str:
        return key_id(self.algorithm, self.raw)

    def to_json(self) -> dict[str, str]:
        return {"algorithm": self.algorithm, "public": b64(self.raw)}

    @classmethod
    def from_json(cls, doc: object, what: str) -> PublicKey:
        if not isinstance(doc, dict) or set(doc) != {"algorithm", "public"}:
            raise MalformedDocument(f"{what} must have exactly 'algorithm' and 'public'")
        algorithm = doc["algorithm"]
        if not isinstance(algorithm, str):
            raise MalformedDocument(f"{what}.algorithm must be a string")
        return cls(algorithm, unb64(doc["public"], f"{what}.public"))


def verify(key: PublicKey, algorithm: str, message: bytes, signature: bytes) -> None:
    """Verify ``signature`` over ``message`` or raise. The signature's algorithm must be the key's."""
    if algorithm not in SIGNATURE_ALGORITHMS or key.algorithm != algorithm:
        raise UnknownAlgorithm(f"signature algorithm {algorithm!r} for a {key.algorithm} key")
    try:
        Ed25519PublicKey.from_public_bytes(key.raw).verify(signature, message)
    except InvalidSignature:
        raise BadSignature(f"key {key.key_id}") from None


class Signer(Protocol):
    """Anything that can sign: a key file today, a PKCS#11 token, a KMS or an SM2 module later."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, message: bytes) -> bytes: ...


class Ed25519Signer:
    """An in-memory Ed25519 private key (loaded from an encrypted key file, see ``keyfile``)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._public = PublicKey(ED25519, raw)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(Ed25519PrivateKey.generate())

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._private

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)
