"""The custody store's contract, on SQLite and PostgreSQL (the ``db_url`` fixture).

Appending is verified and ruled in one transaction; duplicates are no-ops; an event whose
predecessor has not arrived waits and is chained when it does; a second event by one signer on one
predecessor is kept as an equivocation proof; an illegal or badly signed event is refused with
nothing kept; and two processes appending on one head never both win.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta

import pytest
from sqlalchemy import Engine, func, select

from gateway.custody import store
from gateway.custody.chain import verify_chain
from gateway.custody.events import Accept, Action, CaseType, Close, CustodyEvent, Decline, Genesis, Offer, sign_event
from gateway.errors import CustodyIllegalTransition, CustodySignatureInvalid, StorageError
from gateway.store.db import make_engine, migrate
from gateway.store.schema import custody_events
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory, TrustState
from tests.trustkit import NOW, new_pki

DIVISIONS = {"cq-liangjiang": "500157", "sc-nanbu": "511321", "sc-wuhou": "510107"}
A, B, C = "cq-liangjiang", "sc-nanbu", "sc-wuhou"


def _world() -> tuple[Directory, dict[str, Signer]]:
    pki = new_pki()
    signers = {n: pki.provinces[d[:2]].enrol(n, d).signers[0] for n, d in DIVISIONS.items()}
    directory = TrustState.from_pinned_root(pki.roots[0].to_bytes(), NOW).accept(pki.bundle(), NOW)[1]
    return directory, signers


DIRECTORY, SIGNERS = _world()
_t = [NOW - timedelta(hours=1)]


def sign(node: str, case_id: str, predecessor: str | None, action: Action) -> CustodyEvent:
    _t[0] += timedelta(seconds=1)
    return sign_event(
        SIGNERS[node], signer_id=node, case_id=case_id, predecessor=predecessor, created=_t[0], action=action
    )


def new_case() -> tuple[str, CustodyEvent]:
    case_id = str(uuid.uuid4())
    return case_id, sign(A, case_id, None, Genesis(CaseType.ORPHAN, A, date(2026, 11, 2), B))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def put(engine: Engine, event: CustodyEvent) -> store.Appended:
    with engine.begin() as conn:
        return store.append(conn, event.signed, DIRECTORY, NOW)


def test_offer_accept_close_in_chain_order(engine: Engine) -> None:
    case_id, genesis = new_case()
    offer = sign(A, case_id, genesis.hash, Offer(B))
    accept = sign(B, case_id, offer.hash, Accept())
    close = sign(B, case_id, accept.hash, Close())
    for e in (genesis, offer, accept, close):
        assert put(engine, e).outcome is store.Outcome.APPENDED
    with engine.connect() as conn:
        chain = store.chain(conn, case_id)
        state = store.view(conn, case_id, DIRECTORY)
        assert store.cases(conn) == [case_id]
    assert [e.hash for e in chain] == [genesis.hash, offer.hash, accept.hash, close.hash]
    assert chain[1] == offer.signed  # the bytes as signed
    assert state is not None
    assert state.holder == B
    assert state.closed
    assert verify_chain(chain, DIRECTORY, NOW).head == close.hash


def test_duplicates_are_no_ops(engine: Engine) -> None:
    case_id, genesis = new_case()
    put(engine, genesis)
    assert put(engine, genesis).outcome is store.Outcome.DUPLICATE
    with engine.connect() as conn:
        assert len(store.chain(conn, case_id)) == 1


def test_an_event_waits_for_its_predecessor_then_is_chained(engine: Engine) -> None:
    case_id, genesis = new_case()
    offer = sign(A, case_id, genesis.hash, Offer(B))
    accept = sign(B, case_id, offer.hash, Accept())
    assert put(engine, accept).outcome is store.Outcome.PENDING
    assert put(engine, offer).outcome is store.Outcome.PENDING  # no genesis yet
    done = put(engine, genesis)
    assert done.outcome is store.Outcome.APPENDED
    assert done.promoted == (offer.hash, accept.hash)
    with engine.connect() as conn:
        assert [e.hash for e in store.chain(conn, case_id)] == [genesis.hash, offer.hash, accept.hash]
        assert store.held(conn, case_id) == ()


def test_a_second_event_by_one_signer_on_one_head_is_kept_as_a_proof(engine: Engine) -> None:
    case_id, genesis = new_case()
    offer = sign(A, case_id, genesis.hash, Offer(B))
    accept, decline = sign(B, case_id, offer.hash, Accept()), sign(B, case_id, offer.hash, Decline())
    for e in (genesis, offer, accept):
        put(engine, e)
    assert put(engine, decline).outcome is store.Outcome.EQUIVOCATION
    with engine.connect() as conn:
        state = store.view(conn, case_id, DIRECTORY)
        assert store.held(conn, case_id) == ((decline.signed, store.Outcome.EQUIVOCATION),)
    assert state is not None
    assert state.holder == B  # the first one stays on the chain
    assert len(state.equivocations) == 1
    assert state.equivocations[0].signer == B


def test_an_illegal_event_on_the_head_is_refused_and_nothing_kept(engine: Engine) -> None:
    case_id, genesis = new_case()
    put(engine, genesis)
    with pytest.raises(CustodyIllegalTransition):
        put(engine, sign(C, case_id, genesis.hash, Offer(B)))  # C does not hold the case
    with engine.connect() as conn:
        assert len(store.chain(conn, case_id)) == 1
        assert store.held(conn, case_id) == ()


def test_a_bad_signature_is_refused_and_nothing_kept(engine: Engine) -> None:
    case_id, genesis = new_case()
    put(engine, genesis)
    offer = sign(A, case_id, genesis.hash, Offer(B))
    forged = replace(offer, signed=replace(offer.signed, signature=bytes(64)))
    with pytest.raises(CustodySignatureInvalid):
        put(engine, forged)
    with engine.connect() as conn:
        assert len(store.chain(conn, case_id)) == 1
        assert store.held(conn, case_id) == ()


def test_two_writers_on_one_head_never_both_win(engine: Engine) -> None:
    """Two threads (own connections, own transactions) append different events by A on the same
    head at once: exactly one is on the chain; the other is an equivocation proof or was refused
    (its transaction rolled back)."""
    case_id, genesis = new_case()
    put(engine, genesis)
    events = [sign(A, case_id, genesis.hash, Offer(B)), sign(A, case_id, genesis.hash, Offer(C))]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def write(event: CustodyEvent) -> None:
        barrier.wait()
        try:
            outcomes.append(put(engine, event).outcome)
        except StorageError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=write, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        on_chain = conn.execute(
            select(func.count()).select_from(custody_events).where(custody_events.c.case_id == case_id)
        ).scalar_one()
    assert on_chain == 2
    assert outcomes.count(store.Outcome.APPENDED) == 1
    other = next(o for o in outcomes if o is not store.Outcome.APPENDED)
    assert other in (store.Outcome.EQUIVOCATION, "custody_concurrent_append", "storage_error")
