"""The hash-chained audit trail (SPEC §7), on SQLite and PostgreSQL: appends, tampering, forks, CLI."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, delete, select, update

from gateway import audit
from gateway.cli import main
from gateway.errors import AuditChainBroken, InputError
from gateway.store.db import make_engine, migrate
from gateway.store.schema import audit_log

T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
MESSAGE = "0b7c6f1e-8d1a-4c4e-9a57-3f2b1d0e9c11"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    yield e
    e.dispose()


def add(engine: Engine, n: int, *, start: int = 0) -> list[audit.AuditEntry]:
    entries = []
    for i in range(start, start + n):
        with engine.begin() as conn:
            entries.append(
                audit.append(
                    conn,
                    actor="cq-liangjiang",
                    action=audit.Action.SEND,
                    purpose="migrant_notice",
                    reference=f"msg-{i:04d}",
                    detail="to=sc-nanbu",
                    at=T0 + timedelta(seconds=i),
                )
            )
    return entries


# --- the hash itself -------------------------------------------------------------------------------


def test_entry_hash_is_the_documented_encoding_golden_vector() -> None:
    def field(s: str) -> bytes:
        return len(s.encode()).to_bytes(4, "big") + s.encode()

    micros = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    by_hand = hashlib.sha256(
        b"tongban.audit.v1\x00"
        + (1).to_bytes(8, "big")
        + micros.to_bytes(8, "big", signed=True)
        + b"".join(field(s) for s in ("cq-liangjiang", "send", "migrant_notice", MESSAGE, "to=sc-nanbu"))
        + bytes(32)
    ).digest()
    computed = audit.entry_hash(
        seq=1,
        at=T0,
        actor="cq-liangjiang",
        action="send",
        purpose="migrant_notice",
        reference=MESSAGE,
        detail="to=sc-nanbu",
        prev_hash=audit.GENESIS,
    )
    assert computed == by_hand
    assert computed.hex() == "2b1c2cebf8740e4275c55d8b93ec96efc5d3ebcedf93e4d55c1dc5e9ac6598a1"


# --- append and verify -----------------------------------------------------------------------------


def test_an_empty_log_verifies(engine: Engine) -> None:
    assert audit.verify(engine) == 0


def test_appends_chain_and_verify(engine: Engine) -> None:
    entries = add(engine, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
    assert audit.verify(engine) == 5
    assert audit.verify_entries(audit.entries(engine)) == (5, entries[-1].entry_hash)
    assert audit.tail(engine, 2) == entries[3:]  # read back exactly (times to the microsecond)


def _new(i: int, **changes: str) -> audit.NewEntry:
    fields = {"actor": "cq-liangjiang", "action": "send", "purpose": "migrant_notice", "reference": f"msg-{i:04d}"}
    return audit.NewEntry(**(fields | changes), detail="to=sc-nanbu", at=T0 + timedelta(seconds=i))


def test_append_many_chains_like_one_append_each(engine: Engine) -> None:
    add(engine, 2)
    with engine.begin() as conn:
        assert audit.append_many(conn, []) == []  # nothing to append: nothing locked or written
        many = audit.append_many(conn, [_new(i) for i in range(2, 6)])
    assert [e.seq for e in many] == [3, 4, 5, 6]
    assert audit.verify(engine) == 6
    assert audit.tail(engine, 4) == many
    assert many[0].prev_hash == audit.tail(engine, 5)[0].entry_hash  # after the last single append
    assert [audit.hash_of(e) for e in many] == [e.entry_hash for e in many]


def test_append_many_checks_every_entry_before_writing_any(engine: Engine) -> None:
    add(engine, 1)
    with pytest.raises(InputError), engine.begin() as conn:
        audit.append_many(conn, [_new(1), _new(2), _new(3, reference="王小明")])
    assert audit.verify(engine) == 1


def test_entries_are_read_in_batches(engine: Engine) -> None:
    add(engine, 7)
    assert [e.seq for e in audit.entries(engine, batch=3)] == list(range(1, 8))


def test_an_append_rolled_back_with_its_transaction_leaves_no_trace_and_no_gap(engine: Engine) -> None:
    add(engine, 2)
    conn = engine.connect()
    transaction = conn.begin()
    audit.append(conn, actor="cq-liangjiang", action="send", purpose="migrant_notice", reference="msg-x")
    transaction.rollback()  # the business write that went with it failed
    conn.close()
    assert audit.verify(engine) == 2
    (third,) = add(engine, 1, start=2)
    assert third.seq == 3
    assert audit.verify(engine) == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reference", "张三"),  # a name is never a reference
        ("reference", "11010520100101123X 2"),  # nor is free text
        ("detail", "name=王小明"),
        ("detail", "line one\nline two"),
        ("actor", ""),
        ("purpose", "x" * 41),
        ("detail", "x" * 201),
    ],
)
def test_values_that_are_not_references_are_refused(engine: Engine, field: str, value: str) -> None:
    kwargs = {"actor": "cq-liangjiang", "action": "read", "purpose": "migrant_notice", "reference": "r-1", "detail": ""}
    kwargs[field] = value
    with pytest.raises(InputError), engine.begin() as conn:
        audit.append(
            conn,
            actor=kwargs["actor"],
            action=kwargs["action"],
            purpose=kwargs["purpose"],
            reference=kwargs["reference"],
            detail=kwargs["detail"],
        )
    assert audit.verify(engine) == 0


# --- tampering: each case names what it breaks and where verification must stop ---------------------


def _set(at_seq: int, /, **values: object) -> Callable[[Connection], None]:
    def mutate(conn: Connection) -> None:
        conn.execute(update(audit_log).where(audit_log.c.seq == at_seq).values(**values))

    return mutate


def _rehash(seq: int, **values: object) -> Callable[[Connection], None]:
    """Edit an entry *and* recompute its own hash, as a careful forger would."""

    def mutate(conn: Connection) -> None:
        _set(seq, **values)(conn)
        row = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).one()
        e = audit._entry(row)
        digest = audit.hash_of(e)
        _set(seq, entry_hash=digest)(conn)

    return mutate


def _delete(seq: int) -> Callable[[Connection], None]:
    def mutate(conn: Connection) -> None:
        conn.execute(delete(audit_log).where(audit_log.c.seq == seq))

    return mutate


def _swap(a: int, b: int) -> Callable[[Connection], None]:
    def mutate(conn: Connection) -> None:
        _set(a, seq=-1)(conn)
        _set(b, seq=a)(conn)
        _set(-1, seq=b)(conn)

    return mutate


@dataclass(frozen=True)
class Tamper:
    name: str
    mutate: Callable[[Connection], None]
    first_bad: int


TAMPERING = [
    Tamper("detail_edited_at_3", _set(3, detail="to=gz-someone"), 3),
    Tamper("reference_edited_at_1", _set(1, reference="msg-9999"), 1),
    Tamper("time_moved_at_4", _set(4, at=T0 + timedelta(days=1)), 4),
    Tamper("action_edited_at_5", _set(5, action="read"), 5),
    Tamper("detail_edited_and_rehashed_at_3", _rehash(3, detail="to=gz-someone"), 4),
    Tamper("prev_hash_edited_at_2", _set(2, prev_hash=bytes(32)), 2),
    Tamper("entry_3_deleted", _delete(3), 4),
    Tamper("first_entry_deleted", _delete(1), 2),
    Tamper("entries_2_and_4_swapped", _swap(2, 4), 2),
]


@pytest.mark.parametrize("case", TAMPERING, ids=lambda c: c.name)
def test_tampering_is_found_at_the_first_bad_entry(engine: Engine, case: Tamper) -> None:
    add(engine, 6)
    with engine.begin() as conn:
        case.mutate(conn)
    with pytest.raises(AuditChainBroken) as info:
        audit.verify(engine)
    assert isinstance(info.value, audit.ChainBroken)
    assert info.value.seq == case.first_bad
    assert f"seq {case.first_bad}" in str(info.value)


def test_cutting_the_end_is_visible_only_against_a_recorded_head(engine: Engine) -> None:
    add(engine, 4)
    count, head = audit.verify_entries(audit.entries(engine))
    with engine.begin() as conn:
        _delete(4)(conn)
    assert audit.verify_entries(audit.entries(engine)) != (count, head)  # the head an operator noted moved


# --- concurrency: one chain, however many writers -----------------------------------------------------


def test_concurrent_appends_never_fork_the_chain(engine: Engine) -> None:
    threads, per_thread = 6, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with engine.begin() as conn:
                    audit.append(
                        conn, actor=f"worker-{t}", action="send", purpose="migrant_notice", reference=f"m-{t}-{i}"
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    assert audit.verify(engine) == threads * per_thread
    references = {e.reference for e in audit.entries(engine)}
    assert len(references) == threads * per_thread


# --- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    d = tmp_path / "node"
    assert main(["node", "init", str(d), "--id", "cq-test", "--division", "500157"]) == 0
    return d


def test_cli_verify_and_tail(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(f"sqlite:///{node_dir / 'node.db'}")
    entries = add(engine, 3)
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(node_dir)]) == 0
    out = capsys.readouterr().out
    assert "intact: 3 entries" in out
    assert entries[-1].entry_hash.hex() in out
    assert main(["audit", "tail", "--config", str(node_dir), "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["2", "2026-11-23T12:00:01Z"]
    assert "msg-0002" in lines[1]
    with engine.begin() as conn:
        _set(2, detail="to=elsewhere")(conn)
    engine.dispose()
    assert main(["audit", "verify", "--config", str(node_dir)]) == 77
    err = capsys.readouterr().err
    assert "audit_chain_broken" in err
    assert "seq 2" in err
