"""Cases joined to custody (SPEC §6): after every step exactly one node can act on a case.

The rule of :mod:`gateway.cases.custody_hook` as a table, then the service on three node databases
(两江新区 accepts, 南部县 decides, 北碚区 looks on) with envelopes passed through the real
:class:`Receiver` and its custody hook, as in ``tests/test_cases_service.py``: after each step and
each settling round every node's own view of the chain has exactly one node that may act, and all
hold the same chain; a node that is not the holder is refused and nothing changes; the exported
chain verifies offline with ``tongban custody verify``; the server's case loop survives a failing
round.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.cases import lifecycle as lc
from gateway.cases.custody_hook import CaseCustody, Duty, Owed, owed, turn
from gateway.cases.service import CaseService
from gateway.cases.store import CaseStore
from gateway.cases.types import EvidenceKind
from gateway.custody import export
from gateway.custody import store as custody_store
from gateway.custody.chain import CustodyState, PendingOffer, can_act
from gateway.custody.events import CaseType, Genesis
from gateway.errors import NotPermitted, StorageError
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.server import CaseSync, apply_custody
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import case_events
from gateway.trust.store import utc_now
from tests.test_cases_service import (
    BB,
    DIVISIONS,
    FILES,
    LJ,
    NB,
    document,
    living_subsidy_draft,
    orphan_draft,
)
from tests.test_mtls import LivePki

# --- the rule, as a table ----------------------------------------------------------------------------

_CASE = orphan_draft(99, FILES).application


def _state(status: lc.Status, registration: str = NB) -> lc.CaseState:
    from gateway.cases.types import Case

    case = Case(
        case_id="00000000-0000-4000-8000-000000000001",
        application=_CASE,
        accepting_node=LJ,
        accepting_division="500157",
        registration_node=NB,
        registration_division="511321",
        child_ref="ref",
        accepted_on=date(2026, 3, 2),
    )
    return replace(lc.new_state(case), status=status, registration_node=registration)


def _custody(holder: str | None, pending: tuple[str, str] | None = None, closed: bool = False) -> CustodyState:
    genesis = Genesis(CaseType.ORPHAN, LJ, date(2026, 3, 2), NB)
    offer = PendingOffer("0" * 64, *pending) if pending else None
    return CustodyState("00000000-0000-4000-8000-000000000001", genesis, (), holder, offer, closed)


S = lc.Status
RULES: list[tuple[str, str, lc.CaseState, CustodyState | None, Owed | None]] = [
    ("accepting node opens the chain", LJ, _state(S.PUSHED), None, Owed(Duty.OPEN)),
    ("registration node never opens", NB, _state(S.PUSHED), None, None),
    ("residence offers the pushed case", LJ, _state(S.PUSHED), _custody(LJ), Owed(Duty.OFFER, NB)),
    ("not accepted before received", NB, _state(S.PUSHED), _custody(None, (LJ, NB)), None),
    ("accepted once received", NB, _state(S.RECEIVED), _custody(None, (LJ, NB)), Owed(Duty.ACCEPT)),
    ("offerer waits for the answer", LJ, _state(S.RECEIVED), _custody(None, (LJ, NB)), None),
    ("request hands it back", NB, _state(S.MATERIAL_REQUESTED), _custody(NB), Owed(Duty.OFFER, LJ)),
    ("residence accepts the request", LJ, _state(S.MATERIAL_REQUESTED), _custody(None, (NB, LJ)), Owed(Duty.ACCEPT)),
    ("resubmission goes back", LJ, _state(S.RESUBMITTED), _custody(LJ), Owed(Duty.OFFER, NB)),
    ("registration keeps it to review", NB, _state(S.FIRST_REVIEWED), _custody(NB), None),
    ("the decision goes back", NB, _state(S.RESULT_DELIVERED), _custody(NB), Owed(Duty.OFFER, LJ)),
    ("residence accepts the result", LJ, _state(S.RESULT_DELIVERED), _custody(None, (NB, LJ)), Owed(Duty.ACCEPT)),
    ("a return goes back", NB, _state(S.RETURNED), _custody(NB), Owed(Duty.OFFER, LJ)),
    ("a transfer goes onward", NB, _state(S.TRANSFERRED, BB), _custody(NB), Owed(Duty.OFFER, BB)),
    ("the new node accepts once received", BB, _state(S.RECEIVED, BB), _custody(None, (NB, BB)), Owed(Duty.ACCEPT)),
    ("the holder closes", LJ, _state(S.CLOSED), _custody(LJ), Owed(Duty.CLOSE)),
    ("a non-holder never closes", NB, _state(S.CLOSED), _custody(LJ), None),
    ("nothing after close", LJ, _state(S.CLOSED), _custody(LJ, closed=True), None),
    ("an offer for another node is not ours", BB, _state(S.RECEIVED), _custody(None, (LJ, NB)), None),
]


@pytest.mark.parametrize(("name", "node", "case", "custody", "expected"), RULES, ids=[r[0] for r in RULES])
def test_the_custody_owed_by_each_case_state(
    name: str, node: str, case: lc.CaseState, custody: CustodyState | None, expected: Owed | None
) -> None:
    assert owed(node, case, custody) == expected, name


def test_every_open_state_has_a_turn() -> None:
    for status in lc.Status:
        who, _ = turn(_state(status))
        assert (who is None) == (status is lc.Status.CLOSED), status


# --- three nodes ---------------------------------------------------------------------------------------


@dataclass
class Node:
    service: CaseService
    custody: CaseCustody
    receiver: Receiver
    keyring: DataKeyring


@dataclass
class Net:
    nodes: dict[str, Node]
    live: LivePki

    def deliver(self, sender: str) -> int:
        engine = self.nodes[sender].service.store.engine
        claimed = outbox.claim(engine, "test", limit=10_000)
        directory = self.live.directory()
        for item in claimed:
            receipt = self.nodes[item.peer].receiver.receive(
                item.envelope(self.nodes[sender].keyring), directory.entry(sender)
            )
            with engine.begin() as conn:
                outbox.mark_delivered(conn, item.message_id, receipt.SerializeToString())
        return len(claimed)

    def settle(self, now: datetime) -> None:
        """Deliver, sync and settle custody until nothing moves (what the running nodes do)."""
        for _ in range(10):
            moved = sum(self.deliver(n) for n in self.nodes)
            for node in self.nodes.values():
                node.service.sync(now)
                moved += sum(node.custody.settle().values())
            if not moved:
                return
        raise AssertionError("the network did not settle")

    def views(self, case_id: str) -> dict[str, CustodyState | None]:
        return {n: node.custody.view(case_id) for n, node in self.nodes.items()}

    def actors(self, case_id: str) -> set[str]:
        """Every node that may act on the case in its own view of the chain."""
        return {n for n, view in self.views(case_id).items() if view is not None and can_act(view, n)}


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    live = LivePki.create()
    directory = live.directory()
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
            directory=lambda: directory,
            profiles=profiles,
            clock=utc_now,
        )
        service = CaseService(
            node_id=node_id,
            division=division,
            store=store,
            keyring=keyring,
            directory=directory,
            encryption_key=pki.encryption_key,
            signer=pki.signers[0],
            profiles=profiles,
            custody=custody,
        )
        receiver = Receiver(
            node_id=node_id,
            engine=engine,
            keyring=keyring,
            directory=live.directory,
            profiles=profiles,
            signer=pki.signers[0],
            clock=utc_now,
            on_accept=apply_custody(custody),
        )
        nodes[node_id] = Node(service, custody, receiver, keyring)
    yield Net(nodes, live)
    for node in nodes.values():
        node.service.store.engine.dispose()


def _holder_everywhere(net: Net, case_id: str, expected: str) -> None:
    views = net.views(case_id)
    assert net.actors(case_id) == {expected}
    heads = {view.head for n, view in views.items() if n in (LJ, NB) and view is not None}
    assert len(heads) == 1, "both nodes hold the same chain"
    assert views[BB] is None, "an uninvolved node holds nothing"


def test_custody_follows_the_case_and_one_node_can_act_after_each_step(net: Net, tmp_path: Path) -> None:
    lj, nb = net.nodes[LJ].service, net.nodes[NB].service
    now = utc_now()
    case_id = lj.accept(orphan_draft(11, FILES), FILES, now)
    mine = net.nodes[LJ].custody.view(case_id)
    assert mine is not None
    assert mine.pending is not None, "genesis and offer signed with the push"
    assert net.actors(case_id) == set(), "nobody acts while the case is on its way"
    net.settle(now)
    assert nb.store.load(case_id).state.status is lc.Status.RECEIVED
    _holder_everywhere(net, case_id, NB)

    t = now + timedelta(minutes=1)
    nb.request_material(case_id, [EvidenceKind.HOUSEHOLD_REGISTER], t)
    assert net.actors(case_id) == set(), "the requesting node gave up acting when it offered the case back"
    net.settle(t)
    _holder_everywhere(net, case_id, LJ)
    register = b"synthetic household register"
    lj.resubmit(case_id, [(document("register", EvidenceKind.HOUSEHOLD_REGISTER, register), register)], t)
    net.settle(t)
    _holder_everywhere(net, case_id, NB)
    t2 = t + timedelta(minutes=1)
    nb.first_review(case_id, t2)
    _holder_everywhere(net, case_id, NB)
    nb.approve(case_id, date(t2.year, t2.month, 1), t2)
    assert net.actors(case_id) == set()
    net.settle(t2)
    _holder_everywhere(net, case_id, LJ)
    lj.notify_applicant(case_id, t2)
    lj.close(case_id, t2)
    net.settle(t2)
    assert net.actors(case_id) == set(), "a closed case has nobody who may act"
    views = net.views(case_id)
    assert views[LJ] == views[NB]
    final = views[NB]
    assert final is not None
    assert final.closed
    kinds = [e.kind.value for e in final.chain]
    assert kinds == ["genesis", "offer", "accept", "offer", "accept", "offer", "accept", "offer", "accept", "close"]

    # The chain exported by either node verifies offline, from public material only.
    chain_file = tmp_path / "chain.json"
    with net.nodes[NB].service.store.engine.connect() as conn:
        chain_file.write_text(export.dumps(case_id, custody_store.chain(conn, case_id)), encoding="utf-8")
    bundle, root = tmp_path / "directory.json", tmp_path / "root.json"
    bundle.write_bytes(net.live.bundle())
    root.write_bytes(net.live.pki.roots[0].to_bytes())
    from gateway.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["custody", "verify", str(chain_file), "--directory", str(bundle), "--root", str(root)])
    assert code == 0
    assert "chain of 10 event(s) verifies" in out.getvalue()
    assert "closed (last holder cq-liangjiang)" in out.getvalue()


def test_a_node_that_does_not_hold_the_case_is_refused_and_nothing_changes(net: Net) -> None:
    lj, nb = net.nodes[LJ].service, net.nodes[NB].service
    now = utc_now()
    cert = b"synthetic disability certificate"
    case_id = lj.accept(living_subsidy_draft(12, cert), {"cert": cert}, now)
    net.settle(now)

    def snapshot(service: CaseService) -> tuple[int, int, str | None]:
        with service.store.engine.connect() as conn:
            events = conn.execute(select(func.count()).select_from(case_events)).scalar_one()
            head = custody_store.locked_state(conn, case_id, net.live.directory())
        return int(events), len(outbox.list_messages(service.store.engine, limit=1000)), head and head.head

    before = snapshot(lj)
    with pytest.raises(NotPermitted):  # the lifecycle allows a withdrawal now; custody does not
        lj.withdraw(case_id, now)
    assert snapshot(lj) == before
    nb.approve(case_id, date(now.year, now.month, 1), now)
    # Not delivered yet: the residence node does not hold the result's case until it accepts it …
    with pytest.raises(NotPermitted):
        lj.notify_applicant(case_id, now)
    # … and the deciding node gave custody up when it signed the offer.
    before = snapshot(nb)
    with pytest.raises(NotPermitted):
        nb.return_case(case_id, "not_registered_here", "synthetic", now)
    assert snapshot(nb) == before
    net.settle(now)
    assert net.actors(case_id) == {LJ}
    assert lj.notify_applicant(case_id, now).status is lc.Status.APPLICANT_NOTIFIED


def test_a_custody_offer_that_arrives_after_the_case_is_accepted_by_settle(net: Net) -> None:
    """Case and custody messages are separate envelopes: the receiving node accepts custody when
    the offer arrives, whichever came first (here the case steps are applied before the offer)."""
    lj, nb = net.nodes[LJ].service, net.nodes[NB].service
    now = utc_now()
    case_id = lj.accept(orphan_draft(13, FILES), FILES, now)
    engine = lj.store.engine
    claimed = outbox.claim(engine, "test", limit=10_000)
    directory = net.live.directory()

    def deliver(items: list[outbox.Claimed]) -> None:
        for item in items:
            receipt = net.nodes[item.peer].receiver.receive(item.envelope(net.nodes[LJ].keyring), directory.entry(LJ))
            with engine.begin() as conn:
                outbox.mark_delivered(conn, item.message_id, receipt.SerializeToString())

    deliver([i for i in claimed if i.purpose != "custody_event"])
    nb.sync(now)
    assert nb.store.load(case_id).state.status is lc.Status.RECEIVED
    assert net.nodes[NB].custody.view(case_id) is None, "no chain here yet: nothing to accept"
    deliver([i for i in claimed if i.purpose == "custody_event"])
    assert net.nodes[NB].custody.settle() == {"accept": 1}
    assert net.nodes[NB].custody.settle() == {}, "settling is idempotent"
    net.settle(now)
    _holder_everywhere(net, case_id, NB)


def test_the_servers_case_loop_logs_a_failed_round_and_goes_on(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    node = net.nodes[NB]
    calls = iter([StorageError("synthetic"), RuntimeError("a value that must not be logged")])

    def build() -> CaseService:
        raise next(calls)

    loop = CaseSync(build, node.custody, clock=utc_now, interval=0.01)
    with caplog.at_level(logging.WARNING, logger="tongban.server"):
        loop.run_once()
        loop.run_once()
    assert loop.rounds == 2
    assert "storage_error" in caplog.text
    assert "RuntimeError" in caplog.text
    assert "must not be logged" not in caplog.text

    # A working loop moves a case with nobody running a command on the registration node.
    lj = net.nodes[LJ].service
    now = utc_now()
    case_id = lj.accept(orphan_draft(14, FILES), FILES, now)
    net.deliver(LJ)
    running = CaseSync(lambda: node.service, node.custody, clock=utc_now, interval=0.05)
    running.start()
    try:
        for _ in range(100):
            view = node.custody.view(case_id)
            if view is not None and view.holder == NB:
                break
            time.sleep(0.05)
    finally:
        running.stop(timeout=5)
    assert node.service.store.load(case_id).state.status is lc.Status.RECEIVED
    assert node.custody.holder(case_id) == NB
