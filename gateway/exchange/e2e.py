"""End-to-end encryption of case payloads to the recipient node (SPEC §3; HPKE, RFC 9180).

A case handoff carries a whole application — names, ID numbers, disability certificates. The
envelope around it is signed but readable by whatever carries it (a relay, a proxy, a log of the
outbox), so the payload itself is sealed to the recipient node's directory encryption key
(``NodeEntry.encryption_key``, X25519) with HPKE in base mode::

    suite  = DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM   ("hpke-x25519-sha256-aes128gcm")
    info   = "tongban.v1 sealed-payload" 0x00 ‖ SHA-256(suite ‖ recipient key id ‖ inner type ‖ context)
    sealed = SealedPayload(suite, recipient_key_id, ciphertext = enc ‖ AEAD ciphertext, inner_type)

Every clear-text field of the :class:`SealedPayload` and the caller's **context** (who sends to whom
under which message id, see :func:`seal_context`) are bound into HPKE's ``info``: a relay that
rewrites the inner type, replays the ciphertext inside another envelope or to another node, or flips
a bit, makes decryption fail. (``info`` is hashed to a fixed 58 bytes so any RFC 9180
implementation accepts it; the RFC only requires 64.) Each seal uses a fresh ephemeral key, so
sealing the same plaintext twice gives unrelated ciphertexts.

The receiver's checks, each a distinct :class:`~gateway.errors.SealProblem` of
:class:`~gateway.errors.SealedPayloadRefused`: the suite is the one this node accepts; the payload
is sealed to *this* key (after a key rotation a node keeps its old private key for the overlap and
picks the one whose id the payload names); the ciphertext is long enough; decryption authenticates.
A wrong context and tampering are deliberately indistinguishable.

Signing stays outside: the envelope signature (over these exact bytes) says who sealed it; HPKE base
mode alone does not authenticate the sender.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from tongban.v1 import exchange_pb2

from gateway.errors import ConfigError, SealedPayloadRefused, SealProblem, UnknownAlgorithm
from gateway.trust.signing import X25519_HPKE, PublicKey

SUITE = "hpke-x25519-sha256-aes128gcm"
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_ENC_BYTES = 32  # X25519 encapsulated key
_TAG_BYTES = 16  # AES-GCM tag
_INFO_LABEL = b"tongban.v1 sealed-payload\x00"


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _info(recipient_key_id: str, inner_type: str, context: bytes) -> bytes:
    parts = (SUITE.encode("ascii"), recipient_key_id.encode("ascii"), inner_type.encode("utf-8"), context)
    return _INFO_LABEL + hashlib.sha256(b"".join(_lp(p) for p in parts)).digest()


def seal_context(*, sender: str, recipient: str, message_id: str) -> bytes:
    """The context an envelope binds its sealed payload to: sender, recipient and message id.

    Both sides compute it from the envelope header, so a sealed payload lifted into another envelope
    (another message id, another pair of nodes) no longer opens.
    """
    return b"".join(_lp(s.encode("utf-8")) for s in ("tongban.v1 envelope", sender, recipient, message_id))


def seal_to(recipient: PublicKey, plaintext: bytes, *, inner_type: str, context: bytes) -> exchange_pb2.SealedPayload:
    """Encrypt ``plaintext`` so that only the holder of ``recipient``'s private key can read it.

    ``recipient`` is the recipient's ``NodeEntry.encryption_key`` from the verified directory (an
    ``x25519-hpke`` key, else :class:`~gateway.errors.UnknownAlgorithm`). ``inner_type`` names what
    the plaintext is (e.g. a payload type); it travels in clear but is authenticated. ``context``
    must be computed identically by the receiver (use :func:`seal_context`).
    """
    if recipient.algorithm != X25519_HPKE:
        raise UnknownAlgorithm(f"sealing needs an {X25519_HPKE} key, not {recipient.algorithm}")
    if not inner_type:
        raise ValueError("inner_type names what the plaintext is; it may not be empty")
    public = x25519.X25519PublicKey.from_public_bytes(recipient.raw)
    ciphertext = _HPKE.encrypt(plaintext, public, info=_info(recipient.key_id, inner_type, context))
    return exchange_pb2.SealedPayload(
        suite=SUITE, recipient_key_id=recipient.key_id, ciphertext=ciphertext, inner_type=inner_type
    )


def open_sealed(
    sealed: exchange_pb2.SealedPayload,
    private: x25519.X25519PrivateKey,
    own_key: PublicKey,
    *,
    context: bytes,
) -> bytes:
    """Decrypt a sealed payload addressed to this node and return the plaintext.

    ``private`` is this node's encryption key and ``own_key`` its public half as the directory lists
    it (:class:`~gateway.errors.ConfigError` if they do not match: the key file and the directory
    disagree). Checks, in order, each a :class:`~gateway.errors.SealedPayloadRefused`:

    1. ``sealed.suite`` is :data:`SUITE` — ``UNKNOWN_SUITE``;
    2. ``sealed.recipient_key_id`` is ``own_key``'s id — ``OTHER_RECIPIENT_KEY``;
    3. the ciphertext holds at least an encapsulated key and a tag — ``MALFORMED``;
    4. HPKE decryption with the ``info`` built from the suite, key id, ``sealed.inner_type`` and
       ``context`` authenticates — ``DECRYPTION_FAILED`` (tampered, or another context).

    Once it returns, ``sealed.inner_type`` is authentic too and says how to parse the plaintext.
    """
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if own_key.algorithm != X25519_HPKE or own_key.raw != raw:
        raise ConfigError("this node's encryption private key is not the one its directory entry lists")
    if sealed.suite != SUITE:
        raise SealedPayloadRefused(SealProblem.UNKNOWN_SUITE)
    if sealed.recipient_key_id != own_key.key_id:
        raise SealedPayloadRefused(SealProblem.OTHER_RECIPIENT_KEY)
    if len(sealed.ciphertext) < _ENC_BYTES + _TAG_BYTES:
        raise SealedPayloadRefused(SealProblem.MALFORMED)
    try:
        return _HPKE.decrypt(sealed.ciphertext, private, info=_info(own_key.key_id, sealed.inner_type, context))
    except InvalidTag:
        raise SealedPayloadRefused(SealProblem.DECRYPTION_FAILED) from None
