"""The custody rules as tables of named cases (STYLE habit 6): transitions, forged and damaged
chains, forks, overrides and key rotation. Real keys and a real verified directory (tests.trustkit).

Nodes: A = cq-liangjiang (500157), C = cq-beibei (500109), L = cq-lost (500101), all in Chongqing
(operator ``operator:50``); B = sc-nanbu (511321) in Sichuan (``operator:51``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import pytest

from gateway.custody.chain import (
    CustodyState,
    can_act,
    fold,
    start,
    step,
    verify_chain,
    verify_event,
)
from gateway.custody.events import (
    Accept,
    Action,
    CaseType,
    Close,
    CustodyEvent,
    Decline,
    Genesis,
    Offer,
    Override,
    Recall,
    RecallRequest,
    SignedEvent,
    encode_body,
    operator_signer,
    sign_event,
)
from gateway.errors import (
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
    DocumentExpired,
)
from gateway.trust.documents import NodeStatus
from gateway.trust.signing import Ed25519Signer, Signer
from gateway.trust.verifier import Directory, TrustState
from tests.trustkit import NOW, Pki, new_pki

NAMES = {"A": "cq-liangjiang", "B": "sc-nanbu", "C": "cq-beibei", "L": "cq-lost"}
CASE = "6f1c1a52-3c1e-4d6b-9a51-0d4f3a1c9e77"
OTHER_CASE = "0b7e3f0e-2a44-4c55-8f0c-1b2d3e4f5a6b"


def _pki() -> Pki:
    pki = new_pki()
    pki.provinces["50"].enrol("cq-liangjiang", "500157")
    pki.provinces["50"].enrol("cq-beibei", "500109")
    pki.provinces["50"].enrol("cq-lost", "500101")
    pki.provinces["51"].enrol("sc-nanbu", "511321")
    return pki


PKI = _pki()


def directory(*, lost: NodeStatus = NodeStatus.ACTIVE, now: datetime = NOW) -> Directory:
    PKI.provinces["50"].nodes["cq-lost"].status = lost
    try:
        return TrustState.from_pinned_root(PKI.roots[0].to_bytes(), now).accept(PKI.bundle(), now)[1]
    finally:
        PKI.provinces["50"].nodes["cq-lost"].status = NodeStatus.ACTIVE


DIRECTORY = directory()
REVOKED = directory(lost=NodeStatus.REVOKED)
SUSPENDED = directory(lost=NodeStatus.SUSPENDED)


def node_signer(name: str) -> Signer:
    node_id = NAMES.get(name, name)
    province = "51" if node_id.startswith("sc-") else "50"
    return PKI.provinces[province].nodes[node_id].signers[0]


def signer_of(who: str) -> tuple[str, Signer]:
    if who.startswith("OP"):
        prefix = who[2:]
        return operator_signer(prefix), PKI.provinces[prefix].signers[0]
    return NAMES[who], node_signer(who)


@dataclass
class Chain:
    """A chain being written: each move signs an event on the current head and applies it."""

    directory: Directory = DIRECTORY
    case_id: str = CASE
    events: list[CustodyEvent] = field(default_factory=list)
    state: CustodyState | None = None
    clock: datetime = NOW - timedelta(hours=1)

    def sign(self, who: str, action: Action, *, predecessor: str | None = None) -> CustodyEvent:
        signer_id, signer = signer_of(who)
        self.clock += timedelta(minutes=1)
        pred = predecessor if predecessor is not None else (self.state.head if self.state else None)
        return sign_event(
            signer, signer_id=signer_id, case_id=self.case_id, predecessor=pred, created=self.clock, action=action
        )

    def apply(self, event: CustodyEvent) -> CustodyState:
        self.state = start(event, self.directory) if self.state is None else step(self.state, event, self.directory)
        self.events.append(event)
        return self.state

    def move(self, who: str, kind: str, arg: str = "") -> CustodyState:
        return self.apply(self.sign(who, self.action(kind, arg)))

    def action(self, kind: str, arg: str) -> Action:
        if kind == "genesis":
            acceptor, _, target = arg.partition(">")
            return Genesis(CaseType.ORPHAN, NAMES.get(acceptor, acceptor), date(2026, 11, 2), NAMES.get(target, target))
        if kind == "offer":
            return Offer(NAMES.get(arg, arg))
        if kind == "override":
            lost, _, to = arg.partition(">")
            return Override(NAMES[lost], NAMES[to])
        if kind == "recall":  # arg: who signs the recall request (normally the offerer)
            assert self.state is not None
            return Recall(self.sign(arg, RecallRequest()).signed)
        return {"accept": Accept(), "decline": Decline(), "close": Close(), "recall_request": RecallRequest()}[kind]


# --- transitions -------------------------------------------------------------------------------------

G = ("A", "genesis", "A>B")
OFFER_B = ("A", "offer", "B")
OFFER_L = ("A", "offer", "L")
L_HOLDS = (G, OFFER_L, ("L", "accept"))
OVERRIDE_L_C = ("OP50", "override", "L>C")
Moves = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Expect:
    holder: str | None
    pending_to: str | None = None
    closed: bool = False


TRANSITIONS = [
    # name, moves (the last one is under test), directory, expected state or error
    ("genesis", (G,), DIRECTORY, Expect("A")),
    ("offer_makes_case_pending", (G, OFFER_B), DIRECTORY, Expect(None, "B")),
    ("accept_by_target", (G, OFFER_B, ("B", "accept")), DIRECTORY, Expect("B")),
    ("decline_by_target", (G, OFFER_B, ("B", "decline")), DIRECTORY, Expect("A")),
    ("recall_granted_by_target", (G, OFFER_B, ("B", "recall", "A")), DIRECTORY, Expect("A")),
    ("onward_transfer", (G, OFFER_B, ("B", "accept"), ("B", "offer", "C"), ("C", "accept")), DIRECTORY, Expect("C")),
    ("offer_again_after_decline", (G, OFFER_B, ("B", "decline"), ("A", "offer", "C")), DIRECTORY, Expect(None, "C")),
    ("close_by_holder", (G, OFFER_B, ("B", "accept"), ("B", "close")), DIRECTORY, Expect("B", closed=True)),
    ("override_offered_case", (G, OFFER_L, ("OP50", "override", "L>C")), REVOKED, Expect("C")),
    ("override_held_case", (*L_HOLDS, ("OP50", "override", "L>A")), REVOKED, Expect("A")),
    ("override_to_other_province", (*L_HOLDS, ("OP50", "override", "L>B")), REVOKED, Expect("B")),
    ("genesis_signed_by_another_node", (("B", "genesis", "A>B"),), DIRECTORY, CustodyForeignSigner),
    ("genesis_for_unknown_node", (("A", "genesis", "A>nowhere"),), DIRECTORY, CustodyIllegalTransition),
    ("genesis_with_a_predecessor", (G, G), DIRECTORY, CustodyEventMalformed),
    ("offer_by_non_holder", (G, ("B", "offer", "C")), DIRECTORY, CustodyForeignSigner),
    ("offer_to_self", (G, ("A", "offer", "A")), DIRECTORY, CustodyIllegalTransition),
    ("offer_to_unknown_node", (G, ("A", "offer", "nowhere")), DIRECTORY, CustodyIllegalTransition),
    ("offerer_offers_again_while_pending", (G, OFFER_B, ("A", "offer", "C")), DIRECTORY, CustodyIllegalTransition),
    ("target_acts_before_accepting", (G, OFFER_B, ("B", "offer", "C")), DIRECTORY, CustodyIllegalTransition),
    ("close_while_pending", (G, OFFER_B, ("A", "close")), DIRECTORY, CustodyIllegalTransition),
    ("accept_by_other_node", (G, OFFER_B, ("C", "accept")), DIRECTORY, CustodyForeignSigner),
    ("accept_by_offerer", (G, OFFER_B, ("A", "accept")), DIRECTORY, CustodyForeignSigner),
    ("accept_without_offer", (G, ("B", "accept")), DIRECTORY, CustodyIllegalTransition),
    ("accept_twice", (G, OFFER_B, ("B", "accept"), ("B", "accept")), DIRECTORY, CustodyIllegalTransition),
    ("decline_by_other_node", (G, OFFER_B, ("C", "decline")), DIRECTORY, CustodyForeignSigner),
    ("decline_after_accept", (G, OFFER_B, ("B", "accept"), ("B", "decline")), DIRECTORY, CustodyIllegalTransition),
    ("recall_made_final_by_offerer", (G, OFFER_B, ("A", "recall", "A")), DIRECTORY, CustodyForeignSigner),
    ("recall_requested_by_other_node", (G, OFFER_B, ("B", "recall", "C")), DIRECTORY, CustodyForeignSigner),
    ("recall_after_accept", (G, OFFER_B, ("B", "accept"), ("B", "recall", "A")), DIRECTORY, CustodyIllegalTransition),
    ("recall_request_as_chain_event", (G, OFFER_B, ("A", "recall_request")), DIRECTORY, CustodyIllegalTransition),
    ("close_by_non_holder", (G, ("B", "close")), DIRECTORY, CustodyForeignSigner),
    ("offer_after_close", (G, ("A", "close"), ("A", "offer", "B")), DIRECTORY, CustodyIllegalTransition),
    ("override_before_revocation", (G, OFFER_L, ("OP50", "override", "L>C")), DIRECTORY, CustodyIllegalTransition),
    ("override_of_suspended_node", (G, OFFER_L, ("OP50", "override", "L>C")), SUSPENDED, CustodyIllegalTransition),
    ("override_by_other_province", (G, OFFER_L, ("OP51", "override", "L>B")), REVOKED, CustodyForeignSigner),
    ("override_of_node_not_holding", (G, ("OP50", "override", "L>C")), REVOKED, CustodyIllegalTransition),
    ("override_to_lost_node", (G, OFFER_L, ("OP50", "override", "L>L")), REVOKED, CustodyIllegalTransition),
    (
        "override_after_close",
        (*L_HOLDS, ("L", "close"), ("OP50", "override", "L>C")),
        REVOKED,
        CustodyIllegalTransition,
    ),
]


@pytest.mark.parametrize(("moves", "where", "expected"), [pytest.param(*c[1:], id=c[0]) for c in TRANSITIONS])
def test_transitions(
    moves: tuple[tuple[str, ...], ...], where: Directory, expected: Expect | type[CustodyError]
) -> None:
    chain = Chain(directory=where)
    *before, last = moves
    for m in before:
        chain.move(*m)
    if isinstance(expected, type):
        with pytest.raises(expected):
            chain.move(*last)
        return
    state = chain.move(*last)
    assert state.holder == (NAMES[expected.holder] if expected.holder else None)
    assert (state.pending.to_node if state.pending else None) == (
        NAMES[expected.pending_to] if expected.pending_to else None
    )
    assert state.closed == expected.closed
    # Whatever the step decides, a chain of the same events verifies to the same state offline.
    assert verify_chain([e.signed for e in chain.events], where, NOW) == state
    actors = [n for n in NAMES.values() if can_act(state, n)]
    assert actors == ([] if expected.holder is None or expected.closed else [NAMES[expected.holder]])


# --- who may act --------------------------------------------------------------------------------------


def test_can_act_is_exactly_the_holder_of_an_open_case() -> None:
    chain = Chain()
    moves_and_actors = [
        (G, ["A"]),
        (OFFER_B, []),  # the offerer stopped acting when it signed the offer; B has not accepted yet
        (("B", "accept"), ["B"]),
        (("B", "close"), []),
    ]
    for move, actors in moves_and_actors:
        state = chain.move(*move)
        assert [n for n in NAMES.values() if can_act(state, n)] == [NAMES[a] for a in actors]


# --- chains handed over as proof --------------------------------------------------------------------


def _full_chain() -> list[CustodyEvent]:
    chain = Chain()
    for m in (G, OFFER_B, ("B", "accept"), ("B", "offer", "C"), ("C", "decline")):
        chain.move(*m)
    return chain.events


FULL = _full_chain()  # genesis, offer A->B, accept, offer B->C, decline: B holds


def _resigned(e: CustodyEvent, *, body: bytes | None = None, signer: str | None = None, key: Signer) -> SignedEvent:
    s = replace(e.signed, body=body if body is not None else e.signed.body, signer=signer or e.signer)
    s = replace(s, key_id=key.public_key.key_id)
    return replace(s, signature=key.sign(s.signed_bytes()))


def _tamper_body(events: list[SignedEvent]) -> list[SignedEvent]:
    e = events[1]
    return [events[0], replace(e, body=e.body.replace(b"sc-nanbu", b"cq-beibei")), *events[2:]]


def _other_signer_name(events: list[SignedEvent]) -> list[SignedEvent]:
    # A's signature, presented as C's event with A's key id: C does not list that key.
    return [events[0], replace(events[1], signer=NAMES["C"]), *events[2:]]


def _other_signer_key(events: list[SignedEvent]) -> list[SignedEvent]:
    # Claims C's key but carries A's signature.
    e = replace(events[1], signer=NAMES["C"], key_id=node_signer("C").public_key.key_id)
    return [events[0], e, *events[2:]]


def _signed_by_stranger(events: list[SignedEvent]) -> list[SignedEvent]:
    return [events[0], _resigned(FULL[1], key=Ed25519Signer.generate()), *events[2:]]


def _unknown_operator(events: list[SignedEvent]) -> list[SignedEvent]:
    return [*events, _resigned(FULL[1], signer="operator:44", key=PKI.provinces["50"].signers[0])]


def _not_canonical(events: list[SignedEvent]) -> list[SignedEvent]:
    body = events[1].body.replace(b",", b", ")
    return [events[0], _resigned(FULL[1], body=body, key=node_signer("A")), *events[2:]]


def _other_case(events: list[SignedEvent]) -> list[SignedEvent]:
    other = Chain(case_id=OTHER_CASE)
    other.move(*G)
    return [events[0], *events[1:3], other.move("A", "close") and other.events[-1].signed, *events[3:]]


def _swap(events: list[SignedEvent]) -> list[SignedEvent]:
    return [events[0], events[2], events[1], *events[3:]]


BAD_CHAINS = [
    ("custody_tampered_body", _tamper_body, CustodySignatureInvalid),
    ("custody_signer_renamed", _other_signer_name, CustodyUnknownSigner),
    ("custody_wrong_signer_key", _other_signer_key, CustodySignatureInvalid),
    ("custody_signed_by_stranger_key", _signed_by_stranger, CustodyUnknownSigner),
    ("custody_unknown_operator", _unknown_operator, CustodyUnknownSigner),
    ("custody_body_not_canonical", _not_canonical, CustodyEventMalformed),
    ("custody_reordered", _swap, CustodyBrokenLink),
    ("custody_duplicated_event", lambda ev: [*ev[:3], ev[2], *ev[3:]], CustodyBrokenLink),
    ("custody_cut_in_the_middle", lambda ev: [ev[0], ev[1], *ev[3:]], CustodyBrokenLink),
    ("custody_cut_at_the_start", lambda ev: ev[1:], CustodyTruncatedChain),
    ("custody_empty", lambda ev: [], CustodyTruncatedChain),
    ("custody_event_of_another_case", _other_case, CustodyBrokenLink),
]


@pytest.mark.parametrize(("mutate", "error"), [pytest.param(*c[1:], id=c[0]) for c in BAD_CHAINS])
def test_bad_chains(mutate: object, error: type[CustodyError]) -> None:
    events = mutate([e.signed for e in FULL])  # type: ignore[operator]
    with pytest.raises(error):
        verify_chain(events, DIRECTORY, NOW)


def test_good_chain_verifies_offline() -> None:
    state = verify_chain([e.signed for e in FULL], DIRECTORY, NOW)
    assert (state.holder, state.head, len(state)) == (NAMES["B"], FULL[-1].hash, 5)


def test_truncation_at_the_end_is_caught_only_by_a_known_head() -> None:
    """Every prefix of a valid chain is valid: cutting the last events off cannot be seen from the
    chain itself, only against a head hash the verifier learned before (e.g. from another node)."""
    prefix = [e.signed for e in FULL[:3]]
    assert verify_chain(prefix, DIRECTORY, NOW).holder == NAMES["B"]  # looks fine on its own
    with pytest.raises(CustodyTruncatedChain):
        verify_chain(prefix, DIRECTORY, NOW, known_head=FULL[-1].hash)
    # A longer chain than the head the verifier knew is fine: custody moved on since.
    verify_chain([e.signed for e in FULL], DIRECTORY, NOW, known_head=FULL[2].hash)


def test_expired_directory_is_refused() -> None:
    with pytest.raises(DocumentExpired):
        verify_chain([e.signed for e in FULL], DIRECTORY, NOW + timedelta(days=8))


def test_a_new_event_from_a_revoked_node_is_refused_but_its_history_verifies() -> None:
    chain = Chain(directory=REVOKED)
    for m in L_HOLDS:
        chain.move(*m)
    accept = chain.events[-1].signed
    with pytest.raises(CustodySignerNotActive):
        verify_event(accept, REVOKED, NOW)
    assert verify_event(accept, REVOKED, NOW, history=True).hash == accept.hash


# --- forks ---------------------------------------------------------------------------------------------


def _offered() -> Chain:
    chain = Chain(directory=REVOKED)
    chain.move(*G)
    chain.move(*OFFER_L)
    return chain


def test_two_events_by_one_node_on_one_predecessor_are_an_equivocation() -> None:
    chain = Chain()
    chain.move(*G)
    offer = chain.move(*OFFER_B)
    accept = chain.sign("B", Accept())
    decline = chain.sign("B", Decline(), predecessor=offer.head)
    events = [*chain.events, accept, decline]
    with pytest.raises(CustodyEquivocation) as info:
        verify_chain([e.signed for e in events], DIRECTORY, NOW)
    proof = info.value.proof
    assert {proof.first.hash, proof.second.hash} == {accept.hash, decline.hash}  # type: ignore[attr-defined]
    # The fold keeps the proof and still converges: the same branch whatever the order.
    a = fold(events, DIRECTORY)
    b = fold(reversed(events), DIRECTORY)
    assert a == b
    assert len(a.equivocations) == 1
    assert a.equivocations[0].signer == NAMES["B"]
    assert a.holder == (NAMES["B"] if min(accept.hash, decline.hash) == accept.hash else NAMES["A"])


def test_override_beats_the_revoked_node_on_the_same_predecessor() -> None:
    chain = _offered()
    late_accept = chain.sign("L", Accept())
    override = chain.sign("OP50", Override(NAMES["L"], NAMES["C"]))
    events = [*chain.events, late_accept, override]
    with pytest.raises(CustodyForkedChain):
        verify_chain([e.signed for e in events], REVOKED, NOW)
    for order in (events, list(reversed(events))):
        state = fold(order, REVOKED)
        assert state.holder == NAMES["C"]
        assert state.off_chain == (late_accept.hash,)
        assert state.equivocations == ()  # two signers: a fork, not an equivocation


def test_fold_ignores_order_duplicates_and_waits_for_missing_predecessors() -> None:
    events = list(FULL)
    shuffled = [events[3], events[0], events[4], events[1], events[0], events[2]]
    assert fold(shuffled, DIRECTORY) == fold(events, DIRECTORY)
    without_offer = [e for e in events if e is not events[3]]
    state = fold(without_offer, DIRECTORY)
    assert (state.holder, state.off_chain) == (NAMES["B"], (events[4].hash,))


def test_fold_skips_illegal_events() -> None:
    chain = Chain()
    chain.move(*G)
    stray = chain.sign("C", Close())  # C is not the holder
    state = fold([*chain.events, stray], DIRECTORY)
    assert (state.holder, state.off_chain) == (NAMES["A"], (stray.hash,))


# --- key rotation -----------------------------------------------------------------------------------------

ROTATED_AT = NOW - timedelta(minutes=30)
OVERLAP_ENDS = NOW + timedelta(days=2)


def _rotated_directory(now: datetime) -> Directory:
    node = PKI.provinces["51"].nodes["sc-nanbu"]
    saved = (list(node.signers), list(node.rotations))
    node.signers.append(Ed25519Signer.generate())
    node.rotations[:] = [(ROTATED_AT, OVERLAP_ENDS)]
    try:
        return TrustState.from_pinned_root(PKI.roots[0].to_bytes(), now).accept(PKI.bundle(), now)[1]
    finally:
        node.signers[:], node.rotations[:] = saved


ROTATION = [
    # name, B's accept signed at (minutes before NOW), verified at
    ("old_key_before_rotation_inside_overlap", 40, NOW, None),
    ("old_key_before_rotation_after_overlap", 40, OVERLAP_ENDS + timedelta(seconds=1), CustodyKeyNotValid),
    ("old_key_after_rotation", 20, NOW, CustodyKeyNotValid),
]


@pytest.mark.parametrize(("minutes", "now", "error"), [pytest.param(*c[1:], id=c[0]) for c in ROTATION])
def test_rotated_keys(minutes: int, now: datetime, error: type[CustodyError] | None) -> None:
    where = _rotated_directory(now)
    chain = Chain(directory=where, clock=NOW - timedelta(minutes=minutes + 5))
    chain.move(*G)
    chain.move(*OFFER_B)
    chain.move("B", "accept")  # signed with B's first (now retired) key
    events = [e.signed for e in chain.events]
    # A directory's freshness is bounded by its own expiry; the check below is the key's dates.
    if error is None:
        assert verify_chain(events, where, now).holder == NAMES["B"]
    else:
        with pytest.raises(error):
            verify_chain(events, where, now)


def test_events_carry_no_personal_data() -> None:
    """Bodies are node ids, a case type, a date, hashes: nothing else can be encoded."""
    g = Genesis(CaseType.DISABILITY_NURSING, NAMES["A"], date(2026, 11, 2), NAMES["B"])
    body = encode_body(NOW, g)
    assert body == (
        b'{"accepted_on":"2026-11-02","accepting_node":"cq-liangjiang","case_type":"disability_nursing_subsidy",'
        b'"created_ms":1795435200000,"kind":"genesis","registration_node":"sc-nanbu","v":1}'
    )
    assert str(uuid.UUID(CASE)) == CASE


def test_fork_by_two_nodes_the_one_the_rule_names_wins() -> None:
    """On an offer to B, only B may sign: C's accept on the same offer is a fork, not a second holder."""
    chain = Chain()
    chain.move(*G)
    chain.move(*OFFER_B)
    mine, intruder = chain.sign("B", Accept()), chain.sign("C", Accept())
    events = [*chain.events, intruder, mine]
    with pytest.raises(CustodyForkedChain):
        verify_chain([e.signed for e in events], DIRECTORY, NOW)
    state = fold(events, DIRECTORY)
    assert (state.holder, state.off_chain, state.equivocations) == (NAMES["B"], (intruder.hash,), ())
