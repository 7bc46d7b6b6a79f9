"""The audit trail (SPEC §7): every send, receipt and read of personal data, in a hash chain.

Each entry says **who** (``actor``: this node's id, or an operator or county system), **what**
(``action``), for which **purpose**, about which **reference** (a message id, a record id — never a
value), **when** (``at``), with a short ``detail`` (codes, node ids, digests). Entries form a chain::

    entry_hash(n) = SHA-256("tongban.audit.v1" ‖ seq ‖ at ‖ actor ‖ action ‖ purpose ‖ reference
                            ‖ detail ‖ prev_hash)        prev_hash(n) = entry_hash(n-1)

with length-prefixed fields, ``seq`` counting 1, 2, 3 … without gaps and ``prev_hash`` of the first
entry 32 zero bytes. Editing an entry breaks its own hash; deleting one breaks the link (and the
numbering) of the next; reordering breaks hashes, because ``seq`` is hashed. :func:`verify` walks the
chain and names the first entry that does not hold (``tongban audit verify``).

What the chain cannot show on its own: someone who can write to the database may cut entries off
the **end**, or recompute the whole chain. ``tongban audit verify`` prints the head hash so an operator
can record it elsewhere (a ticket, the provincial operator's log) and compare later.

**Appends never fork.** :func:`append` runs inside the caller's transaction (so an entry exists if
and only if the action it records was committed) and first serialises on the chain: on PostgreSQL a
transaction-scoped advisory lock, so several gateway processes sharing one database append one
after the other; on SQLite a write to the table, which takes the database's single write lock
before the last entry is read. ``seq`` is assigned under that lock (not by a sequence), so a rolled
back append leaves no gap.

**No personal values.** ``reference``, ``actor`` and ``purpose`` must be identifiers
(``[A-Za-z0-9._:@/-]``) and ``detail`` printable ASCII: a name (always Chinese) cannot slip in, and
nothing here is ever logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from gateway.errors import AuditChainBroken, InputError, StorageError
from gateway.store.schema import audit_log

GENESIS = bytes(32)
_DOMAIN = b"tongban.audit.v1\x00"
# pg_advisory_xact_lock takes a signed 64-bit key: the first 8 bytes of a name's SHA-256.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"tongban.audit_log").digest()[:8], "big", signed=True)

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")
_DETAIL = re.compile(r"^[ -~]*$")  # printable ASCII
_LIMITS = {"actor": 64, "action": 32, "purpose": 40, "reference": 80, "detail": 200}  # the columns


class Action(StrEnum):
    """The actions this code base records (``action`` is a plain identifier; these are the known ones)."""

    SEND = "send"  # a message with personal data left this node: the receiver's receipt verified
    SEND_FAILED = "send_failed"  # a message with personal data became a dead letter (it did not leave)
    RECEIVE = "receive"  # a message with personal data was accepted from a peer
    READ = "read"  # personal data was read by a county system or an operator
    COUNTY_TOKEN_CREATED = "county_token_created"  # noqa: S105 - an action name: a token was created
    COUNTY_TOKEN_REVOKED = "county_token_revoked"  # noqa: S105 - an action name: a token was revoked
    COUNTY_DENIED = "county_denied"  # a county API call refused (actor: the caller's id, or "anonymous")
    COUNTY_CERT_ISSUED = "county_cert_issued"  # a county API client certificate was issued
    COUNTY_CERT_REVOKED = "county_cert_revoked"  # a county API client certificate was revoked


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    purpose: str
    reference: str
    detail: str
    prev_hash: bytes
    entry_hash: bytes


class ChainBroken(AuditChainBroken):
    """:class:`AuditChainBroken` naming the first entry (``seq``) that does not hold."""

    def __init__(self, seq: int, why: str) -> None:
        self.seq = seq
        super().__init__(f"first bad entry is seq {seq}: {why}")


def _utc(at: datetime) -> datetime:
    # SQLite gives back naive datetimes (stored as UTC); PostgreSQL gives aware ones.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _micros(at: datetime) -> int:
    delta = _utc(at) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _field(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def entry_hash(
    *, seq: int, at: datetime, actor: str, action: str, purpose: str, reference: str, detail: str, prev_hash: bytes
) -> bytes:
    """The hash of one entry (see the module docstring). Pure."""
    body = b"".join(
        [
            _DOMAIN,
            seq.to_bytes(8, "big"),
            _micros(at).to_bytes(8, "big", signed=True),
            *(_field(v) for v in (actor, action, purpose, reference, detail)),
            prev_hash,
        ]
    )
    return hashlib.sha256(body).digest()


def hash_of(e: AuditEntry) -> bytes:
    """:func:`entry_hash` of an entry's own fields (what its ``entry_hash`` must be)."""
    return entry_hash(
        seq=e.seq,
        at=e.at,
        actor=e.actor,
        action=e.action,
        purpose=e.purpose,
        reference=e.reference,
        detail=e.detail,
        prev_hash=e.prev_hash,
    )


def _check(name: str, value: str) -> None:
    limit = _LIMITS[name]
    if len(value) > limit:
        raise InputError(f"audit {name} is longer than {limit} characters")
    pattern = _DETAIL if name == "detail" else _IDENT
    if not pattern.match(value):
        what = "printable ASCII" if name == "detail" else "an identifier"
        raise InputError(f"audit {name} must be {what} (references, never values)")


def _lock_chain(conn: Connection) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    elif dialect == "sqlite":
        # A write statement takes SQLite's one write lock for the rest of the transaction (and
        # opens the transaction: the driver begins one before any data-changing statement), so
        # the last entry read next cannot change under us. It changes no value.
        last = select(func.max(audit_log.c.seq)).scalar_subquery()
        conn.execute(update(audit_log).where(audit_log.c.seq == last).values(seq=audit_log.c.seq))
    else:
        raise StorageError(f"the audit log does not support the {dialect} database")


@dataclass(frozen=True)
class NewEntry:
    """One entry to append (:func:`append_many`): the fields of :func:`append`."""

    actor: str
    action: str
    purpose: str
    reference: str
    detail: str = ""
    at: datetime | None = None  # None: now


def append(
    conn: Connection,
    *,
    actor: str,
    action: str,
    purpose: str,
    reference: str,
    detail: str = "",
    at: datetime | None = None,
) -> AuditEntry:
    """Append one entry inside the caller's transaction and return it.

    ``at`` defaults to now. Checked first: every field fits its column and is an identifier
    (``detail``: printable ASCII), else ``InputError`` and nothing is written. Then the chain is
    locked until the caller's transaction ends, the last entry read, and the new one inserted
    after it.
    """
    return append_many(conn, [NewEntry(actor, action, purpose, reference, detail, at)])[0]


def append_many(conn: Connection, new: Sequence[NewEntry]) -> list[AuditEntry]:
    """Append ``new`` in order inside the caller's transaction, as :func:`append` appends one:
    every entry is checked before anything is written, then the chain is locked and its last
    entry read once, and the entries are inserted in one statement (a delivery round records
    its receipts this way: one lock and one read instead of one per message)."""
    for item in new:
        for name in ("actor", "action", "purpose", "reference", "detail"):
            _check(name, str(getattr(item, name)))
    if not new:
        return []
    now = datetime.now(UTC)
    _lock_chain(conn)
    last = conn.execute(
        select(audit_log.c.seq, audit_log.c.entry_hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (0, GENESIS) if last is None else (last.seq, bytes(last.entry_hash))
    made: list[AuditEntry] = []
    for item in new:
        seq += 1
        at = _utc(item.at or now)
        entry = AuditEntry(seq, at, item.actor, str(item.action), item.purpose, item.reference, item.detail, prev, b"")
        prev = hash_of(entry)
        made.append(dataclasses.replace(entry, entry_hash=prev))
    conn.execute(insert(audit_log), [dataclasses.asdict(e) for e in made])  # the fields are the columns
    return made


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=_utc(row.at),
        actor=row.actor,
        action=row.action,
        purpose=row.purpose,
        reference=row.reference,
        detail=row.detail,
        prev_hash=bytes(row.prev_hash),
        entry_hash=bytes(row.entry_hash),
    )


_COLUMNS = (
    audit_log.c.seq,
    audit_log.c.at,
    audit_log.c.actor,
    audit_log.c.action,
    audit_log.c.purpose,
    audit_log.c.reference,
    audit_log.c.detail,
    audit_log.c.prev_hash,
    audit_log.c.entry_hash,
)


def entries(engine: Engine, *, batch: int = 1000) -> Iterator[AuditEntry]:
    """Every entry in ``seq`` order, read in batches (the log can be long)."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(select(*_COLUMNS).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(batch))
            page = [_entry(r) for r in rows]
        yield from page
        if len(page) < batch:
            return
        after = page[-1].seq


def verify_entries(chain: Iterator[AuditEntry]) -> tuple[int, bytes]:
    """Check a chain in ``seq`` order; return (count, head hash). Pure.

    For each entry, in order: its ``seq`` follows the previous one (else an entry before it is
    missing, or entries were renumbered); its ``prev_hash`` is the previous entry's hash; its
    ``entry_hash`` matches its content. The first entry that fails raises :class:`ChainBroken`
    with its ``seq``.
    """
    count, prev = 0, GENESIS
    for e in chain:
        if e.seq != count + 1:
            raise ChainBroken(e.seq, f"expected seq {count + 1} here: an entry is missing or out of order")
        if e.prev_hash != prev:
            raise ChainBroken(e.seq, "it does not link to the entry before it")
        computed = hash_of(e)
        if computed != e.entry_hash:
            raise ChainBroken(e.seq, "its content does not match its hash")
        count, prev = count + 1, e.entry_hash
    return count, prev


def verify(engine: Engine) -> int:
    """Verify the whole chain (see :func:`verify_entries`); return the number of entries."""
    return verify_entries(entries(engine))[0]


def tail(engine: Engine, n: int = 20) -> list[AuditEntry]:
    """The last ``n`` entries, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(*_COLUMNS).order_by(audit_log.c.seq.desc()).limit(max(0, n))).all()
    return [_entry(r) for r in reversed(rows)]
