"""The outbox contract, on SQLite and PostgreSQL (SPEC §4; STYLE habit 9).

Accepted means committed with the business write; a lease is won by one worker only, also with
real concurrent connections; leases run out and are reclaimed; dead letters stay listed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update

from gateway.cli import main
from gateway.errors import DecryptionFailed, DuplicateRecord
from gateway.exchange import outbox
from gateway.exchange.outbox import Status
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import node_meta, outbox_envelopes

T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Message:
    """A stand-in for ``envelope.Outgoing``: the outbox needs only these four fields."""

    message_id: str
    recipient: str
    purpose: str
    data: bytes


def message(peer: str = "sc-nanbu", n: int = 0, purpose: str = "migrant_notice") -> Message:
    return Message(str(uuid.uuid4()), peer, purpose, f"envelope {n} for {peer}".encode())


@pytest.fixture
def keyring() -> DataKeyring:
    return DataKeyring.generate()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def queue(engine: Engine, keyring: DataKeyring, messages: list[Message], *, at: datetime = T) -> None:
    with engine.begin() as conn:
        for i, m in enumerate(messages):
            outbox.enqueue(conn, m, keyring, now=at + i * timedelta(milliseconds=1))


# --- accepting ---------------------------------------------------------------------------------------


def test_enqueue_commits_with_the_business_write_or_not_at_all(engine: Engine, keyring: DataKeyring) -> None:
    kept, dropped = message(n=1), message(n=2)
    with engine.begin() as conn:  # the business write and its message, committed together
        conn.execute(node_meta.insert().values(key="business", value="kept"))
        outbox.enqueue(conn, kept, keyring, now=T)
    conn = engine.connect()
    transaction = conn.begin()
    conn.execute(node_meta.insert().values(key="business2", value="dropped"))
    outbox.enqueue(conn, dropped, keyring, now=T)
    transaction.rollback()  # the business write failed: its message must not exist either
    conn.close()
    assert [r.message_id for r in outbox.list_messages(engine)] == [kept.message_id]
    row = outbox.get(engine, kept.message_id)
    assert row is not None
    assert (row.peer, row.purpose, row.status, row.attempts, row.next_attempt_at) == (
        "sc-nanbu",
        "migrant_notice",
        Status.QUEUED,
        0,
        T,
    )
    assert outbox.get(engine, dropped.message_id) is None


def test_the_envelope_is_sealed_at_rest_and_bound_to_its_row(engine: Engine, keyring: DataKeyring) -> None:
    a, b = message(n=1), message(n=2)
    queue(engine, keyring, [a, b])
    envelopes = outbox_envelopes.c
    with engine.connect() as conn:
        blobs = dict(conn.execute(select(envelopes.message_id, envelopes.envelope_sealed)).all())
    assert all(m.data not in bytes(blobs[m.message_id]) for m in (a, b))
    claimed = {c.message_id: c for c in outbox.claim(engine, "w1", now=T)}
    assert claimed[a.message_id].envelope(keyring) == a.data
    with engine.begin() as conn:  # paste a's ciphertext into b's row
        conn.execute(
            update(outbox_envelopes)
            .where(envelopes.message_id == b.message_id)
            .values(envelope_sealed=blobs[a.message_id])
        )
    moved = outbox.claim(engine, "w2", now=T + 10 * MINUTE)
    with pytest.raises(DecryptionFailed):
        next(c for c in moved if c.message_id == b.message_id).envelope(keyring)


def test_a_row_whose_envelope_is_missing_is_unreadable_not_a_crash(engine: Engine, keyring: DataKeyring) -> None:
    a, b = message(n=1), message(n=2)
    queue(engine, keyring, [a, b])
    with engine.begin() as conn:  # a damaged database: b's envelope is gone
        conn.execute(delete(outbox_envelopes).where(outbox_envelopes.c.message_id == b.message_id))
    claimed = {c.message_id: c for c in outbox.claim(engine, "w1", now=T + MINUTE)}
    assert claimed[a.message_id].envelope(keyring) == a.data
    with pytest.raises(DecryptionFailed):
        claimed[b.message_id].envelope(keyring)


def test_a_message_id_is_queued_once(engine: Engine, keyring: DataKeyring) -> None:
    m = message()
    queue(engine, keyring, [m])
    with pytest.raises(DuplicateRecord), engine.begin() as conn:
        outbox.enqueue(conn, m, keyring, now=T)


# --- claiming -----------------------------------------------------------------------------------------


def test_claim_takes_due_rows_oldest_first_by_peer_and_limit(engine: Engine, keyring: DataKeyring) -> None:
    nanbu = [message("sc-nanbu", i) for i in range(5)]
    beibei = [message("cq-beibei", i) for i in range(2)]
    queue(engine, keyring, nanbu + beibei)
    assert outbox.due_peers(engine, now=T + MINUTE) == ["cq-beibei", "sc-nanbu"]
    first = outbox.claim(engine, "w1", peer="sc-nanbu", limit=3, now=T + MINUTE)
    assert [c.message_id for c in first] == [m.message_id for m in nanbu[:3]]
    assert all(c.attempts == 1 and c.peer == "sc-nanbu" for c in first)
    rest = outbox.claim(engine, "w1", peer="sc-nanbu", limit=10, now=T + MINUTE)
    assert [c.message_id for c in rest] == [m.message_id for m in nanbu[3:]]
    assert outbox.due_peers(engine, now=T + MINUTE) == ["cq-beibei"]


def test_rows_not_yet_due_are_not_claimed(engine: Engine, keyring: DataKeyring) -> None:
    m = message()
    queue(engine, keyring, [m])
    assert len(outbox.claim(engine, "w1", now=T)) == 1
    with engine.begin() as conn:
        assert outbox.mark_retry(conn, m.message_id, "w1", next_attempt_at=T + 5 * MINUTE, error="peer_unreachable")
    assert outbox.claim(engine, "w1", now=T + 4 * MINUTE) == []
    assert outbox.due_peers(engine, now=T + 4 * MINUTE) == []
    assert outbox.next_due(engine) == T + 5 * MINUTE
    (again,) = outbox.claim(engine, "w1", now=T + 5 * MINUTE)
    assert again.attempts == 2


def test_a_lease_holds_until_it_runs_out_then_the_row_is_reclaimed(engine: Engine, keyring: DataKeyring) -> None:
    m = message()
    queue(engine, keyring, [m])
    assert len(outbox.claim(engine, "w1", lease=MINUTE, now=T)) == 1
    assert outbox.claim(engine, "w2", lease=MINUTE, now=T + 30 * timedelta(seconds=1)) == []
    (taken,) = outbox.claim(engine, "w2", lease=MINUTE, now=T + MINUTE + timedelta(seconds=1))
    assert taken.attempts == 2  # the first worker's attempt counts: it may have sent it
    with engine.begin() as conn:  # the first worker, back too late, cannot push the row around
        assert not outbox.mark_retry(conn, m.message_id, "w1", next_attempt_at=T + 9 * MINUTE, error="late")
        assert not outbox.mark_dead(conn, m.message_id, "w1", reason="late")
    row = outbox.get(engine, m.message_id)
    assert row is not None
    assert (row.status, row.claimed_by) == (Status.QUEUED, "w2")


def test_release_gives_leases_back_without_counting_the_attempt(engine: Engine, keyring: DataKeyring) -> None:
    ms = [message(n=i) for i in range(3)]
    queue(engine, keyring, ms)
    outbox.claim(engine, "w1", now=T + MINUTE)
    assert outbox.release(engine, "w1", [ms[0].message_id]) == 1
    assert outbox.release(engine, "w1", []) == 0
    assert outbox.release(engine, "w1") == 2
    rows = outbox.list_messages(engine)
    assert all(r.claimed_by is None and r.attempts == 0 for r in rows)
    assert len(outbox.claim(engine, "w2", now=T + MINUTE)) == 3


def test_release_expired_tidies_what_operators_see(engine: Engine, keyring: DataKeyring) -> None:
    queue(engine, keyring, [message()])
    outbox.claim(engine, "w1", lease=MINUTE, now=T)
    assert outbox.release_expired(engine, now=T + 30 * timedelta(seconds=1)) == 0
    assert outbox.release_expired(engine, now=T + 2 * MINUTE) == 1
    (row,) = outbox.list_messages(engine)
    assert (row.claimed_by, row.claimed_until, row.attempts) == (None, None, 1)


def test_concurrent_workers_never_claim_the_same_row(engine: Engine, keyring: DataKeyring) -> None:
    messages = [message(f"peer-{i % 3}", i) for i in range(120)]
    queue(engine, keyring, messages)
    workers = 5
    won: dict[str, list[str]] = {f"w{i}": [] for i in range(workers)}
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(worker: str) -> None:
        try:
            start.wait()
            while batch := outbox.claim(engine, worker, limit=4, now=T + MINUTE):
                won[worker].extend(c.message_id for c in batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in won]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    claimed = [mid for ids in won.values() for mid in ids]
    assert len(claimed) == len(set(claimed)) == len(messages)
    assert sum(1 for ids in won.values() if ids) > 1  # the work really was shared


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # FOR UPDATE SKIP LOCKED is PostgreSQL's
def test_postgres_claim_skips_rows_another_transaction_holds(engine: Engine, keyring: DataKeyring) -> None:
    assert engine.dialect.name == "postgresql"
    held, free = message(n=1), message(n=2)
    queue(engine, keyring, [held, free])
    other = engine.connect()
    transaction = other.begin()
    other.execute(text("SELECT 1 FROM outbox WHERE message_id = :m FOR UPDATE"), {"m": held.message_id})
    try:
        started = time.monotonic()
        got = outbox.claim(engine, "w1", now=T + MINUTE)
        assert time.monotonic() - started < 5  # skipped, not waited for
        assert [c.message_id for c in got] == [free.message_id]
    finally:
        transaction.rollback()
        other.close()
    assert [c.message_id for c in outbox.claim(engine, "w2", now=T + MINUTE)] == [held.message_id]


# --- outcomes and what operators see --------------------------------------------------------------------


def test_outcomes_and_listing(engine: Engine, keyring: DataKeyring) -> None:
    ok, dead, waiting = message(n=1), message(n=2), message("cq-beibei", 3)
    queue(engine, keyring, [ok, dead, waiting])
    assert len(outbox.claim(engine, "w1", now=T + MINUTE)) == 3
    with engine.begin() as conn:
        assert outbox.mark_delivered(conn, ok.message_id, b"signed receipt", now=T + MINUTE)
        assert not outbox.mark_delivered(conn, ok.message_id, b"again", now=T + 2 * MINUTE)  # once only
        assert outbox.mark_dead(conn, dead.message_id, "w1", reason="peer_revoked: sc-nanbu is revoked")
        assert outbox.mark_retry(conn, waiting.message_id, "w1", next_attempt_at=T + MINUTE, error="x" * 300)
    assert outbox.receipt_of(engine, ok.message_id) == b"signed receipt"
    assert outbox.receipt_of(engine, dead.message_id) is None
    delivered = outbox.get(engine, ok.message_id)
    assert delivered is not None
    assert (delivered.status, delivered.delivered_at, delivered.has_receipt) == (Status.DELIVERED, T + MINUTE, True)
    (row,) = outbox.list_messages(engine, status=Status.DEAD)
    assert (row.message_id, row.last_error) == (dead.message_id, "peer_revoked: sc-nanbu is revoked")
    (retrying,) = outbox.list_messages(engine, peer="cq-beibei")
    assert retrying.last_error == "x" * 200
    assert outbox.counts(engine) == {
        ("sc-nanbu", Status.DELIVERED): 1,
        ("sc-nanbu", Status.DEAD): 1,
        ("cq-beibei", Status.QUEUED): 1,
    }
    assert outbox.claim(engine, "w2", now=T + 10 * MINUTE) != []  # only the queued one
    assert outbox.due_peers(engine, now=T + 10 * MINUTE) == []


def test_cli_lists_counts_and_dead_letters_with_their_reason(
    tmp_path: Path, keyring: DataKeyring, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "node"
    assert main(["node", "init", str(d), "--id", "cq-test", "--division", "500157"]) == 0
    engine = make_engine(f"sqlite:///{d / 'node.db'}")
    dead, waiting = message(n=1), message("cq-beibei", 2)
    queue(engine, keyring, [dead, waiting])
    outbox.claim(engine, "w1", now=T + MINUTE)
    with engine.begin() as conn:
        outbox.mark_dead(conn, dead.message_id, "w1", reason="peer_revoked: sc-nanbu is revoked in directory v2")
    engine.dispose()
    capsys.readouterr()
    assert main(["outbox", "list", "--config", str(d)]) == 0
    out = capsys.readouterr().out
    assert "sc-nanbu" in out
    assert "cq-beibei" in out
    assert main(["outbox", "list", "--config", str(d), "--status", "dead"]) == 0
    out = capsys.readouterr().out
    dead_lines = [line for line in out.splitlines() if dead.message_id in line]
    assert len(dead_lines) == 1
    assert "dead" in dead_lines[0]
    assert "reason: peer_revoked: sc-nanbu is revoked in directory v2" in dead_lines[0]
    assert waiting.message_id not in out
