"""Binding the TLS peer to a directory entry, on every call (the habit of Flower's auth interceptor).

Mutual TLS (:mod:`gateway.trust.tls`) proves only that a caller holds *some* certificate from
*some* provincial CA. :class:`PeerAuthInterceptor` turns that into "this call comes from node X,
active in the current directory", before any handler runs:

1. The method's service is looked up. Only the services in :data:`OPEN_SERVICES` (the gRPC health
   service and server reflection, which carry no data) run without a directory peer. **Every other
   service requires one** — ``tongban.v1.NodeExchange``, ``tongban.v1.Relay``, and any service
   added later: failing closed, a new service is never open by accident. (On an enrolled node the
   TLS handshake already requires a certificate of a directory CA, so "open" means open to those.)
2. The peer certificate is read from ``context.auth_context()["x509_pem_cert"]``; none →
   :class:`~gateway.errors.PeerNotAuthenticated`.
3. The store's current directory is taken (``DirectoryUnavailable`` / ``DocumentExpired``).
4. :meth:`Directory.authenticate_peer`: the certificate must name one node, that node must be
   active, and the certificate must be byte-for-byte the one the directory lists for it
   (``CertificateInvalid``, ``UnknownNode``, ``NodeNotActive``, ``PeerMismatch``).

A refusal aborts the call with the status in :data:`gateway.status.TRUST_STATUS` and a public message of the form
``"<code>: <public message>"`` — the error code and nothing that would help an attacker beyond
it (the detail, e.g. which node a certificate named, goes to the node's log only). An accepted
call runs its handler inside a copy of the context in which :func:`authenticated_peer` returns
the verified :class:`~gateway.trust.documents.NodeEntry`; the copy is private to the call, so a
worker thread never carries one caller's identity into the next call.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, cast

import grpc

from gateway import logs
from gateway.errors import (
    PeerNotAuthenticated,
    TrustError,
)
from gateway.status import public_message, trust_status
from gateway.trust.documents import NodeEntry
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.auth")

# Callable without credentials: the health service (probes) and server reflection (the service
# definitions, which are the project's public .proto files; no data).
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

_PEER: contextvars.ContextVar[NodeEntry | None] = contextvars.ContextVar("tongban_authenticated_peer", default=None)


def authenticated_peer() -> NodeEntry:
    """The directory entry of the node that made the current call.

    Raises ``PeerNotAuthenticated`` outside a call the interceptor admitted — a handler that
    needs a peer can never run without one by mistake.
    """
    entry = _PEER.get()
    if entry is None:
        raise PeerNotAuthenticated("no authenticated peer in this context")
    return entry


def service_of(method: str) -> str:
    """``/tongban.v1.NodeExchange/Deliver`` → ``tongban.v1.NodeExchange``."""
    return method.lstrip("/").split("/", 1)[0]


def peer_certificate(context: grpc.ServicerContext) -> bytes:
    """The client's leaf certificate (PEM) from the TLS auth context, or ``PeerNotAuthenticated``."""
    # gRPC returns a mapping of property name to a *list* of values (the stubs say bytes).
    auth = cast(Mapping[str, Iterable[bytes]], context.auth_context())
    certificates = list(auth.get("x509_pem_cert", ()))
    if not certificates:
        raise PeerNotAuthenticated("the TLS peer presented no certificate")
    return certificates[0]


class PeerAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Admit a call only from an active directory node (see the module docstring)."""

    def __init__(self, directory: Callable[[datetime], Directory], clock: Callable[[], datetime]) -> None:
        """``directory(now)`` returns the usable directory or raises (``TrustStore.current``)."""
        self._directory = directory
        self._clock = clock

    def authenticate(self, context: grpc.ServicerContext) -> NodeEntry:
        """Steps 2–4 of the module docstring; raises the ``TrustError`` that refuses the call."""
        certificate = peer_certificate(context)
        now = self._clock()
        return self._directory(now).authenticate_peer(certificate, now)

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

    def _admit(self, method: str, context: grpc.ServicerContext) -> contextvars.Context:
        try:
            entry = self.authenticate(context)
        except TrustError as exc:
            log.warning("refused %s (%s): %s", method, exc.code, exc)
            context.abort(trust_status(exc), public_message(exc))
        call_context = contextvars.copy_context()
        call_context.run(_PEER.set, entry)
        return call_context


class RequestIdInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Give every call a request id (:func:`gateway.logs.request_id_from`: the caller's well-formed
    ``x-request-id``, else a new one), set for the handler's log records (:data:`gateway.logs.REQUEST_ID`)
    and sent back as trailing metadata ``x-request-id`` — refusals included, as it runs outermost."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:  # type: ignore[type-arg]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        offered = next(
            (str(v) for k, v in (handler_call_details.invocation_metadata or ()) if k == logs.REQUEST_ID_HEADER), None
        )
        return guarded(handler, lambda context: _with_request_id(context, offered))


def _with_request_id(context: grpc.ServicerContext, offered: str | None) -> contextvars.Context:
    request_id = logs.request_id_from(offered)
    context.set_trailing_metadata(((logs.REQUEST_ID_HEADER, request_id),))
    call_context = contextvars.copy_context()
    call_context.run(logs.REQUEST_ID.set, request_id)
    return call_context


def _in_context(call_context: contextvars.Context, responses: Iterator[Any]) -> Iterator[Any]:
    """Run every step of a streaming handler inside the call's context."""
    while True:
        try:
            item = call_context.run(next, responses)
        except StopIteration:
            return
        yield item


def guarded(
    handler: grpc.RpcMethodHandler,  # type: ignore[type-arg]
    admit: Callable[[grpc.ServicerContext], contextvars.Context],
) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
    """The same handler, admitted first. All four call shapes are wrapped, so none can slip past."""
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        def guarded_unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
            return admit(context).run(unary_unary, request, context)

        return grpc.unary_unary_rpc_method_handler(guarded_unary_unary, deserialize, serialize)
    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        def guarded_unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call_context = admit(context)
            return _in_context(call_context, call_context.run(unary_stream, request, context))

        return grpc.unary_stream_rpc_method_handler(guarded_unary_stream, deserialize, serialize)
    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        def guarded_stream_unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            return admit(context).run(stream_unary, requests, context)

        return grpc.stream_unary_rpc_method_handler(guarded_stream_unary, deserialize, serialize)
    if handler.stream_stream is not None:
        stream_stream = handler.stream_stream

        def guarded_stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            call_context = admit(context)
            return _in_context(call_context, call_context.run(stream_stream, requests, context))

        return grpc.stream_stream_rpc_method_handler(guarded_stream_stream, deserialize, serialize)
    raise TypeError("a gRPC method handler without a behaviour")  # unreachable for real handlers
