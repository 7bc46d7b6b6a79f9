"""Envelopes and receipts: the exact bytes nodes sign, send and keep (SPEC §3).

An envelope carries two byte strings exactly as they were signed, and a signature over both:

    framed(header, payload) = uint64_be(len(header)) ‖ header ‖ payload
    signed                  = PAE("tongban.v1.Envelope", framed(header, payload))

``header`` is a serialised :class:`EnvelopeHeader` — sender, recipient, message id, purpose and
profile version, created and expiry time, payload type and the payload's SHA-256 — written **once**
by the sender. The PAE (:func:`gateway.trust.signing.pae`) binds the envelope type (a receipt
signature can never pass as an envelope signature); the length prefix fixes where the header ends,
so no bytes can move between header and payload. Nothing is ever re-serialised to be verified:
protobuf encoding is not canonical, so a receiver checks the bytes it received.

The **digest** of an envelope is SHA-256 of ``signed``. It names the envelope in the receiver's
inbox and in the receipt, so two envelopes with the same message id but any other difference have
different digests.

A **receipt** is the receiver's signature over a serialised :class:`ReceiptBody` (message id,
sender, receiver, envelope digest, acceptance time) under ``PAE("tongban.v1.Receipt", body)``. The
sender checks it with :func:`verify_receipt` and keeps it as proof of delivery.

This module holds the wire format and its pure checks (no database, no clock, no sockets). The
order in which a receiving node applies them, and what it stores, is in
:mod:`gateway.exchange.receiver`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from tongban.v1 import common_pb2, envelope_pb2

from gateway.errors import (
    BadSignature,
    EnvelopeMalformed,
    EnvelopeSignatureInvalid,
    EnvelopeTooLarge,
    KeyNotValid,
    NodeNotActive,
    OutsideTimeWindow,
    ReceiptInvalid,
    UnknownAlgorithm,
    UnknownNode,
)
from gateway.exchange.purposes import PurposeProfile, parse_payload
from gateway.trust.documents import NodeEntry
from gateway.trust.signing import PublicKey, Signer, pae, verify
from gateway.trust.verifier import Directory

ENVELOPE_TYPE = "tongban.v1.Envelope"
RECEIPT_TYPE = "tongban.v1.Receipt"

MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
"""The largest serialised envelope a receiver reads (``EnvelopeTooLarge`` beyond). Bulk rosters
travel as several batches, each in its own envelope, so no envelope needs to be larger."""

MAX_HEADER_BYTES = 1024  # a real header is ~300 bytes; every field has a length limit below
MAX_RECEIPT_BYTES = 1024

# Field limits: the inbox/outbox columns that store these values (gateway/store/schema.py).
MAX_NODE_ID = 64
MAX_PURPOSE = 40
MAX_PAYLOAD_TYPE = 80
MAX_KEY_ID = 64
MAX_ALGORITHM = 32

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC) - _EPOCH) // _MS


# --- times ------------------------------------------------------------------------------------------


def to_ms(t: datetime) -> int:
    """A timezone-aware time as Unix epoch milliseconds (truncated)."""
    if t.tzinfo is None:
        raise ValueError("envelope times must be timezone-aware")
    return (t - _EPOCH) // _MS


def from_ms(ms: int, what: str) -> datetime:
    """Epoch milliseconds from the wire as a UTC time; ``EnvelopeMalformed`` outside 1970–9999."""
    if not 0 < ms <= _MAX_MS:
        raise EnvelopeMalformed(f"{what} is not a time between 1970 and 9999")
    return _EPOCH + ms * _MS


# --- the signed bytes ---------------------------------------------------------------------------


def framed(header: bytes, payload: bytes) -> bytes:
    """``uint64_be(len(header)) ‖ header ‖ payload``: the body the envelope signature covers."""
    return struct.pack(">Q", len(header)) + header + payload


def signed_bytes(envelope: envelope_pb2.Envelope) -> bytes:
    """The PAE bytes an envelope's signature covers, built from the header and payload bytes exactly
    as they arrived."""
    return pae(ENVELOPE_TYPE, framed(envelope.header, envelope.payload))


def digest_of(signed: bytes) -> bytes:
    return hashlib.sha256(signed).digest()


def new_message_id() -> str:
    return str(uuid.uuid4())


def is_message_id(value: str) -> bool:
    """A message id is a UUID in canonical form (lower-case, 36 characters)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


# --- sending ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A sealed envelope, ready for the outbox. ``data`` is the serialised Envelope exactly as sent."""

    message_id: str
    sender: str
    recipient: str
    purpose: str
    created_at: datetime
    expires_at: datetime
    data: bytes = field(repr=False)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the PAE bytes that were signed (what the receipt must name)."""
        return digest_of(signed_bytes(envelope_pb2.Envelope.FromString(self.data)))


def seal(
    *,
    sender: str,
    recipient: str,
    profile: PurposeProfile,
    payload: bytes,
    signer: Signer,
    now: datetime,
    lifetime: timedelta,
    message_id: str | None = None,
) -> Outgoing:
    """Sign ``payload`` for ``recipient`` under ``profile`` and return the envelope to send.

    The payload must already be minimised: it is parsed by the profile first
    (``PayloadInvalid`` / ``ForbiddenField``), so a node never signs what a receiver must refuse.
    ``lifetime`` must be positive and within ``profile.max_lifetime_seconds``
    (``OutsideTimeWindow``); the envelope must fit ``MAX_ENVELOPE_BYTES`` (``EnvelopeTooLarge``).
    Times travel in milliseconds; ``created_at`` is ``now`` truncated to the millisecond.
    """
    message_id = message_id or new_message_id()
    if not is_message_id(message_id):
        raise EnvelopeMalformed("the message id must be a canonical UUID")
    if not timedelta(0) < lifetime <= timedelta(seconds=profile.max_lifetime_seconds):
        raise OutsideTimeWindow(
            f"lifetime {lifetime} is outside (0, {profile.max_lifetime_seconds}s] for purpose {profile.name}"
        )
    parse_payload(profile, payload)
    created_ms = to_ms(now)
    header = envelope_pb2.EnvelopeHeader(
        sender=sender,
        recipient=recipient,
        message_id=message_id,
        purpose=profile.name,
        profile_version=profile.version,
        created_at_ms=created_ms,
        expires_at_ms=created_ms + lifetime // _MS,
        payload_type=profile.payload_type,
        payload_sha256=hashlib.sha256(payload).digest(),
    ).SerializeToString()
    key = signer.public_key
    signature = signer.sign(pae(ENVELOPE_TYPE, framed(header, payload)))
    data = envelope_pb2.Envelope(
        header=header,
        payload=payload,
        signature=common_pb2.Signature(key_id=key.key_id, algorithm=key.algorithm, value=signature),
    ).SerializeToString()
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeTooLarge(f"{len(data)} bytes; split the roster into smaller batches")
    return Outgoing(
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        purpose=profile.name,
        created_at=from_ms(created_ms, "created_at"),
        expires_at=from_ms(created_ms + lifetime // _MS, "expires_at"),
        data=data,
    )


# --- receiving: parse (untrusted), then verify ----------------------------------------------------


def _no_unknown_fields(message: Message, what: str) -> None:
    # Fail closed: a field this node does not know could carry meaning it would silently ignore.
    if len(UnknownFieldSet(message)) > 0:
        raise EnvelopeMalformed(f"{what} carries fields this node does not know")


def _text(value: str, what: str, limit: int) -> None:
    if not value or len(value) > limit or not value.isprintable():
        raise EnvelopeMalformed(f"{what} must be 1-{limit} printable characters")


@dataclass(frozen=True)
class Unverified:
    """An envelope that parsed, and whose header is well-formed — but **nothing in it is trusted
    yet**. The header is read before the signature is checked only to learn who claims to have
    sent it and with which key; the name says so, so that no code uses it by mistake."""

    envelope: envelope_pb2.Envelope = field(repr=False)
    header: envelope_pb2.EnvelopeHeader = field(repr=False)
    data: bytes = field(repr=False)  # the serialised envelope: the received bytes when bytes were received
    signed: bytes = field(repr=False)  # the PAE bytes the signature must cover
    digest: bytes

    @property
    def message_id(self) -> str:
        return self.header.message_id

    @property
    def created_at(self) -> datetime:
        return from_ms(self.header.created_at_ms, "created_at")

    @property
    def expires_at(self) -> datetime:
        return from_ms(self.header.expires_at_ms, "expires_at")


def parse_envelope(envelope: envelope_pb2.Envelope | bytes) -> Unverified:
    """Steps 1–2 of the receiver: the size limit, then parse the envelope and its header.

    Raises ``EnvelopeTooLarge`` beyond :data:`MAX_ENVELOPE_BYTES`; ``EnvelopeMalformed`` if either
    message does not decode, carries unknown fields, or a header field is missing or out of range
    (ids, lengths, a canonical UUID message id, a 32-byte payload digest, times in 1970–9999, a
    signature with key id, algorithm and value). Syntax only: nothing here is authenticated.
    """
    size = len(envelope) if isinstance(envelope, bytes) else envelope.ByteSize()
    if size > MAX_ENVELOPE_BYTES:
        raise EnvelopeTooLarge(f"{size} bytes, limit {MAX_ENVELOPE_BYTES}")
    if isinstance(envelope, bytes):
        data = envelope
        try:
            envelope = envelope_pb2.Envelope.FromString(data)
        except DecodeError:
            raise EnvelopeMalformed("the envelope does not decode") from None
    else:
        data = envelope.SerializeToString()
    _no_unknown_fields(envelope, "the envelope")
    _no_unknown_fields(envelope.signature, "the envelope signature")
    if len(envelope.header) > MAX_HEADER_BYTES:
        raise EnvelopeMalformed(f"the header exceeds {MAX_HEADER_BYTES} bytes")
    try:
        header = envelope_pb2.EnvelopeHeader.FromString(envelope.header)
    except DecodeError:
        raise EnvelopeMalformed("the envelope header does not decode") from None
    _no_unknown_fields(header, "the envelope header")
    _text(header.sender, "sender", MAX_NODE_ID)
    _text(header.recipient, "recipient", MAX_NODE_ID)
    _text(header.purpose, "purpose", MAX_PURPOSE)
    _text(header.payload_type, "payload_type", MAX_PAYLOAD_TYPE)
    if not is_message_id(header.message_id):
        raise EnvelopeMalformed("the message id must be a canonical UUID")
    if len(header.payload_sha256) != hashlib.sha256().digest_size:
        raise EnvelopeMalformed("payload_sha256 must be 32 bytes")
    from_ms(header.created_at_ms, "created_at")
    from_ms(header.expires_at_ms, "expires_at")
    signature = envelope.signature
    _text(signature.key_id, "signature key id", MAX_KEY_ID)
    _text(signature.algorithm, "signature algorithm", MAX_ALGORITHM)
    if not signature.value:
        raise EnvelopeMalformed("the envelope is not signed")
    signed = signed_bytes(envelope)
    return Unverified(envelope, header, data, signed, digest_of(signed))


def verify_signature(unverified: Unverified, *, directory: Directory, now: datetime) -> PublicKey:
    """Step 5: the signature verifies over the received bytes with a signing key the directory lists
    for the claimed sender, valid at the envelope's ``created_at`` (rotation and overlap window
    applied by :meth:`Directory.signing_key`). Returns that key; ``EnvelopeSignatureInvalid`` if
    not. Call only after the sender was found active (step 4)."""
    signature = unverified.envelope.signature
    try:
        key = directory.signing_key(
            unverified.header.sender, signature.key_id, signed_at=unverified.created_at, now=now
        )
        verify(key, signature.algorithm, unverified.signed, signature.value)
    except (KeyNotValid, BadSignature, UnknownAlgorithm) as exc:
        raise EnvelopeSignatureInvalid(exc.detail) from None
    return key


def check_payload_digest(unverified: Unverified) -> None:
    """Step 6: the signed header's payload digest names the payload that came with it. (Only a
    sender that signed inconsistent content can fail this; a tampered payload fails step 5.)"""
    actual = hashlib.sha256(unverified.envelope.payload).digest()
    if not hmac.compare_digest(actual, unverified.header.payload_sha256):
        raise EnvelopeMalformed("payload_sha256 does not match the payload")


@dataclass(frozen=True)
class Verified:
    """An envelope every check has passed: what the receiver stores and hands on."""

    header: envelope_pb2.EnvelopeHeader = field(repr=False)
    payload: Message = field(repr=False)  # parsed by the profile
    profile: PurposeProfile
    digest: bytes
    sender_entry: NodeEntry = field(repr=False)
    key_id: str  # the sender's signing key that verified

    @property
    def message_id(self) -> str:
        return self.header.message_id

    @property
    def sender(self) -> str:
        return self.header.sender

    @property
    def recipient(self) -> str:
        return self.header.recipient

    @property
    def purpose(self) -> str:
        return self.header.purpose

    @property
    def created_at(self) -> datetime:
        return from_ms(self.header.created_at_ms, "created_at")

    @property
    def expires_at(self) -> datetime:
        return from_ms(self.header.expires_at_ms, "expires_at")


# --- receipts --------------------------------------------------------------------------------------


def make_receipt(
    *,
    message_id: str,
    sender: str,
    receiver: str,
    envelope_digest: bytes,
    signer: Signer,
    now: datetime,
) -> envelope_pb2.Receipt:
    """The receiver's signed statement that it accepted the envelope with ``envelope_digest``."""
    body = envelope_pb2.ReceiptBody(
        message_id=message_id,
        sender=sender,
        receiver=receiver,
        envelope_sha256=envelope_digest,
        accepted_at_ms=to_ms(now),
    ).SerializeToString()
    key = signer.public_key
    return envelope_pb2.Receipt(
        body=body,
        signature=common_pb2.Signature(
            key_id=key.key_id, algorithm=key.algorithm, value=signer.sign(pae(RECEIPT_TYPE, body))
        ),
    )


def verify_receipt(
    receipt: envelope_pb2.Receipt | bytes,
    *,
    directory: Directory,
    receiver: str,
    message_id: str,
    envelope_digest: bytes,
    now: datetime,
) -> envelope_pb2.ReceiptBody:
    """The sender's check of a receipt; returns the verified body or raises ``ReceiptInvalid``.

    In order: the receipt and its body decode, within :data:`MAX_RECEIPT_BYTES`, without unknown
    fields (the body is read before verification only to learn the signing time); the signature
    verifies with a signing key the directory lists for ``receiver``, valid at the acceptance time;
    the body names ``receiver``, ``message_id`` and ``envelope_digest``. A directory that is
    unavailable or expired raises its own ``TrustError`` (transient: check again later).
    """
    if isinstance(receipt, bytes):
        if len(receipt) > MAX_RECEIPT_BYTES:
            raise ReceiptInvalid(f"receipt of {len(receipt)} bytes")
        try:
            receipt = envelope_pb2.Receipt.FromString(receipt)
        except DecodeError:
            raise ReceiptInvalid("the receipt does not decode") from None
    if len(receipt.body) > MAX_RECEIPT_BYTES:
        raise ReceiptInvalid("the receipt body is too large")
    try:
        body = envelope_pb2.ReceiptBody.FromString(receipt.body)
    except DecodeError:
        raise ReceiptInvalid("the receipt body does not decode") from None
    if len(UnknownFieldSet(receipt)) or len(UnknownFieldSet(receipt.signature)) or len(UnknownFieldSet(body)):
        raise ReceiptInvalid("the receipt carries fields this node does not know")
    try:
        accepted_at = from_ms(body.accepted_at_ms, "accepted_at")
    except EnvelopeMalformed:
        raise ReceiptInvalid("the receipt's acceptance time is out of range") from None
    directory.check_fresh(now)
    signature = receipt.signature
    try:
        key = directory.signing_key(receiver, signature.key_id, signed_at=accepted_at, now=now)
        verify(key, signature.algorithm, pae(RECEIPT_TYPE, receipt.body), signature.value)
    except (UnknownNode, NodeNotActive, KeyNotValid, BadSignature, UnknownAlgorithm) as exc:
        raise ReceiptInvalid(f"signature: {exc.detail or exc.code}") from None
    if body.receiver != receiver:
        raise ReceiptInvalid("the receipt is signed by the receiver for another receiver")
    if body.message_id != message_id:
        raise ReceiptInvalid("the receipt is for another message id")
    if not hmac.compare_digest(body.envelope_sha256, envelope_digest):
        raise ReceiptInvalid("the receipt is for other envelope content")
    return body
