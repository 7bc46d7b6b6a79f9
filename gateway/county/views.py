"""What the county API shows and accepts, and the pure rules that decide it (no I/O, no gRPC).

The servicer (:mod:`gateway.county.servicer`) loads through the service layer the CLI uses and
hands the values here; :mod:`gateway.county.wire` converts the results. Three rule sets live here,
each a table or a small pure function with its own test:

**Division scope** (:func:`case_in_scope`, :func:`finding_in_scope`, :func:`row_in_scope`). A
caller's token or certificate may be scoped: to a county (six digits) it sees only the cases whose
accepting or registration division is that county, and only the findings of that county (the
node's own division, or the finding's peer division); to a province (two digits, a
``provincial_operator``) it sees only the cases whose accepting or registration division lies in
that province. Unscoped callers see everything their role may read. A case outside the scope is
answered like a case that does not exist (``case_not_found``), so a scoped caller cannot probe ids.

**Oversight** (:func:`for_oversight`). A provincial operator oversees clocks and custody and gets
nothing personal beyond that: a case's documents, local record reference, decision reason and
requested items are left out of what it sees.

**Who may take which case action** (:data:`ACTION_ROLES`). ``CaseAction`` is one call in the
permission table (``case_officer`` and ``registration_staff``); within it, the registration place's
decisions are the registration staff's and the accepting place's steps the case officer's. The
case service then checks the node's side of the case and its custody, as for the CLI.

**Opening a case** (:class:`CaseOpening`, :func:`opened_case_id`, :class:`DocumentUpload`). An
application arrives with a request id the client made; the case id is derived from it, this node
and the caller's credential, so a retried ``OpenCase`` finds the case it opened
(:func:`same_application` decides whether it is the same application) instead of opening a second.
Documents arrive as chunks, assembled by :class:`DocumentUpload` within the limits below; every
rule about the application itself (ID number, programme, division, documents' sizes and hashes) is
the case types' and the case service's, as for ``tongban case accept``.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.codec import CaseFile
from gateway.cases.service import TRANSFER_REASON, CaseView, Draft
from gateway.cases.store import DocumentState
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import MAX_DOCUMENT_BYTES, EvidenceDocument, EvidenceKind, Programme
from gateway.county.auth import Caller
from gateway.county.permissions import Role
from gateway.custody.chain import CustodyState
from gateway.custody.events import CaseType, Kind
from gateway.errors import AttachmentRefused, InputError, InvalidCase
from gateway.reconcile.findings import Code, Finding, parse_hints
from gateway.reconcile.findings import Role as FindingRole

# --- division scope -----------------------------------------------------------------------------------


def _covers(scope: str, division: str) -> bool:
    """A county scope covers its own code; a province scope every code of its prefix."""
    if not scope:
        return True
    if len(scope) == 2:
        return division[:2] == scope
    return division == scope


def case_in_scope(caller: Caller, accepting_division: str, registration_division: str) -> bool:
    if not caller.division:
        return True
    return _covers(caller.division, accepting_division) or _covers(caller.division, registration_division)


def finding_in_scope(caller: Caller, own_division: str, finding: Finding) -> bool:
    """A finding concerns this node's ledger (``own_division``) and, for most codes, a peer division."""
    if not caller.division:
        return True
    return _covers(caller.division, own_division) or (
        bool(finding.peer_division) and _covers(caller.division, finding.peer_division)
    )


def row_in_scope(caller: Caller, registration_division: str, residence_division: str) -> bool:
    """A roster row a scoped caller may submit names its county as registration or residence place."""
    if not caller.division:
        return True
    return _covers(caller.division, registration_division) or _covers(caller.division, residence_division)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


def _check_uuid(value: str, what: str) -> str:
    if not _UUID.fullmatch(value) or str(uuid.UUID(value)) != value:
        raise InvalidCase(f"{what} is a canonical lowercase UUID")
    return value


def check_case_id(value: str) -> str:
    """A case id is a canonical lowercase UUID (``InvalidCase`` otherwise, never echoing it)."""
    return _check_uuid(value, "a case id")


# --- match results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchLine:
    """One matched or review link of a period, as the county API shows it: references and the
    matcher's per-field agreement (``name``/``birth``/``sex`` → agree, partial, disagree, unknown),
    never a value. ``role`` ``registration``: this node matched a peer's notice against its ledger
    (``stage`` and ``score`` known); ``residence``: the peer's answer to this node's notice
    (``outcome`` says probable or possible for a review)."""

    band: Code  # Code.MATCHED or Code.REVIEW
    role: FindingRole
    peer: str
    peer_division: str
    record_ref: str
    peer_ref: str
    stage: str = ""  # "exact" or "fuzzy", "" when not known here
    score: float | None = None
    hints: tuple[tuple[str, str], ...] = ()  # sorted by field
    outcome: str = ""  # residence role, review band: "probable" or "possible"


MATCH_CODES = frozenset({Code.MATCHED, Code.REVIEW})


def match_line(f: Finding) -> MatchLine | None:
    """The match result a ``matched`` or ``review`` finding records (``None`` for other codes)."""
    if f.code not in MATCH_CODES:
        return None
    parsed = parse_hints(f.detail)
    return MatchLine(
        band=f.code,
        role=f.role,
        peer=f.peer,
        peer_division=f.peer_division,
        record_ref=f.record_ref,
        peer_ref=f.peer_ref,
        stage=parsed.stage,
        score=parsed.score,
        hints=tuple(sorted(parsed.hints.items())),
        outcome=parsed.outcome,
    )


def match_lines(findings: Iterable[Finding]) -> Iterable[MatchLine]:
    for f in findings:
        line = match_line(f)
        if line is not None:
            yield line


# --- a case ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockLine:
    step: ClockStep
    limit: int  # working days
    started_on: date | None
    due: date | None
    stopped_on: date | None
    completed: bool
    paused: bool
    overdue: bool  # still running after its due day (today, China time)
    late: bool  # completed after its due day


@dataclass(frozen=True)
class DocumentLine:
    document_id: str
    kind: EvidenceKind
    size: int
    sha256: str
    state: DocumentState


@dataclass(frozen=True)
class HistoryLine:
    at: datetime
    role: lc.Role
    action: lc.ActionKind
    target: lc.Status
    registration_node: str


@dataclass(frozen=True)
class CaseDetail:
    """A case as the county API shows it: no name, no ID number, no free text. ``oversight`` marks
    a provincial operator's view (see :func:`for_oversight`)."""

    case_id: str
    side: CaseSide
    programme: Programme
    status: lc.Status
    accepting_node: str
    accepting_division: str
    registration_node: str
    registration_division: str
    accepted_on: date
    flag: str
    child_ref: str
    clocks: tuple[ClockLine, ...]
    documents: tuple[DocumentLine, ...]
    history: tuple[HistoryLine, ...]
    requested_items: tuple[EvidenceKind, ...]
    decision: str  # "approved", "not_approved" or ""
    payment_from: date | None
    reason_code: str
    holder: str  # "" while an offer is pending, or with no chain here
    pending_to: str
    custody_closed: bool
    oversight: bool = False


def case_detail(view: CaseView, custody: CustodyState | None, today: date) -> CaseDetail:
    """The case's detail from the service's view (``CaseService.show``) and this node's custody view."""
    stored, state = view.stored, view.stored.state
    decision = state.decision
    return CaseDetail(
        case_id=stored.row.case_id,
        side=stored.row.side,
        programme=view.case.programme,
        status=state.status,
        accepting_node=view.case.accepting_node,
        accepting_division=view.case.accepting_division,
        registration_node=state.registration_node,
        registration_division=state.registration_division,
        accepted_on=view.case.accepted_on,
        flag=stored.row.flag or "",
        child_ref=view.case.child_ref,
        clocks=tuple(
            ClockLine(
                c.step, c.limit, c.started_on, c.due, c.stopped_on, c.completed, c.paused, c.overdue_on(today), c.late
            )
            for c in view.clocks.values()
        ),
        documents=tuple(
            DocumentLine(d.document.document_id, d.document.kind, d.document.size, d.document.sha256, d.state)
            for d in stored.documents
        ),
        history=tuple(HistoryLine(e.at, e.role, e.action, e.target, e.registration_node) for e in state.history),
        requested_items=state.material_request.items if state.material_request else (),
        decision="" if decision is None else "approved" if decision.approved else "not_approved",
        payment_from=decision.payment_from if decision else None,
        reason_code=(decision.reason_code or "") if decision else (state.return_reason or ""),
        holder=(custody.holder or "") if custody else "",
        pending_to=custody.pending.to_node if custody and custody.pending else "",
        custody_closed=bool(custody and custody.closed),
    )


def for_oversight(detail: CaseDetail) -> CaseDetail:
    """What a provincial operator sees: clocks, states, nodes, divisions and custody; no documents,
    no local record reference, no decision or return reason, no list of requested material."""
    return replace(detail, child_ref="", documents=(), requested_items=(), reason_code="", oversight=True)


# --- custody ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustodyLine:
    seq: int
    kind: Kind
    signer: str
    created: datetime
    hash: str


@dataclass(frozen=True)
class CustodySummary:
    """This node's view of a case's custody chain (what ``tongban custody show`` prints): node ids,
    event kinds, times and hashes — no personal data."""

    case_id: str
    case_type: CaseType
    accepting_node: str
    accepted_on: date
    registration_node: str
    holder: str  # "" while an offer is pending
    pending_from: str
    pending_to: str
    closed: bool
    head: str
    events: tuple[CustodyLine, ...]
    equivocations: int
    off_chain: int


def custody_summary(state: CustodyState) -> CustodySummary:
    g = state.genesis
    return CustodySummary(
        case_id=state.case_id,
        case_type=g.case_type,
        accepting_node=g.accepting_node,
        accepted_on=g.accepted_on,
        registration_node=g.registration_node,
        holder=state.holder or "",
        pending_from=state.pending.from_node if state.pending else "",
        pending_to=state.pending.to_node if state.pending else "",
        closed=state.closed,
        head=state.head,
        events=tuple(CustodyLine(i, e.kind, e.signer, e.created, e.hash) for i, e in enumerate(state.chain)),
        equivocations=len(state.equivocations),
        off_chain=len(state.off_chain),
    )


# --- case actions ----------------------------------------------------------------------------------------------


class CaseActionKind(StrEnum):
    REQUEST_MATERIAL = "request_material"  # 一次性告知补正
    FIRST_REVIEW = "first_review"  # 乡镇初审
    APPROVE = "approve"  # 批准, with the month payment starts
    REJECT = "reject"  # 不予批准, reason code and text
    RETURN = "return"  # 退回, reason code and text
    NOTIFY_APPLICANT = "notify_applicant"  # 告知申请人
    CLOSE = "close"  # 归档
    WITHDRAW = "withdraw"  # 撤回


#: Which role takes each action through ``CaseAction`` (a table test holds it).
ACTION_ROLES: Mapping[CaseActionKind, Role] = {
    CaseActionKind.REQUEST_MATERIAL: Role.REGISTRATION_STAFF,
    CaseActionKind.FIRST_REVIEW: Role.REGISTRATION_STAFF,
    CaseActionKind.APPROVE: Role.REGISTRATION_STAFF,
    CaseActionKind.REJECT: Role.REGISTRATION_STAFF,
    CaseActionKind.RETURN: Role.REGISTRATION_STAFF,
    CaseActionKind.NOTIFY_APPLICANT: Role.CASE_OFFICER,
    CaseActionKind.CLOSE: Role.CASE_OFFICER,
    CaseActionKind.WITHDRAW: Role.CASE_OFFICER,
}


def may_take(role: Role, kind: CaseActionKind) -> bool:
    return ACTION_ROLES.get(kind) is role


@dataclass(frozen=True)
class CaseCommand:
    """One case action as a caller asks for it. ``text`` (a decision's or return's reason, for the
    applicant) and ``note`` may hold anything staff write: they are never logged or echoed."""

    case_id: str
    kind: CaseActionKind
    items: tuple[EvidenceKind, ...] = ()
    note: str = ""
    payment_month: date | None = None  # the first day of the month payment starts
    reason_code: str = ""
    text: str = ""

    def __repr__(self) -> str:  # the free texts stay out of reprs, tracebacks and logs
        return f"CaseCommand(case_id={self.case_id!r}, kind={self.kind.value!r})"

    def __post_init__(self) -> None:
        """Each action's arguments, checked before anything is loaded (``InvalidCase``)."""
        k = self.kind
        if k is CaseActionKind.REQUEST_MATERIAL and not self.items:
            raise InvalidCase("request_material names at least one item")
        if k is CaseActionKind.APPROVE and (self.payment_month is None or self.payment_month.day != 1):
            raise InvalidCase("approve needs the payment month (YYYY-MM)")
        if k in (CaseActionKind.REJECT, CaseActionKind.RETURN) and not (self.reason_code and self.text.strip()):
            raise InvalidCase(f"{k.value} needs a reason code and a text")


# --- opening a case, resubmitting, transferring -------------------------------------------------------

#: The largest chunk of a document's bytes in an ``OpenCase`` or ``ResubmitCase`` stream (the client
#: sends chunks of this size), far below gRPC's 4 MiB message limit.
UPLOAD_CHUNK_BYTES = 1024 * 1024
#: The documents of one call together. Each document is at most
#: :data:`~gateway.cases.types.MAX_DOCUMENT_BYTES` (the case types' limit, as for ``tongban case
#: accept``); the node holds a call's documents in memory until the stream ends, so one call is
#: bounded too. An application with more is opened with fewer documents and completed by the
#: registration place's material request.
MAX_UPLOAD_BYTES = 2 * MAX_DOCUMENT_BYTES
_OPENED_CASE = b"tongban.county.open_case.v1\x00"


@dataclass(frozen=True)
class CaseOpening:
    """An application as a case officer opens it through the county API: the draft ``tongban case
    accept`` builds from its JSON file, and the client's ``request_id`` (a canonical UUID the client
    makes once per application and repeats when it retries)."""

    request_id: str
    draft: Draft

    def __post_init__(self) -> None:
        _check_uuid(self.request_id, "a request id")


def opened_case_id(node_id: str, caller_id: str, request_id: str) -> str:
    """The id of the case an ``OpenCase`` with ``request_id`` opens, for this node and caller.

    A SHA-256 of the three (domain-separated, length-prefixed) as a version-4 UUID: as unique as a
    random case id across nodes (node ids are), the same for a retry of the same caller's request,
    different for another caller's — a caller cannot reach another's case by guessing its request id.
    """
    h = hashlib.sha256(_OPENED_CASE)
    for part in (node_id, caller_id, request_id):
        raw = part.encode("utf-8")
        h.update(len(raw).to_bytes(4, "big") + raw)
    return str(uuid.UUID(bytes=h.digest()[:16], version=4))


def same_application(stored: CaseFile, draft: Draft) -> bool:
    """Whether a case opened before is ``draft`` again (a retry): the same application with the same
    documents (their SHA-256 and sizes), the same child, the same local reference."""
    case = stored.case
    return case.application == draft.application and stored.child == draft.child and case.child_ref == draft.child_ref


@dataclass(frozen=True)
class OpenedCase:
    """What ``OpenCase`` answers: no personal data."""

    case_id: str
    status: lc.Status
    registration_node: str
    registration_division: str
    replayed: bool  # the request id's case existed already: nothing new was stored


@dataclass(frozen=True)
class Resubmission:
    """The header of a ``ResubmitCase`` stream: the case and the references of the new documents."""

    case_id: str
    documents: tuple[EvidenceDocument, ...]


@dataclass(frozen=True)
class TransferOrder:
    """A ``TransferCase`` request (转办): the child's new registration division and a reason code."""

    case_id: str
    to_division: str
    reason: str = TRANSFER_REASON


class DocumentUpload:
    """The bytes of the documents ``declared`` by a stream's first message, assembled from chunks.

    Checked as they arrive, so nothing beyond the declared sizes is ever held: the declared documents
    together are at most :data:`MAX_UPLOAD_BYTES` (``InvalidCase``, before any chunk); a chunk names a
    declared document and carries 1 to :data:`UPLOAD_CHUNK_BYTES` bytes (``InputError``); a document
    never grows beyond its declared size (``AttachmentRefused``). :meth:`finish` refuses a declared
    document without any bytes (``AttachmentRefused``); whether the bytes match the declared size and
    SHA-256 is the case service's check, as for ``tongban case accept``.
    """

    def __init__(self, declared: Sequence[EvidenceDocument]) -> None:
        self._sizes = {d.document_id: d.size for d in declared}
        if len(self._sizes) != len(declared):
            raise InvalidCase("two documents share a document_id")
        if sum(self._sizes.values()) > MAX_UPLOAD_BYTES:
            raise InvalidCase(f"the documents of one call are at most {MAX_UPLOAD_BYTES} bytes together")
        self._buffers: dict[str, bytearray] = {}

    def add(self, document_id: str, data: bytes) -> None:
        size = self._sizes.get(document_id)
        if size is None:
            raise InputError("a chunk names a document the stream's first message does not list")
        if not 0 < len(data) <= UPLOAD_CHUNK_BYTES:
            raise InputError(f"a chunk carries 1 to {UPLOAD_CHUNK_BYTES} bytes")
        buffer = self._buffers.setdefault(document_id, bytearray())
        if len(buffer) + len(data) > size:
            raise AttachmentRefused(f"document {document_id}: more bytes than its reference says")
        buffer += data

    def finish(self) -> dict[str, bytes]:
        """Every declared document's bytes, by document id."""
        for document_id in self._sizes:
            if document_id not in self._buffers:
                raise AttachmentRefused(f"document {document_id}: no bytes given")
        return {document_id: bytes(buffer) for document_id, buffer in self._buffers.items()}


def chunks(documents: Iterable[tuple[EvidenceDocument, bytes]]) -> Iterable[tuple[str, bytes]]:
    """The (document id, bytes) chunks a client sends for ``documents``, in order."""
    for document, data in documents:
        for start in range(0, len(data), UPLOAD_CHUNK_BYTES):
            yield document.document_id, data[start : start + UPLOAD_CHUNK_BYTES]
