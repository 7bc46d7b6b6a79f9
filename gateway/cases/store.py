"""The case store: cases, their history and their documents, on SQLite and PostgreSQL (SPEC §6, §8).

Tables (``gateway/store/schema.py``): ``cases`` (plain index columns for the inbox — case id, side,
programme, state, nodes, divisions, acceptance date, a blind index of the child's ID number, a flag —
and the :class:`~gateway.cases.codec.CaseFile` sealed with the data keyring), ``case_events`` (the
lifecycle history in order, each action's facts sealed), ``case_documents`` (reference and state of
each evidence document) and ``case_chunks`` (the bytes, sealed chunk by chunk). Every seal's AAD
names its table and row, so a ciphertext moved to another row fails to open
(:class:`~gateway.errors.DecryptionFailed`).

Writes take the caller's :class:`~sqlalchemy.Connection`, so the service commits a case change
together with the outbox rows and audit entries it causes (STYLE: the outbox row in the same
transaction as the business write). Reads open their own connection. The plain ``status`` and node
columns are an index of the sealed file and the history; :meth:`CaseStore.load` checks them against
the sealed copy (:class:`~gateway.errors.RowTampered`). The contract suite is
``tests/test_cases_store.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gateway.cases import codec
from gateway.cases import lifecycle as lc
from gateway.cases.codec import CaseFile
from gateway.cases.types import EvidenceDocument, EvidenceKind
from gateway.errors import CaseNotFound, DuplicateRecord, RowTampered, StorageError
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import case_alerts, case_chunks, case_documents, case_events, cases

_CHILD_INDEX_PURPOSE = b"cases.child_id_number"
OPEN_STATUSES = frozenset(s for s in lc.Status if s not in (lc.Status.CLOSED, lc.Status.WITHDRAWN))


_LOAD_ATTEMPTS = 3  # reads of a case whose row and history disagree before RowTampered (see load)


class Side(StrEnum):
    RESIDENCE = "residence"  # this node accepted the case (居住地)
    REGISTRATION = "registration"  # this node decides it (户籍地)


class DocumentState(StrEnum):
    PENDING = "pending"  # chunks still arriving
    COMPLETE = "complete"  # every chunk here, the whole checked by SHA-256
    REFUSED = "refused"  # the bytes did not match the reference: dropped


@dataclass(frozen=True)
class Step:
    """One history entry as stored: who did what, when, with which facts."""

    role: lc.Role
    action: lc.Action
    at: datetime


@dataclass(frozen=True)
class StoredDocument:
    document: EvidenceDocument
    chunks: int
    state: DocumentState
    added_at: datetime


@dataclass(frozen=True)
class CaseRow:
    """The plain columns: what an inbox may show without opening anything."""

    case_id: str
    side: Side
    programme: str
    status: lc.Status
    accepting_node: str
    accepting_division: str
    registration_node: str
    registration_division: str
    accepted_on: date
    flag: str | None
    updated_at: datetime


@dataclass(frozen=True)
class StoredCase:
    row: CaseRow
    file: CaseFile
    steps: tuple[Step, ...]
    state: lc.CaseState  # the steps replayed through lifecycle.apply
    documents: tuple[StoredDocument, ...]


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _db(exc: SQLAlchemyError) -> StorageError:
    # Never the driver's message: it can quote values.
    return StorageError(type(exc).__name__)


class CaseStore:
    """Cases on SQLAlchemy Core (SQLite and PostgreSQL); see the module docstring."""

    def __init__(self, engine: Engine, keyring: DataKeyring) -> None:
        self.engine = engine
        self._keys = keyring

    # --- sealing ----------------------------------------------------------------------------------

    @staticmethod
    def _file_context(case_id: str) -> bytes:
        return b"cases\x00" + case_id.encode("ascii")

    @staticmethod
    def _event_context(case_id: str, seq: int) -> bytes:
        return b"case_events\x00" + case_id.encode("ascii") + b"\x00" + str(seq).encode("ascii")

    @staticmethod
    def _chunk_context(case_id: str, document_id: str, index: int) -> bytes:
        return b"case_chunks\x00" + f"{case_id}\x00{document_id}\x00{index}".encode()

    def child_index(self, id_number: str) -> bytes:
        """This node's blind index of a child's ID number (finds a child's other cases)."""
        return self._keys.blind_index(id_number, purpose=_CHILD_INDEX_PURPOSE)

    # --- writing ----------------------------------------------------------------------------------

    def create(self, conn: Connection, file: CaseFile, side: Side, *, now: datetime) -> None:
        """Insert a new case (status ``new``, no history). ``DuplicateRecord`` if the id exists."""
        c = file.case
        sealed = self._keys.seal(codec.case_file_to_json(file), context=self._file_context(c.case_id))
        try:
            conn.execute(
                insert(cases).values(
                    case_id=c.case_id,
                    side=side.value,
                    programme=c.programme.value,
                    status=lc.Status.NEW.value,
                    accepting_node=c.accepting_node,
                    accepting_division=c.accepting_division,
                    registration_node=c.registration_node,
                    registration_division=c.registration_division,
                    accepted_on=c.accepted_on,
                    child_index=self.child_index(file.child.id_number),
                    flag=None,
                    key_id=sealed.key_id,
                    application_sealed=sealed.blob,
                    created_at=_utc(now),
                    updated_at=_utc(now),
                )
            )
        except IntegrityError:
            raise DuplicateRecord("a case with this id already exists") from None

    def append(self, conn: Connection, state: lc.CaseState, steps: Sequence[Step]) -> None:
        """Append ``steps`` (already applied to give ``state``) after the stored history and update
        the case's index columns to ``state``. The caller applied them with ``lifecycle.apply``;
        the sequence numbers continue the stored ones (a concurrent append fails on the key)."""
        case_id = state.case.case_id
        last = conn.execute(
            select(func.coalesce(func.max(case_events.c.seq), 0)).where(case_events.c.case_id == case_id)
        ).scalar_one()
        if int(last) + len(steps) != len(state.history):
            raise StorageError("the case history changed meanwhile")
        rows = []
        for i, step in enumerate(steps, start=int(last) + 1):
            sealed = self._keys.seal(codec.action_to_json(step.action), context=self._event_context(case_id, i))
            rows.append(
                {
                    "case_id": case_id,
                    "seq": i,
                    "action": step.action.kind.value,
                    "role": step.role.value,
                    "at": _utc(step.at),
                    "key_id": sealed.key_id,
                    "facts_sealed": sealed.blob,
                }
            )
        try:
            if rows:
                conn.execute(insert(case_events), rows)
            conn.execute(
                update(cases)
                .where(cases.c.case_id == case_id)
                .values(
                    status=state.status.value,
                    registration_node=state.registration_node,
                    registration_division=state.registration_division,
                    updated_at=_utc(steps[-1].at) if steps else func.now(),
                )
            )
        except IntegrityError:
            raise StorageError("the case history changed meanwhile") from None

    def set_flag(self, conn: Connection, case_id: str, flag: str | None) -> None:
        conn.execute(update(cases).where(cases.c.case_id == case_id).values(flag=flag))

    def add_document(
        self,
        conn: Connection,
        case_id: str,
        document: EvidenceDocument,
        *,
        chunks: int,
        state: DocumentState,
        now: datetime,
    ) -> None:
        try:
            conn.execute(
                insert(case_documents).values(
                    case_id=case_id,
                    document_id=document.document_id,
                    kind=document.kind.value,
                    sha256=document.sha256,
                    size=document.size,
                    chunks=chunks,
                    state=state.value,
                    added_at=_utc(now),
                )
            )
        except IntegrityError:
            raise DuplicateRecord("the case already has a document with this id") from None

    def put_chunk(self, conn: Connection, case_id: str, document_id: str, index: int, data: bytes) -> bool:
        """Store one chunk; ``False`` (and nothing changes) if that chunk is already stored."""
        exists = conn.execute(
            select(case_chunks.c.idx).where(
                case_chunks.c.case_id == case_id, case_chunks.c.document_id == document_id, case_chunks.c.idx == index
            )
        ).first()
        if exists is not None:
            return False
        sealed = self._keys.seal(data, context=self._chunk_context(case_id, document_id, index))
        conn.execute(
            insert(case_chunks).values(
                case_id=case_id, document_id=document_id, idx=index, key_id=sealed.key_id, data_sealed=sealed.blob
            )
        )
        return True

    def chunk_count(self, conn: Connection, case_id: str, document_id: str) -> int:
        return int(
            conn.execute(
                select(func.count()).where(case_chunks.c.case_id == case_id, case_chunks.c.document_id == document_id)
            ).scalar_one()
        )

    def read_chunks(self, conn: Connection, case_id: str, document_id: str) -> list[bytes]:
        rows = conn.execute(
            select(case_chunks.c.idx, case_chunks.c.key_id, case_chunks.c.data_sealed)
            .where(case_chunks.c.case_id == case_id, case_chunks.c.document_id == document_id)
            .order_by(case_chunks.c.idx)
        ).all()
        return [
            self._keys.open(
                Sealed(r.key_id, bytes(r.data_sealed)), context=self._chunk_context(case_id, document_id, r.idx)
            )
            for r in rows
        ]

    def set_document_state(self, conn: Connection, case_id: str, document_id: str, state: DocumentState) -> None:
        """Record a document's state; ``refused`` also drops its chunks (never kept as good)."""
        conn.execute(
            update(case_documents)
            .where(case_documents.c.case_id == case_id, case_documents.c.document_id == document_id)
            .values(state=state.value)
        )
        if state is DocumentState.REFUSED:
            conn.execute(
                delete(case_chunks).where(case_chunks.c.case_id == case_id, case_chunks.c.document_id == document_id)
            )

    def record_alert(self, conn: Connection, case_id: str, step: str, due: date, province: str, now: datetime) -> bool:
        """Remember an overdue alert; ``False`` if this (case, step, due day) was already raised."""
        exists = conn.execute(
            select(case_alerts.c.case_id).where(
                case_alerts.c.case_id == case_id, case_alerts.c.step == step, case_alerts.c.due == due
            )
        ).first()
        if exists is not None:
            return False
        try:
            with conn.begin_nested():  # another process of this node may raise it at the same moment
                conn.execute(
                    insert(case_alerts).values(
                        case_id=case_id, step=step, due=due, province=province, raised_at=_utc(now)
                    )
                )
        except IntegrityError:
            return False
        return True

    # --- reading ----------------------------------------------------------------------------------

    @staticmethod
    def _case_row(r: Any) -> CaseRow:
        return CaseRow(
            case_id=r.case_id,
            side=Side(r.side),
            programme=r.programme,
            status=lc.Status(r.status),
            accepting_node=r.accepting_node,
            accepting_division=r.accepting_division,
            registration_node=r.registration_node,
            registration_division=r.registration_division,
            accepted_on=r.accepted_on,
            flag=r.flag,
            updated_at=_utc(r.updated_at),
        )

    def rows(self, *, side: Side | None = None, open_only: bool = False) -> list[CaseRow]:
        """The plain columns of every case (of one side; only open ones), by acceptance date."""
        query = select(cases)
        if side is not None:
            query = query.where(cases.c.side == side.value)
        if open_only:
            query = query.where(cases.c.status.in_([s.value for s in OPEN_STATUSES]))
        query = query.order_by(cases.c.accepted_on, cases.c.case_id)
        try:
            with self.engine.connect() as conn:
                return [self._case_row(r) for r in conn.execute(query)]
        except SQLAlchemyError as exc:
            raise _db(exc) from None

    def row(self, case_id: str) -> CaseRow:
        """The plain columns of one case, without opening it (``CaseNotFound``)."""
        try:
            with self.engine.connect() as conn:
                r = conn.execute(select(cases).where(cases.c.case_id == case_id)).first()
        except SQLAlchemyError as exc:
            raise _db(exc) from None
        if r is None:
            raise CaseNotFound()
        return self._case_row(r)

    def lock(self, conn: Connection, case_id: str) -> None:
        """Lock a case's row for the caller's transaction (PostgreSQL ``FOR UPDATE``), so that two
        processes of one node applying chunks of the same case take turns (each sees the other's
        documents complete, and the case is received once)."""
        conn.execute(select(cases.c.case_id).where(cases.c.case_id == case_id).with_for_update())

    def exists(self, case_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(cases.c.case_id).where(cases.c.case_id == case_id)).first() is not None

    def open_cases_of_child(self, conn: Connection, child_index: bytes, programme: str) -> list[CaseRow]:
        rows = conn.execute(
            select(cases).where(
                and_(
                    cases.c.child_index == child_index,
                    cases.c.programme == programme,
                    cases.c.status.in_([s.value for s in OPEN_STATUSES]),
                )
            )
        )
        return [self._case_row(r) for r in rows]

    def load(self, case_id: str, conn: Connection | None = None) -> StoredCase:
        """The case with its file opened and its history replayed (``CaseNotFound``), on ``conn``
        or a connection of its own.

        The case row and its events are read by two statements, which need not see one snapshot
        (SQLite reads outside a write transaction, PostgreSQL READ COMMITTED): a step appended
        between them — the node applying a received case message while a command, the county API
        or the web inbox reads the case — makes the row look older than its history. So a
        disagreement is read again, and only one that persists (an index column edited behind the
        node's back) is ``RowTampered``. In a snapshot the reread sees the same rows, so a real
        disagreement is still refused."""
        if conn is not None:
            return self._load_agreeing(conn, case_id)
        try:
            with self.engine.connect() as own:
                return self._load_agreeing(own, case_id)
        except SQLAlchemyError as exc:
            raise _db(exc) from None

    def _load_agreeing(self, conn: Connection, case_id: str) -> StoredCase:
        for attempt in range(1, _LOAD_ATTEMPTS + 1):
            try:
                return self._load(conn, case_id)
            except RowTampered:
                if attempt == _LOAD_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _load(self, conn: Connection, case_id: str) -> StoredCase:
        r = conn.execute(select(cases).where(cases.c.case_id == case_id)).first()
        if r is None:
            raise CaseNotFound()
        row = self._case_row(r)
        file = codec.case_file_from_json(
            self._keys.open(Sealed(r.key_id, bytes(r.application_sealed)), context=self._file_context(case_id))
        )
        steps: list[Step] = []
        for e in conn.execute(select(case_events).where(case_events.c.case_id == case_id).order_by(case_events.c.seq)):
            kind = lc.ActionKind(e.action)
            facts = self._keys.open(
                Sealed(e.key_id, bytes(e.facts_sealed)), context=self._event_context(case_id, e.seq)
            )
            steps.append(Step(lc.Role(e.role), codec.action_from_json(kind, facts), _utc(e.at)))
        state = lc.replay(file.case, [(s.role, s.action, s.at) for s in steps])
        c = file.case
        if (row.programme, row.status, row.accepting_node, row.registration_node) != (
            c.programme.value,
            state.status,
            c.accepting_node,
            state.registration_node,
        ):
            raise RowTampered("a plain case column disagrees with the sealed case or its history")
        documents = tuple(
            StoredDocument(
                EvidenceDocument(d.document_id, EvidenceKind(d.kind), d.sha256, int(d.size)),
                int(d.chunks),
                DocumentState(d.state),
                _utc(d.added_at),
            )
            for d in conn.execute(
                select(case_documents)
                .where(case_documents.c.case_id == case_id)
                .order_by(case_documents.c.added_at, case_documents.c.document_id)
            )
        )
        return StoredCase(row, file, tuple(steps), state, documents)

    def alerts(self) -> list[tuple[str, str, date, str, datetime]]:
        """Every alert raised: (case id, step, due day, province, raised at)."""
        with self.engine.connect() as conn:
            return [
                (r.case_id, r.step, r.due, r.province, _utc(r.raised_at))
                for r in conn.execute(select(case_alerts).order_by(case_alerts.c.raised_at, case_alerts.c.case_id))
            ]


def steps_of(
    state: lc.CaseState, actions: Iterable[tuple[lc.Role, lc.Action, datetime]]
) -> tuple[lc.CaseState, list[Step]]:
    """Apply ``actions`` to ``state`` in order; the new state and the steps to :meth:`CaseStore.append`."""
    steps: list[Step] = []
    for role, action, at in actions:
        state = lc.apply(state, role, action, at)
        steps.append(Step(role, action, at))
    return state, steps
