"""How envelopes travel to a peer (SPEC §7: transport is pluggable).

A :class:`Transport` takes a peer's node id and a batch of serialised envelopes and answers, for
each envelope in order, the peer's signed :class:`Receipt` or a :class:`~gateway.errors.DeliveryFailed`
(built by :mod:`gateway.exchange.retry`, so it carries a reason code and whether retrying can help).
It never raises for a delivery problem, and it does not judge receipts: the delivery loop verifies
each one against the directory (:func:`gateway.exchange.envelope.verify_receipt`) before believing it.

:class:`GrpcTransport` is the default: one ``NodeExchange.DeliverStream`` call per batch, directly to
the peer over mutual TLS (:func:`gateway.trust.tls.secure_channel_to`: the peer must be active in a
fresh directory; only its province's CA is trusted; its certificate must name it). The envelope
bytes go out **exactly as they were signed and stored** — the stream's request serialiser is the
identity — so nothing is re-encoded on the way.

**A store-and-forward relay fits behind the same interface**
(:class:`gateway.exchange.relay.RelayTransport`). Because every envelope is signed end to end, sealed
to the recipient for the hop through the hub, and every receipt is signed by the receiver, a relay
needs no trust: ``RelayTransport.deliver`` pushes the batch to the hub and answers with whatever
receipts the hub already holds for those message ids, and a transient ``DeliveryFailed``
(``awaiting_receipt``) for the rest. The delivery loop retries those later; the hub deduplicates by
message id, and receivers are idempotent, so a resend only collects the receipt once it exists.
Nothing above this interface changes.

Both transports dial through :class:`Channels` (one cached mutual-TLS channel per node, re-dialled
when the directory changes its endpoint or certificate) after :func:`check_peer`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

import grpc
from tongban.v1 import node_pb2

from gateway.errors import DeliveryFailed, GatewayError, NodeNotActive, TrustError, UnknownNode, UnknownProvince
from gateway.exchange.retry import Reason, failure, refusal_failure, stream_failure
from gateway.status import is_permanent
from gateway.trust.documents import NodeStatus
from gateway.trust.tls import TlsIdentity, secure_channel_to
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.transport")

_SERVICE = node_pb2.DESCRIPTOR.services_by_name["NodeExchange"]
DELIVER_STREAM = f"/{_SERVICE.full_name}/{_SERVICE.methods_by_name['DeliverStream'].name}"


@dataclass(frozen=True)
class Receipt:
    """A receiver's signed receipt, serialised exactly as it arrived (``tongban.v1.Receipt``).
    Unverified until the delivery loop has checked it."""

    data: bytes = field(repr=False)


Result = Receipt | DeliveryFailed


class Transport(Protocol):
    """Carries envelopes to a peer. See the module docstring."""

    def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
        """One result per envelope, in order; never raises for a delivery problem."""
        ...

    def close(self) -> None:
        """Release connections; ``deliver`` may not be called afterwards."""
        ...


def all_failed(n: int, error: DeliveryFailed) -> list[Result]:
    return [error] * n


def status_name(code: grpc.StatusCode | None) -> str:
    return code.name if code is not None else "UNKNOWN"


def status_from_number(number: int) -> grpc.StatusCode | None:
    return next((c for c in grpc.StatusCode if c.value[0] == number), None)


@dataclass
class _Cached:
    channel: grpc.Channel
    key: tuple[int, str, str]  # (directory version, endpoint, certificate): a change means redial


def check_peer(directory: Callable[[datetime], Directory], peer_id: str, now: datetime) -> Directory:
    """The current directory, if ``peer_id`` may be dialled in it; otherwise raises :class:`Refused`
    carrying the failure: our directory unusable (``directory_unusable``, transient), the peer not
    in it (``peer_unknown``, permanent), revoked (``peer_revoked``, permanent), or otherwise not
    active (``peer_suspended``, transient)."""
    try:
        current = directory(now)
    except TrustError as exc:
        raise Refused(failure(Reason.DIRECTORY_UNUSABLE, exc.code)) from None
    try:
        entry = current.entry(peer_id)
    except UnknownNode:
        raise Refused(failure(Reason.PEER_UNKNOWN, f"{peer_id} is not in directory v{current.version}")) from None
    if entry.status is NodeStatus.REVOKED:
        raise Refused(failure(Reason.PEER_REVOKED, f"{peer_id} is revoked in directory v{current.version}"))
    if entry.status is not NodeStatus.ACTIVE:
        raise Refused(failure(Reason.PEER_SUSPENDED, f"{peer_id} is {entry.status.value}"))
    return current


class Channels:
    """Mutual-TLS channels to directory nodes, one per node, kept until the directory changes the
    node's endpoint or certificate (or its version changes); then the node is re-dialled, so a
    revocation or a move is honoured at once. Thread-safe. ``channel`` raises :class:`Refused`."""

    def __init__(self, identity: TlsIdentity, options: Sequence[tuple[str, int | str]] = ()) -> None:
        self._identity = identity
        self._options = list(options)
        self._lock = threading.Lock()
        self._channels: dict[str, _Cached] = {}
        self._closed = False

    def channel(self, node_id: str, directory: Directory, now: datetime) -> grpc.Channel:
        entry = directory.entry(node_id)
        key = (directory.version, entry.endpoint, entry.tls_certificate)
        with self._lock:
            if self._closed:
                raise Refused(failure(Reason.PEER_ERROR, "the transport is closed"))
            cached = self._channels.get(node_id)
            if cached is not None and cached.key == key:
                return cached.channel
            try:
                channel = secure_channel_to(node_id, directory, self._identity, now=now, options=self._options)
            except NodeNotActive as exc:  # e.g. its certificate is outside its validity dates
                raise Refused(failure(Reason.PEER_SUSPENDED, exc.code)) from None
            except (UnknownNode, UnknownProvince) as exc:
                raise Refused(failure(Reason.PEER_UNKNOWN, exc.code)) from None
            except TrustError as exc:
                raise Refused(failure(Reason.DIRECTORY_UNUSABLE, exc.code)) from None
            if cached is not None:
                cached.channel.close()
            self._channels[node_id] = _Cached(channel, key)
            return channel

    def forget(self, node_id: str, channel: grpc.Channel) -> None:
        """Drop ``channel`` (if it is still the cached one): dial afresh next time rather than wait
        out the channel's own reconnect back-off (up to minutes)."""
        with self._lock:
            cached = self._channels.get(node_id)
            if cached is None or cached.channel is not channel:
                return
            del self._channels[node_id]
        channel.close()

    def close(self) -> None:
        """Close every channel; calls still in flight end at once."""
        with self._lock:
            self._closed = True
            channels, self._channels = list(self._channels.values()), {}
        for cached in channels:
            cached.channel.close()


class GrpcTransport:
    """Direct gRPC over mutual TLS (see the module docstring).

    ``directory(now)`` returns the node's current verified directory (``TrustStore.current``);
    ``identity`` is the node's TLS key and certificate; ``timeout`` bounds one whole stream
    (seconds). Channels are kept per peer and re-dialled when the directory changes the peer's
    endpoint or certificate (or its version changes), so a revocation is honoured at once: the
    peer's status is checked in the current directory before every batch.
    """

    def __init__(
        self,
        *,
        identity: TlsIdentity,
        directory: Callable[[datetime], Directory],
        clock: Callable[[], datetime],
        timeout: float = 60.0,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._timeout = timeout
        self._channels = Channels(identity, options)

    # --- delivering -----------------------------------------------------------------------------

    def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
        """Stream ``envelopes`` to ``peer_id``; see :class:`Transport`.

        Before dialling: our directory must be usable (``directory_unusable``, transient), the peer
        in it (``peer_unknown``, permanent), not revoked (``peer_revoked``, permanent) and active
        (``peer_suspended``, transient). Then each result of the stream in order: a receipt, or the
        receiver's refusal (permanent or not as :func:`~gateway.status.is_permanent`
        says). If the stream ends early, every envelope without a result gets the failure for the
        ending status (:data:`~gateway.exchange.retry.STREAM_STATUS`).
        """
        if not envelopes:
            return []
        now = self._clock()
        try:
            directory = check_peer(self._directory, peer_id, now)
            channel = self._channels.channel(peer_id, directory, now)
        except Refused as exc:
            return all_failed(len(envelopes), exc.failure)
        call = channel.stream_stream(
            DELIVER_STREAM,
            request_serializer=identity_bytes,
            response_deserializer=node_pb2.DeliveryResult.FromString,
        )
        results: list[Result] = []
        try:
            responses = call(iter(envelopes), timeout=self._timeout)
            for answer in responses:
                if len(results) == len(envelopes):
                    log.warning("peer %s answered more results than envelopes; ignoring the rest", peer_id)
                    cast("grpc.Future[object]", responses).cancel()  # the call is also a Future
                    break
                results.append(_result(answer))
        except grpc.RpcError as exc:
            ended = ended_by(exc)
            # Dial afresh next time rather than wait out the channel's own reconnect back-off
            # (up to minutes): the delivery loop's durable back-off already spaces the attempts.
            self._channels.forget(peer_id, channel)
            log.info(
                "delivery stream to %s ended (%s) after %d of %d", peer_id, ended.detail, len(results), len(envelopes)
            )
            return results + all_failed(len(envelopes) - len(results), ended)
        if len(results) < len(envelopes):
            short = failure(Reason.PEER_ERROR, "the stream ended without a result for every envelope")
            results += all_failed(len(envelopes) - len(results), short)
        return results

    def close(self) -> None:
        """Close every channel; streams still in flight end at once (gRPC cancels the calls of a
        closed channel), so a stopping node does not wait out a hung peer's timeout."""
        self._channels.close()


class Refused(GatewayError):
    """A delivery failure found before dialling (see :func:`check_peer`), carried out of a helper
    and turned into one result per envelope; never leaves a transport."""

    def __init__(self, error: DeliveryFailed) -> None:
        self.failure = error
        super().__init__(error.detail)


def ended_by(exc: grpc.RpcError) -> DeliveryFailed:
    """The failure for a gRPC error that ended a call (:func:`~gateway.exchange.retry.stream_failure`)."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    # The peer's public message is "<error code>: <text>"; keep only the code for the row.
    error_code = safe_code(details.split(":", 1)[0]) if details and ":" in details else ""
    return stream_failure(status_name(code), error_code)


def safe_code(text: str) -> str:
    """A peer-supplied error code, reduced to identifier characters (it is stored and logged)."""
    return "".join(ch for ch in text[:60] if ch.isascii() and (ch.isalnum() or ch in "_-."))


def identity_bytes(data: bytes) -> bytes:
    """The identity serialiser: bytes go on the wire exactly as they were signed and stored."""
    return data


def _result(answer: node_pb2.DeliveryResult) -> Result:
    kind = answer.WhichOneof("outcome")
    if kind == "receipt":
        # Re-serialising the Receipt keeps what its signature covers: the body travels as bytes.
        return Receipt(answer.receipt.SerializeToString())
    if kind == "refusal":
        status = status_from_number(answer.refusal.status_code)
        error_code = safe_code(answer.refusal.error_code)
        permanent = status is not None and is_permanent(status)
        return refusal_failure(permanent=permanent, status_name=status_name(status), error_code=error_code)
    return failure(Reason.PEER_ERROR, "an empty result")
