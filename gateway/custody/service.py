"""Custody on a node: sign, keep durably, send — and apply what peers send (SPEC §6).

Every action (:meth:`CustodyService.open_case`, :meth:`~CustodyService.offer`, ``accept``,
``decline``, ``recall_request``, ``recall``, ``close``) runs in **one transaction**: lock the case
(:func:`gateway.custody.store.locked_state`), check the rule for this node from the stored chain
(:func:`~gateway.custody.chain.can_act` and the pending offer), sign on the head, append through
the store (which verifies the node's own event like anyone else's), and queue the chain for every
other involved node in the outbox. The event is committed **before** anything leaves the node: a
crash after signing and before the commit loses an event nobody has seen, and after the commit the
node can never sign a different event on that head (the store's lock and ``(case_id, seq)`` key).

**Messages.** The ``custody_event`` purpose carries a ``tongban.v1.CustodyChain``: the sender's whole
chain of the case (chains are short), genesis first. An offerer's recall request — signed, never a
chain event — travels as one more event of the message, after the chain. :meth:`apply` is the
receiver's hook (``on_accept``, in the transaction that stores the envelope): each event goes
through :func:`gateway.custody.store.append` (duplicates are no-ops, unknown predecessors wait,
equivocations are kept as proofs); an event that does not verify or breaks the rules is dropped and
counted (``rejected.<code>``), never fatal to the envelope; a recall request for the offer pending
at this node's head is granted at once (the offer is not accepted yet: the offerer may have it
back). Then, if the sender's message lacks any event of this node's chain, this node queues its
chain back: after the network heals every involved node holds the same chain.

**Who may ask.** :meth:`who_holds` answers with the chain only to a node the chain names (genesis,
signers, offer targets, override parties); anyone else — and anyone asking about a case this node
does not hold — gets :class:`NotInvolved` (``PERMISSION_DENIED``), and both answers are audited.
Provincial operators have no TLS identity of their own: they obtain the chain file from a node of
their province (``tongban custody export``) and check it offline (``tongban custody verify``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, Engine

from gateway import audit
from gateway.config import supervisor_for
from gateway.custody import store
from gateway.custody.chain import CustodyState, can_act, step, verify_chain, verify_event
from gateway.custody.events import (
    Accept,
    Action,
    CaseType,
    Close,
    CustodyEvent,
    Decline,
    Genesis,
    Kind,
    Offer,
    Override,
    Recall,
    RecallRequest,
    SignedEvent,
    check_case_id,
    operator_prefix,
    operator_signer,
    sign_event,
)
from gateway.errors import (
    CustodyError,
    CustodySignerNotActive,
    GatewayError,
    NotInvolved,
    NotPermitted,
    OverrideRefused,
    UnknownCase,
)
from gateway.exchange import outbox
from gateway.exchange.envelope import seal
from gateway.exchange.purposes import Profiles, minimise
from gateway.store.keyring import DataKeyring
from gateway.trust.documents import NodeStatus
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory
from gateway.wire import custody_chain_to_wire

log = logging.getLogger("tongban.custody")

PURPOSE = "custody_event"
LIFETIME = timedelta(days=7)


def involved(state: CustodyState) -> frozenset[str]:
    """Every node the chain names: the genesis' two nodes, each signer, each offer's target and each
    override's parties. Provincial operators (``operator:<prefix>``) are not nodes."""
    names = {state.genesis.accepting_node, state.genesis.registration_node}
    for e in state.chain:
        names.add(e.signer)
        if isinstance(e.action, Offer):
            names.add(e.action.to_node)
        if isinstance(e.action, Override):
            names |= {e.action.lost_node, e.action.to_node}
    return frozenset(n for n in names if operator_prefix(n) is None)


@dataclass(frozen=True)
class Applied:
    """What :meth:`CustodyService.apply` did with one message (counts by outcome)."""

    case_id: str
    outcomes: dict[str, int]
    answered: bool  # this node queued its chain back to the sender


class CustodyService:
    """One node's custody actions and the applier of received custody messages (module docstring).

    ``directory`` returns the current verified directory (``TrustError`` if none is usable);
    ``clock`` the current time (timezone-aware).
    """

    def __init__(
        self,
        *,
        node_id: str,
        engine: Engine,
        keyring: DataKeyring,
        signer: Signer,
        directory: Callable[[], Directory],
        profiles: Profiles,
        clock: Callable[[], datetime],
        supervisors: Mapping[str, str] | None = None,
    ) -> None:
        self.node_id = node_id
        self._supervisors = dict(supervisors or {})  # [cases.supervisors]: division prefix -> node
        self._engine = engine
        self._keyring = keyring
        self._signer = signer
        self._directory = directory
        self._profile = profiles.get(PURPOSE)
        self._clock = clock

    # --- reading -------------------------------------------------------------------------------------

    def view(self, case_id: str) -> CustodyState | None:
        """The case as this node holds it (with any equivocation proofs), or ``None``."""
        with self._engine.connect() as conn:
            return store.view(conn, check_case_id(case_id), self._directory())

    def holder(self, case_id: str) -> str | None:
        """The node that holds the case (``None`` while an offer is pending); ``UnknownCase``."""
        state = self.view(case_id)
        if state is None:
            raise UnknownCase(f"case {case_id}")
        return state.holder

    def chain(self, case_id: str) -> tuple[SignedEvent, ...]:
        """The case's chain as signed, genesis first (empty if not held)."""
        with self._engine.connect() as conn:
            return store.chain(conn, check_case_id(case_id))

    def who_holds(self, case_id: str, asker: str) -> tuple[SignedEvent, ...]:
        """The chain, for a node the chain names or for the supervising node of an involved node's
        province (this node's ``[cases.supervisors]``: the provincial operator's node, SPEC §6);
        :class:`NotInvolved` for anyone else (also for a case this node does not hold: the answer
        does not reveal which). Audited either way."""
        check_case_id(case_id)
        with self._engine.begin() as conn:
            events = store.chain(conn, case_id)
            allowed = False
            if events:
                directory = self._directory()
                nodes = involved(store.replay(events, directory))
                allowed = asker in nodes or asker in self._supervisors_of(nodes, directory)
            audit.append(
                conn,
                actor=asker,
                action="custody_query" if allowed else "custody_query_denied",
                purpose=PURPOSE,
                reference=case_id,
                at=self._clock(),
            )
        if not allowed:
            log.info("custody: refused who-holds for case %s to %s", case_id, asker)
            raise NotInvolved(f"{asker} is not named in the chain of case {case_id} held here")
        return events

    def _supervisors_of(self, nodes: Iterable[str], directory: Directory) -> set[str]:
        """The configured supervising node (longest prefix) of each node's division."""
        found: set[str] = set()
        for node in nodes:
            try:
                division = directory.entry(node).division
            except GatewayError:
                continue
            supervisor = supervisor_for(self._supervisors, division)
            if supervisor is not None:
                found.add(supervisor)
        return found

    # --- acting --------------------------------------------------------------------------------------------

    def open_case(self, case_id: str, case_type: CaseType, registration_node: str, accepted_on: date) -> CustodyState:
        """Sign the genesis: this node accepted (受理) the case on ``accepted_on`` for
        ``registration_node``, and holds it. ``NotPermitted`` if this node already holds a chain."""
        check_case_id(case_id)
        with self._engine.begin() as conn:
            directory = self._directory()
            if store.locked_state(conn, case_id, directory) is not None:
                raise NotPermitted(f"case {case_id} is already open here")
            genesis = Genesis(case_type, self.node_id, accepted_on, registration_node)
            return self._sign_and_send(conn, directory, case_id, None, genesis)

    def offer(self, case_id: str, to: str) -> CustodyState:
        """Offer the case to ``to``: from now on nobody may act until ``to`` answers."""
        return self._act(case_id, Offer(to), self._require_can_act)

    def accept(self, case_id: str) -> CustodyState:
        """Accept the offer pending for this node: it holds the case from this signature on."""
        return self._act(case_id, Accept(), self._require_target)

    def decline(self, case_id: str) -> CustodyState:
        """Decline the offer pending for this node: the offerer holds the case again."""
        return self._act(case_id, Decline(), self._require_target)

    def close(self, case_id: str) -> CustodyState:
        """Close the case this node holds (办结): nothing may follow."""
        return self._act(case_id, Close(), self._require_can_act)

    def recall_request(self, case_id: str) -> SignedEvent:
        """Ask the target of this node's pending offer for the case back: sign a recall request on
        the offer and queue it (with the chain) to the target. Nothing changes until the target
        signs the recall. Returns the signed request."""
        check_case_id(case_id)
        with self._engine.begin() as conn:
            directory = self._directory()
            state = self._locked(conn, case_id, directory)
            pending = state.pending
            if pending is None or pending.from_node != self.node_id:
                raise NotPermitted(f"case {case_id}: this node has no pending offer to recall")
            request = self._sign(case_id, pending.offer, RecallRequest())
            self._queue(conn, directory, state, [pending.to_node], extra=(request.signed,))
            return request.signed

    def recall(self, case_id: str, request: SignedEvent) -> CustodyState:
        """Grant the offerer's ``request`` for the offer pending for this node."""
        check_case_id(case_id)
        with self._engine.begin() as conn:
            return self._grant(conn, self._directory(), case_id, request)

    def sign_within(self, conn: Connection, case_id: str, action: Action) -> CustodyState:
        """Sign ``action`` on the case's head **inside the caller's transaction** and queue the chain.

        For a service whose own change makes the custody action due (the case workflow signs the
        custody its steps imply in the step's transaction, :mod:`gateway.cases.custody_hook`). In
        order: the case is locked (``FOR UPDATE`` on PostgreSQL) until the caller commits; a genesis
        needs no chain here yet (``NotPermitted`` if there is one), any other action needs one
        (``UnknownCase``); the event is signed on the head and appended through the store, which
        applies the custody rules to it like to anyone's (``CustodyError``: nothing is kept); the
        chain is queued in the outbox to every other node it names. The caller's rollback undoes
        all of it: an event is durable (and sent) only with the change that made it due.
        """
        check_case_id(case_id)
        directory = self._directory()
        state = store.locked_state(conn, case_id, directory)
        if isinstance(action, Genesis):
            if state is not None:
                raise NotPermitted(f"case {case_id} is already open here")
            return self._sign_and_send(conn, directory, case_id, None, action)
        if state is None:
            raise UnknownCase(f"case {case_id}")
        return self._sign_and_send(conn, directory, case_id, state.head, action)

    def import_override(self, case_id: str, events: Sequence[SignedEvent]) -> CustodyState:
        """Take over a lost node's case from an operator's override file (``tongban custody import``).

        In order: the whole file verifies as the case's chain against this node's directory
        (:func:`~gateway.custody.chain.verify_chain`: signatures, keys, links, rules — an override
        only while its lost node is revoked here, and only by the operator of its province); its
        last event is an override (``OverrideRefused``). Then, in one transaction: each event this
        node does not hold yet is appended through the store (duplicates are no-ops; an event the
        lost node signed that this node never received cannot be appended as new —
        ``OverrideRefused``, import at a node that holds the chain up to the override); the chain
        is queued to every other node it names (so they learn the override), and an audit entry
        ``custody_override`` is written. Returns the state: the override's target holds the case.
        """
        check_case_id(case_id)
        directory = self._directory()
        now = self._clock()
        state = verify_chain(events, directory, now)
        if state.case_id != case_id:
            raise OverrideRefused(f"the file is the chain of case {state.case_id}, not {case_id}")
        last = state.chain[-1]
        if not isinstance(last.action, Override):
            raise OverrideRefused(f"case {case_id}: the chain does not end with an override")
        with self._engine.begin() as conn:
            for signed in events:
                try:
                    store.append(conn, signed, directory, now)
                except CustodySignerNotActive:
                    raise OverrideRefused(
                        f"case {case_id}: this node lacks events {signed.signer} signed before it was revoked"
                    ) from None
            mine = self._locked(conn, case_id, directory)
            if mine.head != state.head:
                raise OverrideRefused(f"case {case_id}: this node's chain does not end with the override")
            self._queue(conn, directory, mine, sorted(involved(mine) - {self.node_id}))
            audit.append(
                conn,
                actor=last.signer,
                action="custody_override",
                purpose=PURPOSE,
                reference=case_id,
                detail=f"lost={last.action.lost_node} to={last.action.to_node}",
                at=now,
            )
        log.warning(
            "custody: override on case %s by %s: %s -> %s",
            case_id,
            last.signer,
            last.action.lost_node,
            last.action.to_node,
        )
        return mine

    # --- applying what peers send ----------------------------------------------------------------------

    def apply(self, conn: Connection, sender: str, case_id: str, events: Sequence[SignedEvent]) -> Applied:
        """Apply one received custody message (its case id and events, converted by
        ``gateway.wire.custody_chain_from_wire``) inside the receiver's transaction: the server's
        ``on_accept`` hook calls this for every new ``custody_event`` envelope (module docstring)."""
        directory = self._directory()
        outcomes: dict[str, int] = {}
        requests: list[SignedEvent] = []
        for signed in events:
            try:
                if _kind(signed) is Kind.RECALL_REQUEST:
                    requests.append(signed)
                    continue
                result = store.append(conn, signed, directory, self._clock())
                outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
            except CustodyError as exc:
                store.METRICS.inc(f"rejected.{exc.code}")
                outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
                log.warning("custody: dropped an event of case %s from %s (%s)", case_id, sender, exc.code)
        for request in requests:
            try:
                self._grant(conn, directory, case_id, request)
            except CustodyError as exc:  # already answered (accepted or declined): the chain tells the offerer
                log.info("custody: recall request on case %s not granted (%s)", case_id, exc.code)
        mine = store.chain(conn, case_id)
        sent = {e.hash for e in events}
        answered = False
        if mine and any(e.hash not in sent for e in mine):
            state = store.replay(mine, directory)
            self._queue(conn, directory, state, [sender])
            answered = True
        return Applied(case_id, outcomes, answered)

    def resend(self, case_id: str, peers: Iterable[str] | None = None) -> list[str]:
        """Queue the chain again to ``peers`` (default: every other involved node): anti-entropy
        an operator can trigger. Returns the peers queued."""
        check_case_id(case_id)
        with self._engine.begin() as conn:
            directory = self._directory()
            state = self._locked(conn, case_id, directory)
            targets = sorted(peers) if peers is not None else sorted(involved(state) - {self.node_id})
            return self._queue(conn, directory, state, targets)

    # --- internals ---------------------------------------------------------------------------------------

    def _locked(self, conn: Connection, case_id: str, directory: Directory) -> CustodyState:
        state = store.locked_state(conn, case_id, directory)
        if state is None:
            raise UnknownCase(f"case {case_id}")
        return state

    def _require_can_act(self, state: CustodyState) -> None:
        if not can_act(state, self.node_id):
            raise NotPermitted(f"case {state.case_id}: this node is not the holder with nothing pending")

    def _require_target(self, state: CustodyState) -> None:
        if state.pending is None or state.pending.to_node != self.node_id:
            raise NotPermitted(f"case {state.case_id}: no offer is pending for this node")

    def _act(self, case_id: str, action: Action, require: Callable[[CustodyState], None]) -> CustodyState:
        check_case_id(case_id)
        with self._engine.begin() as conn:
            directory = self._directory()
            state = self._locked(conn, case_id, directory)
            require(state)
            return self._sign_and_send(conn, directory, case_id, state.head, action)

    def _grant(self, conn: Connection, directory: Directory, case_id: str, request: SignedEvent) -> CustodyState:
        verified = verify_event(request, directory, self._clock())
        state = self._locked(conn, case_id, directory)
        pending = state.pending
        if not isinstance(verified.action, RecallRequest) or verified.case_id != case_id:
            raise NotPermitted("not a recall request for this case")
        if pending is None or pending.to_node != self.node_id or verified.predecessor != pending.offer:
            raise NotPermitted(f"case {case_id}: no offer to this node is pending for that request")
        if verified.signer != pending.from_node:
            raise NotPermitted(f"case {case_id}: the recall was not requested by the offerer")
        return self._sign_and_send(conn, directory, case_id, state.head, Recall(request))

    def _sign(self, case_id: str, predecessor: str | None, action: Action) -> CustodyEvent:
        return sign_event(
            self._signer,
            signer_id=self.node_id,
            case_id=case_id,
            predecessor=predecessor,
            created=self._clock(),
            action=action,
        )

    def _sign_and_send(
        self, conn: Connection, directory: Directory, case_id: str, predecessor: str | None, action: Action
    ) -> CustodyState:
        event = self._sign(case_id, predecessor, action)
        result = store.append(conn, event.signed, directory, self._clock())
        if result.outcome is not store.Outcome.APPENDED:  # the lock makes this impossible; fail loudly
            raise NotPermitted(f"case {case_id}: own {action.kind.value} was {result.outcome.value}")
        state = self._locked(conn, case_id, directory)
        self._queue(conn, directory, state, sorted(involved(state) - {self.node_id}))
        log.info("custody: %s on case %s (head %s)", action.kind.value, case_id, state.head[:12])
        return state

    def _queue(
        self,
        conn: Connection,
        directory: Directory,
        state: CustodyState,
        peers: Sequence[str],
        *,
        extra: Sequence[SignedEvent] = (),
    ) -> list[str]:
        """Queue the chain (and ``extra`` events) to each peer that is in the directory."""
        events = [e.signed for e in state.chain] + list(extra)
        payload = minimise(self._profile, custody_chain_to_wire(state.case_id, events)).SerializeToString()
        now = self._clock()
        queued: list[str] = []
        for peer in peers:
            if peer == self.node_id:
                continue
            try:
                directory.entry(peer)
            except GatewayError:
                log.warning("custody: case %s names %s, which is not in the directory; not sent", state.case_id, peer)
                continue
            outgoing = seal(
                sender=self.node_id,
                recipient=peer,
                profile=self._profile,
                payload=payload,
                signer=self._signer,
                now=now,
                lifetime=LIFETIME,
            )
            outbox.enqueue(conn, outgoing, self._keyring, now=now)
            queued.append(peer)
        return queued


def sign_override(
    events: Sequence[SignedEvent],
    *,
    lost_node: str,
    to_node: str,
    signer: Signer,
    directory: Directory,
    now: datetime,
) -> tuple[SignedEvent, CustodyState]:
    """A provincial operator's override of a lost node's case, signed offline (``tongban custody
    override``): returns the signed event and the state it leaves the chain in.

    Checked, in order, before anything is signed: ``events`` verify as the case's chain against
    ``directory`` (:func:`~gateway.custody.chain.verify_chain`); ``signer``'s key is the operator
    key of a province of the root — that province is the signer, ``operator:<prefix>``
    (``OverrideRefused``); ``lost_node`` is in the directory, inside that prefix and **revoked**
    (``OverrideRefused``: revoke it, publish and rebuild the directory first, so the lost node can
    never act again); ``to_node`` is a node other than the lost one, active in the directory
    (``OverrideRefused``). Then the override is signed on the chain's head and run through the
    custody rules (:func:`~gateway.custody.chain.step`: the lost node must hold the case or be the
    target of its pending offer).
    """
    state = verify_chain(events, directory, now)
    key_id = signer.public_key.key_id
    prefixes = sorted(p for p, op in directory.root.provinces.items() if key_id in op.keys)
    if not prefixes:
        raise OverrideRefused(f"key {key_id} is not a provincial operator key of the root")
    prefix = prefixes[0]
    try:
        lost = directory.entry(lost_node)
        target = directory.entry(to_node)
    except GatewayError:
        raise OverrideRefused("the lost node or the new holder is not in the directory") from None
    if not lost.division.startswith(prefix):
        raise OverrideRefused(f"node {lost_node} ({lost.division}) is not in province {prefix}")
    if lost.status is not NodeStatus.REVOKED:
        raise OverrideRefused(f"node {lost_node} is {lost.status.value}, not revoked in directory v{directory.version}")
    if to_node == lost_node or target.status is not NodeStatus.ACTIVE:
        raise OverrideRefused(f"node {to_node} cannot take the case over (the lost node, or not active)")
    event = sign_event(
        signer,
        signer_id=operator_signer(prefix),
        case_id=state.case_id,
        predecessor=state.head,
        created=now,
        action=Override(lost_node, to_node),
    )
    return event.signed, step(state, event, directory)


def _kind(signed: SignedEvent) -> Kind | None:
    """The kind an unverified event claims (only to route recall requests; verified afterwards)."""
    try:
        doc = json.loads(signed.body)
        return Kind(doc["kind"]) if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
