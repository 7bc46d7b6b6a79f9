"""The county API's one converter between domain values and ``tongban.v1.County`` messages.

The servicer converts with the ``*_to_wire`` functions and the client (:mod:`gateway.client`) back
with the ``*_from_wire`` ones; tests hold every pair to a round trip. Nothing converted here carries
personal data: findings are codes and references, inbox lines case ids, codes, divisions and dates,
dead letters message ids and reason codes, audit entries references.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from tongban.v1 import county_pb2

from gateway import audit
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.service import InboxItem
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import Programme
from gateway.errors import InputError
from gateway.exchange import outbox
from gateway.reconcile.findings import Code, Finding, Role, Side


@dataclass(frozen=True)
class DeadLetter:
    """An outbox message this node gave up on, as the county API shows it."""

    message_id: str
    peer: str
    purpose: str
    attempts: int
    created_at: datetime
    reason: str


@dataclass(frozen=True)
class AuditLine:
    """An audit entry as the county API shows it: the entry and its hash (the link is not sent)."""

    seq: int
    at: datetime
    actor: str
    action: str
    purpose: str
    reference: str
    detail: str
    entry_hash: bytes


def _time_to_wire(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _time_from_wire(text: str, name: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise InputError(f"{name} has no time zone")
    return at.astimezone(UTC)


def finding_to_wire(f: Finding) -> county_pb2.Finding:
    """The detail column is left out: the API sends codes and references only."""
    return county_pb2.Finding(
        code=f.code.value,
        role=f.role.value,
        side=f.side.value,
        peer=f.peer,
        peer_division=f.peer_division,
        record_ref=f.record_ref,
        peer_ref=f.peer_ref,
    )


def finding_from_wire(m: county_pb2.Finding) -> Finding:
    try:
        return Finding(
            code=Code(m.code),
            role=Role(m.role),
            side=Side(m.side),
            peer=m.peer,
            peer_division=m.peer_division,
            record_ref=m.record_ref,
            peer_ref=m.peer_ref,
        )
    except ValueError:
        raise InputError("a finding names an unknown code, role or side") from None


def dead_letter_from_row(r: outbox.OutboxRow) -> DeadLetter:
    return DeadLetter(r.message_id, r.peer, r.purpose, r.attempts, r.created_at, r.last_error or "")


def dead_letter_to_wire(d: DeadLetter) -> county_pb2.DeadLetter:
    return county_pb2.DeadLetter(
        message_id=d.message_id,
        peer=d.peer,
        purpose=d.purpose,
        attempts=d.attempts,
        created_at=_time_to_wire(d.created_at),
        reason=d.reason,
    )


def dead_letter_from_wire(m: county_pb2.DeadLetter) -> DeadLetter:
    return DeadLetter(
        m.message_id, m.peer, m.purpose, m.attempts, _time_from_wire(m.created_at, "created_at"), m.reason
    )


def inbox_item_to_wire(i: InboxItem) -> county_pb2.InboxItem:
    return county_pb2.InboxItem(
        case_id=i.case_id,
        side=i.side.value,
        case_type=i.programme.value,
        state=i.status.value,
        due_date=i.due.isoformat() if i.due else "",
        due_step=i.due_step.value if i.due_step else "",
        overdue=i.overdue,
        accepting_division=i.accepting_division,
        registration_division=i.registration_division,
        flag=i.flag or "",
    )


def inbox_item_from_wire(m: county_pb2.InboxItem) -> InboxItem:
    try:
        return InboxItem(
            case_id=m.case_id,
            side=CaseSide(m.side),
            programme=Programme(m.case_type),
            status=lc.Status(m.state),
            due=date.fromisoformat(m.due_date) if m.due_date else None,
            due_step=ClockStep(m.due_step) if m.due_step else None,
            overdue=m.overdue,
            accepting_division=m.accepting_division,
            registration_division=m.registration_division,
            flag=m.flag or None,
        )
    except ValueError:
        raise InputError("an inbox item names an unknown side, type, state, step or date") from None


def audit_line(e: audit.AuditEntry) -> AuditLine:
    return AuditLine(e.seq, e.at, e.actor, e.action, e.purpose, e.reference, e.detail, e.entry_hash)


def audit_line_to_wire(a: AuditLine) -> county_pb2.AuditEntry:
    return county_pb2.AuditEntry(
        seq=a.seq,
        at=_time_to_wire(a.at),
        actor=a.actor,
        action=a.action,
        purpose=a.purpose,
        reference=a.reference,
        detail=a.detail,
        entry_hash=a.entry_hash.hex(),
    )


def audit_line_from_wire(m: county_pb2.AuditEntry) -> AuditLine:
    try:
        digest = bytes.fromhex(m.entry_hash)
    except ValueError:
        raise InputError("an audit entry's hash is not hex") from None
    return AuditLine(m.seq, _time_from_wire(m.at, "at"), m.actor, m.action, m.purpose, m.reference, m.detail, digest)
