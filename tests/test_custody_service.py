"""The custody service's rules on a node, with messages ferried between three nodes' databases.

Each node has its own SQLite database and :class:`CustodyService`; a "network" here takes the
envelopes each outbox queued, checks they are signed custody envelopes, and applies them at the
recipient (``apply``, what the server's receiver hook does). Rules are a table: who may do what.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, update
from tongban.v1 import custody_pb2

from gateway import audit
from gateway.custody import service as service_mod
from gateway.custody.chain import verify_chain
from gateway.custody.events import CaseType
from gateway.custody.service import CustodyService
from gateway.errors import NotInvolved, NotPermitted
from gateway.exchange import outbox
from gateway.exchange.envelope import parse_envelope
from gateway.exchange.purposes import load_profiles
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import outbox as outbox_table
from gateway.wire import custody_chain_from_wire
from tests.test_custody_store import DIRECTORY, SIGNERS, A, B, C
from tests.trustkit import NOW

PROFILES = load_profiles()


class Net:
    def __init__(self, tmp: Path) -> None:
        self.nodes: dict[str, CustodyService] = {}
        self.keyrings: dict[str, DataKeyring] = {}
        for n in (A, B, C):
            engine = make_engine(f"sqlite:///{tmp / n}.db")
            migrate(engine)
            self.keyrings[n] = DataKeyring.generate()
            self.nodes[n] = CustodyService(
                node_id=n,
                engine=engine,
                keyring=self.keyrings[n],
                signer=SIGNERS[n],
                directory=lambda: DIRECTORY,
                profiles=PROFILES,
                clock=lambda: NOW,
            )

    def deliver(self, *, drop_to: str | None = None) -> int:
        """Deliver every queued custody envelope (dropping those to ``drop_to``); repeat until quiet."""
        total = 0
        while True:
            moved = 0
            for sender, svc in self.nodes.items():
                for claimed in outbox.claim(svc._engine, "test", now=NOW):
                    data = claimed.envelope(self.keyrings[sender])
                    header = parse_envelope(data).header
                    assert header.purpose == "custody_event"
                    assert header.profile_version == 2
                    with svc._engine.begin() as conn:
                        conn.execute(
                            update(outbox_table)
                            .where(outbox_table.c.message_id == claimed.message_id)
                            .values(status="delivered")
                        )
                    if claimed.peer == drop_to:
                        continue
                    chain = custody_pb2.CustodyChain.FromString(parse_envelope(data).envelope.payload)
                    case_id, events = custody_chain_from_wire(chain)
                    target = self.nodes[claimed.peer]
                    with target._engine.begin() as conn:
                        target.apply(conn, sender, case_id, events)
                    moved += 1
            total += moved
            if not moved:
                return total

    def close(self) -> None:
        for svc in self.nodes.values():
            svc._engine.dispose()


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def _open(net: Net) -> str:
    case_id = str(uuid.uuid4())
    net.nodes[A].open_case(case_id, CaseType.ORPHAN, B, date(2026, 11, 2))
    return case_id


def heads(net: Net, case_id: str) -> set[tuple[str, ...]]:
    return {tuple(e.hash for e in svc.chain(case_id)) for svc in net.nodes.values() if svc.chain(case_id)}


def test_offer_accept_moves_the_case_and_both_hold_the_same_chain(net: Net) -> None:
    case_id = _open(net)
    net.deliver()
    net.nodes[A].offer(case_id, B)
    net.deliver()
    assert net.nodes[B].view(case_id) is not None
    net.nodes[B].accept(case_id)
    net.deliver()
    assert net.nodes[A].holder(case_id) == net.nodes[B].holder(case_id) == B
    assert len(heads(net, case_id)) == 1
    state = verify_chain(net.nodes[A].chain(case_id), DIRECTORY, NOW)
    assert state.holder == B


# (who acts, action) on a case A holds after an offer to B is pending: which are refused
RULES = [
    ("A may not offer twice", A, lambda s, c: s.offer(c, C)),
    ("A may not close with an offer pending", A, lambda s, c: s.close(c)),
    ("A may not accept its own offer", A, lambda s, c: s.accept(c)),
    ("C is not the offer's target", C, lambda s, c: s.accept(c)),
    ("B may not recall-request an offer it did not make", B, lambda s, c: s.recall_request(c)),
]


@pytest.mark.parametrize(("name", "who", "act"), RULES, ids=[r[0] for r in RULES])
def test_refused_actions(net: Net, name: str, who: str, act: object) -> None:
    case_id = _open(net)
    net.nodes[A].offer(case_id, B)
    net.deliver()
    before = heads(net, case_id)
    with pytest.raises((NotPermitted, service_mod.UnknownCase)):
        act(net.nodes[who], case_id)  # type: ignore[operator]
    assert heads(net, case_id) == before


def test_decline_returns_the_case_and_recall_needs_the_targets_signature(net: Net) -> None:
    case_id = _open(net)
    net.nodes[A].offer(case_id, B)
    net.deliver()
    net.nodes[B].decline(case_id)
    net.deliver()
    assert net.nodes[A].holder(case_id) == A
    net.nodes[A].offer(case_id, B)
    net.deliver()
    net.nodes[A].recall_request(case_id)
    assert net.nodes[A].holder(case_id) is None  # not final until B signs the recall
    net.deliver()
    assert net.nodes[A].holder(case_id) == net.nodes[B].holder(case_id) == A
    assert len(heads(net, case_id)) == 1


def test_a_lost_message_is_healed_by_the_answer_to_the_next_one(net: Net) -> None:
    case_id = _open(net)
    net.nodes[A].offer(case_id, B)
    net.deliver()
    net.nodes[B].accept(case_id)
    net.deliver(drop_to=A)  # B's acceptance never reaches A
    assert net.nodes[A].holder(case_id) is None
    net.nodes[A].resend(case_id)  # A shows B its (shorter) chain; B answers with the whole chain
    net.deliver()
    assert net.nodes[A].holder(case_id) == B
    assert len(heads(net, case_id)) == 1


def test_who_holds_only_for_involved_nodes_and_audited(net: Net) -> None:
    case_id = _open(net)
    assert net.nodes[A].who_holds(case_id, B)  # named in the genesis
    with pytest.raises(NotInvolved):
        net.nodes[A].who_holds(case_id, C)
    with pytest.raises(NotInvolved):
        net.nodes[A].who_holds(str(uuid.uuid4()), B)  # unknown case: the same answer
    with net.nodes[A]._engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit.audit_log.c.action).order_by(audit.audit_log.c.seq))]
    assert actions == ["custody_query", "custody_query_denied", "custody_query_denied"]


def test_who_holds_for_the_supervising_node_of_an_involved_province(net: Net) -> None:
    """The provincial operator's supervising node ([cases.supervisors]) may ask; a supervisor
    configured for a province no involved node is in may not."""
    case_id = _open(net)
    a_division = DIRECTORY.entry(A).division
    other_prefix = next(p for p in ("11", "12", "13", "44") if not a_division.startswith(p))
    net.nodes[A]._supervisors = {other_prefix: C}
    with pytest.raises(NotInvolved):
        net.nodes[A].who_holds(case_id, C)
    net.nodes[A]._supervisors = {a_division[:2]: C}
    assert net.nodes[A].who_holds(case_id, C) == net.nodes[A].chain(case_id)
