"""The child-ledger repository: one interface, one SQL implementation for SQLite and PostgreSQL.

``ChildRepository`` is what services use; ``SqlChildRepository`` implements it with SQLAlchemy
Core. The whole :class:`~gateway.domain.records.ChildRecord` (in the JSON form of
``gateway.domain.codec``) is sealed with the node's data key before it reaches the database
(``pii_sealed``, with ``key_id`` beside it); the plain columns are an index that carries only routing
and counting facts, checked against the sealed copy on every read. The shared contract suite
(``tests/test_store_contract.py``) runs against both databases.

Writes are batched (one multi-row INSERT per ``batch_size`` rows) inside one transaction per call,
so a roster either lands whole or not at all. Reads stream in batches; nothing loads a whole
roster into memory. ``sealed_pages`` hands out the pages still sealed (:class:`SealedPage`), for
a caller that opens them elsewhere — in another process holding the data keys — with
:func:`open_view`, the same checks ``iter_views`` makes; ``page_ranges`` cuts the same pages as
keyset bounds (:class:`PageRange`) that another process reads itself (:func:`read_page`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.domain.codec import record_from_json, record_to_json, view_from_json
from gateway.domain.records import ChildKind, ChildRecord, RecordView
from gateway.errors import DuplicateRecord, RecordNotFound, RowTampered, StorageError
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import child_records

_ID_INDEX_PURPOSE = b"child_records.id_number"
# What opening a row needs: the sealed copy, its AAD parts, and the plain columns checked against it.
# Selecting only these (not imported_at, which SQLite hands back as text to parse) halves a roster read.
_OPEN_COLUMNS = tuple(
    child_records.c[name]
    for name in ("period", "record_id", "key_id", "pii_sealed", "kind", "registration_division", "residence_division")
)


class SealedRow(NamedTuple):
    """A stored record as a page read returns it, not yet opened: what opening it needs (the sealed
    copy and its AAD parts) and the plain columns checked against it."""

    period: str
    record_id: str
    key_id: str
    pii_sealed: bytes
    kind: str
    registration_division: str
    residence_division: str


@dataclass(frozen=True)
class SealedPage:
    """A page of :class:`SealedRow`, column by column: plain values, cheap to hand to another
    process (a column of strings pickles at a fraction of the cost of as many row objects)."""

    periods: tuple[str, ...]
    record_ids: tuple[str, ...]
    key_ids: tuple[str, ...]
    sealed: tuple[bytes, ...]
    kinds: tuple[str, ...]
    registration_divisions: tuple[str, ...]
    residence_divisions: tuple[str, ...]

    @classmethod
    def of(cls, rows: Sequence[SealedRow | Row[Any]]) -> SealedPage:
        if not rows:
            return cls((), (), (), (), (), (), ())
        periods, record_ids, key_ids, sealed, kinds, registrations, residences = zip(*rows, strict=True)
        return cls(periods, record_ids, key_ids, tuple(map(bytes, sealed)), kinds, registrations, residences)

    def __len__(self) -> int:
        return len(self.record_ids)

    def rows(self) -> Iterator[SealedRow]:
        for values in zip(
            self.periods,
            self.record_ids,
            self.key_ids,
            self.sealed,
            self.kinds,
            self.registration_divisions,
            self.residence_divisions,
            strict=True,
        ):
            yield SealedRow._make(values)


@dataclass(frozen=True)
class PageRange:
    """One page of ``sealed_pages`` as keyset bounds: the rows of the period (and kind, and
    registration division, when given) whose record id is after ``after`` and — unless ``upto`` is
    ``None``, the last page — not after ``upto``, in record id order."""

    period: str
    kind: ChildKind | None
    registration_division: str | None
    after: str
    upto: str | None


def _where(query: Any, period: str, kind: ChildKind | None, registration_division: str | None) -> Any:
    query = query.where(child_records.c.period == period)
    if kind is not None:
        query = query.where(child_records.c.kind == kind.value)
    if registration_division is not None:
        query = query.where(child_records.c.registration_division == registration_division)
    return query


def read_page(engine: Engine, page: PageRange) -> SealedPage:
    """The rows of ``page``, still sealed (one ``SELECT``); ``StorageError`` if the read fails."""
    c = child_records.c
    query = _where(select(*_OPEN_COLUMNS), page.period, page.kind, page.registration_division)
    query = query.where(c.record_id > page.after).order_by(c.record_id)
    if page.upto is not None:
        query = query.where(c.record_id <= page.upto)
    try:
        with engine.connect() as conn:
            return SealedPage.of(conn.execute(query).all())
    except SQLAlchemyError as exc:
        raise StorageError(type(exc).__name__) from None


# The AAD binds each ciphertext to its table, period and record id: a sealed value pasted into
# another row (or another period's ledger) fails to open.
def _context(period: str, record_id: str) -> bytes:
    return b"child_records\x00" + period.encode("utf-8") + b"\x00" + record_id.encode("utf-8")


def _plaintext(keyring: DataKeyring, row: SealedRow | Row[Any]) -> Any:
    sealed = Sealed(row.key_id, row.pii_sealed)
    # UTF-8, as _row wrote it: decoding first spares json.loads guessing the encoding of bytes.
    return json.loads(keyring.open(sealed, context=_context(row.period, row.record_id)).decode("utf-8"))


def _check_plain_columns(row: SealedRow | Row[Any], kind: ChildKind, registration: str, residence: str) -> None:
    # The sealed copy is the authority; the plain columns are an index of it. A plain column
    # edited behind the node's back (e.g. a child's kind or county) is detected here.
    if (kind.value, registration, residence) != (row.kind, row.registration_division, row.residence_division):
        raise RowTampered("a plain column disagrees with the sealed record")


def open_view(keyring: DataKeyring, row: SealedRow | Row[Any]) -> RecordView:
    """The :class:`RecordView` of one stored row: opened with ``keyring`` (``DataKeyMissing``,
    ``DecryptionFailed`` for a ciphertext moved to another row), decoded (``InvalidRecord``) and
    checked against its plain columns (``RowTampered``). What ``iter_views`` does to each row."""
    view = view_from_json(_plaintext(keyring, row))
    _check_plain_columns(row, view.kind, view.registration_division, view.residence_division)
    return view


class ChildRepository(Protocol):
    def add_many(self, records: Iterable[ChildRecord], *, period: str) -> int:
        """Store records for ``period`` atomically; returns how many. ``DuplicateRecord`` if one
        repeats a record id or an ID number already in that period (nothing is stored then)."""
        ...

    def get(self, record_id: str, *, period: str) -> ChildRecord: ...

    def find_by_id_number(self, id_number: str, *, period: str) -> ChildRecord | None: ...

    def iter_period(
        self, period: str, *, kind: ChildKind | None = None, registration_division: str | None = None
    ) -> Iterator[ChildRecord]: ...

    def iter_views(
        self, period: str, *, kind: ChildKind | None = None, registration_division: str | None = None
    ) -> Iterator[RecordView]:
        """Like ``iter_period``, but only the fields notices and matching use (cheaper)."""
        ...

    def sealed_pages(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[SealedPage]:
        """The rows ``iter_views`` would open, in the same order, still sealed, in pages of
        ``page_size`` rows (default: the repository's batch size; the last page may be shorter).
        Open each row with :func:`open_view`."""
        ...

    def page_ranges(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[PageRange]:
        """The pages ``sealed_pages`` would return, as keyset bounds, without reading the rows
        (read each with :meth:`read_page`). A page may hold more than ``page_size`` rows if
        records are added while the ranges are read (none is missed)."""
        ...

    def read_page(self, page: PageRange) -> SealedPage:
        """The rows of one of :meth:`page_ranges`, still sealed."""
        ...

    def registration_divisions(self, period: str, *, kind: ChildKind | None = None) -> list[str]:
        """The distinct registration divisions of a period's records (plain index columns only)."""
        ...

    def count(self, period: str, *, kind: ChildKind | None = None) -> int: ...

    def counts_by_kind(self, period: str) -> dict[ChildKind, int]: ...

    def rewrap(self) -> int:
        """Re-seal every row not under the active data key; returns how many rows changed."""
        ...


class SqlChildRepository:
    """``ChildRepository`` on SQLAlchemy Core (SQLite and PostgreSQL)."""

    def __init__(self, engine: Engine, keyring: DataKeyring, *, batch_size: int = 1000) -> None:
        self._engine = engine
        self._keys = keyring
        self._batch = batch_size

    def _row(self, r: ChildRecord, period: str) -> dict[str, Any]:
        plaintext = json.dumps(record_to_json(r), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        sealed = self._keys.seal(plaintext, context=_context(period, r.record_id))
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
        record = record_from_json(_plaintext(self._keys, row))
        _check_plain_columns(row, record.kind, record.registration_division, record.residence_division)
        return record

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

    def get(self, record_id: str, *, period: str) -> ChildRecord:
        query = select(*_OPEN_COLUMNS).where(child_records.c.period == period, child_records.c.record_id == record_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
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

    def iter_period(
        self, period: str, *, kind: ChildKind | None = None, registration_division: str | None = None
    ) -> Iterator[ChildRecord]:
        for rows in self._pages(period, kind, registration_division):
            for row in rows:
                yield self._open(row)

    def iter_views(
        self, period: str, *, kind: ChildKind | None = None, registration_division: str | None = None
    ) -> Iterator[RecordView]:
        keys = self._keys
        for rows in self._pages(period, kind, registration_division):
            for row in rows:
                yield open_view(keys, row)

    def sealed_pages(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[SealedPage]:
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be at least 1")
        for rows in self._pages(period, kind, registration_division, page_size):
            yield SealedPage.of(rows)

    def page_ranges(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[PageRange]:
        size = page_size or self._batch
        if size < 1:
            raise ValueError("page_size must be at least 1")
        c = child_records.c
        after = ""
        while True:
            # The id that ends a full page, read off the primary key; the rows stay unread.
            query = _where(select(c.record_id), period, kind, registration_division)
            query = query.where(c.record_id > after).order_by(c.record_id)
            with self._engine.connect() as conn:
                upto = conn.execute(query.offset(size - 1).limit(1)).scalar()
                more = upto is not None or conn.execute(query.limit(1)).scalar() is not None
            if not more:
                return
            yield PageRange(period, kind, registration_division, after, upto)
            if upto is None:
                return
            after = upto

    def read_page(self, page: PageRange) -> SealedPage:
        return read_page(self._engine, page)

    def _pages(
        self, period: str, kind: ChildKind | None, registration_division: str | None, size: int | None = None
    ) -> Iterator[Sequence[Row[Any]]]:
        # Keyset pagination on the primary key: bounded memory and no long-lived cursor.
        last = ""
        while True:
            query = (
                select(*_OPEN_COLUMNS)
                .where(child_records.c.period == period, child_records.c.record_id > last)
                .order_by(child_records.c.record_id)
                .limit(size or self._batch)
            )
            if kind is not None:
                query = query.where(child_records.c.kind == kind.value)
            if registration_division is not None:
                query = query.where(child_records.c.registration_division == registration_division)
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield rows
            last = rows[-1].record_id

    def registration_divisions(self, period: str, *, kind: ChildKind | None = None) -> list[str]:
        c = child_records.c
        query = select(c.registration_division).where(c.period == period).distinct()
        if kind is not None:
            query = query.where(c.kind == kind.value)
        with self._engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

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
                c = child_records.c
                rows = conn.execute(
                    select(c.period, c.record_id, c.key_id, c.pii_sealed).where(c.key_id != active).limit(self._batch)
                ).all()
                if not rows:
                    return changed
                for row in rows:
                    ctx = _context(row.period, row.record_id)
                    plain = self._keys.open(Sealed(row.key_id, row.pii_sealed), context=ctx)
                    sealed = self._keys.seal(plain, context=ctx)
                    conn.execute(
                        update(child_records)
                        .where(c.period == row.period, c.record_id == row.record_id)
                        .values(key_id=sealed.key_id, pii_sealed=sealed.blob)
                    )
                changed += len(rows)
