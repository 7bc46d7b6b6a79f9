"""The county API (``tongban.v1.County``): authentication, the permission table, thin calls.

:class:`CountyAuthInterceptor` admits every call before its handler runs, in this order:

1. The gRPC health service is open (it carries no data); every other service must be
   ``tongban.v1.County`` and its method a call of the permission table — anything else is refused
   ``PERMISSION_DENIED`` (failing closed: a method added without a row can never be answered).
2. The credential. On a mutual-TLS listener (``[county] tls = true``) the client certificate the
   handshake admitted (only the node's county CA is trusted there) is checked against the node's
   records by :func:`gateway.county.certs.authenticate_certificate` — unknown or revoked →
   ``client_certificate_invalid``. A token, read from the ``authorization: Bearer <token>``
   metadata, is checked by :func:`gateway.county.auth.authenticate` when one is sent (and always on
   the plaintext listener): missing, malformed, unknown or revoked → ``token_missing`` /
   ``token_invalid``. Each is ``UNAUTHENTICATED``, audited as ``county_denied`` with actor
   ``anonymous``, the call as reference and the error code as detail (no token material). The
   caller is the token's record when a token was sent, else the certificate's.
3. The caller's role must be allowed the call (:mod:`gateway.county.permissions`); if not, an audit
   entry ``county_denied`` (actor: the credential's id, never a token; reference: the call) is
   written and the call is refused ``PERMISSION_DENIED``.

So every refused call leaves an audit entry — and so does a ``CaseAction`` whose role may not take
that action (:data:`gateway.county.views.ACTION_ROLES`; detail ``role=… action=…``). Every case
action taken — ``OpenCase``, ``ResubmitCase``, ``TransferCase``, ``CaseAction`` — is recorded as
``county_case_action`` (actor: the caller's id; reference: the case; detail ``action=… state=…``)
**in the action's own transaction**, through the case service's recorder seam
(:data:`gateway.cases.service.ActionRecorder`): the entry exists if and only if the action was
committed.

An admitted call runs in a copy of the context where :func:`current_caller` returns its caller
(:class:`~gateway.county.auth.Caller`). :class:`CountyServicer` is thin: each call delegates to the
service function the CLI uses — ``reconcile.store.load`` (findings and matches),
``cases.service.inbox``, ``outbox.list_messages``, ``audit.tail``, ``roster.intake`` (``tongban roster
import``), ``CaseService.show``, ``accept``, ``resubmit``, ``transfer`` and the other actions through
:class:`~gateway.cases.wiring.CaseParts` (``tongban case``), ``CustodyService.view`` (``tongban custody
show``) —, applies the caller's division scope (:mod:`gateway.county.views`), converts with
:mod:`gateway.county.wire`, and maps errors once with :func:`gateway.status.county_status` (the
:data:`~gateway.status.COUNTY_STATUS` table) to a status and a public message that never carries a
detail.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from datetime import datetime
from typing import Any, NoReturn, cast

import grpc
from cryptography import x509
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from tongban.v1 import common_pb2, county_pb2, county_pb2_grpc

from gateway import audit
from gateway.cases import lifecycle as lc
from gateway.cases.clock import WorkCalendar
from gateway.cases.lifecycle import china_date
from gateway.cases.service import ActionRecorder, CaseService, inbox
from gateway.cases.store import CaseStore
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import EvidenceDocument
from gateway.cases.wiring import CaseParts
from gateway.config import NodeConfig
from gateway.county import auth, certs
from gateway.county import views as cv
from gateway.county import wire as cw
from gateway.county.auth import Caller
from gateway.county.permissions import CALLS, Permissions, Role, load_permissions
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord, Provenance
from gateway.errors import (
    CallDenied,
    CaseNotFound,
    CasesUnavailable,
    ClientCertificateInvalid,
    ConfigError,
    CountyAuthError,
    DuplicateRecord,
    GatewayError,
    InputError,
    KeyFileError,
    OutsideScope,
    StorageError,
    TokenInvalid,
    TokenMissing,
    UnknownCase,
)
from gateway.exchange import outbox
from gateway.node import Node
from gateway.reconcile import store as findings_store
from gateway.roster import intake
from gateway.status import county_status, public_message
from gateway.trust.interceptor import OPEN_SERVICES, RequestIdInterceptor, guarded, service_of
from gateway.trust.store import utc_now
from gateway.wire import node_info_to_wire

log = logging.getLogger("tongban.county")

SERVICE = "tongban.v1.County"
PURPOSE = auth.PURPOSE
DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS = 100, 1000
DEFAULT_AUDIT_TAIL, MAX_AUDIT_TAIL = 20, 1000
MAX_ROSTER_ROWS = 200_000  # rows of one SubmitRoster stream (held in memory until the stream ends)
CASE_ACTION = "county_case_action"  # the audit action of every case action taken through the API

_CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("tongban_county_caller", default=None)


def current_caller() -> Caller:
    """The caller of the current call (``TokenMissing`` outside an admitted call)."""
    caller = _CALLER.get()
    if caller is None:
        raise TokenMissing("no authenticated county caller in this context")
    return caller


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, or ``None``."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class CountyAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticate, authorise and audit every county call (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        permissions: Permissions,
        *,
        clock: Callable[[], datetime] = utc_now,
        county_ca: x509.Certificate | None = None,
    ) -> None:
        """``county_ca``: the node's county CA on a TLS listener (client certificates are checked
        against it and the node's records); ``None`` on the plaintext listener (tokens only)."""
        self._engine = engine
        self._permissions = permissions
        self._clock = clock
        self._county_ca = county_ca

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or service_of(method) in OPEN_SERVICES:
            return handler
        return guarded(handler, lambda context: self._admit(method, context))

    def admit(self, method: str, token: str | None, certificate: bytes | None = None) -> Caller:
        """Steps 1–3 of the module docstring without gRPC: the caller, or the error that refuses it.

        On a TLS listener ``certificate`` is the client's (PEM): it is checked first, always
        (:func:`gateway.county.certs.authenticate_certificate`: issued by this node, recorded, not
        revoked); the caller is then the token's when one is sent (a shared system certificate with
        personal tokens), else the certificate's record."""
        service, _, call = method.lstrip("/").partition("/")
        reference = call if service == SERVICE and call in CALLS else "unknown_call"
        try:
            by_certificate: Caller | None = None
            if certificate is not None and self._county_ca is not None:
                now = self._clock()
                by_certificate = certs.authenticate_certificate(
                    self._engine, self._county_ca, certificate, now=now
                ).caller
            if token or by_certificate is None:
                caller = auth.authenticate(self._engine, token).caller
            else:
                caller = by_certificate
        except (TokenMissing, TokenInvalid, ClientCertificateInvalid) as exc:
            refuse_anonymous(self._engine, reference, exc, at=self._clock())
        if service != SERVICE or call not in CALLS or not self._permissions.allows(call, caller.role):
            deny(self._engine, caller, reference, at=self._clock())
        return caller

    def _admit(self, method: str, context: grpc.ServicerContext) -> contextvars.Context:
        certificate = _client_certificate(context) if self._county_ca is not None else None
        try:
            caller = self.admit(
                method, bearer_token(cast(Iterable[tuple[str, Any]], context.invocation_metadata())), certificate
            )
        except CountyAuthError as exc:
            if not isinstance(exc, CallDenied):
                log.info("county API: %s refused (%s)", method, exc.code)
            context.abort(county_status(exc), public_message(exc))
        except (GatewayError, SQLAlchemyError) as exc:
            log.warning("county API: %s could not be admitted (%s)", method, type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "storage_error: the node database refused the operation")
        call_context = contextvars.copy_context()
        call_context.run(_CALLER.set, caller)
        return call_context


def _client_certificate(context: grpc.ServicerContext) -> bytes | None:
    """The TLS client's leaf certificate (PEM), if the connection has one."""
    properties = cast(Mapping[str, Iterable[bytes]], context.auth_context())
    found = list(properties.get("x509_pem_cert", ()))
    return found[0] if found else None


ANONYMOUS = "anonymous"  # the audit actor of a call refused before any credential was accepted


def refuse_anonymous(engine: Engine, reference: str, error: CountyAuthError, *, at: datetime) -> NoReturn:
    """Record a call refused for its credential — none, or one that is malformed, unknown or revoked —
    in the audit trail (``county_denied``, actor ``anonymous``, the call, the error code; never any
    part of the token or certificate) and raise ``error``."""
    with engine.begin() as conn:
        audit.append(
            conn,
            actor=ANONYMOUS,
            action=audit.Action.COUNTY_DENIED,
            purpose=PURPOSE,
            reference=reference,
            detail=f"reason={error.code}",
            at=at,
        )
    raise error


def deny(engine: Engine, caller: Caller, reference: str, *, at: datetime, detail: str = "") -> NoReturn:
    """Record a refused call in the audit trail (``county_denied``: the caller's id, never a token;
    the call, or the call and action) and raise :class:`CallDenied`."""
    with engine.begin() as conn:
        audit.append(
            conn,
            actor=caller.caller_id,
            action=audit.Action.COUNTY_DENIED,
            purpose=PURPOSE,
            reference=reference,
            detail=f"role={caller.role.value}" + (f" {detail}" if detail else ""),
            at=at,
        )
    log.warning("county API: %s refused to %s (role %s)", reference, caller.caller_id, caller.role.value)
    raise CallDenied()


class CountyServicer(county_pb2_grpc.CountyServicer):
    """Thin: translate, delegate to the service layer the CLI uses, map errors once.

    ``cases`` are the node's case parts (:class:`~gateway.cases.wiring.CaseParts`, as the node's case
    loop and ``tongban case`` build them); ``None`` on a node that cannot act on cases (not enrolled,
    no signing key): the case calls (``GetCase``, ``CaseAction``, ``GetCustody``, ``OpenCase``,
    ``ResubmitCase``, ``TransferCase``) then answer ``FAILED_PRECONDITION`` (``cases_unavailable``).
    Every call sees only what the caller's division scope covers (:mod:`gateway.county.views`).
    """

    def __init__(
        self,
        node: Node,
        *,
        cases: CaseParts | None = None,
        calendar: WorkCalendar | None = None,
        clock: Callable[[], datetime] = utc_now,
        divisions: DivisionTable | None = None,
    ) -> None:
        self._node = node
        self._info = node_info_to_wire(node.description)
        self._cases = cases
        self._calendar = calendar
        self._clock = clock
        self._divisions = divisions

    def _fail(self, context: grpc.ServicerContext, exc: GatewayError) -> NoReturn:
        log.info("county API call failed (%s)", exc.code)
        context.abort(county_status(exc), public_message(exc))

    def _parts(self) -> CaseParts:
        if self._cases is None:
            raise CasesUnavailable()
        return self._cases

    def _service(self, recorder: ActionRecorder | None = None) -> CaseService:
        try:
            return self._parts().service(recorder=recorder)
        except KeyFileError:
            raise CasesUnavailable("no encryption key") from None

    @staticmethod
    def _audited(caller: Caller, action: str, now: datetime) -> ActionRecorder:
        """The case service's recorder for one call: the ``county_case_action`` entry, written in the
        action's transaction (see the module docstring)."""

        def record(conn: Connection, case_id: str, state: lc.CaseState) -> None:
            audit.append(
                conn,
                actor=caller.caller_id,
                action=CASE_ACTION,
                purpose=PURPOSE,
                reference=case_id,
                detail=f"action={action} state={state.status.value}",
                at=now,
            )

        return record

    def _case_row_in_scope(self, parts: CaseParts, case_id: str, caller: Caller) -> None:
        """``CaseNotFound`` for a case this node does not have or the caller's scope does not cover."""
        row = parts.store.row(cv.check_case_id(case_id))
        if not cv.case_in_scope(caller, row.accepting_division, row.registration_division):
            raise CaseNotFound()

    def GetNodeInfo(self, request: common_pb2.NodeInfoRequest, context: grpc.ServicerContext) -> common_pb2.NodeInfo:
        return self._info

    def ListFindings(
        self, request: county_pb2.ListFindingsRequest, context: grpc.ServicerContext
    ) -> county_pb2.ListFindingsResponse:
        caller, own = current_caller(), self._node.config.division
        try:
            period = MonitoringPeriod.parse(request.period)
            found = [
                cw.finding_to_wire(f)
                for f in findings_store.load(self._node.engine, period.label)
                if cv.finding_in_scope(caller, own, f)
            ]
        except GatewayError as exc:
            self._fail(context, exc)
        return county_pb2.ListFindingsResponse(period=period.label, findings=found)

    def CaseInbox(
        self, request: county_pb2.CaseInboxRequest, context: grpc.ServicerContext
    ) -> county_pb2.CaseInboxResponse:
        caller = current_caller()
        try:
            store = CaseStore(self._node.engine, self._node.keyring)
            items = inbox(
                store, china_date(self._clock()), calendar=self._calendar, open_only=not request.include_closed
            )
        except GatewayError as exc:
            self._fail(context, exc)
        items = [i for i in items if cv.case_in_scope(caller, i.accepting_division, i.registration_division)]
        return county_pb2.CaseInboxResponse(items=[cw.inbox_item_to_wire(i) for i in items])

    def ListDeadLetters(
        self, request: county_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> county_pb2.ListDeadLettersResponse:
        limit = min(request.limit or DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS)
        try:
            rows = outbox.list_messages(
                self._node.engine, status=outbox.Status.DEAD, peer=request.peer or None, limit=limit
            )
        except GatewayError as exc:
            self._fail(context, exc)
        letters = [cw.dead_letter_to_wire(cw.dead_letter_from_row(r)) for r in rows]
        return county_pb2.ListDeadLettersResponse(dead_letters=letters)

    def AuditTail(
        self, request: county_pb2.AuditTailRequest, context: grpc.ServicerContext
    ) -> county_pb2.AuditTailResponse:
        n = min(request.n or DEFAULT_AUDIT_TAIL, MAX_AUDIT_TAIL)
        try:
            entries = audit.tail(self._node.engine, n)
        except GatewayError as exc:
            self._fail(context, exc)
        return county_pb2.AuditTailResponse(entries=[cw.audit_line_to_wire(cw.audit_line(e)) for e in entries])

    # --- rosters and matches ------------------------------------------------------------------------

    def SubmitRoster(
        self, request_iterator: Iterator[county_pb2.SubmitRosterRequest], context: grpc.ServicerContext
    ) -> county_pb2.RosterSummary:
        """Read the whole stream first (at most :data:`MAX_ROSTER_ROWS` rows), so that a stream that
        breaks off stores nothing; then :func:`gateway.roster.intake` — the validation of
        ``tongban roster import`` — stores the good rows in one transaction, or none with
        ``all_or_nothing``. Each row is stamped with this call's provenance (source
        ``county_api:<caller id>``, its position in the stream). Rows that are no valid record, or
        outside the caller's division scope, are rejected at their position."""
        caller, now = current_caller(), self._clock()
        try:
            header, rows = _read_roster(request_iterator)
            period = MonitoringPeriod.parse(header.period)
            source = f"county_api:{caller.caller_id}"
            records = [_stamped(m, position, caller, source, now, self._node.config.node_id) for position, m in rows]
            table = self._divisions or DivisionTable.load_default()
            summary = intake(
                self._node.children,
                records,
                period=period.label,
                table=table,
                today=china_date(now),
                all_or_nothing=header.all_or_nothing,
            )
            with self._node.engine.begin() as conn:
                audit.append(
                    conn,
                    actor=caller.caller_id,
                    action="county_roster_submitted",
                    purpose=PURPOSE,
                    reference=period.label,
                    detail=f"received={len(records)} accepted={summary.accepted} rejected={summary.rejected}",
                    at=now,
                )
        except GatewayError as exc:
            self._fail(context, exc)
        except SQLAlchemyError as exc:
            self._fail(context, StorageError(type(exc).__name__))
        log.info(
            "county API: roster %s from %s: %d received, %d accepted, %d rejected%s",
            period.label,
            caller.caller_id,
            len(records),
            summary.accepted,
            summary.rejected,
            "" if summary.stored else " (nothing stored: all or nothing)",
        )
        return cw.roster_outcome_to_wire(cw.RosterOutcome(len(records), summary))

    def ListMatches(
        self, request: county_pb2.ListMatchesRequest, context: grpc.ServicerContext
    ) -> Iterator[county_pb2.MatchLine]:
        """The matched and review findings of the period's reconciliation (``tongban reconcile run``
        stores them), as match lines; streamed, so a large county is not one huge message."""
        caller, own = current_caller(), self._node.config.division
        try:
            period = MonitoringPeriod.parse(request.period)
            found = (f for f in findings_store.load(self._node.engine, period.label) if f.code in cv.MATCH_CODES)
            for line in cv.match_lines(f for f in found if cv.finding_in_scope(caller, own, f)):
                yield cw.match_line_to_wire(line)
        except GatewayError as exc:
            self._fail(context, exc)

    # --- cases and custody ----------------------------------------------------------------------------

    def GetCase(self, request: county_pb2.GetCaseRequest, context: grpc.ServicerContext) -> county_pb2.CaseDetail:
        """``CaseService.show`` (what ``tongban case show`` prints, without the child's name) and the
        custody holder; a provincial operator gets the oversight view."""
        caller = current_caller()
        try:
            parts = self._parts()
            self._case_row_in_scope(parts, request.case_id, caller)
            view = self._service().show(request.case_id)
            detail = cv.case_detail(view, parts.custody.view(request.case_id), china_date(self._clock()))
        except GatewayError as exc:
            self._fail(context, exc)
        if caller.role is Role.PROVINCIAL_OPERATOR:
            detail = cv.for_oversight(detail)
        return cw.case_detail_to_wire(detail)

    def CaseAction(
        self, request: county_pb2.CaseActionRequest, context: grpc.ServicerContext
    ) -> county_pb2.CaseActionResponse:
        """One action through :class:`~gateway.cases.service.CaseService`, as ``tongban case`` takes
        it: the role must take that action (:data:`~gateway.county.views.ACTION_ROLES`, else
        ``PERMISSION_DENIED``, audited), the case must be in the caller's scope, and the service
        checks the node's side, the lifecycle and custody. The action is recorded in the audit trail
        under the caller's id, in the action's transaction. Not idempotent: a client never retries it
        on its own."""
        caller, now = current_caller(), self._clock()
        try:
            command = cw.case_command_from_wire(request)
            if not cv.may_take(caller.role, command.kind):
                deny(self._node.engine, caller, "CaseAction", at=now, detail=f"action={command.kind.value}")
            parts = self._parts()
            self._case_row_in_scope(parts, command.case_id, caller)
            state = _perform(self._service(self._audited(caller, command.kind.value, now)), command, now)
        except GatewayError as exc:
            self._fail(context, exc)
        except SQLAlchemyError as exc:
            self._fail(context, StorageError(type(exc).__name__))
        return cw.case_state_to_wire(command.case_id, state.status)

    def GetCustody(
        self, request: county_pb2.GetCustodyRequest, context: grpc.ServicerContext
    ) -> county_pb2.CustodyView:
        """This node's view of the case's chain — :meth:`CustodyService.view`, i.e. the
        ``custody.store.view`` that ``tongban custody show`` prints — as node ids, kinds and times.
        A scoped caller sees only the chains of cases in its scope."""
        caller = current_caller()
        try:
            parts = self._parts()
            case_id = cv.check_case_id(request.case_id)
            if caller.division:
                try:
                    self._case_row_in_scope(parts, case_id, caller)
                except CaseNotFound:
                    raise UnknownCase() from None
            state = parts.custody.view(case_id)
            if state is None:
                raise UnknownCase()
        except GatewayError as exc:
            self._fail(context, exc)
        return cw.custody_summary_to_wire(cv.custody_summary(state))

    # --- opening a case, resubmitting, transferring ------------------------------------------------

    def OpenCase(
        self, request_iterator: Iterator[county_pb2.OpenCaseRequest], context: grpc.ServicerContext
    ) -> county_pb2.OpenCaseResponse:
        """Accept an application at this node and push it — :meth:`CaseService.accept`, as ``tongban
        case accept`` — in this order:

        1. the node can act on cases (``cases_unavailable``);
        2. the first message is the application, decoded as the command decodes its file
           (:func:`~gateway.county.wire.opening_from_wire`: ``invalid_case``, ``invalid_id_number``);
           its registration division or this node's must lie in the caller's scope (``outside_scope``);
        3. the case id is derived from the request id (:func:`~gateway.county.views.opened_case_id`):
           if that case exists, the call is a retry — answered with the case (``replayed``) if it is the
           same application, refused ``duplicate_record`` if not — and the documents are not read;
        4. the documents' chunks (:class:`~gateway.county.views.DocumentUpload`: declared sizes and
           the limits of one call);
        5. ``accept``: the division routed to a node that serves it, every document's size and SHA-256,
           the case's own rules; then, in one transaction, the case, its push to the registration node,
           and the ``county_case_action`` audit entry. Two concurrent retries cannot both open it: the
           second finds the case id taken (``DuplicateRecord``) and answers as in step 3.

        Any refusal stores nothing."""
        caller, now = current_caller(), self._clock()
        try:
            parts = self._parts()
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("item") != "application":
                raise InputError("an OpenCase stream starts with the application")
            opening = cw.opening_from_wire(first.application)
            if not cv.case_in_scope(caller, self._node.config.division, opening.draft.registration_division):
                raise OutsideScope()
            case_id = cv.opened_case_id(self._node.config.node_id, caller.caller_id, opening.request_id)
            replayed = self._opened_before(parts, case_id, opening)
            if not replayed:
                documents = _read_documents(request_iterator, opening.draft.application.evidence)
                service = self._service(self._audited(caller, "open", now))
                try:
                    service.accept(opening.draft, documents, now, case_id=case_id)
                except DuplicateRecord:
                    if not self._opened_before(parts, case_id, opening):
                        raise
                    replayed = True
            row = parts.store.row(case_id)
        except GatewayError as exc:
            self._fail(context, exc)
        except SQLAlchemyError as exc:
            self._fail(context, StorageError(type(exc).__name__))
        log.info("county API: case %s opened by %s%s", case_id, caller.caller_id, " (a retry)" if replayed else "")
        opened = cv.OpenedCase(case_id, row.status, row.registration_node, row.registration_division, replayed)
        return cw.opened_to_wire(opened)

    @staticmethod
    def _opened_before(parts: CaseParts, case_id: str, opening: cv.CaseOpening) -> bool:
        """Whether the case of this request id exists (a retry); ``DuplicateRecord`` if it is not
        the same application (the request id was used for another one)."""
        if not parts.store.exists(case_id):
            return False
        stored = parts.store.load(case_id)
        if stored.row.side is not CaseSide.RESIDENCE or not cv.same_application(stored.file, opening.draft):
            raise DuplicateRecord("the request id was used for another application")
        return True

    def ResubmitCase(
        self, request_iterator: Iterator[county_pb2.ResubmitCaseRequest], context: grpc.ServicerContext
    ) -> county_pb2.CaseActionResponse:
        """Send the requested material — :meth:`CaseService.resubmit`, as ``tongban case resubmit``:
        the header (the case in the caller's scope, the documents' references), the chunks
        (:class:`~gateway.county.views.DocumentUpload`), then the service checks the lifecycle, the
        custody and every document's size and SHA-256, and commits the resubmission with its audit
        entry. Not idempotent (a second resubmission is an illegal transition): never retried."""
        caller, now = current_caller(), self._clock()
        try:
            parts = self._parts()
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("item") != "header":
                raise InputError("a ResubmitCase stream starts with its header")
            header = cw.resubmission_from_wire(first.header)
            self._case_row_in_scope(parts, header.case_id, caller)
            data = _read_documents(request_iterator, header.documents)
            pairs = [(d, data[d.document_id]) for d in header.documents]
            state = self._service(self._audited(caller, "resubmit", now)).resubmit(header.case_id, pairs, now)
        except GatewayError as exc:
            self._fail(context, exc)
        except SQLAlchemyError as exc:
            self._fail(context, StorageError(type(exc).__name__))
        return cw.case_state_to_wire(header.case_id, state.status)

    def TransferCase(
        self, request: county_pb2.TransferCaseRequest, context: grpc.ServicerContext
    ) -> county_pb2.CaseActionResponse:
        """转办 — :meth:`CaseService.transfer`, as ``tongban case transfer``: the case in the caller's
        scope; the service checks the reason code, routes the new division to the node serving it,
        checks the lifecycle, custody and documents, and commits the transfer with its audit entry.
        Not idempotent (a transferred case cannot be transferred from here again): never retried."""
        caller, now = current_caller(), self._clock()
        try:
            order = cw.transfer_from_wire(request)
            parts = self._parts()
            self._case_row_in_scope(parts, order.case_id, caller)
            service = self._service(self._audited(caller, "transfer", now))
            state = service.transfer(order.case_id, order.to_division, now, reason=order.reason)
        except GatewayError as exc:
            self._fail(context, exc)
        except SQLAlchemyError as exc:
            self._fail(context, StorageError(type(exc).__name__))
        return cw.case_state_to_wire(order.case_id, state.status)


def _read_documents(
    requests: Iterator[county_pb2.OpenCaseRequest] | Iterator[county_pb2.ResubmitCaseRequest],
    declared: Sequence[EvidenceDocument],
) -> dict[str, bytes]:
    """The bytes of the ``declared`` documents from the rest of an ``OpenCase`` or ``ResubmitCase``
    stream: chunks only (``InputError``), within :class:`~gateway.county.views.DocumentUpload`'s limits."""
    upload = cv.DocumentUpload(declared)
    for m in requests:
        if m.WhichOneof("item") != "chunk":
            raise InputError("after its first message, the stream carries document chunks only")
        upload.add(m.chunk.document_id, m.chunk.data)
    return upload.finish()


def _read_roster(
    requests: Iterator[county_pb2.SubmitRosterRequest],
) -> tuple[county_pb2.RosterHeader, list[tuple[int, county_pb2.SubmitRosterRequest]]]:
    """The header and every row of a SubmitRoster stream (``InputError``: no header first, or more
    rows than :data:`MAX_ROSTER_ROWS`)."""
    first = next(requests, None)
    if first is None or first.WhichOneof("item") != "header":
        raise InputError("a roster stream starts with its header (the period)")
    rows: list[tuple[int, county_pb2.SubmitRosterRequest]] = []
    for position, m in enumerate(requests, start=1):
        if position > MAX_ROSTER_ROWS:
            raise InputError(f"a roster stream carries at most {MAX_ROSTER_ROWS} rows: split it into several")
        rows.append((position, m))
    return first.header, rows


def _stamped(
    m: county_pb2.SubmitRosterRequest, position: int, caller: Caller, source: str, now: datetime, node_id: str
) -> ChildRecord | InputError:
    """A row as a record stamped with this import's provenance, or the error that rejects it."""
    try:
        record = cw.roster_row_from_wire(m)
        if not cv.row_in_scope(caller, record.registration_division, record.residence_division):
            raise OutsideScope()
    except InputError as exc:
        return exc
    stamp = Provenance(source=source, imported_at=now, node_id=node_id, source_row=position)
    return dataclasses.replace(record, provenance=stamp)


def _perform(service: CaseService, c: cv.CaseCommand, now: datetime) -> lc.CaseState:
    """The case service's method for each action (the same the ``tongban case`` commands call)."""
    k = cv.CaseActionKind
    if c.kind is k.REQUEST_MATERIAL:
        return service.request_material(c.case_id, c.items, now, note=c.note)
    if c.kind is k.FIRST_REVIEW:
        return service.first_review(c.case_id, now)
    if c.kind is k.APPROVE:
        assert c.payment_month is not None  # CaseCommand checks it
        return service.approve(c.case_id, c.payment_month, now)
    if c.kind is k.REJECT:
        return service.reject(c.case_id, c.reason_code, c.text, now)
    if c.kind is k.RETURN:
        return service.return_case(c.case_id, c.reason_code, c.text, now)
    if c.kind is k.NOTIFY_APPLICANT:
        return service.notify_applicant(c.case_id, now)
    if c.kind is k.CLOSE:
        return service.close(c.case_id, now)
    return service.withdraw(c.case_id, now)


def county_server(
    node: Node, cases: CaseParts | None, *, max_workers: int = 8, now: datetime | None = None
) -> tuple[grpc.Server, str]:
    """The county API on its own listener, ``[county] listen``: a gRPC server with the
    :class:`CountyAuthInterceptor` and the :class:`CountyServicer` (over ``cases`` when the node has
    them), not started; and the address it bound.

    Plaintext by default (API tokens), and then loopback only (``ConfigError``: a token travels in
    clear). With ``[county] tls = true`` it may listen on any address: mutual TLS whose only client
    trust anchor is the node's county CA (:mod:`gateway.county.certs`, created on first use; the
    key passphrase is needed, ``KeyFileError`` without it), so a client without a certificate of
    this node's county CA — another node's county CA, a directory node's certificate — fails the
    handshake; the interceptor then checks the certificate's record on every call."""
    cfg = node.config
    listen = cfg.county_listen
    check_county_listen(cfg)
    county_ca = None
    credentials: grpc.ServerCredentials | None = None
    if cfg.county_tls:
        ca = certs.ensure_ca(cfg, now=now or utc_now())
        key_pem, cert_pem = certs.server_identity(ca, now=now or utc_now())
        credentials = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=ca.pem, require_client_auth=True
        )
        county_ca = ca.certificate
    interceptor = CountyAuthInterceptor(node.engine, load_permissions(), county_ca=county_ca)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=[RequestIdInterceptor(), interceptor]
    )
    county_pb2_grpc.add_CountyServicer_to_server(CountyServicer(node, cases=cases), server)
    county = county_pb2.DESCRIPTOR.services_by_name["County"].full_name
    reflection.enable_server_reflection([county, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(listen, credentials) if credentials else server.add_insecure_port(listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {listen} (county.listen)")
    log.info("county API on %s (%s)", listen, "mutual TLS, county CA" if credentials else "plaintext, tokens")
    return server, f"{listen.rsplit(':', 1)[0]}:{port}"


def check_county_listen(cfg: NodeConfig) -> None:
    """``[county] listen`` may be any address with ``[county] tls = true`` (mutual TLS with the
    node's county CA: no call without a client certificate this node issued); a plaintext listener
    carries tokens in clear, so it must be a loopback address (``ConfigError``)."""
    from gateway.server import require_loopback  # the node server's one rule for its listeners

    if not cfg.county_tls:
        require_loopback(cfg.county_listen, setting="county.listen")
