"""转办: a case follows the child to the right registration node (SPEC §6), on three node databases.

两江新区 (residence) accepts an orphan-recognition case for a child registered in 南部县; 南部县
receives it, then learns the child's 户籍 moved to 北碚区 and transfers it. After each step at most
one node can act; once 北碚区 has received the case (every document re-sealed to it and checked) and
accepted custody, it is the only node that can act, the residence node follows the new registration
node, and the case goes on to a decision there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.cases import lifecycle as lc
from gateway.cases.custody_hook import CaseCustody
from gateway.cases.service import CaseService
from gateway.cases.store import CaseStore
from gateway.errors import IllegalTransition, InvalidCase, NotPermitted
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.server import apply_custody
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.trust.store import utc_now
from gateway.trust.verifier import Directory
from tests.test_cases_custody import Net, Node
from tests.test_cases_service import BB, DIVISIONS, FILES, LJ, NB, orphan_draft
from tests.test_mtls import LivePki


def build_net(tmp_path: Path, live: LivePki, directory: Callable[[], Directory]) -> Net:
    """Three nodes like ``tests/test_cases_custody.py``, each reading ``directory()`` when it acts."""
    profiles = load_profiles()
    nodes: dict[str, Node] = {}
    for node_id, division in DIVISIONS.items():
        engine = make_engine(f"sqlite:///{tmp_path / node_id}.db")
        migrate(engine)
        keyring = DataKeyring.generate()
        pki = live.node(node_id)
        store = CaseStore(engine, keyring)
        custody = CaseCustody(
            cases=store,
            node_id=node_id,
            engine=engine,
            keyring=keyring,
            signer=pki.signers[0],
            directory=directory,
            profiles=profiles,
            clock=utc_now,
        )
        service = CaseService(
            node_id=node_id,
            division=division,
            store=store,
            keyring=keyring,
            directory=directory(),
            encryption_key=pki.encryption_key,
            signer=pki.signers[0],
            profiles=profiles,
            custody=custody,
        )
        receiver = Receiver(
            node_id=node_id,
            engine=engine,
            keyring=keyring,
            directory=directory,
            profiles=profiles,
            signer=pki.signers[0],
            clock=utc_now,
            on_accept=apply_custody(custody),
        )
        nodes[node_id] = Node(service, custody, receiver, keyring)
    return Net(nodes, live)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    live = LivePki.create()
    directory = live.directory()
    built = build_net(tmp_path, live, lambda: directory)
    yield built
    for node in built.nodes.values():
        node.service.store.engine.dispose()


def test_a_transferred_case_follows_the_child_and_only_the_new_node_can_act(net: Net) -> None:
    lj, nb, bb = (net.nodes[n].service for n in (LJ, NB, BB))
    now = utc_now()
    case_id = lj.accept(orphan_draft(21, FILES), FILES, now)
    net.settle(now)
    assert net.actors(case_id) == {NB}

    t = now + timedelta(minutes=1)
    with pytest.raises(InvalidCase):
        nb.transfer(case_id, DIVISIONS[NB], t)  # the child's division is still served by this node
    with pytest.raises(InvalidCase):
        nb.transfer(case_id, DIVISIONS[BB], t, reason="Not A Code")
    state = nb.transfer(case_id, DIVISIONS[BB], t)
    assert state.status is lc.Status.TRANSFERRED
    assert state.registration_node == BB
    assert net.actors(case_id) == set(), "the old node gave the case up when it offered it onward"
    with pytest.raises(NotPermitted):
        nb.return_case(case_id, "not_registered_here", "synthetic", t)

    # Delivery one hop at a time: after every hop at most one node can act.
    for _ in range(10):
        moved = sum(net.deliver(n) for n in net.nodes)
        for node in net.nodes.values():
            node.service.sync(t)
            assert len(net.actors(case_id)) <= 1
            moved += sum(node.custody.settle().values())
            assert len(net.actors(case_id)) <= 1
        if not moved:
            break
    assert net.actors(case_id) == {BB}, "exactly one node can act: the new registration node"
    new = bb.store.load(case_id)
    assert new.state.status is lc.Status.RECEIVED
    assert new.row.side.value == "registration"
    assert all(d.state.value == "complete" for d in new.documents), "every document re-sealed and checked"
    residence = lj.store.load(case_id)
    assert residence.state.status is lc.Status.RECEIVED
    assert residence.state.registration_node == BB, "the residence node was told"
    views = net.views(case_id)
    lj_view, nb_view, bb_view = views[LJ], views[NB], views[BB]
    assert lj_view is not None
    assert nb_view is not None
    assert bb_view is not None
    assert lj_view.head == nb_view.head == bb_view.head, "all three hold the same chain"
    assert [e.kind.value for e in bb_view.chain] == ["genesis", "offer", "accept", "offer", "accept"]

    # The case goes on at the new node; the old one can no longer act on it.
    t2 = t + timedelta(minutes=1)
    with pytest.raises(NotPermitted):
        nb.first_review(case_id, t2)
    bb.first_review(case_id, t2)
    bb.approve(case_id, date(t2.year, t2.month, 1), t2)
    net.settle(t2)
    assert net.actors(case_id) == {LJ}
    assert lj.store.load(case_id).state.status is lc.Status.RESULT_DELIVERED


def test_a_transfer_is_refused_where_the_lifecycle_or_custody_says_no(net: Net) -> None:
    lj, nb = net.nodes[LJ].service, net.nodes[NB].service
    now = utc_now()
    case_id = lj.accept(orphan_draft(22, FILES), FILES, now)
    with pytest.raises(IllegalTransition):
        lj.transfer(case_id, DIVISIONS[BB], now)  # the residence side never transfers
    net.settle(now)
    nb.return_case(case_id, "not_registered_here", "synthetic", now)
    with pytest.raises(NotPermitted):
        nb.transfer(case_id, DIVISIONS[BB], now)
