"""The repository contract, run on SQLite and PostgreSQL (STYLE habit 9).

Every test here runs twice through the ``db_url`` fixture. The raw-table tests read the database
underneath the repository to prove that personal fields are never stored in clear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from gateway.domain.records import ChildKind
from gateway.errors import DataKeyMissing, DecryptionFailed, DuplicateRecord, RecordNotFound, RowTampered
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.repository import SqlChildRepository
from gateway.store.schema import child_records
from tests.factories import child

PERIOD = "2026Q4"


@pytest.fixture
def keyring() -> DataKeyring:
    return DataKeyring.generate()


@pytest.fixture
def repo(db_url: str, keyring: DataKeyring) -> Iterator[SqlChildRepository]:
    engine = make_engine(db_url)
    migrate(engine)
    yield SqlChildRepository(engine, keyring, batch_size=7)  # small batches exercise the batching
    engine.dispose()


def test_round_trip_every_field(repo: SqlChildRepository) -> None:
    records = [child(n, disabled=n == 3, with_id=n != 4) for n in range(20)]
    assert repo.add_many(records, period=PERIOD) == 20
    for r in records:
        assert repo.get(r.record_id, period=PERIOD) == r


def test_find_by_id_number_uses_the_blind_index(repo: SqlChildRepository) -> None:
    records = [child(n) for n in range(5)]
    repo.add_many(records, period=PERIOD)
    target = records[2]
    assert target.id_number is not None
    assert repo.find_by_id_number(target.id_number, period=PERIOD) == target
    assert repo.find_by_id_number(target.id_number, period="2026Q3") is None


def test_iter_period_streams_everything_in_batches(repo: SqlChildRepository) -> None:
    records = [child(n, kind=ChildKind.MIGRANT if n % 2 else ChildKind.LEFT_BEHIND) for n in range(30)]
    repo.add_many(records, period=PERIOD)
    repo.add_many([child(100)], period="2026Q3")
    got = list(repo.iter_period(PERIOD))
    assert sorted(r.record_id for r in got) == sorted(r.record_id for r in records)
    migrants = list(repo.iter_period(PERIOD, kind=ChildKind.MIGRANT))
    assert len(migrants) == 15
    assert repo.count(PERIOD) == 30
    assert repo.counts_by_kind(PERIOD) == {
        ChildKind.MIGRANT: 15,
        ChildKind.LEFT_BEHIND: 15,
        ChildKind.NEITHER: 0,
    }


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(lambda r: r, id="same_record_id"),
        pytest.param(
            lambda r: dataclasses.replace(r, record_id="ffffffff-0000-0000-0000-000000000001"),
            id="same_id_number_in_period",
        ),
    ],
)
def test_duplicates_store_nothing(repo: SqlChildRepository, second: object) -> None:
    first = child(1)
    batch = [child(2), first, second(first)]  # type: ignore[operator]
    with pytest.raises(DuplicateRecord) as info:
        repo.add_many(batch, period=PERIOD)
    assert repo.count(PERIOD) == 0, "a failed batch must store nothing"
    assert first.name not in str(info.value)
    assert first.id_number is not None
    assert first.id_number not in str(info.value)


def test_same_record_in_two_periods(repo: SqlChildRepository) -> None:
    r = child(1)
    repo.add_many([r], period="2026Q3")
    repo.add_many([r], period=PERIOD)
    assert repo.get(r.record_id, period="2026Q3") == repo.get(r.record_id, period=PERIOD) == r


def test_ciphertext_moved_to_another_period_fails_closed(repo: SqlChildRepository) -> None:
    r = child(1)
    repo.add_many([r], period="2026Q3")
    repo.add_many([r], period=PERIOD)
    with repo._engine.begin() as conn:
        c = child_records.c
        q3 = conn.execute(select(c.pii_sealed).where(c.period == "2026Q3")).scalar_one()
        conn.execute(update(child_records).where(c.period == PERIOD).values(pii_sealed=q3))
    with pytest.raises(DecryptionFailed):
        repo.get(r.record_id, period=PERIOD)


def test_records_without_id_number_do_not_collide(repo: SqlChildRepository) -> None:
    assert repo.add_many([child(n, with_id=False) for n in range(3)], period=PERIOD) == 3


def test_missing_record(repo: SqlChildRepository) -> None:
    with pytest.raises(RecordNotFound):
        repo.get("00000000-0000-0000-0000-00000000dead", period=PERIOD)


def test_personal_fields_are_not_stored_in_clear(repo: SqlChildRepository) -> None:
    records = [child(n, disabled=True) for n in range(10)]
    repo.add_many(records, period=PERIOD)
    with repo._engine.connect() as conn:
        rows = conn.execute(select(child_records)).all()
    raw = b"".join(repr(tuple(row)).encode("utf-8") + bytes(row.pii_sealed) for row in rows)
    for r in records:
        assert r.id_number is not None
        for secret in (r.name, r.id_number, r.birth_date.isoformat(), r.birth_date.strftime("%Y%m%d")):
            assert secret.encode("utf-8") not in raw, "a personal value is stored in clear"
    assert {row.key_id for row in rows} == {repo._keys.active_key_id}


def test_tampered_row_fails_closed(repo: SqlChildRepository) -> None:
    a, b = child(1), child(2)
    repo.add_many([a, b], period=PERIOD)
    with repo._engine.begin() as conn:
        sealed_b = conn.execute(
            select(child_records.c.pii_sealed).where(child_records.c.record_id == b.record_id)
        ).scalar_one()
        # Paste b's (valid) ciphertext into a's row: the AAD binds it to b, so it must not open.
        conn.execute(update(child_records).where(child_records.c.record_id == a.record_id).values(pii_sealed=sealed_b))
    with pytest.raises(DecryptionFailed):
        repo.get(a.record_id, period=PERIOD)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("kind", "neither", id="kind_changed"),
        pytest.param("registration_division", "500109", id="registration_changed"),
        pytest.param("residence_division", "511321", id="residence_changed"),
    ],
)
def test_edited_plain_column_is_detected(repo: SqlChildRepository, column: str, value: str) -> None:
    r = child(1)
    repo.add_many([r], period=PERIOD)
    with repo._engine.begin() as conn:
        conn.execute(update(child_records).where(child_records.c.record_id == r.record_id).values({column: value}))
    with pytest.raises(RowTampered):
        repo.get(r.record_id, period=PERIOD)


def test_rotation_keeps_old_rows_readable_and_rewrap_moves_them(repo: SqlChildRepository, keyring: DataKeyring) -> None:
    old = [child(n) for n in range(10)]
    repo.add_many(old, period=PERIOD)
    old_key = keyring.active_key_id
    new_key = keyring.rotate()
    newer = child(50)
    repo.add_many([newer], period=PERIOD)
    assert repo.get(old[0].record_id, period=PERIOD) == old[0]  # sealed under the old key, still readable
    assert repo.rewrap() == 10
    with repo._engine.connect() as conn:
        assert set(conn.execute(select(child_records.c.key_id)).scalars()) == {new_key}
    del keyring.keys[old_key]
    reader = SqlChildRepository(repo._engine, DataKeyring(new_key, dict(keyring.keys), keyring.index_key))
    assert reader.get(old[3].record_id, period=PERIOD) == old[3]


def test_unknown_key_id_is_a_typed_error(repo: SqlChildRepository) -> None:
    r = child(1)
    repo.add_many([r], period=PERIOD)
    stranger = SqlChildRepository(repo._engine, DataKeyring.generate())
    with pytest.raises(DataKeyMissing):
        stranger.get(r.record_id, period=PERIOD)
