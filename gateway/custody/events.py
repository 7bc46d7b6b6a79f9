"""Custody events: what each one says, the exact bytes that are signed, and how they are hashed.

A custody event travels as a :class:`SignedEvent`: four byte strings exactly as the signer wrote
them and a signature over

    framed = lp(case_id) ‖ lp(predecessor) ‖ lp(signer) ‖ body        lp(x) = uint32_be(len(x)) ‖ x
    signed = PAE("tongban.v1.CustodyEvent", framed)                   (gateway.trust.signing.pae)

so one signature binds the payload type (a custody signature can never pass for an envelope or a
receipt), the case id, the predecessor's hash (32 raw bytes, empty for a genesis), the signer's id
and the body. The event's **hash** — what the next event names as its predecessor — is
``SHA-256(signed)``: it covers everything the signature covers, not the signature itself (Ed25519
is deterministic, and the same statement re-signed with a rotated key is the same event).

The **body** is canonical JSON (sorted keys, no whitespace, UTF-8, integers and strings only) and
is refused unless it is byte-for-byte the canonical encoding of what it parses to. Canonical JSON
rather than a protobuf message because (1) the custody core is pure and, by the layering rule,
never imports the generated wire code — it must parse what it verifies itself; (2) protobuf
serialisation is not canonical, whereas a hash chain needs exactly one byte form per event; (3) the
trust documents already sign canonical JSON (``gateway.trust.documents.encode``), so there is one
canonical encoder. The wire (``tongban.v1.CustodyEvent``) carries the fields above as bytes; the
one converter is in ``gateway.wire``.

Bodies hold an event kind, the signer's clock (``created_ms``, milliseconds since the Unix epoch,
UTC) and the kind's fields — node ids, a case type, a date. **Never personal data.**

Parsing (:func:`parse_event`) happens only after the signature has verified
(:func:`gateway.custody.chain.verify_event` is the one caller that matters).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from gateway.errors import CustodyEventMalformed
from gateway.trust.documents import encode
from gateway.trust.signing import Signer, pae

EVENT_TYPE = "tongban.v1.CustodyEvent"
BODY_VERSION = 1
OPERATOR_PREFIX = "operator:"
"""Signer ids of provincial operators: ``operator:<division prefix>`` (e.g. ``operator:50``).
Node ids come from the directory; an operator signs only overrides (see ``chain``)."""

MAX_BODY_BYTES = 4096  # a recall (the largest event: it embeds the offerer's request) is ~700 bytes
MAX_ID = 64  # node ids, key ids (as in the envelope header limits)
MAX_ALGORITHM = 32
_HASH_HEX = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Kind(StrEnum):
    GENESIS = "genesis"
    OFFER = "offer"
    ACCEPT = "accept"
    DECLINE = "decline"
    RECALL_REQUEST = "recall_request"  # signed by the offerer; never part of a chain, embedded in a recall
    RECALL = "recall"
    OVERRIDE = "override"
    CLOSE = "close"


class CaseType(StrEnum):
    """The cases handed across provinces (SPEC §6)."""

    ORPHAN = "orphan"  # 孤儿认定
    DE_FACTO_UNSUPPORTED = "de_facto_unsupported"  # 事实无人抚养儿童认定
    DISABILITY_LIVING = "disability_living_subsidy"  # 困难残疾人生活补贴
    DISABILITY_NURSING = "disability_nursing_subsidy"  # 重度残疾人护理补贴


# --- small validators (all raise CustodyEventMalformed, naming the field, never quoting a value) ----


def _id(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isascii() or not value.isprintable():
        raise CustodyEventMalformed(f"{what} must be 1-{MAX_ID} printable ASCII characters")
    return value


def check_case_id(value: object) -> str:
    """A case id is a UUID in its canonical lowercase form (globally unique without coordination)."""
    if not isinstance(value, str):
        raise CustodyEventMalformed("case id must be a string")
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = ""
    if canonical != value:
        raise CustodyEventMalformed("case id must be a canonical lowercase UUID")
    return value


def check_hash(value: object, what: str = "predecessor") -> str:
    if not isinstance(value, str) or not _HASH_HEX.fullmatch(value):
        raise CustodyEventMalformed(f"{what} must be a SHA-256 as 64 lowercase hex characters")
    return value


def operator_signer(prefix: str) -> str:
    return OPERATOR_PREFIX + prefix


def operator_prefix(signer: str) -> str | None:
    """The province prefix if ``signer`` is a provincial operator, else None (a node)."""
    return signer[len(OPERATOR_PREFIX) :] if signer.startswith(OPERATOR_PREFIX) else None


def to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("custody times must be timezone-aware")
    return (t - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


# --- actions: what an event says -----------------------------------------------------------------


@dataclass(frozen=True)
class Genesis:
    """Opens the chain: the case was accepted (受理) at ``accepting_node`` on ``accepted_on`` and is
    meant for ``registration_node``. Signed by the accepting node, which becomes the holder."""

    kind: ClassVar[Kind] = Kind.GENESIS
    case_type: CaseType
    accepting_node: str
    accepted_on: date  # 受理日期: the statutory clocks start here, whoever holds the case later
    registration_node: str

    def fields(self) -> dict[str, Any]:
        return {
            "case_type": self.case_type.value,
            "accepting_node": self.accepting_node,
            "accepted_on": self.accepted_on.isoformat(),
            "registration_node": self.registration_node,
        }


@dataclass(frozen=True)
class Offer:
    """The holder offers the case to ``to_node``; from its signature on, nobody may act."""

    kind: ClassVar[Kind] = Kind.OFFER
    to_node: str

    def fields(self) -> dict[str, Any]:
        return {"to_node": self.to_node}


@dataclass(frozen=True)
class Accept:
    """The offer's target takes the case: it is the holder from its signature on."""

    kind: ClassVar[Kind] = Kind.ACCEPT

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Decline:
    """The offer's target refuses: the offerer is the holder again."""

    kind: ClassVar[Kind] = Kind.DECLINE

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class RecallRequest:
    """The offerer asks for its pending offer back. Signed by the offerer on the offer as
    predecessor, sent to the target, and **never appended to a chain** by itself: it takes effect
    only inside a :class:`Recall` the target signs."""

    kind: ClassVar[Kind] = Kind.RECALL_REQUEST

    def fields(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Recall:
    """The offer's target grants the offerer's recall request: the offerer is the holder again.
    ``request`` is the offerer's signed :class:`RecallRequest`, for the same case and the same
    offer (its case id and predecessor are the recall's own: they are not repeated in the body)."""

    kind: ClassVar[Kind] = Kind.RECALL
    request: SignedEvent

    def fields(self) -> dict[str, Any]:
        r = self.request
        return {
            "request": {
                "signer": r.signer,
                "body": base64.b64encode(r.body).decode("ascii"),
                "key_id": r.key_id,
                "algorithm": r.algorithm,
                "signature": base64.b64encode(r.signature).decode("ascii"),
            }
        }


@dataclass(frozen=True)
class Override:
    """A provincial operator reassigns a case held by, or offered to, ``lost_node`` (a node of its
    province, revoked in the directory) to ``to_node``."""

    kind: ClassVar[Kind] = Kind.OVERRIDE
    lost_node: str
    to_node: str

    def fields(self) -> dict[str, Any]:
        return {"lost_node": self.lost_node, "to_node": self.to_node}


@dataclass(frozen=True)
class Close:
    """The holder closes the case (办结); nothing may follow."""

    kind: ClassVar[Kind] = Kind.CLOSE

    def fields(self) -> dict[str, Any]:
        return {}


Action = Genesis | Offer | Accept | Decline | RecallRequest | Recall | Override | Close


# --- signed events --------------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class SignedEvent:
    """An event exactly as signed and sent: nothing here has been checked yet."""

    case_id: str
    predecessor: str | None  # hex SHA-256 of the previous event; None for a genesis
    signer: str  # a node id, or operator:<prefix>
    body: bytes = field(repr=False)
    key_id: str
    algorithm: str
    signature: bytes = field(repr=False)

    def signed_bytes(self) -> bytes:
        """The PAE bytes the signature covers (built from the received bytes; nothing re-encoded)."""
        pred = bytes.fromhex(self.predecessor) if self.predecessor is not None else b""
        framed = _lp(self.case_id.encode("utf-8")) + _lp(pred) + _lp(self.signer.encode("utf-8")) + self.body
        return pae(EVENT_TYPE, framed)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def check_shape(self) -> None:
        """Field formats and sizes, before anything is verified (``CustodyEventMalformed``)."""
        check_case_id(self.case_id)
        if self.predecessor is not None:
            check_hash(self.predecessor)
        _id(self.signer, "signer")
        _id(self.key_id, "key id")
        if not isinstance(self.algorithm, str) or not 0 < len(self.algorithm) <= MAX_ALGORITHM:
            raise CustodyEventMalformed("algorithm must be a short non-empty string")
        if not isinstance(self.body, bytes) or not 0 < len(self.body) <= MAX_BODY_BYTES:
            raise CustodyEventMalformed(f"body must be 1-{MAX_BODY_BYTES} bytes")
        if not isinstance(self.signature, bytes) or not 0 < len(self.signature) <= 512:
            raise CustodyEventMalformed("signature must be 1-512 bytes")


@dataclass(frozen=True)
class CustodyEvent:
    """A custody event whose signature has verified, parsed. Built by :func:`parse_event` (after
    verification) or :func:`sign_event` (by its own signer)."""

    signed: SignedEvent
    created: datetime  # the signer's clock, as signed (milliseconds)
    action: Action
    hash: str

    @property
    def case_id(self) -> str:
        return self.signed.case_id

    @property
    def predecessor(self) -> str | None:
        return self.signed.predecessor

    @property
    def signer(self) -> str:
        return self.signed.signer

    @property
    def key_id(self) -> str:
        return self.signed.key_id

    @property
    def kind(self) -> Kind:
        return self.action.kind

    def describe(self) -> str:
        """A short, personal-data-free description for errors and logs."""
        return f"{self.kind.value} by {self.signer} ({self.hash[:12]})"


def encode_body(created: datetime, action: Action) -> bytes:
    return encode({"v": BODY_VERSION, "kind": action.kind.value, "created_ms": to_ms(created), **action.fields()})


def sign_event(
    signer: Signer,
    *,
    signer_id: str,
    case_id: str,
    predecessor: str | None,
    created: datetime,
    action: Action,
) -> CustodyEvent:
    """Sign ``action`` as ``signer_id`` on ``predecessor``; ``created`` is kept to the millisecond.

    Nothing here checks the custody rules: a node checks its own event like anyone else's
    (:func:`gateway.custody.chain.step`) before it keeps and sends it. A genesis has no predecessor,
    every other event has one.
    """
    if (predecessor is None) != (action.kind is Kind.GENESIS):
        raise CustodyEventMalformed("a genesis has no predecessor and every other event has one")
    key = signer.public_key
    body = encode_body(created, action)
    unsigned = SignedEvent(case_id, predecessor, signer_id, body, key.key_id, key.algorithm, b"")
    signed = replace(unsigned, signature=signer.sign(unsigned.signed_bytes()))
    signed.check_shape()
    return parse_event(signed)


# --- parsing (only after the signature verified) ---------------------------------------------------

_COMMON = {"v", "kind", "created_ms"}
_FIELDS: dict[Kind, set[str]] = {
    Kind.GENESIS: {"case_type", "accepting_node", "accepted_on", "registration_node"},
    Kind.OFFER: {"to_node"},
    Kind.ACCEPT: set(),
    Kind.DECLINE: set(),
    Kind.RECALL_REQUEST: set(),
    Kind.RECALL: {"request"},
    Kind.OVERRIDE: {"lost_node", "to_node"},
    Kind.CLOSE: set(),
}
_REQUEST_FIELDS = {"signer", "body", "key_id", "algorithm", "signature"}


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise CustodyEventMalformed(f"{what} must be base64")
    try:
        data = base64.b64decode(value, validate=True)
    except ValueError:
        raise CustodyEventMalformed(f"{what} must be base64") from None
    if base64.b64encode(data).decode("ascii") != value:
        raise CustodyEventMalformed(f"{what} must be canonical base64")
    return data


def _action(kind: Kind, doc: dict[str, Any], outer: SignedEvent) -> Action:
    if kind is Kind.GENESIS:
        try:
            case_type = CaseType(doc["case_type"])
        except ValueError:
            raise CustodyEventMalformed("genesis.case_type is not a known case type") from None
        accepted_on = doc["accepted_on"]
        try:
            day = date.fromisoformat(accepted_on) if isinstance(accepted_on, str) else None
        except ValueError:
            day = None
        if day is None or day.isoformat() != accepted_on:
            raise CustodyEventMalformed("genesis.accepted_on must be a date like 2026-11-23")
        return Genesis(
            case_type,
            _id(doc["accepting_node"], "genesis.accepting_node"),
            day,
            _id(doc["registration_node"], "genesis.registration_node"),
        )
    if kind is Kind.OFFER:
        return Offer(_id(doc["to_node"], "offer.to_node"))
    if kind is Kind.OVERRIDE:
        return Override(_id(doc["lost_node"], "override.lost_node"), _id(doc["to_node"], "override.to_node"))
    if kind is Kind.RECALL:
        r = doc["request"]
        if not isinstance(r, dict) or set(r) != _REQUEST_FIELDS:
            raise CustodyEventMalformed(f"recall.request must have exactly {sorted(_REQUEST_FIELDS)}")
        request = SignedEvent(
            outer.case_id,
            outer.predecessor,
            _id(r["signer"], "recall.request.signer"),
            _b64(r["body"], "recall.request.body"),
            _id(r["key_id"], "recall.request.key_id"),
            _id(r["algorithm"], "recall.request.algorithm"),
            _b64(r["signature"], "recall.request.signature"),
        )
        request.check_shape()
        return Recall(request)
    simple: dict[Kind, Action] = {
        Kind.ACCEPT: Accept(),
        Kind.DECLINE: Decline(),
        Kind.RECALL_REQUEST: RecallRequest(),
        Kind.CLOSE: Close(),
    }
    return simple[kind]


def parse_event(signed: SignedEvent) -> CustodyEvent:
    """Parse a signed event's body. Call only once its signature has verified.

    Refused (``CustodyEventMalformed``) unless: the shape of every field is right; the body is
    canonical JSON of an object with exactly the fields of its kind; the version is 1; a genesis
    and only a genesis has no predecessor.
    """
    signed.check_shape()
    try:
        doc = json.loads(signed.body)
    except (ValueError, UnicodeDecodeError):
        raise CustodyEventMalformed("body is not JSON") from None
    if not isinstance(doc, dict):
        raise CustodyEventMalformed("body must be a JSON object")
    if encode(doc) != signed.body:
        raise CustodyEventMalformed("body is not canonical JSON (sorted keys, no whitespace, no duplicates)")
    try:
        kind = Kind(str(doc.get("kind")))
    except ValueError:
        raise CustodyEventMalformed("body.kind is not a custody event kind") from None
    expected = _COMMON | _FIELDS[kind]
    if set(doc) != expected:
        raise CustodyEventMalformed(f"a {kind.value} body must have exactly {sorted(expected)}")
    if doc["v"] != BODY_VERSION or isinstance(doc["v"], bool):
        raise CustodyEventMalformed(f"body version must be {BODY_VERSION}")
    created_ms = doc["created_ms"]
    if not isinstance(created_ms, int) or isinstance(created_ms, bool) or not 0 <= created_ms < 253_402_300_800_000:
        raise CustodyEventMalformed("body.created_ms must be milliseconds since 1970 before year 10000")
    if (signed.predecessor is None) != (kind is Kind.GENESIS):
        raise CustodyEventMalformed("a genesis has no predecessor and every other event has one")
    return CustodyEvent(signed, from_ms(created_ms), _action(kind, doc, signed), signed.hash)
