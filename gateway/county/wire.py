"""The county API's one converter between domain values and ``tongban.v1.County`` messages.

The servicer converts with the ``*_to_wire`` functions and the client (:mod:`gateway.client`) back
with the ``*_from_wire`` ones (and the client's requests the other way); tests hold every pair to a
round trip. Nothing a node answers carries personal data: findings and matches are codes and
references, inbox lines and cases ids, codes, divisions and dates, custody node ids and hashes,
dead letters message ids and reason codes, audit entries references. Only a ``SubmitRoster`` row
(a :class:`~gateway.domain.records.ChildRecord`, converted by :mod:`gateway.wire`) carries personal
data, from the county system to its own node; a case action's reason text goes the same way, and so
do an ``OpenCase`` application (the child's ID number and name, the programme's facts) and the
documents of ``OpenCase`` and ``ResubmitCase``. An application is converted through the JSON layout
of ``tongban case accept`` (:func:`gateway.cases.codec.application_from_json`), so the API and the
command line decode, and check, an application the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from tongban.v1 import county_pb2, records_pb2

from gateway import audit
from gateway.cases import codec
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.service import TRANSFER_REASON, Draft, InboxItem
from gateway.cases.store import DocumentState
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import EvidenceDocument, EvidenceKind, Programme, RecognitionApplication
from gateway.county.views import (
    MATCH_CODES,
    CaseActionKind,
    CaseCommand,
    CaseDetail,
    CaseOpening,
    ClockLine,
    CustodyLine,
    CustodySummary,
    DocumentLine,
    HistoryLine,
    MatchLine,
    OpenedCase,
    Resubmission,
    TransferOrder,
)
from gateway.custody.events import CaseType, Kind
from gateway.domain.records import ChildKind, ChildRecord, ParentStatus
from gateway.errors import InputError, InvalidCase, InvalidRecord
from gateway.exchange import outbox
from gateway.reconcile.findings import Code, Finding, Role, Side
from gateway.roster import IntakeSummary, Rejection
from gateway.wire import record_from_wire, record_to_wire


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


# --- SubmitRoster --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterOutcome:
    """What a ``SubmitRoster`` stream came to: how many rows it carried and the intake's summary."""

    received: int
    summary: IntakeSummary


def roster_header_to_wire(period: str, *, all_or_nothing: bool) -> county_pb2.SubmitRosterRequest:
    return county_pb2.SubmitRosterRequest(header=county_pb2.RosterHeader(period=period, all_or_nothing=all_or_nothing))


def roster_row_to_wire(record: ChildRecord) -> county_pb2.SubmitRosterRequest:
    return county_pb2.SubmitRosterRequest(record=record_to_wire(record))


def roster_row_from_wire(m: county_pb2.SubmitRosterRequest) -> ChildRecord:
    """A row of the stream (``InputError`` for a second header, or a row that is no valid record:
    the error names the field, never its value)."""
    if m.WhichOneof("item") != "record":
        raise InvalidRecord("after the header, every message of the stream is a row")
    return record_from_wire(m.record)


def roster_outcome_to_wire(o: RosterOutcome) -> county_pb2.RosterSummary:
    s = o.summary
    return county_pb2.RosterSummary(
        period=s.period,
        stored=s.stored,
        received=o.received,
        accepted=s.accepted,
        by_kind={k.value: n for k, n in s.by_kind.items()},
        rerouted=s.rerouted,
        rejections=[county_pb2.RowRejection(position=r.position, code=r.code, reason=r.reason) for r in s.rejections],
    )


def roster_outcome_from_wire(m: county_pb2.RosterSummary) -> RosterOutcome:
    try:
        by_kind = dict.fromkeys(ChildKind, 0) | {ChildKind(k): n for k, n in m.by_kind.items()}
    except ValueError:
        raise InputError("a roster summary names an unknown kind") from None
    rejections = tuple(Rejection(r.position, r.code, r.reason) for r in m.rejections)
    summary = IntakeSummary(m.period, m.accepted, by_kind, m.rerouted, rejections, stored=m.stored)
    return RosterOutcome(m.received, summary)


# --- ListMatches ---------------------------------------------------------------------------------------


def match_line_to_wire(line: MatchLine) -> county_pb2.MatchLine:
    m = county_pb2.MatchLine(
        band=line.band.value,
        role=line.role.value,
        peer=line.peer,
        peer_division=line.peer_division,
        record_ref=line.record_ref,
        peer_ref=line.peer_ref,
        stage=line.stage,
        hints=dict(line.hints),
        outcome=line.outcome,
    )
    if line.score is not None:
        m.score = line.score
    return m


def match_line_from_wire(m: county_pb2.MatchLine) -> MatchLine:
    try:
        band, role = Code(m.band), Role(m.role)
    except ValueError:
        raise InputError("a match names an unknown band or role") from None
    if band not in MATCH_CODES:
        raise InputError("a match's band is matched or review")
    return MatchLine(
        band=band,
        role=role,
        peer=m.peer,
        peer_division=m.peer_division,
        record_ref=m.record_ref,
        peer_ref=m.peer_ref,
        stage=m.stage,
        score=m.score if m.HasField("score") else None,
        hints=tuple(sorted(m.hints.items())),
        outcome=m.outcome,
    )


# --- GetCase -------------------------------------------------------------------------------------------


def _day(d: date | None) -> str:
    return d.isoformat() if d is not None else ""


def _day_from_wire(text: str, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{name} is not an ISO date") from None


def case_detail_to_wire(d: CaseDetail) -> county_pb2.CaseDetail:
    return county_pb2.CaseDetail(
        case_id=d.case_id,
        side=d.side.value,
        case_type=d.programme.value,
        state=d.status.value,
        accepting_node=d.accepting_node,
        accepting_division=d.accepting_division,
        registration_node=d.registration_node,
        registration_division=d.registration_division,
        accepted_on=_day(d.accepted_on),
        flag=d.flag,
        child_ref=d.child_ref,
        clocks=[
            county_pb2.CaseClock(
                step=c.step.value,
                limit=c.limit,
                started_on=_day(c.started_on),
                due_date=_day(c.due),
                stopped_on=_day(c.stopped_on),
                completed=c.completed,
                paused=c.paused,
                overdue=c.overdue,
                late=c.late,
            )
            for c in d.clocks
        ],
        documents=[
            county_pb2.DocumentInfo(
                document_id=x.document_id, kind=x.kind.value, size=x.size, sha256=x.sha256, state=x.state.value
            )
            for x in d.documents
        ],
        history=[
            county_pb2.CaseHistoryEvent(
                at=_time_to_wire(h.at),
                role=h.role.value,
                action=h.action.value,
                target=h.target.value,
                registration_node=h.registration_node,
            )
            for h in d.history
        ],
        requested_items=[k.value for k in d.requested_items],
        decision=d.decision,
        payment_from=_day(d.payment_from),
        reason_code=d.reason_code,
        holder=d.holder,
        pending_to=d.pending_to,
        custody_closed=d.custody_closed,
        oversight=d.oversight,
    )


def case_detail_from_wire(m: county_pb2.CaseDetail) -> CaseDetail:
    try:
        accepted_on = _day_from_wire(m.accepted_on, "accepted_on")
        if accepted_on is None:
            raise InputError("a case has an acceptance date")
        return CaseDetail(
            case_id=m.case_id,
            side=CaseSide(m.side),
            programme=Programme(m.case_type),
            status=lc.Status(m.state),
            accepting_node=m.accepting_node,
            accepting_division=m.accepting_division,
            registration_node=m.registration_node,
            registration_division=m.registration_division,
            accepted_on=accepted_on,
            flag=m.flag,
            child_ref=m.child_ref,
            clocks=tuple(
                ClockLine(
                    ClockStep(c.step),
                    c.limit,
                    _day_from_wire(c.started_on, "started_on"),
                    _day_from_wire(c.due_date, "due_date"),
                    _day_from_wire(c.stopped_on, "stopped_on"),
                    c.completed,
                    c.paused,
                    c.overdue,
                    c.late,
                )
                for c in m.clocks
            ),
            documents=tuple(
                DocumentLine(x.document_id, EvidenceKind(x.kind), x.size, x.sha256, DocumentState(x.state))
                for x in m.documents
            ),
            history=tuple(
                HistoryLine(
                    _time_from_wire(h.at, "at"),
                    lc.Role(h.role),
                    lc.ActionKind(h.action),
                    lc.Status(h.target),
                    h.registration_node,
                )
                for h in m.history
            ),
            requested_items=tuple(EvidenceKind(k) for k in m.requested_items),
            decision=m.decision,
            payment_from=_day_from_wire(m.payment_from, "payment_from"),
            reason_code=m.reason_code,
            holder=m.holder,
            pending_to=m.pending_to,
            custody_closed=m.custody_closed,
            oversight=m.oversight,
        )
    except ValueError:
        raise InputError("a case names an unknown side, type, state, step, kind, role or action") from None


# --- CaseAction ----------------------------------------------------------------------------------------

_ACTION_FIELDS: dict[str, CaseActionKind] = {
    "request_material": CaseActionKind.REQUEST_MATERIAL,
    "first_review": CaseActionKind.FIRST_REVIEW,
    "approve": CaseActionKind.APPROVE,
    "reject": CaseActionKind.REJECT,
    "return_case": CaseActionKind.RETURN,
    "notify_applicant": CaseActionKind.NOTIFY_APPLICANT,
    "close": CaseActionKind.CLOSE,
    "withdraw": CaseActionKind.WITHDRAW,
}
_FIELD_OF_ACTION = {kind: name for name, kind in _ACTION_FIELDS.items()}
_YEAR_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])", re.ASCII)


def case_command_to_wire(c: CaseCommand) -> county_pb2.CaseActionRequest:
    m = county_pb2.CaseActionRequest(case_id=c.case_id)
    field_name = _FIELD_OF_ACTION[c.kind]
    if c.kind is CaseActionKind.REQUEST_MATERIAL:
        m.request_material.CopyFrom(county_pb2.RequestMaterialAction(items=[k.value for k in c.items], note=c.note))
    elif c.kind is CaseActionKind.APPROVE:
        assert c.payment_month is not None  # CaseCommand checks it
        m.approve.CopyFrom(county_pb2.ApproveAction(payment_month=c.payment_month.strftime("%Y-%m")))
    elif c.kind in (CaseActionKind.REJECT, CaseActionKind.RETURN):
        getattr(m, field_name).CopyFrom(county_pb2.ReasonAction(reason_code=c.reason_code, text=c.text))
    else:
        getattr(m, field_name).CopyFrom(county_pb2.NoArguments())
    return m


def case_command_from_wire(m: county_pb2.CaseActionRequest) -> CaseCommand:
    """The action a caller asks for (``InvalidCase`` for none, an unknown item or a bad month)."""
    which = m.WhichOneof("action")
    if which is None:
        raise InvalidCase("a case action names one action")
    kind = _ACTION_FIELDS[which]
    if kind is CaseActionKind.REQUEST_MATERIAL:
        try:
            items = tuple(EvidenceKind(i) for i in m.request_material.items)
        except ValueError:
            raise InvalidCase("request_material names an unknown evidence kind") from None
        return CaseCommand(m.case_id, kind, items=items, note=m.request_material.note)
    if kind is CaseActionKind.APPROVE:
        month = m.approve.payment_month
        if not _YEAR_MONTH.fullmatch(month):
            raise InvalidCase("approve needs the payment month (YYYY-MM)")
        return CaseCommand(m.case_id, kind, payment_month=date.fromisoformat(month + "-01"))
    if kind in (CaseActionKind.REJECT, CaseActionKind.RETURN):
        reason = m.reject if kind is CaseActionKind.REJECT else m.return_case
        return CaseCommand(m.case_id, kind, reason_code=reason.reason_code, text=reason.text)
    return CaseCommand(m.case_id, kind)


def case_state_to_wire(case_id: str, status: lc.Status) -> county_pb2.CaseActionResponse:
    return county_pb2.CaseActionResponse(case_id=case_id, state=status.value)


def case_state_from_wire(m: county_pb2.CaseActionResponse) -> lc.Status:
    try:
        return lc.Status(m.state)
    except ValueError:
        raise InputError("a case action answered an unknown state") from None


# --- GetCustody ----------------------------------------------------------------------------------------


def custody_summary_to_wire(s: CustodySummary) -> county_pb2.CustodyView:
    return county_pb2.CustodyView(
        case_id=s.case_id,
        case_type=s.case_type.value,
        accepting_node=s.accepting_node,
        accepted_on=_day(s.accepted_on),
        registration_node=s.registration_node,
        holder=s.holder,
        pending_from=s.pending_from,
        pending_to=s.pending_to,
        closed=s.closed,
        head=s.head,
        events=[
            county_pb2.CustodyEventInfo(
                seq=e.seq, kind=e.kind.value, signer=e.signer, created_at=_time_to_wire(e.created), hash=e.hash
            )
            for e in s.events
        ],
        equivocations=s.equivocations,
        off_chain=s.off_chain,
    )


def custody_summary_from_wire(m: county_pb2.CustodyView) -> CustodySummary:
    try:
        accepted_on = _day_from_wire(m.accepted_on, "accepted_on")
        if accepted_on is None:
            raise InputError("a custody chain has an acceptance date")
        return CustodySummary(
            case_id=m.case_id,
            case_type=CaseType(m.case_type),
            accepting_node=m.accepting_node,
            accepted_on=accepted_on,
            registration_node=m.registration_node,
            holder=m.holder,
            pending_from=m.pending_from,
            pending_to=m.pending_to,
            closed=m.closed,
            head=m.head,
            events=tuple(
                CustodyLine(e.seq, Kind(e.kind), e.signer, _time_from_wire(e.created_at, "created_at"), e.hash)
                for e in m.events
            ),
            equivocations=m.equivocations,
            off_chain=m.off_chain,
        )
    except ValueError:
        raise InputError("a custody view names an unknown case type or event kind") from None


# --- OpenCase, ResubmitCase, TransferCase ----------------------------------------------------------------


def document_ref_to_wire(d: EvidenceDocument) -> county_pb2.DocumentRef:
    return county_pb2.DocumentRef(document_id=d.document_id, kind=d.kind.value, size=d.size, sha256=d.sha256)


def _document_json(m: county_pb2.DocumentRef) -> dict[str, object]:
    return {"document_id": m.document_id, "kind": m.kind, "sha256": m.sha256, "size": m.size}


def document_ref_from_wire(m: county_pb2.DocumentRef) -> EvidenceDocument:
    """A document reference (``InvalidCase``: an unknown kind, a bad id or SHA-256, a size out of range)."""
    return codec.document_from_json(_document_json(m))


def _parent_to_wire(p: ParentStatus) -> records_pb2.ParentStatus:
    since = None if p.since is None else records_pb2.Date(year=p.since.year, month=p.since.month, day=p.since.day)
    return records_pb2.ParentStatus(situation=p.situation.value, since=since)


def _parent_json(m: records_pb2.ParentStatus, which: str) -> dict[str, object]:
    since = None
    if m.HasField("since"):
        try:
            since = date(m.since.year, m.since.month, m.since.day).isoformat()
        except ValueError:
            raise InvalidCase(f"{which}.since is not a date") from None
    return {"situation": m.situation, "since": since}


def opening_to_wire(o: CaseOpening) -> county_pb2.OpenCaseRequest:
    """The first message of an ``OpenCase`` stream."""
    d, a = o.draft, o.draft.application
    m = county_pb2.OpenCaseApplication(
        request_id=o.request_id,
        case_type=a.programme.value,
        child_id_number=d.child.id_number,
        child_name=d.child.name,
        registration_division=d.registration_division,
        child_ref=d.child_ref,
        documents=[document_ref_to_wire(e) for e in a.evidence],
    )
    if isinstance(a, RecognitionApplication):
        carer = records_pb2.Guardian(name=a.carer.name, relation=a.carer.relation, phone=a.carer.phone)
        facts = county_pb2.RecognitionFacts(
            father=_parent_to_wire(a.father), mother=_parent_to_wire(a.mother), carer=carer
        )
        m.recognition.CopyFrom(facts)
    else:
        account = a.payment_account
        m.subsidy.CopyFrom(
            county_pb2.SubsidyFacts(
                certificate_number=a.certificate_number,
                disability=records_pb2.Disability(category=int(a.disability.category), level=a.disability.level),
                hardship=a.hardship.value,
                payment_account=county_pb2.PaymentAccountInfo(
                    bank=account.bank, account_number=account.account_number, holder_name=account.holder_name
                ),
            )
        )
    return county_pb2.OpenCaseRequest(application=m)


def opening_from_wire(m: county_pb2.OpenCaseApplication) -> CaseOpening:
    """The application of an ``OpenCase`` stream, decoded as ``tongban case accept`` decodes its JSON
    file (:func:`gateway.cases.codec.application_from_json`): ``InvalidCase`` naming the field (an
    unknown case type, facts of the other programme family, …), ``InvalidIdNumber`` for the child's
    ID number; never a value. The division and the documents' bytes are the case service's to check."""
    raw: dict[str, object] = {"programme": m.case_type, "evidence": [_document_json(d) for d in m.documents]}
    facts = m.WhichOneof("facts")
    if facts == "recognition":
        r = m.recognition
        raw["father"] = _parent_json(r.father, "father")
        raw["mother"] = _parent_json(r.mother, "mother")
        raw["carer"] = {"name": r.carer.name, "relation": r.carer.relation, "phone": r.carer.phone}
    elif facts == "subsidy":
        s = m.subsidy
        raw["certificate_number"] = s.certificate_number
        raw["disability"] = {"category": s.disability.category, "level": s.disability.level}
        raw["hardship"] = s.hardship
        account = s.payment_account
        raw["payment_account"] = {
            "bank": account.bank,
            "account_number": account.account_number,
            "holder_name": account.holder_name,
        }
    application = codec.application_from_json(raw)
    child = codec.ChildIdentity(m.child_id_number, m.child_name)
    return CaseOpening(m.request_id, Draft(application, child, m.registration_division, m.child_ref))


def chunk_to_wire(document_id: str, data: bytes) -> county_pb2.DocumentChunk:
    return county_pb2.DocumentChunk(document_id=document_id, data=data)


def opened_to_wire(o: OpenedCase) -> county_pb2.OpenCaseResponse:
    return county_pb2.OpenCaseResponse(
        case_id=o.case_id,
        state=o.status.value,
        registration_node=o.registration_node,
        registration_division=o.registration_division,
        replayed=o.replayed,
    )


def opened_from_wire(m: county_pb2.OpenCaseResponse) -> OpenedCase:
    try:
        status = lc.Status(m.state)
    except ValueError:
        raise InputError("an opened case answered an unknown state") from None
    return OpenedCase(m.case_id, status, m.registration_node, m.registration_division, m.replayed)


def resubmission_to_wire(r: Resubmission) -> county_pb2.ResubmitCaseRequest:
    """The first message of a ``ResubmitCase`` stream."""
    header = county_pb2.ResubmitHeader(case_id=r.case_id, documents=[document_ref_to_wire(d) for d in r.documents])
    return county_pb2.ResubmitCaseRequest(header=header)


def resubmission_from_wire(m: county_pb2.ResubmitHeader) -> Resubmission:
    return Resubmission(m.case_id, tuple(document_ref_from_wire(d) for d in m.documents))


def transfer_to_wire(t: TransferOrder) -> county_pb2.TransferCaseRequest:
    return county_pb2.TransferCaseRequest(case_id=t.case_id, to_division=t.to_division, reason_code=t.reason)


def transfer_from_wire(m: county_pb2.TransferCaseRequest) -> TransferOrder:
    """A transfer; an empty reason code is the default (``registration_moved``). The division and
    the code are the case service's to check (``tongban case transfer``)."""
    return TransferOrder(m.case_id, m.to_division, m.reason_code or TRANSFER_REASON)
