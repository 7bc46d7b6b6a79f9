"""A simulated network of county nodes handing cases around, with faults (STYLE habit 8).

Each node is a small state machine around the pure fold: it keeps the verified events it holds
per case (its *durable* store), derives its view of each case with :func:`fold`, signs its own
events (offer, accept, decline, recall, close) and sends chains to peers. The network drops,
duplicates, reorders and delays messages; nodes crash and lose what was not durable (their inbox of
received-but-unprocessed messages). A node makes every event it signs durable before it sends it
("durable before it answers", SPEC §6).

Checked after **every** step: across all nodes' own views, at most one node can act on each case.
After healing (faults stop, everything is delivered, nodes gossip their chains and answer pending
offers): every case has exactly one holder and no pending offer, and every node holds the same
chain. Seeded and deterministic. A last test breaks "durable before it answers" and shows the
checker catching two nodes able to act on one case.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pytest

from gateway.custody.chain import CustodyState, can_act, fold, verify_chain, verify_event
from gateway.custody.events import (
    Accept,
    Action,
    CaseType,
    Close,
    CustodyEvent,
    Decline,
    Genesis,
    Offer,
    Recall,
    RecallRequest,
    SignedEvent,
    sign_event,
)
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory, TrustState
from tests.trustkit import NOW, new_pki

NODE_DIVISIONS = {
    "cq-liangjiang": "500157",
    "cq-beibei": "500109",
    "cq-yubei": "500112",
    "sc-nanbu": "511321",
    "sc-wuhou": "510107",
}


def _world() -> tuple[Directory, dict[str, Signer]]:
    pki = new_pki()
    signers: dict[str, Signer] = {}
    for node_id, division in NODE_DIVISIONS.items():
        signers[node_id] = pki.provinces[division[:2]].enrol(node_id, division).signers[0]
    directory = TrustState.from_pinned_root(pki.roots[0].to_bytes(), NOW).accept(pki.bundle(), NOW)[1]
    return directory, signers


DIRECTORY, SIGNERS = _world()
NODES = sorted(NODE_DIVISIONS)


class TwoActors(AssertionError):
    """The safety property failed: two nodes could act on one case at the same moment."""


@dataclass(frozen=True)
class Message:
    to: str
    case_id: str
    events: tuple[SignedEvent, ...] = ()  # a chain (or part of one) the sender holds
    recall_request: SignedEvent | None = None


@dataclass
class Node:
    node_id: str
    signer: Signer
    durable: dict[str, dict[str, CustodyEvent]] = field(default_factory=lambda: defaultdict(dict))
    unsaved: dict[str, dict[str, CustodyEvent]] = field(default_factory=lambda: defaultdict(dict))
    inbox: list[Message] = field(default_factory=list)  # received, not yet processed: lost in a crash
    durable_before_answer: bool = True
    _views: dict[str, CustodyState] = field(default_factory=dict)  # derived from the events: a cache

    def events(self, case_id: str) -> dict[str, CustodyEvent]:
        return {**self.durable.get(case_id, {}), **self.unsaved.get(case_id, {})}

    def view(self, case_id: str) -> CustodyState | None:
        if case_id not in self._views:
            held = self.events(case_id)
            if not held:
                return None
            self._views[case_id] = fold(held.values(), DIRECTORY)
        return self._views[case_id]

    def cases(self) -> list[str]:
        return sorted(set(self.durable) | set(self.unsaved))

    def keep(self, event: CustodyEvent) -> None:
        store = self.durable if self.durable_before_answer else self.unsaved
        store[event.case_id][event.hash] = event
        self._views.pop(event.case_id, None)

    def crash(self) -> None:
        self.inbox.clear()
        self.unsaved.clear()
        self._views.clear()

    def flush(self) -> None:
        for case_id, events in self.unsaved.items():
            self.durable[case_id].update(events)
        self.unsaved.clear()
        self._views.clear()

    def chain_to(self, to: str, case_id: str) -> Message:
        return Message(to, case_id, tuple(e.signed for e in self.events(case_id).values()))

    # --- signing ---------------------------------------------------------------------------------

    def sign(self, case_id: str, predecessor: str | None, action: Action, t: datetime) -> CustodyEvent:
        return sign_event(
            self.signer, signer_id=self.node_id, case_id=case_id, predecessor=predecessor, created=t, action=action
        )

    def open_case(self, rng: random.Random, t: datetime) -> tuple[str, list[Message]]:
        case_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        target = rng.choice([n for n in NODES if n != self.node_id])
        genesis = Genesis(CaseType.ORPHAN, self.node_id, date(2026, 11, 2), target)
        self.keep(self.sign(case_id, None, genesis, t))
        return case_id, []

    def act(self, rng: random.Random, case_id: str, t: datetime) -> list[Message]:
        """One decision on a case, from this node's own view only."""
        state = self.view(case_id)
        if state is None or state.closed:
            return []
        pending = state.pending
        if can_act(state, self.node_id):
            if rng.random() < 0.04:
                self.keep(self.sign(case_id, state.head, Close(), t))
                return []
            to = rng.choice([n for n in NODES if n != self.node_id])
            self.keep(self.sign(case_id, state.head, Offer(to), t))
            return [self.chain_to(to, case_id)]
        if pending is not None and pending.to_node == self.node_id:
            action: Action = Accept() if rng.random() < 0.7 else Decline()
            self.keep(self.sign(case_id, state.head, action, t))
            return [self.chain_to(pending.from_node, case_id)]
        if pending is not None and pending.from_node == self.node_id:
            request = self.sign(case_id, pending.offer, RecallRequest(), t)  # a request: not kept, not in the chain
            return [Message(pending.to_node, case_id, recall_request=request.signed)]
        return []

    # --- receiving -----------------------------------------------------------------------------------

    def process(self, t: datetime) -> list[Message]:
        if not self.inbox:
            return []
        message = self.inbox.pop(0)
        held = self.events(message.case_id)
        for signed in message.events:
            if signed.hash not in held:
                self.keep(verify_event(signed, DIRECTORY, NOW))  # made durable before anything is answered
        if message.recall_request is None:
            return []
        request = verify_event(message.recall_request, DIRECTORY, NOW)
        state = self.view(message.case_id)
        pending = state.pending if state else None
        if state is None or pending is None:
            return []
        if pending.to_node == self.node_id and pending.offer == request.predecessor == state.head:
            self.keep(self.sign(message.case_id, state.head, Recall(request.signed), t))
        # Granted or not (already accepted or declined), the offerer learns the outcome.
        return [self.chain_to(pending.from_node, message.case_id)]


@dataclass
class Network:
    rng: random.Random
    nodes: dict[str, Node]
    in_flight: list[Message] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    actors: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    clock: datetime = NOW - timedelta(hours=6)
    drop: float = 0.15
    duplicate: float = 0.1
    checks: int = 0

    def tick(self) -> datetime:
        self.clock += timedelta(milliseconds=50)
        return self.clock

    def send(self, messages: list[Message]) -> None:
        self.in_flight.extend(messages)

    def observe(self, node: Node, case_ids: list[str]) -> None:
        """Recompute whether ``node`` can act on these cases in its own view; check the property."""
        for case_id in case_ids:
            state = node.view(case_id)
            actors = self.actors[case_id]
            if state is not None and can_act(state, node.node_id):
                actors.add(node.node_id)
            else:
                actors.discard(node.node_id)
            self.checks += 1
            if len(actors) > 1:
                raise TwoActors(f"case {case_id}: {sorted(actors)} can all act")

    def step(self, max_cases: int) -> None:
        rng, t = self.rng, self.tick()
        roll = rng.random()
        node = self.nodes[rng.choice(NODES)]
        if roll < 0.35 and self.in_flight:  # deliver one message: any of them (reordering, delays)
            message = self.in_flight.pop(rng.randrange(len(self.in_flight)))
            if rng.random() < self.duplicate:
                self.in_flight.append(message)
            if rng.random() >= self.drop:
                self.nodes[message.to].inbox.append(message)
        elif roll < 0.6:
            for _ in range(len(node.inbox)):
                case_id = node.inbox[0].case_id
                self.send(node.process(t))
                self.observe(node, [case_id])
        elif roll < 0.85 and node.cases():
            case_id = rng.choice(node.cases())
            self.send(node.act(rng, case_id, t))
            self.observe(node, [case_id])
        elif roll < 0.92 and node.cases():  # anti-entropy: show a random peer this node's chain
            case_id = rng.choice(node.cases())
            self.send([node.chain_to(rng.choice([n for n in NODES if n != node.node_id]), case_id)])
        elif roll < 0.97 and len(self.cases) < max_cases:
            case_id, messages = node.open_case(rng, t)
            self.cases.append(case_id)
            self.send(messages)
            self.observe(node, [case_id])
        elif roll < 0.985:
            node.crash()
            self.observe(node, node.cases())
        else:
            node.flush()  # the broken variant's late write; a no-op for a correct node
            self.observe(node, node.cases())

    def heal(self, rounds: int = 30) -> None:
        """Stop the faults, deliver everything, gossip every chain to every node, let the targets
        of pending offers answer; repeat until nothing changes."""
        self.drop = self.duplicate = 0.0
        for node in self.nodes.values():
            node.flush()
        for _ in range(rounds):
            before = self.fingerprint()
            for node in self.nodes.values():
                for case_id in node.cases():
                    self.send([node.chain_to(peer, case_id) for peer in NODES if peer != node.node_id])
            self.drain()
            for node in self.nodes.values():
                for case_id in node.cases():
                    state = node.view(case_id)
                    if state and state.pending and state.pending.to_node == node.node_id:
                        self.send(node.act(self.rng, case_id, self.tick()))
                        self.observe(node, [case_id])
            self.drain()
            if self.fingerprint() == before and not self.pending_anywhere():
                return
        raise AssertionError("the network did not settle")

    def drain(self) -> None:
        while self.in_flight:
            message = self.in_flight.pop(0)
            node = self.nodes[message.to]
            node.inbox.append(message)
            while node.inbox:
                case_id = node.inbox[0].case_id
                self.send(node.process(self.tick()))
                self.observe(node, [case_id])

    def fingerprint(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((n.node_id, c, len(n.events(c))) for n in self.nodes.values() for c in n.cases())

    def pending_anywhere(self) -> bool:
        return any(
            (s := n.view(c)) is not None and s.pending is not None for n in self.nodes.values() for c in n.cases()
        )


def run(seed: int, *, steps: int, max_cases: int, durable: bool = True) -> Network:
    rng = random.Random(seed)
    nodes = {n: Node(n, SIGNERS[n], durable_before_answer=durable) for n in NODES}
    net = Network(rng, nodes)
    for _ in range(steps):
        net.step(max_cases)
    return net


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_at_most_one_actor_at_every_step_and_one_holder_after_healing(seed: int) -> None:
    net = run(seed, steps=4000, max_cases=100)
    assert len(net.cases) == 100
    net.heal()
    moved = 0
    for case_id in net.cases:
        views = [n.view(case_id) for n in net.nodes.values()]
        assert all(v is not None for v in views), "every node holds every case after gossip"
        chains = {tuple(e.hash for e in v.chain) for v in views if v is not None}
        assert len(chains) == 1, f"case {case_id}: nodes hold different chains"
        state = views[0]
        assert state is not None
        assert state.holder is not None
        assert state.pending is None
        assert state.equivocations == ()
        actors = [n for n in NODES if can_act(state, n)]
        assert actors == ([] if state.closed else [state.holder])
        # The agreed chain is a proof anyone with the directory can check offline.
        assert verify_chain([e.signed for e in state.chain], DIRECTORY, NOW) == fold(state.chain, DIRECTORY)
        moved += any(isinstance(e.action, Accept) for e in state.chain)
    assert moved > len(net.cases) // 3, "many cases changed hands"
    assert net.checks > 5_000


def test_the_checker_catches_a_node_that_answers_before_its_event_is_durable() -> None:
    """Break "durable before it answers": a node sends events it keeps only in memory, so after a
    crash it signs a different event on the same head. Some seed shows two nodes able to act."""
    caught = 0
    for seed in range(3):
        try:
            run(seed, steps=3000, max_cases=40, durable=False)
        except TwoActors:
            caught += 1
    assert caught > 0
