"""Signed documents: a payload type, the payload bytes exactly as signed, and signatures.

The file form is JSON::

    {"payload_type": "application/vnd.tongban.root+json",
     "payload": "<base64 of the exact payload bytes>",
     "signatures": [{"key_id": "…", "algorithm": "ed25519", "signature": "<base64>"}]}

Each signature is over ``pae(payload_type, payload)``. :func:`verify_threshold` is the only way to
accept a document: it counts valid signatures by *distinct, listed* keys and fails closed — a
threshold below one, an unexpected payload type, or too few valid signatures are errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from gateway.errors import BadSignature, MalformedDocument, ThresholdNotMet, UnknownAlgorithm
from gateway.trust.signing import PublicKey, Signer, b64, pae, unb64, verify

_DOC_KEYS = {"payload_type", "payload", "signatures"}
_SIG_KEYS = {"key_id", "algorithm", "signature"}


@dataclass(frozen=True)
class Signature:
    key_id: str
    algorithm: str
    value: bytes = field(repr=False)


@dataclass(frozen=True)
class SignedDocument:
    payload_type: str
    payload: bytes = field(repr=False)
    signatures: tuple[Signature, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "payload_type": self.payload_type,
            "payload": b64(self.payload),
            "signatures": [
                {"key_id": s.key_id, "algorithm": s.algorithm, "signature": b64(s.value)} for s in self.signatures
            ],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, doc: object, what: str = "document") -> SignedDocument:
        if not isinstance(doc, dict) or set(doc) != _DOC_KEYS:
            raise MalformedDocument(f"{what} must have exactly {sorted(_DOC_KEYS)}")
        payload_type = doc["payload_type"]
        if not isinstance(payload_type, str) or not isinstance(doc["signatures"], list):
            raise MalformedDocument(f"{what}: payload_type must be a string and signatures a list")
        sigs = []
        for i, s in enumerate(doc["signatures"]):
            if not isinstance(s, dict) or set(s) != _SIG_KEYS:
                raise MalformedDocument(f"{what}.signatures[{i}] must have exactly {sorted(_SIG_KEYS)}")
            if not isinstance(s["key_id"], str) or not isinstance(s["algorithm"], str):
                raise MalformedDocument(f"{what}.signatures[{i}]: key_id and algorithm must be strings")
            sigs.append(Signature(s["key_id"], s["algorithm"], unb64(s["signature"], f"{what}.signatures[{i}]")))
        return cls(payload_type, unb64(doc["payload"], f"{what}.payload"), tuple(sigs))

    @classmethod
    def parse(cls, data: bytes, what: str = "document") -> SignedDocument:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise MalformedDocument(f"{what} is not JSON") from None
        return cls.from_json(doc, what)

    def signed_bytes(self) -> bytes:
        return pae(self.payload_type, self.payload)


def sign_document(payload_type: str, payload: bytes, signers: Iterable[Signer]) -> SignedDocument:
    doc = SignedDocument(payload_type, payload)
    for signer in signers:
        doc = add_signature(doc, signer)
    return doc


def add_signature(doc: SignedDocument, signer: Signer) -> SignedDocument:
    """Return ``doc`` with ``signer``'s signature added (replacing an earlier one by the same key)."""
    key = signer.public_key
    value = signer.sign(doc.signed_bytes())
    others = tuple(s for s in doc.signatures if s.key_id != key.key_id)
    return replace(doc, signatures=(*others, Signature(key.key_id, key.algorithm, value)))


def verify_threshold(
    doc: SignedDocument,
    *,
    payload_type: str,
    keys: Mapping[str, PublicKey],
    threshold: int,
    role: str,
) -> int:
    """Require ``threshold`` valid signatures by distinct keys of ``keys``; return how many verified.

    Checks, in order: the payload type is the one expected (``MalformedDocument``); the threshold
    is at least 1 and reachable with the listed keys (``MalformedDocument``: an empty or
    unreachable policy never passes); then each signature by a listed key is verified — signatures
    by unlisted keys, with an algorithm the key does not use, or that fail are not counted — and
    fewer than ``threshold`` valid ones raise ``ThresholdNotMet`` naming the role and the count.
    """
    if doc.payload_type != payload_type:
        raise MalformedDocument(f"{role}: expected payload type {payload_type!r}, got {doc.payload_type!r}")
    if threshold < 1 or threshold > len(keys):
        raise MalformedDocument(f"{role}: threshold {threshold} is not between 1 and {len(keys)} keys")
    message = doc.signed_bytes()
    good: set[str] = set()
    for sig in doc.signatures:
        key = keys.get(sig.key_id)
        if key is None or sig.key_id in good:
            continue
        try:
            verify(key, sig.algorithm, message, sig.value)
        except (BadSignature, UnknownAlgorithm):
            continue
        good.add(sig.key_id)
    if len(good) < threshold:
        raise ThresholdNotMet(f"{role}: {len(good)} valid signature(s) of {len(keys)} keys, {threshold} required")
    return len(good)
