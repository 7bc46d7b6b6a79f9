"""The child-ledger repository: one interface, one SQL implementation for SQLite and PostgreSQL.

``ChildRepository`` is what services use; ``SqlChildRepository`` implements it with SQLAlchemy
Core. Every personal field of a :class:`~gateway.domain.records.ChildRecord` is sealed with the
node's data key before it reaches the database (``pii_sealed``, with ``key_id`` beside it); the
plain columns carry only routing and counting facts. The shared contract suite
(``tests/test_store_contract.py``) runs against both databases.

Writes are batched (one multi-row INSERT per ``batch_size`` rows) inside one transaction per call,
so a roster either lands whole or not at all. Reads stream in batches; nothing loads a whole
roster into memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.domain.records import (
    ChildKind,
    ChildRecord,
    Disability,
    DisabilityCategory,
    Guardian,
    GuardianshipSituation,
    KeyCareFlag,
    ParentSituation,
    ParentStatus,
    Provenance,
    Sex,
)
from gateway.errors import DuplicateRecord, RecordNotFound, StorageError
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import child_records

_ID_INDEX_PURPOSE = b"child_records.id_number"


class ChildRepository(Protocol):
    def add_many(self, records: Iterable[ChildRecord], *, period: str) -> int:
        """Store records for ``period`` atomically; returns how many. ``DuplicateRecord`` if one
        repeats a record id or an ID number already in that period (nothing is stored then)."""
        ...

    def get(self, record_id: str) -> ChildRecord: ...

    def find_by_id_number(self, id_number: str, *, period: str) -> ChildRecord | None: ...

    def iter_period(self, period: str, *, kind: ChildKind | None = None) -> Iterator[ChildRecord]: ...

    def count(self, period: str, *, kind: ChildKind | None = None) -> int: ...

    def counts_by_kind(self, period: str) -> dict[ChildKind, int]: ...

    def rewrap(self) -> int:
        """Re-seal every row not under the active data key; returns how many rows changed."""
        ...


# --- sealed payload codec (domain ⇄ JSON stored inside the ciphertext) ---------------------------


def _d(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _pd(value: Any) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def _personal_fields(r: ChildRecord) -> dict[str, Any]:
    return {
        "v": 1,
        "id_number": r.id_number,
        "name": r.name,
        "sex": r.sex.value,
        "birth_date": r.birth_date.isoformat(),
        "living_since": _d(r.living_since),
        "guardianship": r.guardianship.value,
        "father": [r.father.situation.value, _d(r.father.since)],
        "mother": [r.mother.situation.value, _d(r.mother.since)],
        "guardian": None if r.guardian is None else [r.guardian.name, r.guardian.relation, r.guardian.phone],
        "disability": None if r.disability is None else [int(r.disability.category), r.disability.level],
        "key_care": sorted(f.value for f in r.key_care),
    }


def _record_from(row: Row[Any], p: dict[str, Any]) -> ChildRecord:
    g = p["guardian"]
    dis = p["disability"]
    imported_at: datetime = row.imported_at
    if imported_at.tzinfo is None:  # SQLite drops the zone; we always store UTC
        imported_at = imported_at.replace(tzinfo=UTC)
    return ChildRecord(
        record_id=row.record_id,
        id_number=p["id_number"],
        name=p["name"],
        sex=Sex(p["sex"]),
        birth_date=date.fromisoformat(p["birth_date"]),
        registration_division=row.registration_division,
        residence_division=row.residence_division,
        living_since=_pd(p["living_since"]),
        guardianship=GuardianshipSituation(p["guardianship"]),
        father=ParentStatus(ParentSituation(p["father"][0]), _pd(p["father"][1])),
        mother=ParentStatus(ParentSituation(p["mother"][0]), _pd(p["mother"][1])),
        kind=ChildKind(row.kind),
        provenance=Provenance(
            source=row.source, imported_at=imported_at, node_id=p["node_id"], source_row=row.source_row
        ),
        guardian=None if g is None else Guardian(name=g[0], relation=g[1], phone=g[2]),
        disability=None if dis is None else Disability(DisabilityCategory(dis[0]), dis[1]),
        key_care=frozenset(KeyCareFlag(f) for f in p["key_care"]),
    )


class SqlChildRepository:
    """``ChildRepository`` on SQLAlchemy Core (SQLite and PostgreSQL)."""

    def __init__(self, engine: Engine, keyring: DataKeyring, *, batch_size: int = 1000) -> None:
        self._engine = engine
        self._keys = keyring
        self._batch = batch_size

    # The AAD binds each ciphertext to its table and record id: a sealed value pasted into
    # another row fails to open.
    @staticmethod
    def _context(record_id: str) -> bytes:
        return b"child_records\x00" + record_id.encode("ascii")

    def _row(self, r: ChildRecord, period: str) -> dict[str, Any]:
        personal = _personal_fields(r)
        personal["node_id"] = r.provenance.node_id
        plaintext = json.dumps(personal, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sealed = self._keys.seal(plaintext, context=self._context(r.record_id))
        return {
            "record_id": r.record_id,
            "period": period,
            "kind": r.kind.value,
            "registration_division": r.registration_division,
            "residence_division": r.residence_division,
            "id_index": self._index(r.id_number) if r.id_number else None,
            "key_id": sealed.key_id,
            "pii_sealed": sealed.blob,
            "source": r.provenance.source[:200],
            "source_row": r.provenance.source_row,
            "imported_at": r.provenance.imported_at.astimezone(UTC),
        }

    def _index(self, id_number: str) -> bytes:
        return self._keys.blind_index(id_number, purpose=_ID_INDEX_PURPOSE)

    def _open(self, row: Row[Any]) -> ChildRecord:
        plaintext = self._keys.open(Sealed(row.key_id, row.pii_sealed), context=self._context(row.record_id))
        return _record_from(row, json.loads(plaintext))

    def add_many(self, records: Iterable[ChildRecord], *, period: str) -> int:
        total = 0
        try:
            with self._engine.begin() as conn:
                batch: list[dict[str, Any]] = []
                for record in records:
                    batch.append(self._row(record, period))
                    if len(batch) >= self._batch:
                        conn.execute(insert(child_records), batch)
                        total += len(batch)
                        batch = []
                if batch:
                    conn.execute(insert(child_records), batch)
                    total += len(batch)
        except IntegrityError:
            # Never echo the driver's message: it can quote the offending row's values.
            raise DuplicateRecord(f"period {period}: a record id or ID number repeats") from None
        except SQLAlchemyError as exc:
            raise StorageError(type(exc).__name__) from None
        return total

    def get(self, record_id: str) -> ChildRecord:
        with self._engine.connect() as conn:
            row = conn.execute(select(child_records).where(child_records.c.record_id == record_id)).first()
        if row is None:
            raise RecordNotFound()
        return self._open(row)

    def find_by_id_number(self, id_number: str, *, period: str) -> ChildRecord | None:
        query = select(child_records).where(
            child_records.c.period == period, child_records.c.id_index == self._index(id_number)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._open(row)

    def iter_period(self, period: str, *, kind: ChildKind | None = None) -> Iterator[ChildRecord]:
        # Keyset pagination on the primary key: bounded memory and no long-lived cursor.
        last = ""
        while True:
            query = (
                select(child_records)
                .where(child_records.c.period == period, child_records.c.record_id > last)
                .order_by(child_records.c.record_id)
                .limit(self._batch)
            )
            if kind is not None:
                query = query.where(child_records.c.kind == kind.value)
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            for row in rows:
                yield self._open(row)
            last = rows[-1].record_id

    def count(self, period: str, *, kind: ChildKind | None = None) -> int:
        query = select(func.count()).select_from(child_records).where(child_records.c.period == period)
        if kind is not None:
            query = query.where(child_records.c.kind == kind.value)
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def counts_by_kind(self, period: str) -> dict[ChildKind, int]:
        query = (
            select(child_records.c.kind, func.count())
            .where(child_records.c.period == period)
            .group_by(child_records.c.kind)
        )
        with self._engine.connect() as conn:
            found = {ChildKind(kind): int(n) for kind, n in conn.execute(query)}
        return {kind: found.get(kind, 0) for kind in ChildKind}

    def rewrap(self) -> int:
        active = self._keys.active_key_id
        changed = 0
        while True:
            with self._engine.begin() as conn:
                rows = conn.execute(
                    select(child_records.c.record_id, child_records.c.key_id, child_records.c.pii_sealed)
                    .where(child_records.c.key_id != active)
                    .limit(self._batch)
                ).all()
                if not rows:
                    return changed
                for row in rows:
                    ctx = self._context(row.record_id)
                    plain = self._keys.open(Sealed(row.key_id, row.pii_sealed), context=ctx)
                    sealed = self._keys.seal(plain, context=ctx)
                    conn.execute(
                        update(child_records)
                        .where(child_records.c.record_id == row.record_id)
                        .values(key_id=sealed.key_id, pii_sealed=sealed.blob)
                    )
                changed += len(rows)
