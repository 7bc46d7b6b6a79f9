"""The custody store: each case's chain as signed, durable before the node answers (SPEC §6).

Three tables (``gateway.store.schema``): ``custody_cases`` (one lock row per case: head and
length), ``custody_events`` (the chain, append-only, ``seq`` 0 = genesis, primary key
``(case_id, seq)``) and ``custody_held`` (verified events kept beside the chain: *pending* —
the predecessor has not arrived —, *equivocation* — the signer signed another event on the same
predecessor —, *conflict* — another signer's event holds the place, or it is illegal there).

:func:`append` is the one way in. Inside the caller's transaction it:

1. returns ``DUPLICATE`` for an event already held (on the chain or beside it): a no-op;
2. verifies the event on its own (:func:`~gateway.custody.chain.verify_event`, ``history=False``:
   a new event must come from a signer active *now*);
3. locks the case's row (``SELECT … FOR UPDATE`` on PostgreSQL) and rebuilds the chain's state
   with :func:`~gateway.custody.chain.start` / :func:`~gateway.custody.chain.step`;
4. appends the event if it names the head and :func:`step` accepts it there, with a conditional
   update of the head (``WHERE head = <old head>``) and the ``(case_id, seq)`` key as a second
   guard — two gateway processes on one database can never both append on one head: the loser's
   transaction fails (``StorageError``) and nothing of it is kept; then appends, in hash order, any
   pending events that now extend the chain (``PENDING`` → on the chain);
5. otherwise keeps it beside the chain: ``PENDING`` (unknown predecessor),
   ``EQUIVOCATION`` (the chain already has another event by the same signer on the same
   predecessor: a proof, reported in the log and :data:`METRICS` — case id and node ids only),
   ``CONFLICT`` (illegal where it stands). Illegal events on the head by their own signer are the
   caller's bug for its own events (:mod:`gateway.custody.service` checks before signing).

What is stored are the four signed byte strings and the signature exactly as received: the chain
read back (:func:`chain`) is the proof :func:`~gateway.custody.chain.verify_chain` checks offline.
Nothing here holds personal data: case ids (UUIDs), node ids, hashes, kinds and signatures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.custody.chain import CustodyState, fold, start, step, verify_event
from gateway.custody.events import CustodyEvent, Kind, SignedEvent, parse_event
from gateway.errors import CustodyError, CustodyIllegalTransition, StorageError
from gateway.exchange.delivery import Metrics
from gateway.store.schema import custody_cases, custody_events, custody_held
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.custody")

METRICS = Metrics()
"""Counters of this process: ``appended``, ``duplicate``, ``pending``, ``equivocation``,
``conflict``, ``rejected.<error code>``."""


class Outcome(StrEnum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    PENDING = "pending"
    EQUIVOCATION = "equivocation"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Appended:
    """What :func:`append` did with one event; ``promoted`` are pending events it then chained."""

    outcome: Outcome
    hash: str
    promoted: tuple[str, ...] = ()


class ConcurrentAppend(StorageError):
    """Another process appended to this case's chain at the same moment: retry the transaction."""

    code = "custody_concurrent_append"
    public_message = "the case's custody chain changed concurrently; try again"


# --- rows ------------------------------------------------------------------------------------------------


def _values(event: SignedEvent, kind: Kind, now: datetime) -> dict[str, Any]:
    return {
        "case_id": event.case_id,
        "hash": event.hash,
        "predecessor": event.predecessor,
        "signer": event.signer,
        "kind": kind.value,
        "body": event.body,
        "key_id": event.key_id,
        "algorithm": event.algorithm,
        "signature": event.signature,
        "stored_at": now,
    }


def _signed(row: Row[Any]) -> SignedEvent:
    return SignedEvent(
        case_id=row.case_id,
        predecessor=row.predecessor,
        signer=row.signer,
        body=bytes(row.body),
        key_id=row.key_id,
        algorithm=row.algorithm,
        signature=bytes(row.signature),
    )


def chain(conn: Connection, case_id: str) -> tuple[SignedEvent, ...]:
    """The case's chain as stored, genesis first (empty if this node holds no genesis for it)."""
    rows = conn.execute(
        select(custody_events).where(custody_events.c.case_id == case_id).order_by(custody_events.c.seq)
    ).all()
    return tuple(_signed(r) for r in rows)


def held(conn: Connection, case_id: str, *states: Outcome) -> tuple[tuple[SignedEvent, Outcome], ...]:
    """Events kept beside the chain (all, or those in ``states``), in hash order."""
    q = select(custody_held).where(custody_held.c.case_id == case_id).order_by(custody_held.c.hash)
    if states:
        q = q.where(custody_held.c.state.in_([s.value for s in states]))
    return tuple((_signed(r), Outcome(r.state)) for r in conn.execute(q).all())


def cases(conn: Connection) -> list[str]:
    """Every case id whose chain this node holds."""
    return list(conn.execute(select(custody_cases.c.case_id).order_by(custody_cases.c.case_id)).scalars())


def replay(events: Sequence[SignedEvent], directory: Directory) -> CustodyState:
    """The state of a stored chain. Its events were verified when they were appended, so they are
    parsed, not verified again; the transfer rules are applied again (:func:`start`/:func:`step`)."""
    parsed = [parse_event(e) for e in events]
    state = start(parsed[0], directory)
    for e in parsed[1:]:
        state = step(state, e, directory)
    return state


def locked_state(conn: Connection, case_id: str, directory: Directory) -> CustodyState | None:
    """Lock the case's row (PostgreSQL: ``FOR UPDATE``, held until the caller's transaction ends)
    and return its chain's state, or ``None`` if this node holds no chain for the case."""
    row = conn.execute(
        select(custody_cases.c.head).where(custody_cases.c.case_id == case_id).with_for_update()
    ).one_or_none()
    if row is None:
        return None
    state = replay(chain(conn, case_id), directory)
    if state.head != row.head:
        raise StorageError(f"custody chain of case {case_id}: the stored head does not match its events")
    return state


def view(conn: Connection, case_id: str, directory: Directory) -> CustodyState | None:
    """The case as this node sees it: its chain's state with the equivocation proofs among every
    held event (:func:`~gateway.custody.chain.fold` of chain + held events, whose walk keeps the
    stored chain because it only follows legal children and the chain was built that way)."""
    stored = chain(conn, case_id)
    if not stored:
        return None
    state = replay(stored, directory)
    beside = held(conn, case_id)
    if not beside:
        return state
    folded = fold([*state.chain, *(parse_event(e) for e, _ in beside)], directory)
    return CustodyState(
        state.case_id,
        state.genesis,
        state.chain,
        state.holder,
        state.pending,
        state.closed,
        equivocations=folded.equivocations,
        off_chain=tuple(sorted(e.hash for e, _ in beside)),
    )


# --- appending ---------------------------------------------------------------------------------------------


def _is_held(conn: Connection, case_id: str, event_hash: str) -> bool:
    on_chain = conn.execute(
        select(custody_events.c.seq).where(custody_events.c.case_id == case_id, custody_events.c.hash == event_hash)
    ).first()
    if on_chain is not None:
        return True
    beside = conn.execute(
        select(custody_held.c.state).where(custody_held.c.case_id == case_id, custody_held.c.hash == event_hash)
    ).first()
    return beside is not None


def _keep(conn: Connection, event: CustodyEvent, outcome: Outcome, now: datetime) -> Appended:
    conn.execute(insert(custody_held).values(state=outcome.value, **_values(event.signed, event.kind, now)))
    METRICS.inc(outcome.value)
    if outcome is Outcome.EQUIVOCATION:
        log.warning("custody: equivocation on case %s by %s (proof kept)", event.case_id, event.signer)
    elif outcome is Outcome.CONFLICT:
        log.warning(
            "custody: conflicting %s on case %s by %s kept off the chain", event.kind, event.case_id, event.signer
        )
    return Appended(outcome, event.hash)


def _insert_chain(conn: Connection, event: CustodyEvent, seq: int, old_head: str | None, now: datetime) -> None:
    try:
        conn.execute(insert(custody_events).values(seq=seq, **_values(event.signed, event.kind, now)))
    except IntegrityError:
        raise ConcurrentAppend(f"case {event.case_id}: position {seq} was taken concurrently") from None
    if old_head is None:
        try:
            conn.execute(insert(custody_cases).values(case_id=event.case_id, head=event.hash, length=1, updated_at=now))
        except IntegrityError:
            raise ConcurrentAppend(f"case {event.case_id}: the genesis was stored concurrently") from None
        return
    done = conn.execute(
        update(custody_cases)
        .where(custody_cases.c.case_id == event.case_id, custody_cases.c.head == old_head)
        .values(head=event.hash, length=seq + 1, updated_at=now)
    )
    if done.rowcount != 1:
        raise ConcurrentAppend(f"case {event.case_id}: the head moved concurrently")


def _position(conn: Connection, case_id: str, predecessor: str | None) -> str | None:
    """The signer of the chain event that follows ``predecessor`` (the genesis for ``None``), if any."""
    q = select(custody_events.c.signer, custody_events.c.hash).where(custody_events.c.case_id == case_id)
    q = q.where(
        custody_events.c.predecessor.is_(None) if predecessor is None else custody_events.c.predecessor == predecessor
    )
    row = conn.execute(q).first()
    return None if row is None else str(row.signer)


def _on_chain(conn: Connection, case_id: str, event_hash: str) -> bool:
    row = conn.execute(
        select(custody_events.c.seq).where(custody_events.c.case_id == case_id, custody_events.c.hash == event_hash)
    ).first()
    return row is not None


def _promote(
    conn: Connection, state: CustodyState, directory: Directory, now: datetime
) -> tuple[CustodyState, list[str]]:
    """Chain pending events that extend ``state`` (hash order, repeatedly)."""
    promoted: list[str] = []
    while True:
        rows = conn.execute(
            select(custody_held)
            .where(
                custody_held.c.case_id == state.case_id,
                custody_held.c.predecessor == state.head,
                custody_held.c.state == Outcome.PENDING.value,
            )
            .order_by(custody_held.c.hash)
        ).all()
        advanced = False
        for row in rows:
            event = parse_event(_signed(row))
            if advanced:  # another child of the same head was chained just now
                _reclassify(conn, event, state)
                continue
            try:
                new_state = step(state, event, directory)
            except CustodyError:
                _reclassify(conn, event, state)
                continue
            conn.execute(
                delete(custody_held).where(custody_held.c.case_id == event.case_id, custody_held.c.hash == event.hash)
            )
            _insert_chain(conn, event, len(state.chain), state.head, now)
            METRICS.inc("appended")
            promoted.append(event.hash)
            state, advanced = new_state, True
        if not advanced:
            return state, promoted


def _reclassify(conn: Connection, event: CustodyEvent, state: CustodyState) -> None:
    """A pending event whose predecessor is now on the chain but that cannot extend it."""
    position = _position(conn, state.case_id, event.predecessor)
    outcome = Outcome.EQUIVOCATION if position == event.signer else Outcome.CONFLICT
    conn.execute(
        update(custody_held)
        .where(custody_held.c.case_id == event.case_id, custody_held.c.hash == event.hash)
        .values(state=outcome.value)
    )
    METRICS.inc(outcome.value)
    log.warning("custody: %s on case %s by %s kept off the chain", outcome.value, event.case_id, event.signer)


def append(conn: Connection, signed: SignedEvent, directory: Directory, now: datetime) -> Appended:
    """Verify ``signed`` and add it to its case, inside the caller's transaction (module docstring).

    Raises what :func:`verify_event` raises for an event that does not verify (nothing is kept);
    ``CustodyError`` from the rules for an illegal event on the head (nothing is kept);
    :class:`ConcurrentAppend` when another process appended to the same case at the same time
    (the caller's transaction must be rolled back); ``StorageError`` for a database failure.
    """
    try:
        if _is_held(conn, signed.case_id, signed.hash):
            METRICS.inc("duplicate")
            return Appended(Outcome.DUPLICATE, signed.hash)
        event = verify_event(signed, directory, now, history=False)
        if event.kind is Kind.RECALL_REQUEST:
            raise CustodyIllegalTransition("a recall request is never appended to a chain")
        state = locked_state(conn, event.case_id, directory)
        if state is None:
            if event.kind is not Kind.GENESIS:
                return _keep(conn, event, Outcome.PENDING, now)
            state = start(event, directory)
            _insert_chain(conn, event, 0, None, now)
        elif event.predecessor == state.head:
            new_state = step(state, event, directory)
            _insert_chain(conn, event, len(state.chain), state.head, now)
            state = new_state
        elif event.predecessor is None or _on_chain(conn, event.case_id, event.predecessor):
            position = _position(conn, event.case_id, event.predecessor)
            same_signer = position == event.signer
            return _keep(conn, event, Outcome.EQUIVOCATION if same_signer else Outcome.CONFLICT, now)
        else:
            return _keep(conn, event, Outcome.PENDING, now)
        METRICS.inc("appended")
        _, promoted = _promote(conn, state, directory, now)
        return Appended(Outcome.APPENDED, event.hash, tuple(promoted))
    except SQLAlchemyError as exc:
        raise StorageError(f"custody store ({type(exc).__name__})") from None
