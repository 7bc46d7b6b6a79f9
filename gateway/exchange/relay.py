"""Store-and-forward through a relay (SPEC §7): the hub carries envelopes but can neither read nor forge them.

A **relay** is an ordinary enrolled node (a directory entry, a TLS certificate from its province)
that also serves ``tongban.v1.Relay`` (``[exchange] serve_relay = true``). Every call reaches it over
mutual TLS through the same :class:`~gateway.trust.interceptor.PeerAuthInterceptor` as
``NodeExchange``, so every caller is an active directory node. Three parts::

    sender                           relay (holds only ciphertext)            recipient
    outbox ─ DeliveryWorker          relay_items                              RelayPuller (a loop)
      RelayTransport.deliver ─Push─▶ held (sender, message id) ◀──Pull──     open → Receiver.receive(
        seal_item: HPKE(whole          │                                        relayed_by=relay) → inbox
        signed Envelope → recipient)   ▼                                        + signed receipt, committed
      ◀─RelayAck: receipt | held ── receipted ◀──────────────Ack(receipt)──  then acknowledged
      verify_receipt → delivered

**Confidentiality.** :func:`seal_item` seals the *whole serialised Envelope* — header and payload —
to the recipient's directory encryption key with HPKE (:func:`gateway.exchange.e2e.seal_to`), under a
context binding sender, recipient and message id (:func:`relay_context`, domain-separated from the
envelope-payload context). The relay sees those three routing fields, the expiry and the ciphertext;
nothing it stores or logs holds personal data.

**Integrity.** The envelope inside is signed end to end by the sender; the recipient's
:class:`~gateway.exchange.receiver.Receiver` verifies it on its relay path (step 3' of its docstring:
the relay must be in the recipient's ``[exchange] relays`` allow-list and active; the sender is
authenticated by its signature alone). A relay that flips a bit fails HPKE; a relay that seals an
envelope of its own (anyone can seal to a public key) fails the signature; one that rewrites the
routing fields fails HPKE's context or :func:`open_item`'s match against the envelope header. A
receipt is signed by the recipient over the envelope digest and checked by the sender with
:func:`~gateway.exchange.envelope.verify_receipt` before any outbox row becomes ``delivered``.

**What a relay can still do** is deny service — drop, delay, duplicate, replay, reorder — and none of
it changes what is stored: senders retry until they hold a verified receipt, receiving is idempotent
by message id, and a roster's manifest counts its batches whatever order they arrive in. A refusal
reported by the relay is unauthenticated, so a sender records it but never dead-letters a message on
the relay's word (``relay_refused`` is transient; only the retry horizon ends it).

**Delivery semantics.** The relay hands an item out at every ``Pull`` until the recipient settles it
with ``Ack`` — and the recipient acknowledges only after the receipt is committed with the inbox row
(at least once from the relay; exactly once in effect). Items are keyed by (sender, message id): a
sender's resend keeps the item first stored, collects the receipt once it exists, and re-queues a
fresh item only after a refusal.

Logs name node ids, message ids and error codes only.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric import x25519
from google.protobuf.message import DecodeError
from sqlalchemy import Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from tongban.v1 import envelope_pb2, exchange_pb2, relay_pb2, relay_pb2_grpc

from gateway.errors import (
    EnvelopeMalformed,
    EnvelopeTooLarge,
    ExchangeError,
    GatewayError,
    NodeNotActive,
    RelayItemInvalid,
    SealedPayloadRefused,
    SealProblem,
    StorageError,
    TrustError,
    UnknownNode,
)
from gateway.exchange import e2e
from gateway.exchange.envelope import (
    MAX_ENVELOPE_BYTES,
    MAX_RECEIPT_BYTES,
    from_ms,
    is_message_id,
    parse_envelope,
    to_ms,
)
from gateway.exchange.receiver import Receiver
from gateway.exchange.retry import Reason, failure
from gateway.exchange.transport import (
    Channels,
    Receipt,
    Refused,
    Result,
    all_failed,
    check_peer,
    ended_by,
    safe_code,
    status_from_number,
    status_name,
)
from gateway.status import exchange_status
from gateway.store.schema import relay_items
from gateway.trust.documents import NodeEntry
from gateway.trust.interceptor import authenticated_peer
from gateway.trust.signing import PublicKey
from gateway.trust.tls import TlsIdentity
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.relay")

INNER_TYPE = "tongban.v1.Envelope"
"""What a relay item's sealed plaintext is: one serialised, signed envelope."""

MAX_ITEM_BYTES = MAX_ENVELOPE_BYTES + 1024
"""The largest sealed item a relay stores or a recipient opens (an envelope plus HPKE overhead and
the SealedPayload's own fields)."""

MAX_PULL = 500
"""The most items one ``Pull`` returns, whatever the caller asks."""

SETTLED_RETENTION = timedelta(days=7)
"""How long a relay keeps a receipt (or a refusal) for the sender to collect."""

PRUNE_EVERY = timedelta(minutes=10)

_LABEL = "tongban.v1 relay item"
_HELD, _RECEIPTED, _REFUSED = "held", "receipted", "refused"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# --- sealing and opening (pure) -------------------------------------------------------------------------


def relay_context(*, sender: str, recipient: str, message_id: str) -> bytes:
    """The HPKE context of a relay item: the label, sender, recipient and message id, each
    length-prefixed. Its label differs from :func:`gateway.exchange.e2e.seal_context`, so a sealed
    case payload can never pass as a relay item or the other way round."""
    parts = (_LABEL, sender, recipient, message_id)
    return b"".join(struct.pack(">I", len(b)) + b for b in (p.encode("utf-8") for p in parts))


@dataclass(frozen=True)
class HeldItem:
    """A relay item as the relay stores and hands it out: routing fields and ciphertext."""

    sender: str
    recipient: str
    message_id: str
    expires_at: datetime
    sealed: bytes = field(repr=False)  # a serialised tongban.v1.SealedPayload


def seal_item(envelope: bytes, *, sender: str, recipient: NodeEntry) -> HeldItem:
    """Seal one outgoing envelope for the hop through a relay.

    The envelope's header is parsed (syntax only: this node signed it) and must name ``sender``
    and ``recipient`` (``RelayItemInvalid``: a caller bug, never sent); then the whole envelope is
    sealed to ``recipient.encryption_key`` under :func:`relay_context` (``UnknownAlgorithm`` if the
    directory lists a key that cannot seal).
    """
    parsed = parse_envelope(envelope)
    header = parsed.header
    if header.sender != sender or header.recipient != recipient.node_id:
        raise RelayItemInvalid("the envelope does not go from this node to the peer it is delivered to")
    context = relay_context(sender=sender, recipient=recipient.node_id, message_id=header.message_id)
    sealed = e2e.seal_to(recipient.encryption_key, envelope, inner_type=INNER_TYPE, context=context)
    return HeldItem(sender, recipient.node_id, header.message_id, parsed.expires_at, sealed.SerializeToString())


def open_item(item: HeldItem, *, node_id: str, private: x25519.X25519PrivateKey, own_key: PublicKey) -> bytes:
    """Open a pulled item addressed to ``node_id`` and return the envelope bytes inside, unverified
    (the :class:`~gateway.exchange.receiver.Receiver` verifies them next).

    In order: the item is addressed to this node (``RelayItemInvalid``); it is within
    :data:`MAX_ITEM_BYTES` (``EnvelopeTooLarge``); it decodes as a SealedPayload of
    :data:`INNER_TYPE` (``SealedPayloadRefused``, ``MALFORMED``); it opens with this node's key under
    the context of the item's own routing fields (``SealedPayloadRefused``:
    :func:`gateway.exchange.e2e.open_sealed`'s checks — tampering and a rewritten sender, recipient
    or message id all end here); the envelope inside parses and its header names the same sender,
    recipient and message id (``RelayItemInvalid``).
    """
    if item.recipient != node_id:
        raise RelayItemInvalid(f"an item for {item.recipient} was handed to {node_id}")
    if len(item.sealed) > MAX_ITEM_BYTES:
        raise EnvelopeTooLarge(f"a relay item of {len(item.sealed)} bytes")
    try:
        sealed = exchange_pb2.SealedPayload.FromString(item.sealed)
    except DecodeError:
        raise SealedPayloadRefused(SealProblem.MALFORMED, "the relay item does not decode") from None
    if sealed.inner_type != INNER_TYPE:
        raise SealedPayloadRefused(SealProblem.MALFORMED, "the relay item does not carry an envelope")
    context = relay_context(sender=item.sender, recipient=item.recipient, message_id=item.message_id)
    data = e2e.open_sealed(sealed, private, own_key, context=context)
    header = parse_envelope(data).header
    if (header.sender, header.recipient, header.message_id) != (item.sender, item.recipient, item.message_id):
        raise RelayItemInvalid("the relay item's routing fields do not match its envelope")
    return data


# --- what the relay answers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """Stored (or already stored); no receipt yet."""


@dataclass(frozen=True)
class Receipted:
    """The recipient's signed receipt, as the relay holds it (unverified: the sender verifies)."""

    receipt: bytes = field(repr=False)


@dataclass(frozen=True)
class ItemRefused:
    """A refusal: by the relay itself, or by the recipient as the relay reports it."""

    status_code: int  # a grpc.StatusCode number
    error_code: str
    by_recipient: bool


PushOutcome = Held | Receipted | ItemRefused


@dataclass(frozen=True)
class Settlement:
    """The recipient's outcome for one pulled item: exactly one of ``receipt`` and ``refusal``."""

    sender: str
    message_id: str
    receipt: bytes | None = field(default=None, repr=False)
    refusal: ItemRefused | None = None

    def __post_init__(self) -> None:
        if (self.receipt is None) == (self.refusal is None):
            raise ValueError("a settlement is a receipt or a refusal")


# --- wire conversion (the one place) --------------------------------------------------------------------


def item_to_wire(item: HeldItem) -> relay_pb2.RelayItem:
    return relay_pb2.RelayItem(
        sender=item.sender,
        recipient=item.recipient,
        message_id=item.message_id,
        expires_at_ms=to_ms(item.expires_at),
        sealed=item.sealed,
    )


def item_from_wire(item: relay_pb2.RelayItem) -> HeldItem:
    """``EnvelopeMalformed`` for an expiry outside 1970–9999."""
    return HeldItem(
        item.sender, item.recipient, item.message_id, from_ms(item.expires_at_ms, "expires_at"), item.sealed
    )


def refusal_to_wire(refusal: ItemRefused) -> relay_pb2.RelayRefusal:
    return relay_pb2.RelayRefusal(
        status_code=refusal.status_code,
        error_code=refusal.error_code,
        message="refused by the recipient" if refusal.by_recipient else "refused by the relay",
        by_recipient=refusal.by_recipient,
    )


def refusal_from_wire(refusal: relay_pb2.RelayRefusal) -> ItemRefused:
    return ItemRefused(refusal.status_code, safe_code(refusal.error_code), refusal.by_recipient)


def push_outcome_to_wire(message_id: str, outcome: PushOutcome) -> relay_pb2.RelayAck:
    if isinstance(outcome, Receipted):
        return relay_pb2.RelayAck(message_id=message_id, receipt=envelope_pb2.Receipt.FromString(outcome.receipt))
    if isinstance(outcome, ItemRefused):
        return relay_pb2.RelayAck(message_id=message_id, refusal=refusal_to_wire(outcome))
    return relay_pb2.RelayAck(message_id=message_id, held=True)


def push_outcome_from_wire(ack: relay_pb2.RelayAck) -> PushOutcome | None:
    """``None`` for an ack without an outcome. A receipt is re-serialised: its body travels as bytes,
    so what its signature covers is unchanged."""
    kind = ack.WhichOneof("outcome")
    if kind == "receipt":
        return Receipted(ack.receipt.SerializeToString())
    if kind == "refusal":
        return refusal_from_wire(ack.refusal)
    if kind == "held":
        return Held()
    return None


def settlement_to_wire(s: Settlement) -> relay_pb2.RelayOutcome:
    if s.receipt is not None:
        receipt = envelope_pb2.Receipt.FromString(s.receipt)
        return relay_pb2.RelayOutcome(sender=s.sender, message_id=s.message_id, receipt=receipt)
    assert s.refusal is not None  # __post_init__
    return relay_pb2.RelayOutcome(sender=s.sender, message_id=s.message_id, refusal=refusal_to_wire(s.refusal))


def settlement_from_wire(outcome: relay_pb2.RelayOutcome) -> Settlement | None:
    """``None`` for an outcome without a receipt or a refusal. A refusal from a recipient is marked
    ``by_recipient`` whatever the wire says."""
    kind = outcome.WhichOneof("outcome")
    if kind == "receipt":
        return Settlement(outcome.sender, outcome.message_id, receipt=outcome.receipt.SerializeToString())
    if kind == "refusal":
        refused = refusal_from_wire(outcome.refusal)
        return Settlement(
            outcome.sender, outcome.message_id, refusal=ItemRefused(refused.status_code, refused.error_code, True)
        )
    return None


# --- the relay's store ------------------------------------------------------------------------------------


class RelayStore(Protocol):
    """What a relay keeps: held items, then the receipt or refusal for each (see the module docstring)."""

    def push(self, item: HeldItem, now: datetime) -> PushOutcome:
        """Store ``item`` unless (sender, message id) is known; answer what the relay holds for it."""
        ...

    def pending(self, recipient: str, limit: int, now: datetime) -> list[HeldItem]:
        """Up to ``limit`` unexpired held items for ``recipient``, oldest first."""
        ...

    def settle(self, recipient: str, settlements: Sequence[Settlement], now: datetime) -> int:
        """Record outcomes for items held for ``recipient`` (others are ignored); return how many changed."""
        ...

    def prune(self, now: datetime) -> int:
        """Forget expired held items and settled items past :data:`SETTLED_RETENTION`."""
        ...


class SqlRelayStore:
    """:class:`RelayStore` on the node database (table ``relay_items``; SQLite or PostgreSQL).

    ``push`` inserts first and, if (sender, message id) exists, reads the row under a row lock: a
    held item stays as first stored (``Held``), a receipted one answers its receipt, a refused one
    is re-queued with the new item and answers the refusal once. ``settle`` changes only rows whose
    recipient is the caller: a receipt settles any row not yet receipted (the first receipt is
    kept), a refusal only a held row. Raises ``StorageError`` (never a driver exception).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def push(self, item: HeldItem, now: datetime) -> PushOutcome:
        now, c = _utc(now), relay_items.c
        key = and_(c.sender == item.sender, c.message_id == item.message_id)
        try:
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        insert(relay_items).values(
                            sender=item.sender,
                            message_id=item.message_id,
                            recipient=item.recipient,
                            state=_HELD,
                            item=item.sealed,
                            pushed_at=now,
                            expires_at=_utc(item.expires_at),
                        )
                    )
                return Held()
            except IntegrityError:
                pass  # known (sender, message id): answer what is held for it
            with self._engine.begin() as conn:
                row = conn.execute(
                    select(c.recipient, c.state, c.receipt, c.refusal_status, c.refusal_code)
                    .where(key)
                    .with_for_update()
                ).one()
                if row.state == _RECEIPTED:
                    return Receipted(bytes(row.receipt))
                if row.state == _HELD:
                    return Held()
                conn.execute(
                    update(relay_items)
                    .where(key, c.state == _REFUSED)
                    .values(
                        state=_HELD,
                        recipient=item.recipient,
                        item=item.sealed,
                        pushed_at=now,
                        expires_at=_utc(item.expires_at),
                        refusal_status=None,
                        refusal_code=None,
                        settled_at=None,
                    )
                )
                return ItemRefused(int(row.refusal_status or 0), str(row.refusal_code or ""), True)
        except SQLAlchemyError as exc:
            raise StorageError(f"relay store: push ({type(exc).__name__})") from None

    def pending(self, recipient: str, limit: int, now: datetime) -> list[HeldItem]:
        c = relay_items.c
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(c.sender, c.recipient, c.message_id, c.expires_at, c.item)
                    .where(c.recipient == recipient, c.state == _HELD, c.expires_at > _utc(now))
                    .order_by(c.pushed_at, c.sender, c.message_id)
                    .limit(max(1, limit))
                ).all()
        except SQLAlchemyError as exc:
            raise StorageError(f"relay store: pending ({type(exc).__name__})") from None
        return [HeldItem(r.sender, r.recipient, r.message_id, _utc(r.expires_at), bytes(r.item)) for r in rows]

    def settle(self, recipient: str, settlements: Sequence[Settlement], now: datetime) -> int:
        now, c = _utc(now), relay_items.c
        changed = 0
        try:
            with self._engine.begin() as conn:
                for s in settlements:
                    mine = and_(c.sender == s.sender, c.message_id == s.message_id, c.recipient == recipient)
                    if s.receipt is not None:
                        stmt = (
                            update(relay_items)
                            .where(mine, c.state != _RECEIPTED)
                            .values(
                                state=_RECEIPTED,
                                item=None,
                                receipt=s.receipt,
                                refusal_status=None,
                                refusal_code=None,
                                settled_at=now,
                            )
                        )
                    else:
                        assert s.refusal is not None  # Settlement.__post_init__
                        stmt = (
                            update(relay_items)
                            .where(mine, c.state == _HELD)
                            .values(
                                state=_REFUSED,
                                item=None,
                                refusal_status=s.refusal.status_code,
                                refusal_code=s.refusal.error_code[:64],
                                settled_at=now,
                            )
                        )
                    changed += conn.execute(stmt).rowcount
        except SQLAlchemyError as exc:
            raise StorageError(f"relay store: settle ({type(exc).__name__})") from None
        return changed

    def prune(self, now: datetime) -> int:
        now, c = _utc(now), relay_items.c
        try:
            with self._engine.begin() as conn:
                result = conn.execute(
                    delete(relay_items).where(
                        or_(
                            and_(c.state == _HELD, c.expires_at <= now),
                            and_(c.state != _HELD, c.settled_at < now - SETTLED_RETENTION),
                        )
                    )
                )
        except SQLAlchemyError as exc:
            raise StorageError(f"relay store: prune ({type(exc).__name__})") from None
        return int(result.rowcount)


# --- the relay service (thin) -------------------------------------------------------------------------


def _own_refusal(code: grpc.StatusCode, error_code: str) -> ItemRefused:
    return ItemRefused(code.value[0], error_code, by_recipient=False)


class RelayServicer(relay_pb2_grpc.RelayServicer):
    """``tongban.v1.Relay`` over a :class:`RelayStore`. Every call was admitted by the interceptor,
    so :func:`~gateway.trust.interceptor.authenticated_peer` is an active directory node.

    ``Push`` refuses, per item and without storing it: a sender that is not the TLS peer
    (``sender_mismatch``); a message id that is not a UUID, an empty or oversized item
    (``relay_item_invalid``, ``envelope_too_large``); an item already expired
    (``outside_time_window``); a recipient that is not an active node in this relay's directory
    (``recipient_not_active``). ``Pull`` returns only items whose recipient is the TLS peer;
    ``Ack`` settles only those. A failing store ends the call ``UNAVAILABLE``.
    """

    def __init__(self, store: RelayStore, *, directory: Callable[[datetime], Directory], clock: Clock) -> None:
        self._store = store
        self._directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._last_prune: datetime | None = None

    def _check(self, item: relay_pb2.RelayItem, peer: NodeEntry, now: datetime) -> HeldItem | ItemRefused:
        if item.sender != peer.node_id:
            return _own_refusal(grpc.StatusCode.PERMISSION_DENIED, "sender_mismatch")
        if not is_message_id(item.message_id) or not item.sealed:
            return _own_refusal(grpc.StatusCode.INVALID_ARGUMENT, RelayItemInvalid.code)
        if len(item.sealed) > MAX_ITEM_BYTES:
            return _own_refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, EnvelopeTooLarge.code)
        try:
            held = item_from_wire(item)
        except EnvelopeMalformed:
            return _own_refusal(grpc.StatusCode.INVALID_ARGUMENT, RelayItemInvalid.code)
        if held.expires_at <= now:
            return _own_refusal(grpc.StatusCode.FAILED_PRECONDITION, "outside_time_window")
        try:
            self._directory(now).active(item.recipient, now)
        except (UnknownNode, NodeNotActive):
            return _own_refusal(grpc.StatusCode.FAILED_PRECONDITION, "recipient_not_active")
        return held

    def Push(
        self, request_iterator: Iterator[relay_pb2.RelayItem], context: grpc.ServicerContext
    ) -> Iterator[relay_pb2.RelayAck]:
        peer = authenticated_peer()
        held = 0
        try:
            self._maybe_prune()
            for item in request_iterator:
                now = self._clock()
                checked = self._check(item, peer, now)
                outcome = checked if isinstance(checked, ItemRefused) else self._store.push(checked, now)
                held += isinstance(outcome, Held)
                yield push_outcome_to_wire(item.message_id, outcome)
        except GatewayError as exc:
            log.warning("relay push from %s failed (%s)", peer.node_id, exc.code)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.public_message}")
        log.debug("relay push from %s: %d item(s) held", peer.node_id, held)

    def Pull(self, request: relay_pb2.PullRequest, context: grpc.ServicerContext) -> Iterator[relay_pb2.RelayItem]:
        peer = authenticated_peer()
        limit = min(request.max_items or 100, MAX_PULL)
        try:
            # Only ever the caller's own items: the query is by the authenticated peer, not by a request field.
            items = self._store.pending(peer.node_id, limit, self._clock())
        except GatewayError as exc:
            log.warning("relay pull by %s failed (%s)", peer.node_id, exc.code)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.public_message}")
        for item in items:
            yield item_to_wire(item)

    def Ack(self, request: relay_pb2.AckRequest, context: grpc.ServicerContext) -> relay_pb2.AckResponse:
        peer = authenticated_peer()
        settlements = []
        for outcome in request.outcomes:
            settlement = settlement_from_wire(outcome)
            if settlement is None or (settlement.receipt is not None and len(settlement.receipt) > MAX_RECEIPT_BYTES):
                continue  # not an outcome; the item stays held and comes back at the next pull
            settlements.append(settlement)
        try:
            settled = self._store.settle(peer.node_id, settlements, self._clock())
        except GatewayError as exc:
            log.warning("relay ack by %s failed (%s)", peer.node_id, exc.code)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc.public_message}")
        return relay_pb2.AckResponse(settled=settled)

    def _maybe_prune(self) -> None:
        now = self._clock()
        with self._lock:
            if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
                return
            self._last_prune = now
        try:
            pruned = self._store.prune(now)
        except GatewayError as exc:  # housekeeping: never the reason a push fails
            log.warning("relay: pruning failed (%s)", exc.code)
            return
        if pruned:
            log.info("relay: pruned %d expired or settled item(s)", pruned)


# --- the sender side: a Transport through the relay -----------------------------------------------------

_RELAY_SERVICE = relay_pb2.DESCRIPTOR.services_by_name["Relay"]
PUSH = f"/{_RELAY_SERVICE.full_name}/Push"


class RelayTransport:
    """A :class:`~gateway.exchange.transport.Transport` that delivers through relay ``relay_id``.

    ``deliver(peer, envelopes)``: the peer and the relay must be usable in our current directory
    (the peer as for :class:`~gateway.exchange.transport.GrpcTransport`; a relay that is not active
    is ``relay_unusable``, transient: the relay's trouble never dead-letters a message); each
    envelope is sealed to the peer (:func:`seal_item`) and the batch pushed in one stream. Each
    answer, in order: the peer's receipt (the delivery loop verifies it), ``awaiting_receipt`` while
    the relay holds the item, ``relay_refused`` for a refusal (transient), or the failure for the
    status that ended the stream.
    """

    def __init__(
        self,
        *,
        node_id: str,
        relay_id: str,
        identity: TlsIdentity,
        directory: Callable[[datetime], Directory],
        clock: Clock,
        timeout: float = 60.0,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self.node_id = node_id
        self.relay_id = relay_id
        self._directory = directory
        self._clock = clock
        self._timeout = timeout
        self._channels = Channels(identity, options)

    def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
        if not envelopes:
            return []
        now = self._clock()
        try:
            directory = check_peer(self._directory, peer_id, now)
            try:
                check_peer(self._directory, self.relay_id, now)
            except Refused as exc:
                raise Refused(failure(Reason.RELAY_UNUSABLE, f"relay {self.relay_id}: {exc.failure.detail}")) from None
            channel = self._channels.channel(self.relay_id, directory, now)
        except Refused as exc:
            return all_failed(len(envelopes), exc.failure)
        recipient = directory.entry(peer_id)
        results: list[Result | None] = [None] * len(envelopes)
        items: list[tuple[int, HeldItem]] = []
        for i, data in enumerate(envelopes):
            try:
                items.append((i, seal_item(data, sender=self.node_id, recipient=recipient)))
            except ExchangeError as exc:  # not an envelope from us to this peer: a bug upstream
                results[i] = failure(Reason.UNREADABLE, exc.code)
            except TrustError as exc:  # e.g. UnknownAlgorithm: the peer's key cannot be sealed to
                results[i] = failure(Reason.RELAY_UNUSABLE, exc.code)
        answers = self._push(channel, [item for _, item in items]) if items else []
        for (i, _), answer in zip(items, answers, strict=True):
            results[i] = answer
        done = [r for r in results if r is not None]
        assert len(done) == len(envelopes)  # every envelope was sealed-and-answered or failed
        receipts = sum(isinstance(r, Receipt) for r in done)
        log.info(
            "pushed %d envelope(s) for %s to relay %s: %d receipt(s)", len(items), peer_id, self.relay_id, receipts
        )
        return done

    def _push(self, channel: grpc.Channel, items: Sequence[HeldItem]) -> list[Result]:
        call = channel.stream_stream(
            PUSH,
            request_serializer=relay_pb2.RelayItem.SerializeToString,
            response_deserializer=relay_pb2.RelayAck.FromString,
        )
        results: list[Result] = []
        try:
            for ack in call(iter([item_to_wire(i) for i in items]), timeout=self._timeout):
                if len(results) == len(items):
                    break  # more answers than items: ignore the rest
                results.append(self._result(items[len(results)], ack))
        except grpc.RpcError as exc:
            ended = ended_by(exc)
            self._channels.forget(self.relay_id, channel)
            log.info(
                "push to relay %s ended (%s) after %d of %d", self.relay_id, ended.detail, len(results), len(items)
            )
            return results + all_failed(len(items) - len(results), ended)
        if len(results) < len(items):
            short = failure(Reason.PEER_ERROR, "the relay ended the stream without an answer for every item")
            results += all_failed(len(items) - len(results), short)
        return results

    def _result(self, item: HeldItem, ack: relay_pb2.RelayAck) -> Result:
        if ack.message_id != item.message_id:
            return failure(Reason.PEER_ERROR, f"relay {self.relay_id} answered for another message")
        outcome = push_outcome_from_wire(ack)
        if isinstance(outcome, Receipted):
            return Receipt(outcome.receipt)
        if isinstance(outcome, Held):
            return failure(Reason.AWAITING_RECEIPT, f"held by relay {self.relay_id}")
        if isinstance(outcome, ItemRefused):
            by = "recipient" if outcome.by_recipient else "relay"
            status = status_from_number(outcome.status_code)
            return failure(Reason.RELAY_REFUSED, f"{by} {outcome.error_code} ({status_name(status)})")
        return failure(Reason.PEER_ERROR, f"relay {self.relay_id} sent an empty answer")

    def close(self) -> None:
        self._channels.close()


# --- the recipient side: pulling --------------------------------------------------------------------------

_PULL = f"/{_RELAY_SERVICE.full_name}/Pull"
_ACK = f"/{_RELAY_SERVICE.full_name}/Ack"


@dataclass(frozen=True)
class PullOutcome:
    """What one :meth:`RelayPuller.pull_once` did. ``error`` is a reason code when the round could
    not run (relay unusable or unreachable, this node's own trouble)."""

    pulled: int = 0
    accepted: int = 0  # receipts (new or duplicate) acknowledged
    refused: int = 0
    skipped: int = 0  # items not addressed to this node: never opened, never acknowledged
    acked: bool = False
    error: str = ""


def _refusal(error: GatewayError) -> ItemRefused:
    return ItemRefused(exchange_status(error).value[0], error.code, by_recipient=True)


class RelayPuller:
    """Pulls this node's items from relay ``relay_id``, receives them, and acknowledges them.

    One round (:meth:`pull_once`): the relay must be active in our directory; ``Pull`` up to
    ``batch_size`` items; for each, :func:`open_item` then ``receiver.receive(..., relayed_by=relay)``
    — the receipt is committed with the inbox row before ``receive`` returns; a refused item
    (any ``ExchangeError``) gets its refusal. Then one ``Ack`` with every outcome. This node's own
    trouble (no directory, database down, a key that does not match the directory) stops the round
    before the item it hit: what is not acknowledged comes back at the next pull. :meth:`start`
    runs rounds in a thread — again at once after a full batch, else after ``poll_interval``.
    """

    def __init__(
        self,
        *,
        node_id: str,
        relay_id: str,
        receiver: Receiver,
        identity: TlsIdentity,
        directory: Callable[[datetime], Directory],
        encryption_key: x25519.X25519PrivateKey,
        clock: Clock = _utc_now,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        timeout: float = 60.0,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        if batch_size < 1 or poll_interval <= 0:
            raise ValueError("batch_size and poll_interval must be positive")
        self.node_id = node_id
        self.relay_id = relay_id
        self._receiver = receiver
        self._directory = directory
        self._private = encryption_key
        self._clock = clock
        self._batch = min(batch_size, MAX_PULL)
        self._poll = poll_interval
        self._timeout = timeout
        self._channels = Channels(identity, options)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def pull_once(self) -> PullOutcome:
        now = self._clock()
        try:
            directory = check_peer(self._directory, self.relay_id, now)
            relay = directory.active(self.relay_id, now)
            own_key = directory.active(self.node_id, now).encryption_key
            channel = self._channels.channel(self.relay_id, directory, now)
        except Refused as exc:
            return self._failed(exc.failure.detail or exc.failure.code)
        except TrustError as exc:
            return self._failed(f"{Reason.DIRECTORY_UNUSABLE.value}: {exc.code}")
        try:
            pull = channel.unary_stream(
                _PULL,
                request_serializer=relay_pb2.PullRequest.SerializeToString,
                response_deserializer=relay_pb2.RelayItem.FromString,
            )
            wire_items = list(pull(relay_pb2.PullRequest(max_items=self._batch), timeout=self._timeout))
        except grpc.RpcError as exc:
            self._channels.forget(self.relay_id, channel)
            return self._failed(ended_by(exc).detail or "pull failed")
        settlements: list[Settlement] = []
        accepted = refused = skipped = 0
        error = ""
        for wire in wire_items:
            try:
                item = item_from_wire(wire)
            except EnvelopeMalformed:
                skipped += 1
                continue
            if item.recipient != self.node_id:
                skipped += 1  # the relay handed out someone else's item: never open or acknowledge it
                log.warning("relay %s handed this node an item for another node; ignored", self.relay_id)
                continue
            try:
                data = open_item(item, node_id=self.node_id, private=self._private, own_key=own_key)
                receipt = self._receiver.receive(data, relayed_by=relay)
            except ExchangeError as exc:
                refused += 1
                log.info(
                    "refused relayed message %s from %s via %s (%s)",
                    safe_code(item.message_id),  # routing fields come from the relay: untrusted text
                    safe_code(item.sender),
                    self.relay_id,
                    exc.code,
                )
                settlements.append(Settlement(item.sender, item.message_id, refusal=_refusal(exc)))
                continue
            except GatewayError as exc:  # this node's own trouble: stop; the rest comes back next pull
                error = exc.code
                log.warning("pulling from relay %s stopped (%s)", self.relay_id, exc.code)
                break
            accepted += 1
            settlements.append(Settlement(item.sender, item.message_id, receipt=receipt.SerializeToString()))
        acked = False
        if settlements:
            try:
                ack = channel.unary_unary(
                    _ACK,
                    request_serializer=relay_pb2.AckRequest.SerializeToString,
                    response_deserializer=relay_pb2.AckResponse.FromString,
                )
                ack(relay_pb2.AckRequest(outcomes=[settlement_to_wire(s) for s in settlements]), timeout=self._timeout)
                acked = True
            except grpc.RpcError as exc:  # the items come back at the next pull; receiving them is idempotent
                self._channels.forget(self.relay_id, channel)
                error = error or (ended_by(exc).detail or "ack failed")
                log.info("acknowledging to relay %s failed (%s)", self.relay_id, error)
        return PullOutcome(len(wire_items), accepted, refused, skipped, acked, error)

    def _failed(self, reason: str) -> PullOutcome:
        log.info("cannot pull from relay %s (%s)", self.relay_id, reason)
        return PullOutcome(error=reason)

    # --- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the relay puller is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"relay-pull-{self.relay_id}", daemon=True)
        self._thread.start()
        log.info("pulling from relay %s", self.relay_id)

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current round (closing the channel ends a call in flight at once)."""
        self.request_stop()
        self._channels.close()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                outcome = self.pull_once()
            except Exception as exc:  # noqa: BLE001 - one bad round must not end the loop
                log.error("relay pull from %s failed (%s)", self.relay_id, type(exc).__name__)
                outcome = PullOutcome(error="internal")
            if outcome.pulled >= self._batch and not outcome.error:
                continue  # a full batch: there may be more waiting
            self._stopping.wait(self._poll)
