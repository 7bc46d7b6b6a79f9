"""The case workflow on a node (SPEC §6): what staff commands and, later, a web inbox call.

:class:`CaseService` is built from a node's parts (store, keys, verified directory) and takes pure
inputs — ids, domain types, dates, an explicit ``now`` — and raises typed errors of the
:class:`~gateway.errors.CaseError` family; it prints nothing. Every change goes through
:func:`gateway.cases.lifecycle.apply` and is committed **in one transaction** with the outbox rows
(and audit entries) it causes, so "accepted" means durable (SPEC §4) and a refused action changes
nothing.

**Both sides hold the same history.** An action a node takes is appended to its history and sent to
the other node as a ``CaseSteps`` message carrying the same (role, action, facts,
time); the other node applies it with the same ``apply`` at the same time. So both replay identical
histories and compute identical clocks (:func:`gateway.cases.clock.due_dates`).

* Residence side (居住地, accepting node): :meth:`accept` (accept + push: the application as
  ``CaseApplication`` and every document as ``CaseChunk`` messages, HPKE-sealed to the registration
  node under ``case_handoff``), :meth:`resubmit`, :meth:`notify_applicant`, :meth:`close`,
  :meth:`withdraw`.
* Registration side (户籍地): :meth:`sync` receives — a case counts as **received** only when every
  document is complete and its SHA-256 checked; a document whose bytes do not match is refused,
  dropped and reported back (``CaseReport attachment_refused``). Then :meth:`request_material`,
  :meth:`first_review` (recognition), :meth:`approve` (eligibility checked, including the orphan
  allowance vs living subsidy rule), :meth:`reject`, :meth:`return_case`; a decision is sent back
  under ``case_decision`` and marked ``result_delivered`` when it is queued (durable outbox).
* :meth:`sync` also applies the other side's steps and reports, on either side. Messages that
  cannot apply *yet* (a chunk before its application) stay in the inbox for the next sync; a
  message that can never apply is marked processed, logged by code and counted as refused.
* **Duplicates** (SPEC §6): each application carries the child's pairwise ID token under the
  (residence, registration) pair key of its acceptance quarter; the registration node checks it
  against the decrypted ID number (a mismatch is refused), and looks up its own open cases of the
  same programme by its blind index of the ID number. A second open application is flagged
  ``duplicate_application`` on both cases and reported to both residence nodes.
* **督办** (:meth:`overdue`): each overdue step that belongs to this node (push and notify to the
  residence side; first review and decision to the registration side) is recorded once per due day
  in ``case_alerts``, with an audit entry (action ``case_overdue``, purpose ``case_supervision``,
  detail naming step, due day and the province) and a warning log line (case id, step, due day —
  no personal data); a new alert is also queued to the province's supervising node
  (``[cases] supervisors``) as a ``case_supervision`` message, in the same transaction. At the
  supervising node, :meth:`supervision` lists the alerts received, by county.

**Custody seam.** ``custody`` (optional, :class:`CustodyHook`) is called inside the same
transaction: :meth:`CustodyHook.check_may_act` before this node takes an action on a case (raise to
refuse: the node does not hold it), :meth:`CustodyHook.after_steps` after any steps are appended
(own or the peer's), with the peer node.

**Recorder seam.** ``recorder`` (optional, :data:`ActionRecorder`) is called last inside the
transaction of every action this service takes (:meth:`accept` and the actions after it, not
:meth:`sync`) with the case id and its state after the action: a caller that acts for someone —
the county API — writes its audit entry there, so the entry exists if and only if the action was
committed; raising rolls the action back.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from gateway import audit
from gateway.cases import codec, handoff
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.clock import StepClock, WorkCalendar, due_dates
from gateway.cases.codec import CaseFile, ChildIdentity
from gateway.cases.handoff import SupervisionAlert
from gateway.cases.store import CaseStore, DocumentState, Side, Step, StoredCase, steps_of
from gateway.cases.types import (
    Application,
    Case,
    Eligibility,
    EvidenceDocument,
    EvidenceKind,
    Programme,
    ProgrammeFamily,
    eligibility,
    new_case_id,
)
from gateway.config import supervisor_for
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.errors import (
    AttachmentRefused,
    CaseError,
    CaseMessageRefused,
    CaseNotFound,
    EventOutOfOrder,
    GatewayError,
    IllegalTransition,
    InputError,
    InvalidCase,
    NotEligible,
    SealedPayloadRefused,
    StorageError,
    TrustError,
)
from gateway.exchange import outbox
from gateway.exchange.envelope import Outgoing
from gateway.exchange.purposes import Profiles
from gateway.exchange.tokens import id_token, pair_key
from gateway.store.keyring import DataKeyring
from gateway.trust.signing import X25519_HPKE, PublicKey, Signer
from gateway.trust.store import utc_now
from gateway.trust.verifier import Directory

log = logging.getLogger(__name__)

SUPERVISION_PURPOSE = handoff.SUPERVISION
TRANSFER_REASON = "registration_moved"
_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}", re.ASCII)
DUPLICATE = "duplicate_application"
ATTACHMENT_REFUSED = "attachment_refused"
_REGISTRATION_ROLES = frozenset({lc.Role.REGISTRATION_NODE})
_RESIDENCE_ROLES = frozenset({lc.Role.RESIDENCE_NODE, lc.Role.RESIDENCE_STAFF})
#: Which side answers for each step's clock (who gets the 督办 alert).
STEP_OWNER: Mapping[ClockStep, Side] = {
    ClockStep.PUSH: Side.RESIDENCE,
    ClockStep.FIRST_REVIEW: Side.REGISTRATION,
    ClockStep.DECISION: Side.REGISTRATION,
    ClockStep.NOTIFY: Side.RESIDENCE,
}


class CustodyHook(Protocol):
    """Where the custody chain joins the workflow (gateway/custody); see the module docstring."""

    def check_may_act(self, conn: Connection, case_id: str, action: lc.ActionKind) -> None: ...

    def after_steps(self, conn: Connection, case_id: str, steps: Sequence[Step], peer: str) -> None: ...


#: See "Recorder seam" in the module docstring: ``(conn, case_id, state_after_the_action)``.
ActionRecorder = Callable[[Connection, str, lc.CaseState], None]


class _NotYet(Exception):
    """A message that may apply after another one arrives: leave it in the inbox."""


@dataclass(frozen=True)
class Draft:
    """What the accepting window enters: the application, the child, where the child is registered
    (the division from the child's record, never from the ID number) and the local reference."""

    application: Application
    child: ChildIdentity
    registration_division: str
    child_ref: str


@dataclass(frozen=True)
class InboxItem:
    """One line of the staff's inbox: no personal data."""

    case_id: str
    side: Side
    programme: Programme
    status: lc.Status
    due: date | None  # the earliest due day of a running step
    due_step: ClockStep | None
    overdue: bool
    accepting_division: str  # 申请人所在地
    registration_division: str
    flag: str | None


@dataclass(frozen=True)
class CaseView:
    stored: StoredCase
    clocks: dict[ClockStep, StepClock]
    eligibility: Eligibility | None  # registration side only

    @property
    def case(self) -> Case:
        return self.stored.file.case


@dataclass(frozen=True)
class Alert:
    case_id: str
    step: ClockStep
    due: date
    province: str
    new: bool  # raised by this call (else raised before)


@dataclass
class SyncSummary:
    applied: int = 0
    waiting: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # error code -> count
    received: list[str] = field(default_factory=list)  # cases that became received
    flagged: list[str] = field(default_factory=list)  # cases flagged as duplicate


def _quarter(day: date) -> str:
    return MonitoringPeriod.containing(day, Cadence.QUARTERLY).label


def _ms(now: datetime) -> datetime:
    """``now`` to the millisecond: event times travel in milliseconds, and both sides must hold the
    same times (``apply`` refuses an event before the last one)."""
    if now.tzinfo is None:
        raise EventOutOfOrder("the time has no time zone")
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _raw(key: x25519.X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class CaseService:
    """See the module docstring."""

    def __init__(
        self,
        *,
        node_id: str,
        division: str,
        store: CaseStore,
        keyring: DataKeyring,
        directory: Directory,
        encryption_key: x25519.X25519PrivateKey,
        signer: Signer,
        profiles: Profiles,
        divisions: DivisionTable | None = None,
        calendar: WorkCalendar | None = None,
        custody: CustodyHook | None = None,
        wall_clock: Callable[[], datetime] = utc_now,
        supervisors: Mapping[str, str] | None = None,
        recorder: ActionRecorder | None = None,
    ) -> None:
        self.node_id = node_id
        self.division = division
        self.store = store
        self._keyring = keyring
        self._directory = directory
        self._encryption_key = encryption_key
        self._sender = handoff.Sender(node_id, signer, profiles)
        self._divisions = divisions
        self._calendar = calendar
        self.custody = custody
        # Envelopes, outbox rows and directory lookups (is a node active, its keys) are about the
        # present, whatever time an action is dated (tests date actions on fixed days; nodes now).
        self._wall_clock = wall_clock
        self.supervisors = dict(supervisors or {})
        self._recorder = recorder

    # --- helpers ----------------------------------------------------------------------------------

    def _own_key(self) -> PublicKey:
        try:
            return self._directory.entry(self.node_id).encryption_key
        except TrustError:
            return PublicKey(X25519_HPKE, _raw(self._encryption_key))

    def _peer_key(self, peer: str, now: datetime) -> PublicKey:
        return self._directory.active(peer, self._wall_clock()).encryption_key

    def _node_for(self, division: str, now: datetime) -> str:
        entry = self._directory.serving(self._wall_clock()).get(division)
        if entry is None:
            raise InvalidCase(f"no active node serves division {division}")
        return entry.node_id

    def _token(self, peer: str, id_number: str, period: str, now: datetime) -> bytes:
        key = pair_key(
            self._encryption_key, self._peer_key(peer, now), own_id=self.node_id, peer_id=peer, period=period
        )
        return id_token(key, id_number)

    def _send(self, conn: Connection, purpose: str, inner: handoff.CaseMessage, peer: str, now: datetime) -> None:
        wall = self._wall_clock()
        out: Outgoing = handoff.seal_message(
            self._sender, purpose, inner, recipient=peer, recipient_key=self._peer_key(peer, wall), now=wall
        )
        outbox.enqueue(conn, out, self._keyring, now=wall)

    def _application_message(
        self,
        file: codec.CaseFile,
        peer: str,
        documents: Sequence[EvidenceDocument],
        steps: Sequence[Step],
        now: datetime,
    ) -> handoff.ApplicationMessage:
        """The case as handed to ``peer`` (push or transfer): the application sealed for it, the
        child's pairwise ID token under the pair key with ``peer``, the documents and the history."""
        case = file.case
        period = _quarter(case.accepted_on)
        return handoff.ApplicationMessage(
            case_id=case.case_id,
            programme=case.programme.value,
            accepting_node=case.accepting_node,
            accepting_division=case.accepting_division,
            registration_node=case.registration_node,
            registration_division=case.registration_division,
            child_ref=case.child_ref,
            accepted_on=case.accepted_on.isoformat(),
            application_json=codec.case_file_to_json(file),
            id_token=self._token(peer, file.child.id_number, period, now),
            token_period=period,
            documents=tuple(documents),
            steps=tuple(steps),
        )

    def supervisor(self) -> str | None:
        """The supervising node for this node's division: the ``[cases] supervisors`` entry with the
        longest prefix covering it (``None``: none configured, or this node supervises itself)."""
        node = supervisor_for(self.supervisors, self.division)
        return None if node == self.node_id else node

    def supervision(self) -> list[SupervisionAlert]:
        """At a supervising node: the overdue alerts received (``case_supervision``), by county,
        due day and case; one line per case, step and due day. No personal data."""
        try:
            with self.store.engine.connect() as conn:
                received = handoff.supervision_alerts(conn, self._keyring)
        except SQLAlchemyError as exc:
            raise StorageError(type(exc).__name__) from None
        seen: dict[tuple[str, str, date], SupervisionAlert] = {}
        for alert in received:
            seen.setdefault((alert.case_id, alert.step, alert.due), alert)
        return sorted(seen.values(), key=lambda a: (a.division, a.due, a.case_id, a.step))

    def _begin(self) -> Connection:
        return self.store.engine.connect()

    def _act(
        self,
        case_id: str,
        side: Side,
        actions: Sequence[tuple[lc.Role, lc.Action]],
        now: datetime,
        *,
        documents: Sequence[tuple[EvidenceDocument, bytes]] = (),
        check: object = None,
        after: Callable[[Connection, StoredCase, lc.CaseState], None] | None = None,
    ) -> lc.CaseState:
        """Take this node's ``actions`` on a case of ``side``, append them and send them to the peer
        (then ``after``, in the same transaction, before custody is settled)."""
        now = _ms(now)
        try:
            with self.store.engine.begin() as conn:
                stored = self.store.load(case_id, conn)
                if stored.row.side is not side:
                    raise IllegalTransition(f"this node is the {stored.row.side.value} side of the case")
                if self.custody is not None:
                    for _, action in actions:
                        self.custody.check_may_act(conn, case_id, action.kind)
                if callable(check):
                    check(conn, stored)
                state, steps = steps_of(stored.state, [(role, action, now) for role, action in actions])
                self.store.append(conn, state, steps)
                wire_docs = []
                for document, data in documents:
                    _check_bytes(document, data)
                    self._store_document(conn, case_id, document, data, now)
                    wire_docs.append(document)
                if side is Side.RESIDENCE:
                    peer, purpose = state.registration_node, handoff.HANDOFF
                else:
                    peer, purpose = stored.file.case.accepting_node, handoff.DECISION
                message = handoff.StepsMessage(case_id, tuple(steps), tuple(wire_docs))
                self._send(conn, purpose, message, peer, now)
                for document, data in documents:
                    self._send_chunks(conn, case_id, document, data, peer, now)
                if after is not None:
                    after(conn, stored, state)
                if self.custody is not None:
                    self.custody.after_steps(conn, case_id, steps, peer)
                if self._recorder is not None:
                    self._recorder(conn, case_id, state)
        except SQLAlchemyError as exc:
            raise StorageError(type(exc).__name__) from None
        log.info("case %s: %s (now %s)", case_id, "+".join(a.kind.value for _, a in actions), state.status.value)
        return state

    def _store_document(
        self, conn: Connection, case_id: str, document: EvidenceDocument, data: bytes, now: datetime
    ) -> None:
        pieces = handoff.split(data)
        self.store.add_document(conn, case_id, document, chunks=len(pieces), state=DocumentState.COMPLETE, now=now)
        for i, piece in enumerate(pieces):
            self.store.put_chunk(conn, case_id, document.document_id, i, piece)

    def _send_chunks(
        self, conn: Connection, case_id: str, document: EvidenceDocument, data: bytes, peer: str, now: datetime
    ) -> None:
        pieces = handoff.split(data)
        for i, piece in enumerate(pieces):
            chunk = handoff.ChunkMessage(case_id, document.document_id, i, len(pieces), piece)
            self._send(conn, handoff.HANDOFF, chunk, peer, now)

    # --- residence side ---------------------------------------------------------------------------

    def accept(self, draft: Draft, documents: Mapping[str, bytes], now: datetime, *, case_id: str | None = None) -> str:
        """Accept (受理) an application and push it to the registration node; return the case id.

        ``case_id`` (default: a fresh :func:`~gateway.cases.types.new_case_id`) lets a caller that
        retries — the county API, deriving it from the client's request id — open the case under an
        id it can recognise: a second acceptance under an existing id is ``DuplicateRecord`` and
        stores nothing.

        Checked first, nothing stored on failure: the registration division resolves to a current
        code (:func:`~gateway.cases.lifecycle.route_registration`, following successor links) that an
        active node serves (``InvalidCase``); each evidence reference has its bytes in ``documents``
        with the same size and SHA-256 (``AttachmentRefused``); the case's own rules (``InvalidCase``).
        Then, in one transaction: the case, its accept and push events, its documents, and the
        sealed ``CaseApplication`` and chunk envelopes in the outbox.
        """
        now = _ms(now)
        table = self._divisions or DivisionTable.load_default()
        division = lc.route_registration(draft.registration_division, table)
        peer = self._node_for(division, now)
        evidence = draft.application.evidence
        for document in evidence:
            data = documents.get(document.document_id)
            if data is None:
                raise AttachmentRefused(f"document {document.document_id}: no bytes given")
            _check_bytes(document, data)
        case = Case(
            case_id=case_id or new_case_id(),
            application=draft.application,
            accepting_node=self.node_id,
            accepting_division=self.division,
            registration_node=peer,
            registration_division=division,
            child_ref=draft.child_ref,
            accepted_on=lc.china_date(now),
        )
        file = CaseFile(case, draft.child)
        state, steps = steps_of(
            lc.new_state(case),
            [(lc.Role.RESIDENCE_STAFF, lc.Accept(), now), (lc.Role.RESIDENCE_NODE, lc.Push(), now)],
        )
        message = self._application_message(file, peer, evidence, steps, now)
        try:
            with self.store.engine.begin() as conn:
                self.store.create(conn, file, Side.RESIDENCE, now=now)
                self.store.append(conn, state, steps)
                self._send(conn, handoff.HANDOFF, message, peer, now)
                for document in evidence:
                    data = documents[document.document_id]
                    self._store_document(conn, case.case_id, document, data, now)
                    self._send_chunks(conn, case.case_id, document, data, peer, now)
                if self.custody is not None:
                    self.custody.after_steps(conn, case.case_id, steps, peer)
                if self._recorder is not None:
                    self._recorder(conn, case.case_id, state)
        except SQLAlchemyError as exc:
            raise StorageError(type(exc).__name__) from None
        log.info("case %s accepted and pushed to %s (%d documents)", case.case_id, peer, len(evidence))
        return case.case_id

    def resubmit(
        self, case_id: str, documents: Sequence[tuple[EvidenceDocument, bytes]], now: datetime
    ) -> lc.CaseState:
        """Send the requested material (补正): the new documents and the ``resubmit`` event."""
        if not documents:
            raise InvalidCase("a resubmission carries at least one document")
        return self._act(case_id, Side.RESIDENCE, [(lc.Role.RESIDENCE_NODE, lc.Resubmit())], now, documents=documents)

    def notify_applicant(self, case_id: str, now: datetime) -> lc.CaseState:
        """The applicant has been told the result (or the return)."""
        return self._act(case_id, Side.RESIDENCE, [(lc.Role.RESIDENCE_STAFF, lc.NotifyApplicant())], now)

    def close(self, case_id: str, now: datetime) -> lc.CaseState:
        return self._act(case_id, Side.RESIDENCE, [(lc.Role.RESIDENCE_NODE, lc.Close())], now)

    def withdraw(self, case_id: str, now: datetime) -> lc.CaseState:
        return self._act(case_id, Side.RESIDENCE, [(lc.Role.RESIDENCE_STAFF, lc.Withdraw())], now)

    # --- registration side ------------------------------------------------------------------------

    def request_material(
        self, case_id: str, items: Sequence[EvidenceKind], now: datetime, *, note: str = ""
    ) -> lc.CaseState:
        """Request the missing material, once and in full (一次性告知)."""
        action = lc.RequestMaterial(tuple(items), note)
        return self._act(case_id, Side.REGISTRATION, [(lc.Role.REGISTRATION_NODE, action)], now)

    def first_review(self, case_id: str, now: datetime) -> lc.CaseState:
        """The township's first review (乡镇初审) of a recognition case."""
        return self._act(case_id, Side.REGISTRATION, [(lc.Role.REGISTRATION_NODE, lc.FirstReview())], now)

    def approve(self, case_id: str, payment_from: date, now: datetime) -> lc.CaseState:
        """Approve with the month payment starts; refused (``NotEligible``, with the reason codes)
        when :func:`~gateway.cases.types.eligibility` says the application does not qualify, or
        (``AttachmentRefused``) while a document is not complete."""

        def check(conn: Connection, stored: StoredCase) -> None:
            verdict = self._eligibility(conn, stored)
            if not verdict.eligible:
                raise NotEligible(",".join(verdict.reasons))

        actions: list[tuple[lc.Role, lc.Action]] = [
            (lc.Role.REGISTRATION_NODE, lc.Approve(payment_from)),
            (lc.Role.REGISTRATION_NODE, lc.DeliverResult()),
        ]
        return self._act(case_id, Side.REGISTRATION, actions, now, check=check)

    def reject(self, case_id: str, reason_code: str, text: str, now: datetime) -> lc.CaseState:
        actions: list[tuple[lc.Role, lc.Action]] = [
            (lc.Role.REGISTRATION_NODE, lc.Reject(reason_code, text)),
            (lc.Role.REGISTRATION_NODE, lc.DeliverResult()),
        ]
        return self._act(case_id, Side.REGISTRATION, actions, now)

    def return_case(self, case_id: str, reason_code: str, text: str, now: datetime) -> lc.CaseState:
        return self._act(case_id, Side.REGISTRATION, [(lc.Role.REGISTRATION_NODE, lc.Return(reason_code, text))], now)

    def transfer(self, case_id: str, to_division: str, now: datetime, *, reason: str = TRANSFER_REASON) -> lc.CaseState:
        """转办: the child's 户籍 moved to ``to_division``; the case follows the child.

        Checked first, nothing changes on failure: ``reason`` is a code (``InvalidCase``);
        ``to_division`` resolves to a current code
        (:func:`~gateway.cases.lifecycle.route_registration`, following successor links:
        ``InvalidDivisionCode``, ``SuccessorUnknown``, ``AmbiguousSuccessor``) that an active node
        other than this one serves (``InvalidCase``); this node holds the case (custody) and the
        lifecycle allows the transfer now (``IllegalTransition``); every document is complete here
        (``AttachmentRefused``: a transfer hands over the whole case). Then, in one transaction:
        the ``transfer`` step, sent to the residence node (``CaseSteps``); the whole case re-sealed
        to the new node as a ``CaseApplication`` (its full history, the child's ID token under
        this pair's key) with every document as ``CaseChunk`` messages; an audit entry
        (``case_transfer``, the reason code and the nodes); and the custody offer onward (the
        rule table of :mod:`gateway.cases.custody_hook`): the new node accepts once it has
        received the case.
        """
        if not _CODE.fullmatch(reason):
            raise InvalidCase("a transfer reason is a code of a-z, 0-9 and _")
        now = _ms(now)
        table = self._divisions or DivisionTable.load_default()
        division = lc.route_registration(to_division, table)
        new_node = self._node_for(division, now)
        if new_node == self.node_id:
            raise InvalidCase("the new registration division is served by this node: nothing to transfer")

        def check(conn: Connection, stored: StoredCase) -> None:
            if any(d.state is not DocumentState.COMPLETE for d in stored.documents):
                raise AttachmentRefused("a document of the case is not complete here")

        def handover(conn: Connection, stored: StoredCase, state: lc.CaseState) -> None:
            file = stored.file
            documents = tuple(d.document for d in stored.documents)
            history = [*stored.steps, Step(lc.Role.REGISTRATION_NODE, action, now)]
            message = self._application_message(file, new_node, documents, history, now)
            self._send(conn, handoff.HANDOFF, message, new_node, now)
            for document in documents:
                data = b"".join(self.store.read_chunks(conn, case_id, document.document_id))
                self._send_chunks(conn, case_id, document, data, new_node, now)
            audit.append(
                conn, actor=self.node_id, action="case_transfer", purpose=handoff.HANDOFF, reference=case_id,
                detail=f"reason={reason} to={new_node} division={division}", at=now,
            )  # fmt: skip

        action = lc.Transfer(new_node, division)
        state = self._act(
            case_id, Side.REGISTRATION, [(lc.Role.REGISTRATION_NODE, action)], now, check=check, after=handover
        )
        log.info("case %s transferred to %s (%s)", case_id, new_node, reason)
        return state

    def _eligibility(self, conn: Connection | None, stored: StoredCase) -> Eligibility:
        complete = {d.document.document_id for d in stored.documents if d.state is DocumentState.COMPLETE}
        pending = [d for d in stored.documents if d.state is DocumentState.PENDING]
        if pending:
            raise AttachmentRefused(f"{len(pending)} document(s) not complete yet")
        evidence = tuple(d.document for d in stored.documents if d.document.document_id in complete)
        application = replace(stored.file.case.application, evidence=evidence)
        return eligibility(application, receives_orphan_allowance=self._receives_orphan_allowance(conn, stored))

    def _receives_orphan_allowance(self, conn: Connection | None, stored: StoredCase) -> bool:
        """Whether this node approved a recognition case for the same child (its own ledger of cases)."""
        if stored.file.case.programme.family is not ProgrammeFamily.SUBSIDY:
            return False
        index = self.store.child_index(stored.file.child.id_number)
        for row in self.store.rows(side=Side.REGISTRATION):
            if row.case_id == stored.row.case_id or row.programme not in (
                Programme.ORPHAN,
                Programme.DE_FACTO_UNSUPPORTED,
            ):
                continue
            other = self.store.load(row.case_id, conn)
            if self.store.child_index(other.file.child.id_number) != index:
                continue
            decision = other.state.decision
            if decision is not None and decision.approved:
                return True
        return False

    # --- receiving --------------------------------------------------------------------------------

    def sync(self, now: datetime) -> SyncSummary:
        """Apply every case message waiting in the inbox, oldest first (see the module docstring)."""
        now = _ms(now)
        summary = SyncSummary()
        opener = handoff.Opener(self.node_id, self._keyring, self._encryption_key, self._own_key())
        with self.store.engine.connect() as conn:
            rows = list(handoff.pending_rows(conn))
        # Applications before chunks and steps: a chunk or a step may have overtaken its application.
        progress = True
        while rows and progress:
            progress = False
            waiting = []
            for row in rows:
                message_id = str(row.message_id)
                try:
                    with self.store.engine.begin() as conn:
                        if not handoff.claim(conn, message_id):
                            continue  # another process of this node applies (or applied) it
                        received = handoff.open_inbox_row(opener, row)
                        self._dispatch(conn, received, now, summary)
                        handoff.mark_processed(conn, message_id, now)
                except _NotYet:
                    waiting.append(row)
                    continue
                except (CaseError, InputError, SealedPayloadRefused) as exc:
                    # Rolled back: nothing of it stays. Marked processed apart, so it is not retried.
                    with self.store.engine.begin() as conn:
                        if not handoff.claim(conn, message_id):
                            continue
                        handoff.mark_processed(conn, message_id, now)
                    summary.refused[exc.code] = summary.refused.get(exc.code, 0) + 1
                    log.warning("case message %s from %s refused (%s)", message_id, row.sender, exc.code)
                summary.applied += 1
                progress = True
            rows = waiting
        summary.waiting = len(rows)
        return summary

    def _dispatch(self, conn: Connection, received: handoff.Received, now: datetime, summary: SyncSummary) -> None:
        inner = received.inner
        if isinstance(inner, handoff.ApplicationMessage):
            self._on_application(conn, received.sender, inner, now, summary)
        elif isinstance(inner, handoff.ChunkMessage):
            self._on_chunk(conn, received.sender, inner, now, summary)
        elif isinstance(inner, handoff.StepsMessage):
            self._on_steps(conn, received.sender, inner, now)
        else:
            self._on_report(conn, received.sender, inner, now)

    def _on_application(
        self, conn: Connection, sender: str, m: handoff.ApplicationMessage, now: datetime, summary: SyncSummary
    ) -> None:
        file = codec.case_file_from_json(m.application_json)
        case = file.case
        plain = (
            m.case_id, m.programme, m.accepting_node, m.accepting_division,
            m.registration_node, m.registration_division, m.child_ref, m.accepted_on,
        )  # fmt: skip
        sealed = (
            case.case_id, case.programme.value, case.accepting_node, case.accepting_division,
            case.registration_node, case.registration_division, case.child_ref, case.accepted_on.isoformat(),
        )  # fmt: skip
        if plain != sealed:
            raise CaseMessageRefused("the application's header disagrees with its content")
        state, steps = steps_of(lc.new_state(case), [(s.role, s.action, s.at) for s in m.steps])
        if state.status not in (lc.Status.PUSHED, lc.Status.TRANSFERRED):
            raise CaseMessageRefused("an application arrives pushed or transferred")
        # Pushed: from the accepting node, for the node the case names. Transferred (转办): from the
        # registration node the case was transferred away from, to the node the transfer names.
        if state.registration_node != self.node_id or handed_by(state) != sender:
            raise CaseMessageRefused("the application names other nodes than its sender and this node")
        if m.token_period != _quarter(case.accepted_on):
            raise CaseMessageRefused("the ID token is not of the acceptance quarter")
        expected = self._token(sender, file.child.id_number, m.token_period, now)
        if not hmac.compare_digest(expected, m.id_token):
            raise CaseMessageRefused("the child's ID token does not match the ID number")
        documents = list(m.documents)
        ids = [d.document_id for d in documents]
        if state.status is lc.Status.PUSHED:
            if ids != [d.document_id for d in case.application.evidence]:
                raise CaseMessageRefused("the document list disagrees with the application's evidence")
        elif len(set(ids)) != len(ids) or not {d.document_id for d in case.application.evidence} <= set(ids):
            raise CaseMessageRefused("a transferred case carries every document of its application, once")
        if self.store.exists(case.case_id):
            raise CaseMessageRefused("the case is already here")
        self.store.create(conn, file, Side.REGISTRATION, now=now)
        self.store.append(conn, state, steps)
        for d in documents:
            self.store.add_document(
                conn, case.case_id, d, chunks=handoff.chunks_for(d.size), state=DocumentState.PENDING, now=now
            )
        if self.custody is not None:
            self.custody.after_steps(conn, case.case_id, steps, sender)
        self._check_duplicates(conn, file, now, summary)
        self._maybe_receive(conn, case.case_id, now, summary)

    def _check_duplicates(self, conn: Connection, file: CaseFile, now: datetime, summary: SyncSummary) -> None:
        index = self.store.child_index(file.child.id_number)
        others = [
            r
            for r in self.store.open_cases_of_child(conn, index, file.case.programme.value)
            if r.case_id != file.case_id and r.side is Side.REGISTRATION
        ]
        if not others:
            return
        pairs = [(file.case_id, file.case.accepting_node, others[0].accepting_division)]
        pairs += [(o.case_id, o.accepting_node, file.case.accepting_division) for o in others]
        for case_id, node, other_division in pairs:
            self.store.set_flag(conn, case_id, DUPLICATE)
            report = handoff.ReportMessage(case_id, DUPLICATE, other_division=other_division)
            self._send(conn, handoff.DECISION, report, node, now)
            summary.flagged.append(case_id)
        log.warning("case %s: a second open application for the same benefit (%d others)", file.case_id, len(others))

    def _on_chunk(
        self, conn: Connection, sender: str, m: handoff.ChunkMessage, now: datetime, summary: SyncSummary
    ) -> None:
        self.store.lock(conn, m.case_id)
        try:
            stored = self.store.load(m.case_id, conn)
        except CaseNotFound:
            raise _NotYet() from None
        if stored.row.side is not Side.REGISTRATION or sender not in (
            stored.file.case.accepting_node,
            handed_by(stored.state),
        ):
            raise CaseMessageRefused("a chunk for a case this sender did not push or transfer here")
        document = next((d for d in stored.documents if d.document.document_id == m.document_id), None)
        if document is None:
            raise _NotYet()  # its reference (a resubmission's steps) has not been applied yet
        if document.state is not DocumentState.PENDING:
            return  # a duplicate chunk of a complete or refused document changes nothing
        if m.count != document.chunks or not 0 <= m.index < m.count or len(m.data) > handoff.CHUNK_BYTES:
            self._refuse_document(conn, stored, document.document.document_id, "chunk out of bounds", now)
            return
        self.store.put_chunk(conn, m.case_id, m.document_id, m.index, m.data)
        if self.store.chunk_count(conn, m.case_id, m.document_id) < document.chunks:
            return
        data = b"".join(self.store.read_chunks(conn, m.case_id, m.document_id))
        try:
            _check_bytes(document.document, data)
        except AttachmentRefused:
            self._refuse_document(conn, stored, m.document_id, "sha256 or size mismatch", now)
            return
        self.store.set_document_state(conn, m.case_id, m.document_id, DocumentState.COMPLETE)
        self._maybe_receive(conn, m.case_id, now, summary)

    def _refuse_document(self, conn: Connection, stored: StoredCase, document_id: str, why: str, now: datetime) -> None:
        case_id = stored.row.case_id
        self.store.set_document_state(conn, case_id, document_id, DocumentState.REFUSED)
        report = handoff.ReportMessage(case_id, ATTACHMENT_REFUSED, document_id=document_id)
        self._send(conn, handoff.DECISION, report, stored.file.case.accepting_node, now)
        audit.append(
            conn,
            actor=self.node_id,
            action=ATTACHMENT_REFUSED,
            purpose=handoff.HANDOFF,
            reference=case_id,
            detail=f"document={document_id[:60]} {why}"[:200],
            at=now,
        )
        log.warning("case %s: an attachment was refused (%s)", case_id, why)

    def _maybe_receive(self, conn: Connection, case_id: str, now: datetime, summary: SyncSummary) -> None:
        stored = self.store.load(case_id, conn)
        if stored.state.status not in (lc.Status.PUSHED, lc.Status.TRANSFERRED):
            return
        if any(d.state is not DocumentState.COMPLETE for d in stored.documents):
            return
        at = max(now, stored.state.history[-1].at)
        state, steps = steps_of(stored.state, [(lc.Role.REGISTRATION_NODE, lc.Receive(), at)])
        self.store.append(conn, state, steps)
        message = handoff.StepsMessage(case_id, tuple(steps))
        self._send(conn, handoff.DECISION, message, stored.file.case.accepting_node, now)
        if self.custody is not None:
            self.custody.after_steps(conn, case_id, steps, stored.file.case.accepting_node)
        summary.received.append(case_id)

    def _on_steps(self, conn: Connection, sender: str, m: handoff.StepsMessage, now: datetime) -> None:
        try:
            stored = self.store.load(m.case_id, conn)
        except CaseNotFound:
            raise _NotYet() from None
        case = stored.file.case
        if stored.row.side is Side.REGISTRATION:
            expected_sender, allowed_roles = case.accepting_node, _RESIDENCE_ROLES
        else:
            expected_sender, allowed_roles = stored.state.registration_node, _REGISTRATION_ROLES
        if sender != expected_sender:
            if stored.row.side is Side.RESIDENCE and m.steps and m.steps[0].action.kind is lc.ActionKind.RECEIVE:
                # A transferred case's new registration node announces its receipt; the old node's
                # transfer step may not have been applied here yet.
                raise _NotYet()
            raise CaseMessageRefused("steps from a node that is not the case's other side")
        steps = list(m.steps)
        if any(s.role not in allowed_roles for s in steps):
            raise CaseMessageRefused("a step taken in a role the sender does not play")
        known = {(e.action, e.at) for e in stored.state.history}
        new = [s for s in steps if (s.action.kind, s.at) not in known]
        if not new:
            return
        try:
            state, applied = steps_of(stored.state, [(s.role, s.action, s.at) for s in new])
        except IllegalTransition:
            raise _NotYet() from None  # e.g. a resubmission overtook the request it answers
        self.store.append(conn, state, applied)
        for document in m.documents:
            chunks = handoff.chunks_for(document.size)
            self.store.add_document(conn, m.case_id, document, chunks=chunks, state=DocumentState.PENDING, now=now)
        if self.custody is not None:
            self.custody.after_steps(conn, m.case_id, applied, sender)

    def _on_report(self, conn: Connection, sender: str, m: handoff.ReportMessage, now: datetime) -> None:
        try:
            stored = self.store.load(m.case_id, conn)
        except CaseNotFound:
            raise CaseMessageRefused("a report on a case this node does not have") from None
        if stored.row.side is not Side.RESIDENCE or sender != stored.state.registration_node:
            raise CaseMessageRefused("a report from a node that is not the case's registration node")
        if m.code == DUPLICATE:
            self.store.set_flag(conn, m.case_id, DUPLICATE)
        elif m.code == ATTACHMENT_REFUSED:
            self.store.set_document_state(conn, m.case_id, m.document_id, DocumentState.REFUSED)
        else:
            raise CaseMessageRefused("an unknown report code")
        audit.append(
            conn, actor=self.node_id, action="case_report", purpose=handoff.DECISION, reference=m.case_id,
            detail=f"code={m.code} from={sender}", at=now,
        )  # fmt: skip
        log.warning("case %s: %s reported by %s", m.case_id, m.code, sender)

    # --- reading ----------------------------------------------------------------------------------

    def show(self, case_id: str) -> CaseView:
        stored = self.store.load(case_id)
        verdict: Eligibility | None = None
        if stored.row.side is Side.REGISTRATION:
            try:
                verdict = self._eligibility(None, stored)
            except AttachmentRefused:
                verdict = None
        return CaseView(stored, due_dates(stored.file.case, stored.state.history, self._calendar), verdict)

    def inbox(self, today: date, *, open_only: bool = True) -> list[InboxItem]:
        """This node's cases by due day (the earliest running step's), overdue marked; no personal data."""
        return inbox(self.store, today, calendar=self._calendar, open_only=open_only)

    def overdue(self, today: date, now: datetime) -> list[Alert]:
        """督办: every overdue step this node answers for, recorded once (see the module docstring).

        A new alert is also queued, in the transaction that records it, as a ``case_supervision``
        message (:class:`CaseSupervisionAlert`, no personal data) to the supervising node of this
        node's province (:meth:`supervisor`); with none configured it stays local.
        """
        province = self.division[:2]
        supervisor = self.supervisor()
        alerts = []
        for row in self.store.rows(open_only=True):
            stored = self.store.load(row.case_id)
            for clock in due_dates(stored.file.case, stored.state.history, self._calendar).values():
                if not clock.overdue_on(today) or STEP_OWNER[clock.step] is not row.side or clock.due is None:
                    continue
                with self.store.engine.begin() as conn:
                    new = self.store.record_alert(conn, row.case_id, clock.step.value, clock.due, province, now)
                    if new:
                        audit.append(
                            conn, actor=self.node_id, action="case_overdue", purpose=SUPERVISION_PURPOSE,
                            reference=row.case_id, detail=f"step={clock.step} due={clock.due} province={province}",
                            at=now,
                        )  # fmt: skip
                        if supervisor is not None:
                            alert = SupervisionAlert(
                                row.case_id, row.programme, clock.step.value, clock.due, self.node_id, self.division
                            )
                            wall = self._wall_clock()
                            out = handoff.seal_supervision(self._sender, alert, recipient=supervisor, now=wall)
                            outbox.enqueue(conn, out, self._keyring, now=wall)
                if new:
                    log.warning(
                        "督办: case %s step %s overdue since %s (province %s)",
                        row.case_id,
                        clock.step.value,
                        clock.due,
                        province,
                    )
                alerts.append(Alert(row.case_id, clock.step, clock.due, province, new))
        return alerts


def inbox(
    store: CaseStore, today: date, *, calendar: WorkCalendar | None = None, open_only: bool = True
) -> list[InboxItem]:
    """The cases in ``store`` by due day (the earliest running step's), overdue marked; no personal data.

    :meth:`CaseService.inbox` and the county API's ``CaseInbox`` both call this: it needs only the
    store (no keys, no directory), so the county service can answer it on any node.
    """
    items = []
    for row in store.rows(open_only=open_only):
        stored = store.load(row.case_id)
        clocks = due_dates(stored.file.case, stored.state.history, calendar)
        running = sorted((c.due, c.step) for c in clocks.values() if c.running and c.due is not None)
        due, step = running[0] if running else (None, None)
        items.append(
            InboxItem(
                case_id=row.case_id,
                side=row.side,
                programme=Programme(row.programme),
                status=row.status,
                due=due,
                due_step=step,
                overdue=any(c.overdue_on(today) for c in clocks.values()),
                accepting_division=row.accepting_division,
                registration_division=row.registration_division,
                flag=row.flag,
            )
        )
    return sorted(items, key=lambda i: (i.due is None, i.due or date.max, i.case_id))


def handed_by(state: lc.CaseState) -> str:
    """The node that handed a registration-side case to its current registration node: the node
    that transferred it there (the registration node before the last transfer), else the accepting
    node (the push)."""
    for i in range(len(state.history) - 1, -1, -1):
        if state.history[i].action is lc.ActionKind.TRANSFER:
            return state.history[i - 1].registration_node if i > 0 else state.case.registration_node
    return state.case.accepting_node


def _check_bytes(document: EvidenceDocument, data: bytes) -> None:
    if len(data) != document.size:
        raise AttachmentRefused(f"document {document.document_id}: size differs from its reference")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), document.sha256):
        raise AttachmentRefused(f"document {document.document_id}: SHA-256 differs from its reference")


__all__ = [
    "ActionRecorder",
    "Alert",
    "CaseService",
    "CaseView",
    "CustodyHook",
    "Draft",
    "GatewayError",
    "InboxItem",
    "SupervisionAlert",
    "SyncSummary",
]
