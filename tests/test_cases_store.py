"""The case store's contract, on SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, update

from gateway.cases import lifecycle as lc
from gateway.cases.codec import CaseFile
from gateway.cases.store import CaseStore, DocumentState, Side, steps_of
from gateway.cases.types import Case, EvidenceDocument, EvidenceKind, new_case_id
from gateway.errors import CaseNotFound, DecryptionFailed, DuplicateRecord, RowTampered
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import cases
from tests.test_cases_service import orphan_draft

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in China, a Tuesday
DATA = b"synthetic scan " * 100


@pytest.fixture
def store(db_url: str) -> Iterator[CaseStore]:
    engine = make_engine(db_url)
    migrate(engine)
    yield CaseStore(engine, DataKeyring.generate())
    engine.dispose()


def new_file() -> CaseFile:
    draft = orphan_draft(11, {"scan": DATA})
    case = Case(new_case_id(), draft.application, "cq-liangjiang", "500157", "sc-nanbu", "511321", "ref-1", NOW.date())
    return CaseFile(case, draft.child)


def test_a_case_round_trips_with_its_history_and_documents(store: CaseStore) -> None:
    file = new_file()
    doc = EvidenceDocument("scan", EvidenceKind.DEATH_CERTIFICATE, hashlib.sha256(DATA).hexdigest(), len(DATA))
    state, steps = steps_of(
        lc.new_state(file.case),
        [(lc.Role.RESIDENCE_STAFF, lc.Accept(), NOW), (lc.Role.RESIDENCE_NODE, lc.Push(), NOW + timedelta(seconds=1))],
    )
    with store.engine.begin() as conn:
        store.create(conn, file, Side.RESIDENCE, now=NOW)
        store.append(conn, state, steps)
        store.add_document(conn, file.case_id, doc, chunks=2, state=DocumentState.PENDING, now=NOW)
        assert store.put_chunk(conn, file.case_id, "scan", 1, DATA[700:])
        assert store.put_chunk(conn, file.case_id, "scan", 0, DATA[:700])
        assert not store.put_chunk(conn, file.case_id, "scan", 0, b"again")  # a duplicate changes nothing
        assert b"".join(store.read_chunks(conn, file.case_id, "scan")) == DATA
        store.set_document_state(conn, file.case_id, "scan", DocumentState.COMPLETE)
    loaded = store.load(file.case_id)
    assert loaded.file == file
    assert loaded.state.status is lc.Status.PUSHED
    assert [s.action.kind for s in loaded.steps] == [lc.ActionKind.ACCEPT, lc.ActionKind.PUSH]
    assert [(d.document, d.state) for d in loaded.documents] == [(doc, DocumentState.COMPLETE)]
    (row,) = store.rows(open_only=True)
    assert (row.case_id, row.status, row.accepting_division) == (file.case_id, lc.Status.PUSHED, "500157")
    with store.engine.connect() as conn:
        stored = conn.execute(select(cases.c.application_sealed)).scalar_one()
        assert file.child.name.encode() not in bytes(stored)
        assert (
            store.open_cases_of_child(conn, store.child_index(file.child.id_number), "orphan")[0].case_id
            == file.case_id
        )
    with store.engine.begin() as conn:
        store.set_document_state(conn, file.case_id, "scan", DocumentState.REFUSED)  # drops the bytes
        assert store.read_chunks(conn, file.case_id, "scan") == []


def test_refusals(store: CaseStore) -> None:
    file = new_file()
    with store.engine.begin() as conn:
        store.create(conn, file, Side.REGISTRATION, now=NOW)
    with pytest.raises(DuplicateRecord), store.engine.begin() as conn:
        store.create(conn, file, Side.REGISTRATION, now=NOW)
    with pytest.raises(CaseNotFound):
        store.load(new_case_id())
    with store.engine.begin() as conn:  # an index column edited behind the node's back
        conn.execute(update(cases).values(status="decided"))
    with pytest.raises(RowTampered):
        store.load(file.case_id)
    other = new_file()
    with store.engine.begin() as conn:
        store.create(conn, other, Side.REGISTRATION, now=NOW)
        sealed = conn.execute(select(cases.c.application_sealed).where(cases.c.case_id == file.case_id)).scalar_one()
        conn.execute(update(cases).where(cases.c.case_id == other.case_id).values(application_sealed=sealed))
    with pytest.raises(DecryptionFailed):  # a ciphertext moved to another row does not open
        store.load(other.case_id)


@pytest.mark.parametrize("given_connection", [False, True], ids=["own_connection", "callers_connection"])
def test_a_step_appended_while_a_case_is_read_is_not_taken_for_tampering(
    store: CaseStore, given_connection: bool
) -> None:
    # The node applies a received message (a step and the row's new status, one transaction) just
    # after a reader has read the case row and before it reads the events: the two reads disagree
    # once, the reread sees both, and the reader gets the newer case — not RowTampered.
    file = new_file()
    state, steps = steps_of(lc.new_state(file.case), [(lc.Role.RESIDENCE_STAFF, lc.Accept(), NOW)])
    with store.engine.begin() as conn:
        store.create(conn, file, Side.RESIDENCE, now=NOW)
        store.append(conn, state, steps)
    pushed, push = steps_of(state, [(lc.Role.RESIDENCE_NODE, lc.Push(), NOW + timedelta(seconds=1))])
    writer = make_engine(str(store.engine.url.render_as_string(hide_password=False)))
    armed = [True]

    def between_the_reads(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if armed[0] and "FROM case_events" in statement:
            armed[0] = False
            with writer.begin() as other:
                store.append(other, pushed, push)

    event.listen(store.engine, "before_cursor_execute", between_the_reads)
    try:
        if given_connection:
            with store.engine.connect() as conn:
                loaded = store.load(file.case_id, conn)
        else:
            loaded = store.load(file.case_id)
    finally:
        event.remove(store.engine, "before_cursor_execute", between_the_reads)
        writer.dispose()
    assert not armed[0]  # the step did land between the two reads
    assert loaded.state.status is lc.Status.PUSHED
    assert [s.action.kind for s in loaded.steps] == [lc.ActionKind.ACCEPT, lc.ActionKind.PUSH]


def test_alerts_are_recorded_once(store: CaseStore) -> None:
    with store.engine.begin() as conn:
        assert store.record_alert(conn, "c", "push", NOW.date(), "50", NOW)
        assert not store.record_alert(conn, "c", "push", NOW.date(), "50", NOW)
    assert [a[:4] for a in store.alerts()] == [("c", "push", NOW.date(), "50")]
