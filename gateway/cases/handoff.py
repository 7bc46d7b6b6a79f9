"""Case messages on the exchange: sealing them to the peer node, and opening what arrived (SPEC §3, §6).

Every case message is an ordinary signed envelope whose payload is a
:class:`~tongban.v1.exchange_pb2.SealedPayload` — HPKE to the recipient's directory encryption key,
bound to (sender, recipient, message id) by :func:`gateway.exchange.e2e.seal_context` — so relays,
proxies and the outbox's operators see ciphertext only. The plaintext is one message of
``proto/tongban/v1/cases.proto``, named by ``inner_type``; :data:`INNER_TYPES` says which a purpose
may carry, and anything else is refused (fail closed):

=================  ============================  ==============================================
purpose            direction                     inner types
=================  ============================  ==============================================
``case_handoff``   residence → registration      ``CaseApplication``, ``CaseChunk``, ``CaseSteps``
``case_decision``  registration → residence      ``CaseSteps``, ``CaseReport``
=================  ============================  ==============================================

One case message travels in clear: ``case_supervision`` (督办, county → its province's supervising
node) carries a ``CaseSupervisionAlert`` with no personal data (:func:`seal_supervision`,
:func:`supervision_alerts`).

Attachments travel as ``CaseChunk`` messages of at most :data:`CHUNK_BYTES`, each in its own
envelope, addressed by (case id, document id, index): a document of 50 MiB is 200 envelopes, each
well under the envelope limit, delivered and receipted one by one by the outbox.

Opening (:func:`open_inbox_row`), in order: the inbox row's seal (data keyring), the envelope and
its header (already verified by the receiver when it was stored), the payload as a SealedPayload,
HPKE decryption with this node's encryption key (``SealedPayloadRefused``), the inner type allowed
for the purpose, and the inner message parsed without unknown fields
(:class:`~gateway.errors.CaseMessageRefused`). This module converts between the wire and the
domain types; it holds no case rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from sqlalchemy import Connection, Row, select, update
from tongban.v1 import cases_pb2, envelope_pb2, exchange_pb2

from gateway.cases import codec
from gateway.cases import lifecycle as lc
from gateway.cases.store import Step
from gateway.cases.types import EvidenceDocument, EvidenceKind
from gateway.errors import CaseMessageRefused, GatewayError, InvalidCase
from gateway.exchange.e2e import open_sealed, seal_context, seal_to
from gateway.exchange.envelope import Outgoing, from_ms, new_message_id, seal, to_ms
from gateway.exchange.purposes import Profiles, minimise
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import inbox
from gateway.trust.signing import PublicKey, Signer

HANDOFF = "case_handoff"
DECISION = "case_decision"
CHUNK_BYTES = 256 * 1024
LIFETIME = timedelta(days=7)

_CLASSES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (cases_pb2.CaseApplication, cases_pb2.CaseChunk, cases_pb2.CaseSteps, cases_pb2.CaseReport)
}
APPLICATION_TYPE = cases_pb2.CaseApplication.DESCRIPTOR.full_name
CHUNK_TYPE = cases_pb2.CaseChunk.DESCRIPTOR.full_name
STEPS_TYPE = cases_pb2.CaseSteps.DESCRIPTOR.full_name
REPORT_TYPE = cases_pb2.CaseReport.DESCRIPTOR.full_name

#: Which plaintexts each case purpose may carry (see the module docstring).
INNER_TYPES: dict[str, frozenset[str]] = {
    HANDOFF: frozenset({APPLICATION_TYPE, CHUNK_TYPE, STEPS_TYPE}),
    DECISION: frozenset({STEPS_TYPE, REPORT_TYPE}),
}


def split(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """``data`` in chunks of ``size`` bytes (the last may be shorter); never empty for non-empty data."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def chunks_for(size: int) -> int:
    return -(-size // CHUNK_BYTES)


# --- domain <-> wire ------------------------------------------------------------------------------


def document_to_wire(d: EvidenceDocument) -> cases_pb2.CaseDocument:
    return cases_pb2.CaseDocument(
        document_id=d.document_id, kind=d.kind.value, sha256=d.sha256, size=d.size, chunks=chunks_for(d.size)
    )


def document_from_wire(m: cases_pb2.CaseDocument) -> EvidenceDocument:
    try:
        d = EvidenceDocument(m.document_id, EvidenceKind(m.kind), m.sha256, m.size)
    except ValueError:
        raise InvalidCase("a document reference names an unknown kind") from None
    if m.chunks != chunks_for(m.size):
        raise InvalidCase(f"a document reference's chunk count is not {CHUNK_BYTES}-byte chunks of its size")
    return d


def step_to_wire(s: Step) -> cases_pb2.CaseStep:
    return cases_pb2.CaseStep(
        action=s.action.kind.value, role=s.role.value, at_ms=to_ms(s.at), facts_json=codec.action_to_json(s.action)
    )


def step_from_wire(m: cases_pb2.CaseStep) -> Step:
    try:
        kind, role = lc.ActionKind(m.action), lc.Role(m.role)
    except ValueError:
        raise InvalidCase("a step names an unknown action or role") from None
    try:
        at = from_ms(m.at_ms, "step time")
    except GatewayError:
        raise InvalidCase("a step's time is out of range") from None
    return Step(role, codec.action_from_json(kind, m.facts_json), at)


# --- the messages, as domain values ---------------------------------------------------------------


@dataclass(frozen=True)
class ApplicationMessage:
    """``CaseApplication``: the pushed case (see ``cases.proto``)."""

    case_id: str
    programme: str
    accepting_node: str
    accepting_division: str
    registration_node: str
    registration_division: str
    child_ref: str
    accepted_on: str
    application_json: bytes = field(repr=False)
    id_token: bytes = field(repr=False)
    token_period: str
    documents: tuple[EvidenceDocument, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class ChunkMessage:
    case_id: str
    document_id: str
    index: int
    count: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class StepsMessage:
    case_id: str
    steps: tuple[Step, ...]
    documents: tuple[EvidenceDocument, ...] = ()


@dataclass(frozen=True)
class ReportMessage:
    case_id: str
    code: str
    document_id: str = ""
    other_division: str = ""


CaseMessage = ApplicationMessage | ChunkMessage | StepsMessage | ReportMessage


def to_wire(message: CaseMessage) -> Message:
    """The protobuf form of a case message (the only place it is built)."""
    match message:
        case ApplicationMessage():
            return cases_pb2.CaseApplication(
                case_id=message.case_id,
                programme=message.programme,
                accepting_node=message.accepting_node,
                accepting_division=message.accepting_division,
                registration_node=message.registration_node,
                registration_division=message.registration_division,
                child_ref=message.child_ref,
                accepted_on=message.accepted_on,
                application_json=message.application_json,
                id_token=message.id_token,
                token_period=message.token_period,
                documents=[document_to_wire(d) for d in message.documents],
                steps=[step_to_wire(s) for s in message.steps],
            )
        case ChunkMessage():
            return cases_pb2.CaseChunk(
                case_id=message.case_id,
                document_id=message.document_id,
                index=message.index,
                count=message.count,
                data=message.data,
            )
        case StepsMessage():
            return cases_pb2.CaseSteps(
                case_id=message.case_id,
                steps=[step_to_wire(s) for s in message.steps],
                documents=[document_to_wire(d) for d in message.documents],
            )
        case ReportMessage():
            return cases_pb2.CaseReport(
                case_id=message.case_id,
                code=message.code,
                document_id=message.document_id,
                other_division=message.other_division,
            )


def from_wire(message: Message) -> CaseMessage:
    """The domain form of a parsed case message (``InvalidCase`` for a malformed document or step)."""
    if isinstance(message, cases_pb2.CaseApplication):
        return ApplicationMessage(
            case_id=message.case_id,
            programme=message.programme,
            accepting_node=message.accepting_node,
            accepting_division=message.accepting_division,
            registration_node=message.registration_node,
            registration_division=message.registration_division,
            child_ref=message.child_ref,
            accepted_on=message.accepted_on,
            application_json=message.application_json,
            id_token=message.id_token,
            token_period=message.token_period,
            documents=tuple(document_from_wire(d) for d in message.documents),
            steps=tuple(step_from_wire(s) for s in message.steps),
        )
    if isinstance(message, cases_pb2.CaseChunk):
        return ChunkMessage(message.case_id, message.document_id, message.index, message.count, message.data)
    if isinstance(message, cases_pb2.CaseSteps):
        return StepsMessage(
            message.case_id,
            tuple(step_from_wire(s) for s in message.steps),
            tuple(document_from_wire(d) for d in message.documents),
        )
    if isinstance(message, cases_pb2.CaseReport):
        return ReportMessage(message.case_id, message.code, message.document_id, message.other_division)
    raise CaseMessageRefused("not a case message")  # pragma: no cover - INNER_TYPES admits nothing else


# --- sealing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sender:
    """What sealing needs about this node."""

    node_id: str
    signer: Signer = field(repr=False)
    profiles: Profiles = field(repr=False)


def seal_message(
    sender: Sender, purpose: str, message: CaseMessage, *, recipient: str, recipient_key: PublicKey, now: datetime
) -> Outgoing:
    """Encrypt ``message`` to ``recipient_key`` and sign it as an envelope of ``purpose``."""
    inner = to_wire(message)
    inner_type = inner.DESCRIPTOR.full_name
    if inner_type not in INNER_TYPES.get(purpose, frozenset()):
        raise CaseMessageRefused(f"purpose {purpose} does not carry {inner_type}")
    message_id = new_message_id()
    context = seal_context(sender=sender.node_id, recipient=recipient, message_id=message_id)
    sealed = seal_to(recipient_key, inner.SerializeToString(), inner_type=inner_type, context=context)
    return seal(
        sender=sender.node_id,
        recipient=recipient,
        profile=sender.profiles.get(purpose),
        payload=sealed.SerializeToString(),
        signer=sender.signer,
        now=now,
        lifetime=LIFETIME,
        message_id=message_id,
    )


# --- opening the inbox ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A case message from the inbox, decrypted: who sent it, and the inner message."""

    message_id: str
    sender: str
    purpose: str
    received_at: datetime
    inner: CaseMessage = field(repr=False)


@dataclass(frozen=True)
class Opener:
    """What opening needs about this node: its keyring (inbox rows) and encryption key pair."""

    node_id: str
    keyring: DataKeyring = field(repr=False)
    encryption_key: x25519.X25519PrivateKey = field(repr=False)
    own_key: PublicKey = field(repr=False)


def _inbox_context(message_id: str) -> bytes:
    return b"inbox\0" + message_id.encode("ascii")


def open_inbox_row(opener: Opener, row: Row[Any]) -> Received:
    """Decrypt and parse one inbox row of a case purpose (see the module docstring for the order)."""
    message_id: str = row.message_id
    purpose: str = row.purpose
    data = opener.keyring.open(Sealed(row.key_id, bytes(row.envelope_sealed)), context=_inbox_context(message_id))
    envelope = envelope_pb2.Envelope.FromString(data)
    header = envelope_pb2.EnvelopeHeader.FromString(envelope.header)
    sealed = exchange_pb2.SealedPayload.FromString(envelope.payload)
    context = seal_context(sender=header.sender, recipient=header.recipient, message_id=header.message_id)
    plaintext = open_sealed(sealed, opener.encryption_key, opener.own_key, context=context)
    if sealed.inner_type not in INNER_TYPES.get(purpose, frozenset()):
        raise CaseMessageRefused(f"purpose {purpose} does not carry {sealed.inner_type[:60]}")
    inner = _CLASSES[sealed.inner_type]()
    try:
        inner.ParseFromString(plaintext)
    except DecodeError:
        raise CaseMessageRefused(f"the plaintext is not a {sealed.inner_type}") from None
    if _has_unknown(inner):
        raise CaseMessageRefused(f"the {sealed.inner_type} carries fields this node does not know")
    return Received(message_id, header.sender, purpose, row.received_at, from_wire(inner))


def _has_unknown(message: Message) -> bool:
    if len(UnknownFieldSet(message)):
        return True
    for fd, value in message.ListFields():
        if fd.message_type is not None:
            for child in value if fd.is_repeated else [value]:
                if _has_unknown(child):
                    return True
    return False


def pending_rows(conn: Connection) -> list[Row[Any]]:
    """Unprocessed inbox rows of the case purposes, oldest first."""
    c = inbox.c
    query = (
        select(c.message_id, c.sender, c.purpose, c.key_id, c.envelope_sealed, c.received_at)
        .where(c.purpose.in_([HANDOFF, DECISION]), c.processed_at.is_(None))
        .order_by(c.received_at, c.message_id)
    )
    return list(conn.execute(query))


def claim(conn: Connection, message_id: str) -> bool:
    """Lock one unprocessed inbox row for the caller's transaction (``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL): ``False`` when another process of this node is applying it or already has. Several
    gateway processes of one node share the inbox this way and never apply a message twice."""
    query = (
        select(inbox.c.message_id)
        .where(inbox.c.message_id == message_id, inbox.c.processed_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return conn.execute(query).first() is not None


def mark_processed(conn: Connection, message_id: str, now: datetime) -> None:
    conn.execute(update(inbox).where(inbox.c.message_id == message_id).values(processed_at=now))


# --- 督办: supervision alerts (purpose case_supervision, in clear) ----------------------------------

SUPERVISION = "case_supervision"


@dataclass(frozen=True)
class SupervisionAlert:
    """One overdue step a county reports to its province's supervising node: no personal data."""

    case_id: str
    programme: str
    step: str
    due: date
    responsible_node: str
    division: str  # the responsible node's county
    received_at: datetime | None = None  # at the supervising node


def seal_supervision(sender: Sender, alert: SupervisionAlert, *, recipient: str, now: datetime) -> Outgoing:
    """A ``case_supervision`` envelope (``CaseSupervisionAlert`` in clear, minimised to its profile)."""
    profile = sender.profiles.get(SUPERVISION)
    payload = cases_pb2.CaseSupervisionAlert(
        case_id=alert.case_id,
        programme=alert.programme,
        step=alert.step,
        due=alert.due.isoformat(),
        responsible_node=alert.responsible_node,
        responsible_division=alert.division,
    )
    return seal(
        sender=sender.node_id,
        recipient=recipient,
        profile=profile,
        payload=minimise(profile, payload).SerializeToString(),
        signer=sender.signer,
        now=now,
        lifetime=LIFETIME,
    )


def supervision_alerts(conn: Connection, keyring: DataKeyring) -> list[SupervisionAlert]:
    """Every ``case_supervision`` message in the inbox (verified by the receiver when stored)."""
    c = inbox.c
    query = select(c.message_id, c.key_id, c.envelope_sealed, c.received_at).where(c.purpose == SUPERVISION)
    alerts = []
    for row in conn.execute(query):
        message_id = str(row.message_id)
        data = keyring.open(Sealed(row.key_id, bytes(row.envelope_sealed)), context=_inbox_context(message_id))
        m = cases_pb2.CaseSupervisionAlert.FromString(envelope_pb2.Envelope.FromString(data).payload)
        try:
            due = date.fromisoformat(m.due)
        except ValueError:
            raise CaseMessageRefused("a supervision alert's due day is not a date") from None
        alerts.append(
            SupervisionAlert(
                m.case_id, m.programme, m.step, due, m.responsible_node, m.responsible_division, row.received_at
            )
        )
    return alerts
