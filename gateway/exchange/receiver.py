"""Receiving envelopes: every check of SPEC §3, in a fixed order, before anything is stored.

:meth:`Receiver.receive` takes an envelope (its bytes, or the message gRPC decoded) and the TLS peer
the interceptor authenticated (or, on the relay path below, the relay it came through), and runs
these checks **in this order**. The first that fails raises
its own :class:`~gateway.errors.ExchangeError` subclass and **nothing is written**:

1. **Size** — at most :data:`~gateway.exchange.envelope.MAX_ENVELOPE_BYTES` (``EnvelopeTooLarge``).
2. **Parse** the envelope and its header (``EnvelopeMalformed``). The header is read before the
   signature is checked only to learn the claimed sender and key; it is untrusted until step 5
   (:class:`~gateway.exchange.envelope.Unverified`). Syntax only: unknown fields, missing or
   over-long ids, a message id that is not a canonical UUID, times outside 1970–9999.
3. **TLS peer is the sender** (``SenderMismatch``): a node cannot send in another node's name, even
   with that node's stolen signature.
4. **Sender active** in the fresh directory (``SenderNotActive``: unknown, suspended or revoked, or
   its certificate outside its dates). The directory is fetched anew for every envelope, so a
   revocation takes effect at the next refresh, not at the next reconnect.
5. **Signature** over the exact bytes received, by a signing key the directory lists for the
   sender, valid at the envelope's ``created_at`` (rotation and overlap window applied)
   (``EnvelopeSignatureInvalid``).
6. **Payload digest** in the (now authenticated) header matches the payload (``EnvelopeMalformed``).
7. **Recipient is this node** (``WrongRecipient``): an envelope for another county cannot be
   replayed here.
8. **Purpose** known, active, of the version this node holds, with the profile's payload type, and
   allowed between this sender and this recipient: both in the directory, not the same node
   (``PurposeNotAllowed``).
9. **Message id**: an id already in the inbox with the **same** envelope digest is a duplicate —
   the stored receipt is returned and nothing changes (idempotent receiving); the same id with any
   other content is ``ReplayedMessage``.
10. **Time window** (``OutsideTimeWindow``): ``created_at <= now + max_skew``;
    ``expires_at >= now``; ``created_at < expires_at``; and ``expires_at - created_at`` within the
    profile's ``max_lifetime_seconds``.
11. **Payload** parsed by the purpose profile (``PayloadInvalid``, ``ForbiddenField`` for any field
    the profile does not declare), then the purpose's **pair rule** on the content
    (:data:`PAIR_RULES`; ``PurposeNotAllowed`` — e.g. every migrant notice must name the sender's
    county as the residence and this county as the registration place).
12. **Store and sign**, in one transaction: the inbox row (the whole envelope sealed at rest with
    the node's data key, context ``inbox\\0<message id>``), the ``on_accept`` hook (the audit log),
    and the signed receipt, which is stored in the row and returned.

Why the duplicate check (9) comes before the time window (10): a sender whose receipt was lost
retries until it gets one. If the retry arrives after the envelope expired, it must still get the
original receipt — otherwise a delivered message would be dead-lettered as refused. An identical
duplicate accepts nothing new, so no time rule applies to it; a *new* message still passes all of
10 and 11. Replays of expired envelopes whose inbox row has been pruned are refused by step 10.

**Two paths, one named.** Directly, the envelope arrives on a mutual-TLS call and step 3 binds it to
the TLS peer: the sender is authenticated twice, by its certificate *and* its signature, so a
stolen signing key alone cannot send in a node's name. Through a store-and-forward relay
(:mod:`gateway.exchange.relay`) the TLS peer is the relay, not the sender, so step 3 cannot hold;
:meth:`Receiver.receive` is then called with ``relayed_by=<the relay's entry>`` instead of ``peer``,
and step 3 becomes:

3'. **The relay is one this node accepts** (``RelayNotAllowed``): its node id is in the configured
    allow-list (``[exchange] relays``; an **empty list accepts no relayed envelope** — fail closed),
    and it is active in the same fresh directory as the sender (checked with step 4).

On that path **the sender is authenticated by the envelope signature alone** (step 5), which is why
the relay path exists only when an operator names the relays. Everything else — recipient, purpose
and pair rules, duplicate and replay protection, time window, payload profile — is identical, and
so is the receipt: it names the envelope digest, so a relay can neither alter the envelope nor pass
off a receipt for other content.

Errors that are not about the envelope propagate unchanged and store nothing either: the directory
unavailable or expired (``DirectoryUnavailable`` / ``DocumentExpired``), the database unavailable
(``StorageError``). :func:`gateway.status.exchange_status` maps every one of them, with the other
services' refusals, in one place; :func:`gateway.status.is_permanent` tells a sender whether
retrying can help.
"""

from __future__ import annotations

import hmac
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import datetime, timedelta

from google.protobuf.message import DecodeError, Message
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from tongban.v1 import cases_pb2, custody_pb2, envelope_pb2, exchange_pb2

from gateway.errors import (
    ExchangeError,
    NodeNotActive,
    OutsideTimeWindow,
    PurposeNotAllowed,
    RelayNotAllowed,
    ReplayedMessage,
    SenderMismatch,
    SenderNotActive,
    StorageError,
    UnknownNode,
    WrongRecipient,
)
from gateway.exchange.envelope import (
    Unverified,
    Verified,
    check_payload_digest,
    make_receipt,
    parse_envelope,
    verify_signature,
)
from gateway.exchange.purposes import Profiles, PurposeProfile, parse_payload
from gateway.store.keyring import DataKeyring
from gateway.store.schema import inbox
from gateway.trust.documents import NodeEntry
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory

OnAccept = Callable[[Connection, Verified], None]

# --- pair rules -------------------------------------------------------------------------------------

PairRule = Callable[[NodeEntry, NodeEntry, Message], None]


def _no_content_rule(sender: NodeEntry, recipient: NodeEntry, payload: Message) -> None:
    """The payload names no county: the base rule (two distinct directory nodes) is the whole rule."""


def _notices_between(sender: NodeEntry, recipient: NodeEntry, payload: Message) -> None:
    """SPEC §5: the residence node sends each registration county the notices of *its* children.
    Every notice must name the sender's division as residence and the recipient's as registration."""
    if not isinstance(payload, exchange_pb2.MigrantNoticeBatch):
        raise PurposeNotAllowed("a migrant notice batch was expected")
    for i, notice in enumerate(payload.notices):
        if notice.residence_division != sender.division:
            raise PurposeNotAllowed(f"notice {i}: the residence division is not the sender's ({sender.division})")
        if notice.registration_division != recipient.division:
            raise PurposeNotAllowed(
                f"notice {i}: the registration division is not the recipient's ({recipient.division})"
            )


def _custody_chain(sender: NodeEntry, recipient: NodeEntry, payload: Message) -> None:
    """A custody message is one case's events (signed by their own signers, checked one by one when
    applied by ``gateway.custody.service``): here only that it is one non-empty case."""
    if not isinstance(payload, custody_pb2.CustodyChain):
        raise PurposeNotAllowed("a custody chain was expected")
    if not payload.events or any(e.case_id != payload.case_id for e in payload.events):
        raise PurposeNotAllowed("a custody message must carry events of its one case")


def _supervision(sender: NodeEntry, recipient: NodeEntry, payload: Message) -> None:
    """督办 goes from a county to a supervising node of its own province, about a step the sender
    itself answers for: the alert names the sender as the responsible node, with its division."""
    if not isinstance(payload, cases_pb2.CaseSupervisionAlert):
        raise PurposeNotAllowed("a case supervision alert was expected")
    if payload.responsible_node != sender.node_id or payload.responsible_division != sender.division:
        raise PurposeNotAllowed("a supervision alert names the sender as the responsible node and county")
    if recipient.division[:2] != sender.division[:2]:
        raise PurposeNotAllowed("a supervision alert goes to a node of the sender's province")


PAIR_RULES: Mapping[str, PairRule] = {
    "migrant_notice": _notices_between,
    "match_result": _no_content_rule,  # answers notices this pair already exchanged
    "roster_manifest": _no_content_rule,
    "case_handoff": _no_content_rule,  # the content is end-to-end encrypted to the recipient
    "case_decision": _no_content_rule,  # likewise; gateway.cases.handoff checks the case's nodes after opening
    "custody_event": _custody_chain,  # any county to any county: the events name who is involved
    "case_supervision": _supervision,  # county -> a supervising node of its province
}
"""What each purpose's *content* must say about its sender and recipient. A purpose missing here is
refused (fail closed): whoever adds a purpose to ``purposes.toml`` must state its rule here."""


def check_pair(profile: PurposeProfile, sender: NodeEntry, recipient: NodeEntry, payload: Message | None) -> None:
    """Whether ``profile`` may travel from ``sender`` to ``recipient``; ``PurposeNotAllowed`` if not.

    Always: a rule exists for the purpose, and sender and recipient are different nodes. With a
    parsed ``payload`` (step 11), the purpose's content rule too. Roles are not a property of a node
    (every county is residence for some children and registration for others), so the direction a
    profile declares is enforced through the content, e.g. the divisions of a migrant notice.
    """
    rule = PAIR_RULES.get(profile.name)
    if rule is None:
        raise PurposeNotAllowed(f"purpose {profile.name} has no pair rule on this node")
    if sender.node_id == recipient.node_id:
        raise PurposeNotAllowed("a node does not send to itself")
    if payload is not None:
        rule(sender, recipient, payload)


# --- the receiver -------------------------------------------------------------------------------------


def _inbox_context(message_id: str) -> bytes:
    return b"inbox\0" + message_id.encode("ascii")


class Receiver:
    """Verifies and stores envelopes addressed to ``node_id`` (see the module docstring).

    ``relays`` are the node ids of the relays whose envelopes this node accepts (step 3'); empty,
    the default, refuses every relayed envelope.
    """

    def __init__(
        self,
        *,
        node_id: str,
        engine: Engine,
        keyring: DataKeyring,
        directory: Callable[[], Directory],
        profiles: Profiles,
        signer: Signer,
        clock: Callable[[], datetime],
        max_skew: timedelta = timedelta(minutes=5),
        on_accept: OnAccept | None = None,
        relays: Collection[str] = (),
    ) -> None:
        self.node_id = node_id
        self.relays = frozenset(relays)
        self._engine = engine
        self._keyring = keyring
        self._directory = directory
        self._profiles = profiles
        self._signer = signer
        self._clock = clock
        self._max_skew = max_skew
        self._on_accept = on_accept
        self._refusals: Counter[str] = Counter()  # refused envelopes by error code, since start
        self._refusals_lock = threading.Lock()

    def refusal_counts(self) -> dict[str, int]:
        """How many envelopes :meth:`receive` refused since this receiver was made, by error code
        (codes only, never a detail: :mod:`gateway.metrics` exports them)."""
        with self._refusals_lock:
            return dict(self._refusals)

    def receive(
        self,
        envelope: envelope_pb2.Envelope | bytes,
        peer: NodeEntry | None = None,
        *,
        relayed_by: NodeEntry | None = None,
    ) -> envelope_pb2.Receipt:
        """Run checks 1–12 of the module docstring and return the signed receipt.

        Exactly one of ``peer`` and ``relayed_by`` is given (``ValueError`` otherwise: a caller
        bug, never a peer's doing). ``peer`` is the directory entry the TLS interceptor
        authenticated for this call: the direct path, step 3 binds it to the sender. ``relayed_by``
        is the entry of the relay the envelope was pulled from: the relay path, step 3' instead,
        and the sender is authenticated by its signature alone. Raises the first failing check's
        ``ExchangeError``; ``TrustError`` if no usable directory is held; ``StorageError`` if the
        database fails. In every one of those cases nothing was written. Each ``ExchangeError`` is
        counted by its code (:meth:`refusal_counts`).
        """
        try:
            return self._receive(envelope, peer, relayed_by)
        except ExchangeError as exc:
            with self._refusals_lock:
                self._refusals[exc.code] += 1
            raise

    def _receive(
        self, envelope: envelope_pb2.Envelope | bytes, peer: NodeEntry | None, relayed_by: NodeEntry | None
    ) -> envelope_pb2.Receipt:
        if (peer is None) == (relayed_by is None):
            raise ValueError("give exactly one of peer (direct) and relayed_by (through a relay)")
        now = self._clock()
        unverified = parse_envelope(envelope)  # 1, 2
        header = unverified.header
        if peer is not None and header.sender != peer.node_id:  # 3
            raise SenderMismatch(f"TLS peer {peer.node_id} sent an envelope from {header.sender}")
        if relayed_by is not None and relayed_by.node_id not in self.relays:  # 3'
            raise RelayNotAllowed(f"{relayed_by.node_id} is not among this node's relays")
        directory = self._directory()
        directory.check_fresh(now)
        if relayed_by is not None:  # 3', with the directory of step 4
            try:
                directory.active(relayed_by.node_id, now)
            except (UnknownNode, NodeNotActive) as exc:
                raise RelayNotAllowed(exc.detail) from None
        try:  # 4
            sender = directory.active(header.sender, now)
        except (UnknownNode, NodeNotActive) as exc:
            raise SenderNotActive(exc.detail) from None
        key = verify_signature(unverified, directory=directory, now=now)  # 5
        check_payload_digest(unverified)  # 6
        if header.recipient != self.node_id:  # 7
            raise WrongRecipient(f"addressed to {header.recipient}, this node is {self.node_id}")
        profile = self._profiles.get(header.purpose, header.profile_version)  # 8
        if header.payload_type != profile.payload_type:
            raise PurposeNotAllowed(f"purpose {profile.name} carries {profile.payload_type}, not the header's type")
        try:
            recipient = directory.entry(self.node_id)
        except UnknownNode:
            raise PurposeNotAllowed(f"this node ({self.node_id}) is not in the directory") from None
        check_pair(profile, sender, recipient, None)
        stored = self._stored_receipt(unverified)  # 9
        if stored is not None:
            return stored
        self._check_time_window(unverified, profile, now)  # 10
        payload = parse_payload(profile, unverified.envelope.payload)  # 11
        check_pair(profile, sender, recipient, payload)
        verified = Verified(header, payload, profile, unverified.digest, sender, key.key_id)
        return self._store(unverified, verified, now)  # 12

    def receive_many(
        self,
        envelopes: Iterable[envelope_pb2.Envelope | bytes],
        peer: NodeEntry | None = None,
        *,
        relayed_by: NodeEntry | None = None,
    ) -> Iterator[envelope_pb2.Receipt | ExchangeError]:
        """:meth:`receive` for each envelope of a stream, in order: a receipt, or the
        ``ExchangeError`` that refused that envelope — one bad envelope does not stop the stream.
        Errors of the node itself (no directory, database down) do stop it: they would refuse every
        following envelope too, and the sender resends whatever got no receipt."""
        for envelope in envelopes:
            try:
                yield self.receive(envelope, peer, relayed_by=relayed_by)
            except ExchangeError as exc:
                yield exc

    # --- steps that touch the clock or the database ---------------------------------------------

    def _check_time_window(self, unverified: Unverified, profile: PurposeProfile, now: datetime) -> None:
        created, expires = unverified.created_at, unverified.expires_at
        if created > now + self._max_skew:
            raise OutsideTimeWindow("created in the future (beyond the allowed clock skew)")
        if expires < now:
            raise OutsideTimeWindow("expired")
        if expires <= created:
            raise OutsideTimeWindow("expires before it was created")
        if expires - created > timedelta(seconds=profile.max_lifetime_seconds):
            raise OutsideTimeWindow(f"valid for longer than purpose {profile.name} allows")

    def _stored_receipt(self, unverified: Unverified) -> envelope_pb2.Receipt | None:
        """The receipt of an identical envelope already received; ``ReplayedMessage`` for the same id
        with other content; ``None`` for a new id."""
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    select(inbox.c.envelope_sha256, inbox.c.receipt).where(inbox.c.message_id == unverified.message_id)
                ).one_or_none()
        except SQLAlchemyError as exc:
            raise StorageError(f"reading the inbox ({type(exc).__name__})") from None
        if row is None:
            return None
        if not hmac.compare_digest(bytes(row.envelope_sha256), unverified.digest):
            raise ReplayedMessage(f"message {unverified.message_id}")
        try:
            return envelope_pb2.Receipt.FromString(bytes(row.receipt))
        except DecodeError:
            raise StorageError(f"the stored receipt of message {unverified.message_id} does not decode") from None

    def _store(self, unverified: Unverified, verified: Verified, now: datetime) -> envelope_pb2.Receipt:
        receipt = make_receipt(
            message_id=verified.message_id,
            sender=verified.sender,
            receiver=self.node_id,
            envelope_digest=verified.digest,
            signer=self._signer,
            now=now,
        )
        sealed = self._keyring.seal(unverified.data, context=_inbox_context(verified.message_id))
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(inbox).values(
                        message_id=verified.message_id,
                        sender=verified.sender,
                        purpose=verified.purpose,
                        payload_type=verified.header.payload_type,
                        envelope_sha256=verified.digest,
                        key_id=sealed.key_id,
                        envelope_sealed=sealed.blob,
                        receipt=receipt.SerializeToString(),
                        received_at=now,
                        expires_at=verified.expires_at,
                        processed_at=None,
                    )
                )
                if self._on_accept is not None:
                    self._on_accept(conn, verified)
        except IntegrityError:
            # Two deliveries of one message id raced past step 9; the one that lost sees the winner's row.
            stored = self._stored_receipt(unverified)
            if stored is None:
                raise StorageError("the inbox refused the row") from None
            return stored
        except SQLAlchemyError as exc:
            raise StorageError(f"writing the inbox ({type(exc).__name__})") from None
        return receipt
