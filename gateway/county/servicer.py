"""The county API (``tongban.v1.County``): token authentication, the permission table, thin calls.

:class:`CountyAuthInterceptor` admits every call before its handler runs, in this order:

1. The gRPC health service is open (it carries no data); every other service must be
   ``tongban.v1.County`` and its method a call of the permission table — anything else is refused
   ``PERMISSION_DENIED`` (failing closed: a method added without a row can never be answered).
2. The token is read from the ``authorization: Bearer <token>`` metadata and checked by
   :func:`gateway.county.auth.authenticate`: missing, malformed, unknown or revoked →
   ``UNAUTHENTICATED`` (``token_missing`` / ``token_invalid``).
3. The token's role must be allowed the call (:mod:`gateway.county.permissions`); if not, an audit
   entry ``county_denied`` (actor: the token's id, never the token; reference: the call) is
   written and the call is refused ``PERMISSION_DENIED``.

An admitted call runs in a copy of the context where :func:`current_caller` returns its token
record. :class:`CountyServicer` is thin: each call delegates to the service function the CLI uses
(``reconcile.store.load``, ``cases.service.inbox``, ``outbox.list_messages``, ``audit.tail``),
converts with :mod:`gateway.county.wire`, and maps errors once with :func:`status_for`.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NoReturn, cast

import grpc
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from tongban.v1 import common_pb2, county_pb2, county_pb2_grpc

from gateway import audit
from gateway.cases.clock import WorkCalendar
from gateway.cases.lifecycle import china_date
from gateway.cases.service import inbox
from gateway.cases.store import CaseStore
from gateway.county import auth
from gateway.county import wire as cw
from gateway.county.auth import TokenInfo
from gateway.county.permissions import CALLS, Permissions
from gateway.domain.period import MonitoringPeriod
from gateway.errors import (
    CallDenied,
    CaseNotFound,
    CountyAuthError,
    GatewayError,
    InputError,
    RecordNotFound,
    StorageError,
    TokenInvalid,
    TokenMissing,
)
from gateway.exchange import outbox
from gateway.node import Node
from gateway.reconcile import store as findings_store
from gateway.trust.interceptor import OPEN_SERVICES, guarded, service_of
from gateway.trust.store import utc_now
from gateway.wire import node_info_to_wire

log = logging.getLogger("tongban.county")

SERVICE = "tongban.v1.County"
PURPOSE = auth.PURPOSE
DEFAULT_DEAD_LETTERS, MAX_DEAD_LETTERS = 100, 1000
DEFAULT_AUDIT_TAIL, MAX_AUDIT_TAIL = 20, 1000

# How each error surfaces to a county caller, looked up along the error's class hierarchy; an
# error not listed is INTERNAL (and its message is still only its code and public message).
STATUS: Mapping[type[GatewayError], grpc.StatusCode] = {
    TokenMissing: grpc.StatusCode.UNAUTHENTICATED,
    TokenInvalid: grpc.StatusCode.UNAUTHENTICATED,
    CallDenied: grpc.StatusCode.PERMISSION_DENIED,
    CountyAuthError: grpc.StatusCode.UNAUTHENTICATED,
    InputError: grpc.StatusCode.INVALID_ARGUMENT,
    CaseNotFound: grpc.StatusCode.NOT_FOUND,
    RecordNotFound: grpc.StatusCode.NOT_FOUND,
    StorageError: grpc.StatusCode.UNAVAILABLE,
}

_CALLER: contextvars.ContextVar[TokenInfo | None] = contextvars.ContextVar("tongban_county_caller", default=None)


def status_for(error: GatewayError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def public_message(error: GatewayError) -> str:
    return f"{error.code}: {error.public_message}"


def current_caller() -> TokenInfo:
    """The token record of the current call (``TokenMissing`` outside an admitted call)."""
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

    def __init__(self, engine: Engine, permissions: Permissions, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = engine
        self._permissions = permissions
        self._clock = clock

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

    def admit(self, method: str, token: str | None) -> TokenInfo:
        """Steps 1–3 of the module docstring without gRPC: the caller, or the error that refuses it."""
        service, _, call = method.lstrip("/").partition("/")
        caller = auth.authenticate(self._engine, token)
        if service != SERVICE or call not in CALLS or not self._permissions.allows(call, caller.role):
            with self._engine.begin() as conn:
                audit.append(
                    conn,
                    actor=caller.token_id,
                    action=audit.Action.COUNTY_DENIED,
                    purpose=PURPOSE,
                    reference=call if call in CALLS else "unknown_call",
                    detail=f"role={caller.role.value}",
                    at=self._clock(),
                )
            log.warning("county API: %s refused to token %s (role %s)", call, caller.token_id, caller.role.value)
            raise CallDenied()
        return caller

    def _admit(self, method: str, context: grpc.ServicerContext) -> contextvars.Context:
        try:
            caller = self.admit(method, bearer_token(cast(Iterable[tuple[str, Any]], context.invocation_metadata())))
        except CountyAuthError as exc:
            if not isinstance(exc, CallDenied):
                log.info("county API: %s refused (%s)", method, exc.code)
            context.abort(status_for(exc), public_message(exc))
        except (GatewayError, SQLAlchemyError) as exc:
            log.warning("county API: %s could not be admitted (%s)", method, type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "storage_error: the node database refused the operation")
        call_context = contextvars.copy_context()
        call_context.run(_CALLER.set, caller)
        return call_context


class CountyServicer(county_pb2_grpc.CountyServicer):
    """Thin: translate, delegate to the service layer the CLI uses, map errors once."""

    def __init__(
        self, node: Node, *, calendar: WorkCalendar | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._node = node
        self._info = node_info_to_wire(node.description)
        self._calendar = calendar
        self._clock = clock

    def _fail(self, context: grpc.ServicerContext, exc: GatewayError) -> NoReturn:
        log.info("county API call failed (%s)", exc.code)
        context.abort(status_for(exc), public_message(exc))

    def GetNodeInfo(self, request: common_pb2.NodeInfoRequest, context: grpc.ServicerContext) -> common_pb2.NodeInfo:
        return self._info

    def ListFindings(
        self, request: county_pb2.ListFindingsRequest, context: grpc.ServicerContext
    ) -> county_pb2.ListFindingsResponse:
        try:
            period = MonitoringPeriod.parse(request.period)
            found = [cw.finding_to_wire(f) for f in findings_store.load(self._node.engine, period.label)]
        except GatewayError as exc:
            self._fail(context, exc)
        return county_pb2.ListFindingsResponse(period=period.label, findings=found)

    def CaseInbox(
        self, request: county_pb2.CaseInboxRequest, context: grpc.ServicerContext
    ) -> county_pb2.CaseInboxResponse:
        try:
            store = CaseStore(self._node.engine, self._node.keyring)
            items = inbox(
                store, china_date(self._clock()), calendar=self._calendar, open_only=not request.include_closed
            )
        except GatewayError as exc:
            self._fail(context, exc)
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
