"""The durable outbox (SPEC §4): what "accepted" means, and how delivery workers share the work.

**Accepted means committed.** :func:`enqueue` writes a message's row on the caller's connection,
inside the caller's transaction — the one that also writes the business change that produced the
message — so either both are committed or neither is (the habit of procrastinate). The envelope
bytes are sealed at rest with the node's data key, bound to the row by the context
``b"outbox\\0" + message_id``, and kept in ``outbox_envelopes`` beside the row, written with it and
never changed (so the updates a row goes through do not rewrite it on SQLite); the plain columns
hold only routing facts (peer, purpose, times, attempt count, error codes).

**Rows move** ``queued → delivered`` (a verified receipt is stored beside it) or ``queued → dead``
(a permanent refusal, a revoked peer, or transient failures past the retry horizon; the reason is
kept in ``last_error``). A ``queued`` row waits for ``next_attempt_at``.

**Claims.** A delivery worker takes a *lease* on a batch of due rows with :func:`claim`: one
``WITH due AS (SELECT … LIMIT n) UPDATE … WHERE message_id IN due RETURNING …`` that sets
``claimed_by`` and ``claimed_until`` and counts the attempt. Two workers never get the same row
while a lease holds:

* on **PostgreSQL** the ``SELECT`` (a CTE, so it runs once) takes ``FOR UPDATE SKIP LOCKED``: a row another worker is
  claiming right now is skipped rather than waited for, and a row it has just claimed no longer
  passes the lease condition, which PostgreSQL re-checks on the newest row version after locking.
  Several gateway processes can share one database this way.
* on **SQLite** ``FOR UPDATE`` does not exist (SQLAlchemy omits it) and is not needed: SQLite runs
  one writing statement at a time for the whole database file, so the sub-select and the update of
  one ``UPDATE`` statement are atomic with respect to every other writer, and the lease condition
  (``claimed_until`` is empty or past) is the conditional update that makes a second claim of the
  same row impossible.

A lease that runs out (a worker that died mid-stream) makes its rows claimable again: at worst a
message is sent twice, which receiving tolerates (a repeated message id returns the original
receipt and changes nothing). Outcomes are recorded with :func:`mark_delivered`, :func:`mark_retry`
and :func:`mark_dead`; a worker that stops early gives its leases back with :func:`release`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, and_, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from gateway.errors import DecryptionFailed, DuplicateRecord, StorageError
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import outbox, outbox_envelopes

MAX_ERROR_CHARS = 200  # outbox.last_error


class Status(StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutgoingMessage(Protocol):
    """What :func:`enqueue` needs of a sealed envelope (``gateway.exchange.envelope.Outgoing``)."""

    @property
    def message_id(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as operators see it: no envelope, no personal data."""

    message_id: str
    peer: str
    purpose: str
    status: Status
    attempts: int
    next_attempt_at: datetime
    claimed_by: str | None
    claimed_until: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    has_receipt: bool


@dataclass(frozen=True)
class Claimed:
    """A row leased to one worker: enough to send it and to decide what happens next.

    ``attempts`` already counts the attempt this claim is for.
    """

    message_id: str
    peer: str
    purpose: str
    attempts: int
    created_at: datetime
    sealed: Sealed | None  # None: the row's envelope is missing (never written so; a damaged database)

    def envelope(self, keyring: DataKeyring) -> bytes:
        """The envelope bytes, exactly as signed (``DataKeyMissing`` / ``DecryptionFailed``; the
        latter too when the envelope is missing: the delivery loop dead-letters the row as unreadable)."""
        if self.sealed is None:
            raise DecryptionFailed("the outbox row has no stored envelope")
        return keyring.open(self.sealed, context=sealing_context(self.message_id))


def sealing_context(message_id: str) -> bytes:
    return b"outbox\x00" + message_id.encode("utf-8")


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _opt_utc(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def _now() -> datetime:
    return datetime.now(UTC)


# --- accepting ---------------------------------------------------------------------------------------


def enqueue(conn: Connection, outgoing: OutgoingMessage, keyring: DataKeyring, *, now: datetime | None = None) -> None:
    """Queue ``outgoing`` for delivery to its recipient, inside the caller's transaction.

    The row is due at once. The caller commits (or rolls back) it together with whatever produced
    the message. ``DuplicateRecord`` if the message id is already in the outbox (on PostgreSQL the
    caller's transaction is then unusable and must be rolled back).
    """
    now = _utc(now or _now())
    sealed = keyring.seal(outgoing.data, context=sealing_context(outgoing.message_id))
    # No savepoint around the insert: on SQLite, releasing an outermost savepoint would commit
    # the caller's work early, which is exactly what must not happen here.
    try:
        conn.execute(
            insert(outbox).values(
                message_id=outgoing.message_id,
                peer=outgoing.recipient,
                purpose=outgoing.purpose,
                status=Status.QUEUED.value,
                attempts=0,
                next_attempt_at=now,
                claimed_by=None,
                claimed_until=None,
                last_error=None,
                receipt=None,
                created_at=now,
                delivered_at=None,
            )
        )
        conn.execute(
            insert(outbox_envelopes).values(
                message_id=outgoing.message_id, key_id=sealed.key_id, envelope_sealed=sealed.blob
            )
        )
    except IntegrityError:
        raise DuplicateRecord(f"message {outgoing.message_id} is already in the outbox") from None


# --- claiming ----------------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    return and_(
        outbox.c.status == Status.QUEUED.value,
        outbox.c.next_attempt_at <= now,
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
    )


def claim(
    engine: Engine,
    worker_id: str,
    *,
    peer: str | None = None,
    limit: int = 100,
    lease: timedelta = timedelta(minutes=2),
    now: datetime | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due rows (of ``peer``, if given), oldest due first; commit the lease.

    A row is due when it is queued, its ``next_attempt_at`` has come and no unexpired lease holds
    it. See the module docstring for why two workers never win the same row. ``lease`` must cover
    one delivery round (a stream to one peer with its quick retries).
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    now = _utc(now or _now())
    condition = _claimable(now)
    if peer is not None:
        condition = and_(condition, outbox.c.peer == peer)
    # A CTE, not "IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)": PostgreSQL may run a sub-select
    # in IN more than once within one UPDATE (and then lock and update more than n rows); a CTE
    # that locks rows is evaluated exactly once.
    due = (
        select(outbox.c.message_id)
        .where(condition)
        .order_by(outbox.c.next_attempt_at, outbox.c.created_at, outbox.c.message_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    stmt = (
        update(outbox)
        .where(outbox.c.message_id.in_(select(due.c.message_id)), condition)
        .values(claimed_by=worker_id, claimed_until=now + lease, attempts=outbox.c.attempts + 1)
        .returning(
            outbox.c.message_id,
            outbox.c.peer,
            outbox.c.purpose,
            outbox.c.attempts,
            outbox.c.created_at,
            outbox.c.next_attempt_at,
        )
    )
    with engine.begin() as conn:
        rows = list(conn.execute(stmt))
        # The envelopes, read in the same transaction (written with their rows, never changed).
        e = outbox_envelopes.c
        ids = [r.message_id for r in rows]
        sealed = (
            {
                s.message_id: Sealed(s.key_id, bytes(s.envelope_sealed))
                for s in conn.execute(select(e.message_id, e.key_id, e.envelope_sealed).where(e.message_id.in_(ids)))
            }
            if ids
            else {}
        )
    rows.sort(key=lambda r: (_utc(r.next_attempt_at), _utc(r.created_at), r.message_id))
    return [
        Claimed(
            message_id=r.message_id,
            peer=r.peer,
            purpose=r.purpose,
            attempts=r.attempts,
            created_at=_utc(r.created_at),
            sealed=sealed.get(r.message_id),
        )
        for r in rows
    ]


def due_peers(engine: Engine, *, now: datetime | None = None) -> list[str]:
    """Peers with at least one claimable row now (what a delivery loop should work on)."""
    now = _utc(now or _now())
    with engine.connect() as conn:
        return list(
            conn.execute(select(outbox.c.peer).where(_claimable(now)).distinct().order_by(outbox.c.peer)).scalars()
        )


def next_due(engine: Engine) -> datetime | None:
    """The earliest time a queued row becomes due (ignoring leases), or ``None`` if none is queued."""
    with engine.connect() as conn:
        at = conn.execute(
            select(func.min(outbox.c.next_attempt_at)).where(outbox.c.status == Status.QUEUED.value)
        ).scalar()
    return _opt_utc(at)


# --- outcomes ----------------------------------------------------------------------------------------


def mark_delivered(conn: Connection, message_id: str, receipt: bytes, *, now: datetime | None = None) -> bool:
    """Record delivery with the receiver's signed receipt (the caller has verified it). Returns
    whether the row changed: ``False`` if it was no longer queued (another worker, whose lease had
    taken over, recorded it first — the receipt is the same message's either way)."""
    now = _utc(now or _now())
    result = conn.execute(
        update(outbox)
        .where(outbox.c.message_id == message_id, outbox.c.status == Status.QUEUED.value)
        .values(
            status=Status.DELIVERED.value,
            receipt=receipt,
            delivered_at=now,
            claimed_by=None,
            claimed_until=None,
            last_error=None,
        )
    )
    return result.rowcount == 1


def _owned(message_id: str, worker_id: str) -> Any:
    # Only the lease holder records a failure: a worker whose lease ran out must not push back
    # (or kill) a row that another worker has since delivered or is delivering.
    return and_(
        outbox.c.message_id == message_id,
        outbox.c.status == Status.QUEUED.value,
        outbox.c.claimed_by == worker_id,
    )


def mark_retry(conn: Connection, message_id: str, worker_id: str, *, next_attempt_at: datetime, error: str) -> bool:
    """Schedule another attempt at ``next_attempt_at`` and release the lease. ``error`` is a reason
    code with a public message (no personal data). Returns whether this worker still held the row."""
    result = conn.execute(
        update(outbox)
        .where(_owned(message_id, worker_id))
        .values(
            next_attempt_at=_utc(next_attempt_at),
            last_error=error[:MAX_ERROR_CHARS],
            claimed_by=None,
            claimed_until=None,
        )
    )
    return result.rowcount == 1


def mark_dead(conn: Connection, message_id: str, worker_id: str, *, reason: str) -> bool:
    """Make the row a dead letter with ``reason`` (kept for operators) and release the lease.
    Returns whether this worker still held the row."""
    result = conn.execute(
        update(outbox)
        .where(_owned(message_id, worker_id))
        .values(status=Status.DEAD.value, last_error=reason[:MAX_ERROR_CHARS], claimed_by=None, claimed_until=None)
    )
    return result.rowcount == 1


def release(engine: Engine, worker_id: str, message_ids: Sequence[str] | None = None) -> int:
    """Give back this worker's leases (all, or those of ``message_ids``) without counting the
    attempt as failed: the rows are due again at once. Returns how many were released."""
    condition = and_(outbox.c.status == Status.QUEUED.value, outbox.c.claimed_by == worker_id)
    if message_ids is not None:
        if not message_ids:
            return 0
        condition = and_(condition, outbox.c.message_id.in_(list(message_ids)))
    with engine.begin() as conn:
        result = conn.execute(
            update(outbox)
            .where(condition)
            .values(
                claimed_by=None,
                claimed_until=None,
                attempts=case((outbox.c.attempts > 0, outbox.c.attempts - 1), else_=0),
            )
        )
    return int(result.rowcount)


def release_expired(engine: Engine, *, now: datetime | None = None) -> int:
    """Clear leases that have run out (their rows are claimable anyway; this tidies what
    ``tongban outbox list`` shows). Returns how many."""
    now = _utc(now or _now())
    with engine.begin() as conn:
        result = conn.execute(
            update(outbox)
            .where(outbox.c.status == Status.QUEUED.value, outbox.c.claimed_until < now)
            .values(claimed_by=None, claimed_until=None)
        )
    return int(result.rowcount)


# --- reading (operators) -----------------------------------------------------------------------------


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        message_id=r.message_id,
        peer=r.peer,
        purpose=r.purpose,
        status=Status(r.status),
        attempts=r.attempts,
        next_attempt_at=_utc(r.next_attempt_at),
        claimed_by=r.claimed_by,
        claimed_until=_opt_utc(r.claimed_until),
        last_error=r.last_error,
        created_at=_utc(r.created_at),
        delivered_at=_opt_utc(r.delivered_at),
        has_receipt=bool(r.has_receipt),
    )


_LIST_COLUMNS = (
    outbox.c.message_id,
    outbox.c.peer,
    outbox.c.purpose,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.claimed_by,
    outbox.c.claimed_until,
    outbox.c.last_error,
    outbox.c.created_at,
    outbox.c.delivered_at,
    outbox.c.receipt.is_not(None).label("has_receipt"),
)


def get(engine: Engine, message_id: str) -> OutboxRow | None:
    with engine.connect() as conn:
        r = conn.execute(select(*_LIST_COLUMNS).where(outbox.c.message_id == message_id)).first()
    return None if r is None else _row(r)


def receipt_of(engine: Engine, message_id: str) -> bytes | None:
    """The stored receipt of a delivered message (the sender's proof of delivery)."""
    with engine.connect() as conn:
        value = conn.execute(select(outbox.c.receipt).where(outbox.c.message_id == message_id)).scalar()
    return None if value is None else bytes(value)


def envelopes(engine: Engine, keyring: DataKeyring) -> dict[str, bytes]:
    """Every queued, delivered or dead message's envelope, opened: message id → the bytes exactly
    as signed (what a receipt's digest covers). For checks after the fact (tests, benchmarks);
    ``DataKeyMissing`` / ``DecryptionFailed`` as :meth:`Claimed.envelope`."""
    e = outbox_envelopes.c
    with engine.connect() as conn:
        rows = conn.execute(select(e.message_id, e.key_id, e.envelope_sealed)).all()
    return {
        r.message_id: keyring.open(Sealed(r.key_id, bytes(r.envelope_sealed)), context=sealing_context(r.message_id))
        for r in rows
    }


def list_messages(
    engine: Engine, *, status: Status | None = None, peer: str | None = None, limit: int = 100
) -> list[OutboxRow]:
    """Rows for operators, newest first (optionally of one status or peer)."""
    stmt = select(*_LIST_COLUMNS)
    if status is not None:
        stmt = stmt.where(outbox.c.status == status.value)
    if peer is not None:
        stmt = stmt.where(outbox.c.peer == peer)
    stmt = stmt.order_by(outbox.c.created_at.desc(), outbox.c.message_id).limit(limit)
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(stmt)]


def counts(engine: Engine) -> dict[tuple[str, Status], int]:
    """How many rows per (peer, status)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.peer, outbox.c.status, func.count()).group_by(outbox.c.peer, outbox.c.status)
        ).all()
    try:
        return {(peer, Status(status)): int(n) for peer, status, n in rows}
    except ValueError:
        raise StorageError("the outbox holds a row with an unknown status") from None
