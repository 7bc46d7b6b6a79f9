"""The custody rules, and the fold of a case's events into who holds it (SPEC §6).

Pure: events, a verified :class:`~gateway.trust.verifier.Directory` and, where keys are judged, an
explicit ``now``. Nothing here reads a clock, a file or a socket.

**The rules.** Each event names its predecessor's hash; the state a predecessor leaves the case in
says who may sign the next event:

============  ==========================================  =====================================
event         may be signed by, on a head where …         afterwards
============  ==========================================  =====================================
genesis       the accepting node it names (no predecessor)  holder = accepting node
offer(to=B)   the holder, no offer pending, B ≠ holder,   holder = none; offer pending (A → B)
              B in the directory
accept        B, the pending offer's target               holder = B
decline       B, the pending offer's target               holder = A (the offerer) again
recall        B, the pending offer's target, embedding    holder = A again
              A's signed recall *request* for that offer
override      the operator of the lost node L's province, holder = the override's ``to_node``
(L → C)       where L is the holder or the pending offer's
              target and L is **revoked** in the directory
close         the holder, no offer pending                closed: nothing may follow
============  ==========================================  =====================================

A **recall** is two signatures. The offerer A signs a ``recall_request`` naming the offer as its
predecessor and sends it to B; it is never a chain event by itself. B grants it by signing a
``recall`` event — also on the offer — that embeds A's request. Accept, decline and recall all
name the offer as predecessor and are all signed by B, so at most one of them is in the chain: a
recall is final exactly when the receiving node signs it, and it can never race an accept.

**At most one node can act** (:func:`can_act`): exactly the holder, and nobody while an offer is
pending or once the case is closed. Every event but an override is signed by the one node the
state names, so a node that sees itself as holder in its own view stays holder until it signs the
next event itself; the offerer gives up acting when it signs the offer, and only the target's
signature ends the pending state. Two nodes acting at once would need one node to sign two events
on one head — an **equivocation**, which is kept as a proof (both signed events) and reported.
A node must therefore make its signed event durable before it sends it (SPEC §6), or a crash
could make it sign a different one on the same head.

**Forks.** :func:`fold` takes the events a node holds in any order (duplicates, events whose
predecessor has not arrived yet, branches) and walks from the genesis: at each head it keeps the
children that are legal there; an override beats the lost node's own event on the same head (the
lost node is revoked); otherwise children on one head can only come from one signer, i.e. they are
an equivocation, and the one with the lowest hash is followed so that every node converges on the
same chain. :func:`verify_chain` is the strict check of a chain handed over as proof: it must be
one linear chain from the genesis, and a fork in it is an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gateway.custody.events import (
    Accept,
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
    operator_prefix,
    parse_event,
)
from gateway.errors import (
    BadSignature,
    CustodyBrokenLink,
    CustodyEquivocation,
    CustodyError,
    CustodyEventMalformed,
    CustodyForeignSigner,
    CustodyForkedChain,
    CustodyIllegalTransition,
    CustodyKeyNotValid,
    CustodySignatureInvalid,
    CustodySignerNotActive,
    CustodyTruncatedChain,
    CustodyUnknownSigner,
    UnknownAlgorithm,
    UnknownNode,
)
from gateway.trust.documents import NodeEntry, NodeSigningKey, NodeStatus
from gateway.trust.signing import PublicKey, verify
from gateway.trust.verifier import Directory

# --- state ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingOffer:
    offer: str  # the offer event's hash: accept, decline and recall must name it as predecessor
    from_node: str
    to_node: str


@dataclass(frozen=True)
class EquivocationProof:
    """Two different events one signer signed on the same predecessor: each verifies on its own,
    together they prove the signer broke the protocol. ``first``/``second`` are in hash order."""

    signer: str
    predecessor: str | None
    first: SignedEvent
    second: SignedEvent


@dataclass(frozen=True)
class CustodyState:
    """What a case's chain says. ``holder`` is None while an offer is pending."""

    case_id: str
    genesis: Genesis
    chain: tuple[CustodyEvent, ...]  # the canonical chain, genesis first
    holder: str | None
    pending: PendingOffer | None = None
    closed: bool = False
    equivocations: tuple[EquivocationProof, ...] = ()
    off_chain: tuple[str, ...] = ()  # hashes of held events not on the chain (orphans, losing branches)

    @property
    def head(self) -> str:
        return self.chain[-1].hash

    def __len__(self) -> int:
        return len(self.chain)


def can_act(state: CustodyState, node_id: str) -> bool:
    """True for exactly the holder of an open case with no offer pending; False for everyone else."""
    return state.holder == node_id and state.pending is None and not state.closed


# --- one event: signature and key --------------------------------------------------------------------


def _signer_key(
    directory: Directory, signer: str, key_id: str, *, history: bool
) -> tuple[PublicKey, NodeSigningKey | None]:
    prefix = operator_prefix(signer)
    if prefix is not None:
        operator = directory.root.provinces.get(prefix)
        if operator is None:
            raise CustodyUnknownSigner(f"no provincial operator governs prefix {prefix}")
        key = operator.keys.get(key_id)
        if key is None:
            raise CustodyUnknownSigner(f"key {key_id} is not a key of {signer}")
        return key, None
    try:
        entry = directory.entry(signer)
    except UnknownNode:
        raise CustodyUnknownSigner(f"node {signer}") from None
    if not history and entry.status is not NodeStatus.ACTIVE:
        raise CustodySignerNotActive(f"node {signer} is {entry.status.value}")
    for k in entry.signing_keys:
        if k.key.key_id == key_id:
            return k.key, k
    raise CustodyUnknownSigner(f"key {key_id} is not a signing key of {signer}")


def _check_key_time(k: NodeSigningKey, event: CustodyEvent, now: datetime) -> None:
    # The same dates as Directory.signing_key (gateway.trust.verifier), which cannot be called here
    # because it also requires the node to be active today and custody history outlives revocation.
    what = f"key {k.key.key_id} of {event.signer}"
    if event.created < k.valid_from:
        raise CustodyKeyNotValid(f"{what} was not yet valid when {event.describe()} was signed")
    if k.retired_at is not None and event.created > k.retired_at:
        raise CustodyKeyNotValid(f"{what} was rotated before {event.describe()} was signed")
    if k.refuse_after is not None and now > k.refuse_after:
        raise CustodyKeyNotValid(f"{what}: the rotation overlap window has ended")


def verify_event(signed: SignedEvent, directory: Directory, now: datetime, *, history: bool = False) -> CustodyEvent:
    """Verify one signed event against the directory's public material and return it parsed.

    Checks, in order: the directory is fresh at ``now`` (``DocumentExpired``); field shapes
    (``CustodyEventMalformed``); the signer — a directory node, or ``operator:<prefix>`` of a
    provincial operator of the root — lists the key id (``CustodyUnknownSigner``); unless
    ``history``, a node signer is active (``CustodySignerNotActive``); the signature over the PAE
    bytes (``CustodySignatureInvalid``); only then the body is parsed; a node key was valid at the
    event's signed time and, after a rotation, ``now`` is inside the overlap window
    (``CustodyKeyNotValid``) — the dates the trust verifier applies to messages. A recall's
    embedded request is verified the same way and must be a recall request.

    ``history=True`` is for events already part of a chain being verified or synchronised: a node
    that was revoked later still signed them (an override, which needs the revocation, follows
    them). A store deciding whether to accept an event that *extends* its chain uses the default.
    """
    directory.check_fresh(now)
    signed.check_shape()
    key, listed = _signer_key(directory, signed.signer, signed.key_id, history=history)
    try:
        verify(key, signed.algorithm, signed.signed_bytes(), signed.signature)
    except (BadSignature, UnknownAlgorithm):
        raise CustodySignatureInvalid(f"event {signed.hash[:12]} by {signed.signer}") from None
    event = parse_event(signed)
    if listed is not None:
        _check_key_time(listed, event, now)
    if isinstance(event.action, Recall):
        request = verify_event(event.action.request, directory, now, history=history)
        if not isinstance(request.action, RecallRequest):
            raise CustodyEventMalformed("a recall must embed a recall request")
    return event


# --- one transition -------------------------------------------------------------------------------


def _known(directory: Directory, node_id: str, what: str) -> NodeEntry:
    try:
        return directory.entry(node_id)
    except UnknownNode:
        raise CustodyIllegalTransition(f"{what} names node {node_id}, which is not in the directory") from None


def start(event: CustodyEvent, directory: Directory) -> CustodyState:
    """The state a genesis opens. Raises if ``event`` is not a genesis its accepting node signed."""
    action = event.action
    if not isinstance(action, Genesis) or event.predecessor is not None:
        raise CustodyTruncatedChain(f"case {event.case_id}: the chain does not start with its genesis")
    if event.signer != action.accepting_node:
        raise CustodyForeignSigner(f"genesis of {action.accepting_node} signed by {event.signer}")
    _known(directory, action.registration_node, "genesis")
    return CustodyState(event.case_id, action, (event,), holder=action.accepting_node)


def step(state: CustodyState, event: CustodyEvent, directory: Directory) -> CustodyState:
    """Apply one verified event to ``state`` (the state its predecessor leaves the case in).

    Raises ``CustodyBrokenLink`` (another case, or not on ``state.head``),
    ``CustodyIllegalTransition`` (the kind is not allowed now: a second genesis, anything after
    close, anything but accept/decline/recall/override while an offer is pending, accept/decline/
    recall with no offer pending, an offer to oneself or to an unknown node, an override naming the
    wrong lost node, before that node is revoked, or to the lost node itself) or its subclass
    ``CustodyForeignSigner`` (the event is allowed but not from this signer: offer/close by a
    non-holder, accept/decline/recall by another node than the offer's target, a recall request
    not signed by the offerer, an override by an operator of another province or by a node).
    """
    if event.case_id != state.case_id:
        raise CustodyBrokenLink(f"event of case {event.case_id} in the chain of case {state.case_id}")
    if event.predecessor != state.head:
        raise CustodyBrokenLink(f"{event.describe()} does not name the head {state.head[:12]}")
    action = event.action
    if isinstance(action, Genesis | RecallRequest):
        raise CustodyIllegalTransition(f"a {action.kind.value} is never appended to a chain")
    if state.closed:
        raise CustodyIllegalTransition(f"case {state.case_id} is closed; {event.describe()} cannot follow")
    chain = (*state.chain, event)
    pending = state.pending
    if isinstance(action, Override):
        return _override(state, event, action, directory)
    if isinstance(action, Accept | Decline | Recall):
        if pending is None:
            raise CustodyIllegalTransition(f"{event.describe()}: no offer is pending")
        if event.signer != pending.to_node:
            raise CustodyForeignSigner(f"{event.describe()}: the offer is for {pending.to_node}")
        if isinstance(action, Recall) and action.request.signer != pending.from_node:
            raise CustodyForeignSigner(
                f"{event.describe()}: recall requested by {action.request.signer}, offer from {pending.from_node}"
            )
        holder = pending.to_node if isinstance(action, Accept) else pending.from_node
        return replace(state, chain=chain, holder=holder, pending=None)
    if pending is not None:
        raise CustodyIllegalTransition(f"{event.describe()}: an offer to {pending.to_node} is pending")
    if event.signer != state.holder:
        raise CustodyForeignSigner(f"{event.describe()}: the holder is {state.holder}")
    if isinstance(action, Offer):
        if action.to_node == event.signer:
            raise CustodyIllegalTransition(f"{event.describe()}: an offer to oneself")
        _known(directory, action.to_node, "offer")
        return replace(state, chain=chain, holder=None, pending=PendingOffer(event.hash, event.signer, action.to_node))
    if isinstance(action, Close):
        return replace(state, chain=chain, closed=True)
    raise CustodyIllegalTransition(f"{event.describe()}: unknown transition")  # pragma: no cover


def _override(state: CustodyState, event: CustodyEvent, action: Override, directory: Directory) -> CustodyState:
    lost = state.pending.to_node if state.pending is not None else state.holder
    if action.lost_node != lost:
        raise CustodyIllegalTransition(f"{event.describe()} names {action.lost_node}, but the case is with {lost}")
    entry = _known(directory, action.lost_node, "override")
    prefix = operator_prefix(event.signer)
    if prefix is None:
        raise CustodyForeignSigner(f"{event.describe()}: only a provincial operator may override")
    if not entry.division.startswith(prefix):
        raise CustodyForeignSigner(f"{event.describe()}: {lost} ({entry.division}) is not in province {prefix}")
    if entry.status is not NodeStatus.REVOKED:
        raise CustodyIllegalTransition(f"{event.describe()}: {lost} is {entry.status.value}, not revoked")
    if action.to_node == lost:
        raise CustodyIllegalTransition(f"{event.describe()}: reassigns the case to the lost node")
    _known(directory, action.to_node, "override")
    return replace(state, chain=(*state.chain, event), holder=action.to_node, pending=None)


# --- the fold ---------------------------------------------------------------------------------------


def _equivocations(events: Iterable[CustodyEvent]) -> tuple[EquivocationProof, ...]:
    groups: dict[tuple[str | None, str], list[CustodyEvent]] = defaultdict(list)
    for e in events:
        groups[(e.predecessor, e.signer)].append(e)
    proofs: list[EquivocationProof] = []
    for (pred, signer), group in groups.items():
        if len(group) > 1:
            first, *rest = sorted(group, key=lambda e: e.hash)
            proofs.extend(EquivocationProof(signer, pred, first.signed, other.signed) for other in rest)
    return tuple(sorted(proofs, key=lambda p: (p.first.hash, p.second.hash)))


def fold(events: Iterable[CustodyEvent], directory: Directory) -> CustodyState:
    """Fold the verified events a node holds for one case into the case's state.

    Order and duplicates do not matter. Walking from the genesis, each step keeps the children of
    the current head that :func:`step` accepts there and follows one of them: an override if there
    is one (it supersedes the revoked node's own event), else the lowest hash (children of one head
    by one signer are an equivocation; following a fixed one makes every node converge). Events that
    are illegal where they stand, wait for a missing predecessor or lose a fork are listed in
    ``off_chain``; every pair of events one signer signed on one predecessor is in
    ``equivocations``. Raises ``CustodyBrokenLink`` for events of several cases and
    ``CustodyTruncatedChain`` when no genesis signed by its accepting node is held.
    """
    by_hash = {e.hash: e for e in events}
    if not by_hash:
        raise CustodyTruncatedChain("no events")
    cases = {e.case_id for e in by_hash.values()}
    if len(cases) != 1:
        raise CustodyBrokenLink(f"events of {len(cases)} cases folded together")
    children: dict[str | None, list[CustodyEvent]] = defaultdict(list)
    for e in sorted(by_hash.values(), key=lambda e: e.hash):
        children[e.predecessor].append(e)

    state: CustodyState | None = None
    for g in children[None]:
        try:
            state = start(g, directory)
            break
        except CustodyError:
            continue
    if state is None:
        raise CustodyTruncatedChain(f"case {next(iter(cases))}: no valid genesis is held")
    while True:
        legal: list[tuple[CustodyEvent, CustodyState]] = []
        for child in children.get(state.head, ()):
            try:
                legal.append((child, step(state, child, directory)))
            except CustodyError:
                continue
        if not legal:
            break
        overrides = [pair for pair in legal if pair[0].kind is Kind.OVERRIDE]
        state = (overrides or legal)[0][1]
    on_chain = {e.hash for e in state.chain}
    return replace(
        state,
        equivocations=_equivocations(by_hash.values()),
        off_chain=tuple(sorted(set(by_hash) - on_chain)),
    )


# --- the strict check of a chain handed over as proof --------------------------------------------------


def verify_chain(
    events: Sequence[SignedEvent], directory: Directory, now: datetime, *, known_head: str | None = None
) -> CustodyState:
    """Verify a case's chain, offline, from the directory's public material; return its state.

    Checks, in order, stopping at the first failure:

    1. the directory is fresh at ``now``; the chain is not empty (``CustodyTruncatedChain``);
    2. every event on its own (:func:`verify_event` with ``history=True``: shape, signer, key,
       signature, key dates);
    3. all events are of one case (``CustodyBrokenLink``); no two events name one predecessor —
       by one signer that is ``CustodyEquivocation`` (with the proof), by two it is
       ``CustodyForkedChain``;
    4. the first event is the case's genesis (``CustodyTruncatedChain``: the chain was cut at the
       start), each next event names the hash of the one before (``CustodyBrokenLink``: reordered,
       duplicated, spliced or cut in the middle) and is legal there (:func:`step`);
    5. with ``known_head`` (a head hash the verifier learned earlier, e.g. from a peer's answer),
       that head is in the chain (``CustodyTruncatedChain``).

    What the chain alone cannot show is that it is *complete at its end*: every prefix of a valid
    chain is a valid chain, so a peer that withholds its last events is only caught by a head hash
    known from elsewhere (step 5), the reason nodes exchange heads.
    """
    directory.check_fresh(now)
    if not events:
        raise CustodyTruncatedChain("the chain has no events")
    verified = [verify_event(e, directory, now, history=True) for e in events]
    if len({e.case_id for e in verified}) != 1:
        raise CustodyBrokenLink("the chain mixes events of several cases")
    by_predecessor: dict[str | None, dict[str, CustodyEvent]] = defaultdict(dict)
    for e in verified:
        by_predecessor[e.predecessor][e.hash] = e
    for pred, kids in by_predecessor.items():
        if len(kids) > 1:
            proofs = _equivocations(kids.values())
            where = "the genesis" if pred is None else pred[:12]
            if proofs:
                raise CustodyEquivocation(f"{proofs[0].signer} signed two events on {where}", proof=proofs[0])
            raise CustodyForkedChain(f"{len(kids)} events by different signers on {where}")
    state = start(verified[0], directory)
    for e in verified[1:]:
        state = step(state, e, directory)
    if known_head is not None and known_head not in {e.hash for e in state.chain}:
        raise CustodyTruncatedChain(f"the chain ends at {state.head[:12]} and does not reach the known head")
    return state
