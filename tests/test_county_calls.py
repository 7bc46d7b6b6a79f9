"""The county API's roster, match, case and custody calls (issue 7), on SQLite and PostgreSQL.

Two nodes of a real (test) PKI — 两江新区 (``cq-liangjiang``, 500157, accepts cases) and 南部县
(``sc-nanbu``, 511321, decides them), and for a transfer (转办) a third, 北碚区 (``cq-beibei``,
500109) — each with its own database (all on the backend under test), its
:class:`~gateway.cases.wiring.CaseParts` and its county API served on 127.0.0.1 by
:func:`~gateway.county.servicer.county_server`. Envelopes move from a node's outbox to the peer's
real :class:`Receiver` in-process (as in ``tests/test_cases_custody.py``): only the node-to-node
sockets are missing. County systems, staff and provincial operators call through
:class:`gateway.client.CountyClient` with tokens of each role and scope.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import func, select
from tongban.v1 import county_pb2, county_pb2_grpc

from gateway import audit
from gateway import config as config_mod
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.codec import CaseFile
from gateway.cases.store import DocumentState
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import Case, EvidenceDocument, EvidenceKind, Programme
from gateway.cases.wiring import CaseParts
from gateway.client import CountyClient, evidence_document
from gateway.county import auth
from gateway.county import views as cv
from gateway.county import wire as cw
from gateway.county.auth import Caller
from gateway.county.permissions import Role
from gateway.county.servicer import county_server
from gateway.custody.events import CaseType, Kind
from gateway.domain.codec import record_to_json
from gateway.domain.records import ChildKind, ChildRecord, ParentSituation, ParentStatus
from gateway.errors import AttachmentRefused, InputError, InvalidCase, StorageError
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.matching import Band, Link
from gateway.node import Node, init_node, open_node
from gateway.reconcile import store as findings_store
from gateway.reconcile.findings import Code, Finding, _hints, parse_hints
from gateway.reconcile.findings import Role as FindingRole
from gateway.reconcile.findings import Side as FindingSide
from gateway.roster import IntakeSummary, Rejection
from gateway.server import apply_custody, audit_receipts, both
from gateway.store import schema
from gateway.trust.store import utc_now
from gateway.wire import record_to_wire
from tests.factories import child
from tests.test_cases_service import FILES, document, living_subsidy_draft, orphan_draft
from tests.test_mtls import LivePki

LJ, NB, BB = "cq-liangjiang", "sc-nanbu", "cq-beibei"
DIVISIONS = {LJ: "500157", NB: "511321", BB: "500109"}
PERIOD = "2026Q3"
TIMEOUT = 10.0
UNKNOWN_CASE = "00000000-0000-4000-8000-00000000abcd"
CASE_TABLES = (
    schema.cases,
    schema.case_events,
    schema.case_documents,
    schema.case_chunks,
    schema.outbox,
    schema.audit_log,
    schema.custody_events,
)


# --- two nodes with their county APIs ------------------------------------------------------------------


@dataclass
class CountyNode:
    node: Node
    parts: CaseParts
    receiver: Receiver
    server: grpc.Server
    address: str
    tokens: dict[tuple[Role, str], str] = field(default_factory=dict)

    def token(self, role: Role, division: str = "") -> str:
        key = (role, division)
        if key not in self.tokens:
            self.tokens[key], _ = auth.create(
                self.node.engine, role=role, label=f"test {role.value}", division=division
            )
        return self.tokens[key]

    def client(self, role: Role, division: str = "") -> CountyClient:
        return CountyClient(self.address, self.token(role, division), timeout=TIMEOUT, attempts=1)

    def metadata(self, role: Role, division: str = "") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(role, division)}"),)

    def caller_id(self, role: Role, division: str = "") -> str:
        return auth.authenticate(self.node.engine, self.token(role, division)).token_id

    def counts(self) -> dict[str, int]:
        """Rows per table of everything an action on a case writes (a refused one writes nothing)."""
        with self.node.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in CASE_TABLES}


@dataclass
class Pair:
    nodes: dict[str, CountyNode]
    live: LivePki

    def deliver(self, sender: str) -> int:
        engine = self.nodes[sender].node.engine
        claimed = outbox.claim(engine, "test", limit=10_000)
        directory = self.live.directory()
        for item in claimed:
            receipt = self.nodes[item.peer].receiver.receive(
                item.envelope(self.nodes[sender].node.keyring), directory.entry(sender)
            )
            with engine.begin() as conn:
                outbox.mark_delivered(conn, item.message_id, receipt.SerializeToString())
        return len(claimed)

    def settle(self) -> None:
        """Deliver, sync and settle custody until nothing moves (what the running nodes do)."""
        for _ in range(10):
            moved = sum(self.deliver(n) for n in self.nodes)
            for n in self.nodes.values():
                n.parts.service().sync(utc_now())
                moved += sum(n.parts.custody.settle().values())
            if not moved:
                return
        raise AssertionError("the network did not settle")


def _another_db(db_url: str, tmp_path: Path, postgres_url: str | None, label: str) -> Iterator[str]:
    """Another empty database on the same backend (another node's)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / label}.db"
        return
    assert postgres_url is not None
    name = f"tongban_county_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres_url.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def second_db(db_url: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """A second empty database on the same backend (the other node's)."""
    yield from _another_db(db_url, tmp_path, postgres_url, "second")


@pytest.fixture
def third_db(db_url: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    yield from _another_db(db_url, tmp_path, postgres_url, "third")


def _county_nodes(tmp_path: Path, urls: dict[str, str]) -> Iterator[Pair]:
    live = LivePki.create()
    directory = live.directory()
    profiles = load_profiles()
    nodes: dict[str, CountyNode] = {}
    for node_id, url in urls.items():
        division = DIVISIONS[node_id]
        init_node(tmp_path / node_id, node_id=node_id, division=division, listen="127.0.0.1:0", database_url=url)
        node = open_node(config_mod.load(tmp_path / node_id / "node.toml"))
        pki = live.node(node_id)
        parts = CaseParts.build(
            node,
            signer=pki.signers[0],
            encryption_key=pki.encryption_key,
            directory=lambda: directory,
            profiles=profiles,
            clock=utc_now,
        )
        receiver = Receiver(
            node_id=node_id,
            engine=node.engine,
            keyring=node.keyring,
            directory=live.directory,
            profiles=profiles,
            signer=pki.signers[0],
            clock=utc_now,
            on_accept=both(audit_receipts(node_id), apply_custody(parts.custody)),
        )
        server, address = county_server(node, parts)
        server.start()
        nodes[node_id] = CountyNode(node, parts, receiver, server, address)
    try:
        yield Pair(nodes, live)
    finally:
        for n in nodes.values():
            n.server.stop(grace=0).wait()
            n.node.engine.dispose()


@pytest.fixture
def pair(tmp_path: Path, db_url: str, second_db: str) -> Iterator[Pair]:
    yield from _county_nodes(tmp_path, {LJ: db_url, NB: second_db})


@pytest.fixture
def trio(tmp_path: Path, db_url: str, second_db: str, third_db: str) -> Iterator[Pair]:
    """The pair and 北碚区, where a transferred case goes."""
    yield from _county_nodes(tmp_path, {LJ: db_url, NB: second_db, BB: third_db})


def refused(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# --- SubmitRoster ----------------------------------------------------------------------------------------


def _broken_id(record: ChildRecord) -> ChildRecord:
    assert record.id_number is not None
    return dataclasses.replace(record, birth_date=date(record.birth_date.year - 1, 1, 1))  # contradicts the ID


def test_submit_roster_validates_stores_once_and_reports_rows(pair: Pair, tmp_path: Path) -> None:
    lj = pair.nodes[LJ]
    good = [child(n, registration="511321", residence="500157") for n in range(1, 6)]
    bad = _broken_id(child(6, registration="511321", residence="500157"))
    left_behind = child(7, registration="500157", residence="500157", kind=ChildKind.LEFT_BEHIND)
    rows = [good[0], good[1], bad, good[2], good[3], good[4], left_behind]
    with lj.client(Role.COUNTY_SYSTEM) as c:
        # All or nothing: one bad row, nothing stored.
        held = c.submit_roster(PERIOD, rows, all_or_nothing=True)
        assert not held.summary.stored
        assert (held.received, held.summary.accepted) == (7, 0)
        assert [(r.position, r.code) for r in held.summary.rejections] == [(3, "invalid_record")]
        assert lj.node.children.count(PERIOD) == 0
        # Without it: the good rows are stored, the bad one reported at its position.
        outcome = c.submit_roster(PERIOD, rows)
    s = outcome.summary
    assert s.stored
    assert (outcome.received, s.accepted, s.rejected, s.rerouted) == (7, 6, 1, 0)
    assert s.by_kind == {ChildKind.MIGRANT: 5, ChildKind.LEFT_BEHIND: 1, ChildKind.NEITHER: 0}
    assert s.rejections == (Rejection(3, "invalid_record", s.rejections[0].reason),)
    assert "birth date" in s.rejections[0].reason
    assert lj.node.children.counts_by_kind(PERIOD)[ChildKind.MIGRANT] == 5
    stored = lj.node.children.get(good[0].record_id, period=PERIOD)
    assert stored.name == good[0].name
    assert stored.provenance.source.startswith("county_api:ct-")
    assert stored.provenance.source_row == 1
    # The same rows through `tongban roster import` (JSON Lines) are judged the same way.
    jsonl = tmp_path / "rows.jsonl"
    import json

    jsonl.write_text("\n".join(json.dumps(record_to_json(r), ensure_ascii=False) for r in rows), encoding="utf-8")
    from gateway.cli import main

    cfg = str(lj.node.config.path.parent)
    assert main(["roster", "import", "--config", cfg, "--period", "2026Q2", str(jsonl)]) == 65
    assert lj.node.children.counts_by_kind("2026Q2") == lj.node.children.counts_by_kind(PERIOD)
    # Sending the same rows again stores nothing twice: the repeated record ids are refused.
    with lj.client(Role.COUNTY_SYSTEM) as c:
        again = refused(lambda: c.submit_roster(PERIOD, good[:2]))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS
    assert lj.node.children.count(PERIOD) == 6
    entries = [e for e in audit.entries(lj.node.engine) if e.action == "county_roster_submitted"]
    assert [e.detail for e in entries] == [
        "received=7 accepted=0 rejected=1",
        "received=7 accepted=6 rejected=1",
    ]


def test_submit_roster_refuses_bad_streams_and_rows_outside_the_scope(pair: Pair) -> None:
    lj = pair.nodes[LJ]
    stub_address = lj.address
    token, _ = auth.create(lj.node.engine, role=Role.COUNTY_SYSTEM, label="scoped", division="511321")
    md = (("authorization", f"Bearer {token}"),)
    in_scope = child(11, registration="511321", residence="500157")
    outside = child(12, registration="520524", residence="500157")
    unspecified = record_to_wire(child(13, registration="511321", residence="500157"))
    unspecified.sex = 0  # not a valid record: rejected at its position, naming the field

    def stream(*items: county_pb2.SubmitRosterRequest) -> Iterator[county_pb2.SubmitRosterRequest]:
        yield from items

    header = county_pb2.SubmitRosterRequest(header=county_pb2.RosterHeader(period=PERIOD))
    with grpc.insecure_channel(stub_address) as ch:
        stub = county_pb2_grpc.CountyStub(ch)
        reply = stub.SubmitRoster(
            stream(
                header,
                cw.roster_row_to_wire(in_scope),
                cw.roster_row_to_wire(outside),
                county_pb2.SubmitRosterRequest(record=unspecified),
                header,
            ),
            timeout=TIMEOUT,
            metadata=md,
        )
        outcome = cw.roster_outcome_from_wire(reply)
        assert [(r.position, r.code) for r in outcome.summary.rejections] == [
            (2, "outside_scope"),
            (3, "invalid_record"),
            (4, "invalid_record"),
        ]
        assert outcome.summary.accepted == 1
        no_header = refused(lambda: stub.SubmitRoster(stream(cw.roster_row_to_wire(in_scope)), metadata=md))
        assert no_header.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_period = county_pb2.SubmitRosterRequest(header=county_pb2.RosterHeader(period="2026-13"))
        assert refused(lambda: stub.SubmitRoster(stream(bad_period), metadata=md)).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert lj.node.children.count(PERIOD) == 1


# --- ListMatches (and ListFindings' scope) ----------------------------------------------------------------


def _findings() -> list[Finding]:
    link = Link("r-1", "n-1", Band.MATCHED, 0.912, "fuzzy", {"name": "partial", "birth": "agree", "sex": "agree"})
    reg = FindingRole.REGISTRATION
    return [
        Finding(Code.MATCHED, reg, FindingSide.BOTH, "sc-nanbu", "511321", "r-1", "n-1", _hints(link)),
        Finding(
            Code.REVIEW, reg, FindingSide.BOTH, "gz-zhijin", "520524", "r-2", "n-2", "stage=exact score=1.000 sex=agree"
        ),
        Finding(
            Code.REVIEW, FindingRole.RESIDENCE, FindingSide.BOTH, "sc-nanbu", "511321", "n-3", "g-3", "outcome=possible"
        ),
        Finding(Code.MATCHED, FindingRole.RESIDENCE, FindingSide.BOTH, "sc-nanbu", "511321", "n-4", "g-4"),
        Finding(Code.GONE_BUT_ABSENT, reg, FindingSide.BOTH, "sc-nanbu", "511321", "r-5"),
    ]


def test_list_matches_shows_matched_and_review_links_within_the_scope(pair: Pair) -> None:
    nb = pair.nodes[NB]
    with nb.node.engine.begin() as conn:
        findings_store.replace(conn, PERIOD, _findings(), now=datetime.now(UTC))
    with nb.client(Role.COUNTY_SYSTEM) as c:
        lines = c.list_matches(PERIOD)
        assert c.list_matches("2026Q2") == []
        assert refused(lambda: c.list_matches("Q3")).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [(m.band, m.role, m.record_ref, m.peer_ref) for m in lines] == [
        (Code.MATCHED, FindingRole.REGISTRATION, "r-1", "n-1"),
        (Code.REVIEW, FindingRole.REGISTRATION, "r-2", "n-2"),
        (Code.REVIEW, FindingRole.RESIDENCE, "n-3", "g-3"),
        (Code.MATCHED, FindingRole.RESIDENCE, "n-4", "g-4"),
    ]
    first = lines[0]
    assert (first.stage, first.score, dict(first.hints)) == (
        "fuzzy",
        0.912,
        {"birth": "agree", "name": "partial", "sex": "agree"},
    )
    assert (lines[1].stage, lines[1].score, dict(lines[1].hints)) == ("exact", 1.0, {"sex": "agree"})
    assert (lines[2].outcome, lines[2].score, lines[2].hints) == ("possible", None, ())
    # A county system scoped to another county sees only what concerns that county.
    with nb.client(Role.COUNTY_SYSTEM, "520524") as c:
        assert [m.record_ref for m in c.list_matches(PERIOD)] == ["r-2"]
        assert [f.record_ref for f in c.list_findings(PERIOD)] == ["r-2"]
    with nb.client(Role.COUNTY_SYSTEM, "511321") as c:  # the node's own county: everything
        assert len(c.list_matches(PERIOD)) == 4
        assert len(c.list_findings(PERIOD)) == 5


# --- cases: GetCase, CaseAction, GetCustody ---------------------------------------------------------------


def test_a_case_is_read_and_acted_on_through_the_county_api(pair: Pair) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    draft = orphan_draft(21, FILES)
    case_id = lj.parts.service().accept(draft, FILES, utc_now())  # `tongban case accept` at 两江新区
    pair.settle()
    staff = nb.client(Role.REGISTRATION_STAFF)
    officer = lj.client(Role.CASE_OFFICER)
    with staff, officer:
        detail = staff.get_case(case_id)
        assert (detail.side, detail.programme, detail.status) == (
            CaseSide.REGISTRATION,
            Programme.ORPHAN,
            lc.Status.RECEIVED,
        )
        assert (detail.accepting_node, detail.registration_division, detail.holder) == (LJ, "511321", NB)
        assert [(d.document_id, d.state) for d in detail.documents] == [
            ("father-death", DocumentState.COMPLETE),
            ("mother-death", DocumentState.COMPLETE),
        ]
        assert [c.step for c in detail.clocks] == [
            ClockStep.PUSH,
            ClockStep.FIRST_REVIEW,
            ClockStep.DECISION,
            ClockStep.NOTIFY,
        ]
        first_review = next(c for c in detail.clocks if c.step is ClockStep.FIRST_REVIEW)
        assert first_review.due is not None
        assert not first_review.overdue
        assert [h.action for h in detail.history] == [lc.ActionKind.ACCEPT, lc.ActionKind.PUSH, lc.ActionKind.RECEIVE]
        assert detail.child_ref == draft.child_ref
        # No name and no ID number in what the node answers.
        raw = cw.case_detail_to_wire(detail).SerializeToString()
        assert draft.child.name.encode() not in raw
        assert draft.child.id_number.encode() not in raw

        # 一次性告知 from 南部县's staff; the residence place resubmits (`tongban case resubmit`).
        assert staff.request_material(case_id, [EvidenceKind.HOUSEHOLD_REGISTER], note="户口簿首页") is (
            lc.Status.MATERIAL_REQUESTED
        )
        repeat = refused(lambda: staff.request_material(case_id, [EvidenceKind.OTHER]))
        assert repeat.code() == grpc.StatusCode.FAILED_PRECONDITION  # no longer the holder, and only once
        pair.settle()
        assert officer.get_case(case_id).requested_items == (EvidenceKind.HOUSEHOLD_REGISTER,)
        register = b"synthetic household register"
        lj.parts.service().resubmit(
            case_id, [(document("register", EvidenceKind.HOUSEHOLD_REGISTER, register), register)], utc_now()
        )
        pair.settle()
        # A case officer may not decide, even on the node that holds the case: refused and audited.
        with nb.client(Role.CASE_OFFICER) as wrong:
            denied = refused(lambda: wrong.approve(case_id, date.today()))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        last = audit.tail(nb.node.engine, 1)[0]
        assert (last.action, last.reference, last.detail) == (
            "county_denied",
            "CaseAction",
            "role=case_officer action=approve",
        )
        # Recognition: the township reviews before the county decides.
        assert refused(lambda: staff.approve(case_id, date.today())).code() == grpc.StatusCode.FAILED_PRECONDITION
        assert staff.first_review(case_id) is lc.Status.FIRST_REVIEWED
        month = date.today().replace(day=1)
        assert staff.approve(case_id, month) is lc.Status.RESULT_DELIVERED
        pair.settle()
        at_home = officer.get_case(case_id)
        assert (at_home.side, at_home.status, at_home.decision, at_home.payment_from, at_home.holder) == (
            CaseSide.RESIDENCE,
            lc.Status.RESULT_DELIVERED,
            "approved",
            month,
            LJ,
        )
        # The registration staff's actions are refused on the residence side's node.
        with lj.client(Role.REGISTRATION_STAFF) as elsewhere:
            wrong_side = refused(lambda: elsewhere.first_review(case_id))
        assert wrong_side.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (wrong_side.details() or "").startswith("illegal_transition: ")
        assert officer.notify_applicant(case_id) is lc.Status.APPLICANT_NOTIFIED
        assert officer.close_case(case_id) is lc.Status.CLOSED
        pair.settle()
        custody = staff.get_custody(case_id)
    assert custody.closed
    assert (custody.case_type, custody.accepting_node, custody.registration_node) == (CaseType.ORPHAN, LJ, NB)
    assert [e.kind for e in custody.events] == [
        Kind.GENESIS, Kind.OFFER, Kind.ACCEPT, Kind.OFFER, Kind.ACCEPT,
        Kind.OFFER, Kind.ACCEPT, Kind.OFFER, Kind.ACCEPT, Kind.CLOSE,
    ]  # fmt: skip
    assert custody.head == custody.events[-1].hash
    assert nb.parts.custody.view(case_id) is not None
    actions = [(e.reference, e.detail) for e in audit.entries(nb.node.engine) if e.action == "county_case_action"]
    assert actions == [
        (case_id, "action=request_material state=material_requested"),
        (case_id, "action=first_review state=first_reviewed"),
        (case_id, "action=approve state=result_delivered"),
    ]


def test_case_calls_refuse_unknown_cases_bad_arguments_and_follow_the_scope(pair: Pair) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    case_id = lj.parts.service().accept(orphan_draft(31, FILES), FILES, utc_now())
    pair.settle()
    with nb.client(Role.REGISTRATION_STAFF) as staff:
        assert refused(lambda: staff.get_case("not-a-case")).code() == grpc.StatusCode.INVALID_ARGUMENT
        unknown = "00000000-0000-4000-8000-00000000abcd"
        assert refused(lambda: staff.get_case(unknown)).code() == grpc.StatusCode.NOT_FOUND
        assert refused(lambda: staff.get_custody(unknown)).code() == grpc.StatusCode.NOT_FOUND
        assert refused(lambda: staff.first_review(unknown)).code() == grpc.StatusCode.NOT_FOUND
    token, _ = auth.create(nb.node.engine, role=Role.REGISTRATION_STAFF, label="raw")
    md = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(nb.address) as ch:
        stub = county_pb2_grpc.CountyStub(ch)
        for request in (
            county_pb2.CaseActionRequest(case_id=case_id),  # no action
            county_pb2.CaseActionRequest(case_id=case_id, approve=county_pb2.ApproveAction(payment_month="2026-13")),
            county_pb2.CaseActionRequest(case_id=case_id, reject=county_pb2.ReasonAction(reason_code="x")),
            county_pb2.CaseActionRequest(
                case_id=case_id, request_material=county_pb2.RequestMaterialAction(items=["passport"])
            ),
        ):
            error = refused(lambda r=request: stub.CaseAction(r, timeout=TIMEOUT, metadata=md))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        reason = county_pb2.ReasonAction(reason_code="no_such_reason", text="synthetic")
        unknown_reason = county_pb2.CaseActionRequest(case_id=case_id, reject=reason)
        error = refused(lambda: stub.CaseAction(unknown_reason, timeout=TIMEOUT, metadata=md))
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    assert nb.parts.store.load(case_id).state.status is lc.Status.RECEIVED, "nothing changed"

    # Scope: a county sees the cases of its county; a province those touching it, in the oversight view.
    for role, division, visible in [
        (Role.REGISTRATION_STAFF, "511321", True),
        (Role.REGISTRATION_STAFF, "500157", True),  # the accepting county
        (Role.REGISTRATION_STAFF, "500109", False),
        (Role.PROVINCIAL_OPERATOR, "51", True),
        (Role.PROVINCIAL_OPERATOR, "50", True),
        (Role.PROVINCIAL_OPERATOR, "52", False),
    ]:
        with nb.client(role, division) as c:
            inbox = [i.case_id for i in c.case_inbox()]
            if not visible:
                assert inbox == []
                assert refused(lambda c=c: c.get_case(case_id)).code() == grpc.StatusCode.NOT_FOUND
                assert refused(lambda c=c: c.get_custody(case_id)).code() == grpc.StatusCode.NOT_FOUND
                continue
            assert inbox == [case_id]
            detail = c.get_case(case_id)
            assert c.get_custody(case_id).holder == NB
            if role is Role.PROVINCIAL_OPERATOR:
                assert detail.oversight
                assert (detail.documents, detail.child_ref, detail.requested_items) == ((), "", ())
                assert detail.clocks
                assert detail.holder == NB
            else:
                assert not detail.oversight
                assert len(detail.documents) == 2
    with nb.client(Role.REGISTRATION_STAFF, "500109") as outsider:
        assert refused(lambda: outsider.first_review(case_id)).code() == grpc.StatusCode.NOT_FOUND
    assert nb.parts.store.load(case_id).state.status is lc.Status.RECEIVED


# --- OpenCase, ResubmitCase, TransferCase ---------------------------------------------------------------


def _stored_bytes(node: CountyNode, case_id: str, document_id: str) -> bytes:
    with node.node.engine.connect() as conn:
        return b"".join(node.parts.store.read_chunks(conn, case_id, document_id))


def test_a_case_is_opened_and_resubmitted_through_the_county_api(pair: Pair) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    draft = orphan_draft(61, FILES)
    request_id = str(uuid.uuid4())
    with lj.client(Role.CASE_OFFICER) as officer, nb.client(Role.REGISTRATION_STAFF) as staff:
        opened = officer.open_case(draft, FILES, request_id=request_id)
        case_id = opened.case_id
        assert opened == cv.OpenedCase(case_id, lc.Status.PUSHED, NB, "511321", replayed=False)
        assert case_id == cv.opened_case_id(LJ, lj.caller_id(Role.CASE_OFFICER), request_id)
        # What `tongban case accept` stores: the application, the child, the local reference.
        stored = lj.parts.store.load(case_id)
        assert (stored.file.case.application, stored.file.child, stored.file.case.child_ref) == (
            draft.application,
            draft.child,
            draft.child_ref,
        )
        entry = audit.tail(lj.node.engine, 1)[0]
        assert (entry.actor, entry.action, entry.reference, entry.detail) == (
            lj.caller_id(Role.CASE_OFFICER),
            "county_case_action",
            case_id,
            "action=open state=pushed",
        )
        # A retry of the same request answers the same case and stores nothing.
        after_open = lj.counts()
        assert officer.open_case(draft, FILES, request_id=request_id) == dataclasses.replace(opened, replayed=True)
        assert lj.counts() == after_open
        # The request id used again for another application: refused, nothing stored.
        reused = refused(lambda: officer.open_case(orphan_draft(62, FILES), FILES, request_id=request_id))
        assert reused.code() == grpc.StatusCode.ALREADY_EXISTS
        assert lj.counts() == after_open

        # The registration node receives the case and every document, checked, through its own paths.
        pair.settle()
        detail = staff.get_case(case_id)
        assert (detail.status, detail.holder, detail.registration_node) == (lc.Status.RECEIVED, NB, NB)
        assert [(d.document_id, d.size, d.sha256, d.state) for d in detail.documents] == [
            (name, len(data), hashlib.sha256(data).hexdigest(), DocumentState.COMPLETE) for name, data in FILES.items()
        ]
        for name, data in FILES.items():
            assert _stored_bytes(nb, case_id, name) == data

        # 一次性告知; the accepting place's case officer sends the material: 2.5 MiB, in three chunks.
        staff.request_material(case_id, [EvidenceKind.HOUSEHOLD_REGISTER], note="户口簿首页")
        pair.settle()
        register = (b"synthetic household register page " * 80_000)[: 5 * cv.UPLOAD_CHUNK_BYTES // 2]
        reference = evidence_document("register", EvidenceKind.HOUSEHOLD_REGISTER, register)
        assert officer.resubmit(case_id, [(reference, register)]) is lc.Status.RESUBMITTED
        entry = audit.tail(lj.node.engine, 1)[0]
        assert (entry.action, entry.reference, entry.detail) == (
            "county_case_action",
            case_id,
            "action=resubmit state=resubmitted",
        )
        after_resubmit = lj.counts()
        twice = refused(lambda: officer.resubmit(case_id, [(reference, register)]))
        assert twice.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert lj.counts() == after_resubmit
        pair.settle()
        documents = {d.document_id: d for d in staff.get_case(case_id).documents}
        assert (documents["register"].size, documents["register"].state) == (len(register), DocumentState.COMPLETE)
        assert _stored_bytes(nb, case_id, "register") == register
        assert staff.first_review(case_id) is lc.Status.FIRST_REVIEWED
    audit.verify(lj.node.engine)


def test_concurrent_retries_of_one_request_open_one_case(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    lj = pair.nodes[LJ]
    draft, request_id = orphan_draft(69, FILES), str(uuid.uuid4())
    token = lj.token(Role.CASE_OFFICER)

    def open_once() -> cv.OpenedCase:
        with CountyClient(lj.address, token, timeout=TIMEOUT, attempts=4, backoff=0.05) as officer:
            return officer.open_case(draft, FILES, request_id=request_id)

    with futures.ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: open_once(), range(3)))
    assert len({a.case_id for a in answers}) == 1
    assert sorted(a.replayed for a in answers) == [False, True, True]
    assert [r.case_id for r in lj.parts.store.rows()] == [answers[0].case_id]
    opened = [e for e in audit.entries(lj.node.engine) if e.action == "county_case_action"]
    assert [e.detail for e in opened] == ["action=open state=pushed"]

    # The race made certain: a retry that looked before the first one committed finds the case id
    # taken when it accepts (DuplicateRecord, rolled back) and answers the case.
    before, real = lj.counts(), lj.parts.store.exists
    looked: list[str] = []

    def not_yet(case_id: str) -> bool:
        looked.append(case_id)
        return real(case_id) if len(looked) > 1 else False

    monkeypatch.setattr(lj.parts.store, "exists", not_yet)
    assert open_once() == dataclasses.replace(answers[0], replayed=True)
    assert len(looked) == 2
    assert lj.counts() == before


def test_the_audit_entry_is_part_of_the_action(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``county_case_action`` entry is written in the action's transaction: when it cannot be
    written, the action is rolled back with it — no case, no document, nothing queued to the peer."""
    lj = pair.nodes[LJ]
    token = lj.token(Role.CASE_OFFICER)
    before = lj.counts()

    def broken(*args: object, **kwargs: object) -> None:
        raise StorageError("the audit trail is not writable")

    monkeypatch.setattr(audit, "append", broken)
    with CountyClient(lj.address, token, timeout=TIMEOUT, attempts=1) as officer:
        failed = refused(lambda: officer.open_case(orphan_draft(70, FILES), FILES))
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert lj.counts() == before
    assert lj.parts.store.rows() == []


def test_a_subsidy_case_is_opened_through_the_county_api(pair: Pair) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    scan = b"%PDF synthetic disability certificate" * 100
    draft = living_subsidy_draft(63, scan)
    with lj.client(Role.CASE_OFFICER) as officer:
        opened = officer.open_case(draft, {"cert": scan})
    assert opened.status is lc.Status.PUSHED
    assert lj.parts.store.load(opened.case_id).file.case.application == draft.application
    pair.settle()
    assert nb.parts.store.load(opened.case_id).state.status is lc.Status.RECEIVED
    assert _stored_bytes(nb, opened.case_id, "cert") == scan


def _opening(n: int, files: dict[str, bytes]) -> tuple[county_pb2.OpenCaseRequest, list[county_pb2.OpenCaseRequest]]:
    """The first message of an OpenCase stream for a new application, and its chunks."""
    draft = orphan_draft(n, files)
    first = cw.opening_to_wire(cv.CaseOpening(str(uuid.uuid4()), draft))
    references = {d.document_id: d for d in draft.application.evidence}
    pieces = cv.chunks((references[name], data) for name, data in files.items())
    return first, [county_pb2.OpenCaseRequest(chunk=cw.chunk_to_wire(i, d)) for i, d in pieces]


def _edited(first: county_pb2.OpenCaseRequest, edit: Callable[[county_pb2.OpenCaseApplication], None]) -> object:
    m = county_pb2.OpenCaseRequest()
    m.CopyFrom(first)
    edit(m.application)
    return m


def _declare_large(app: county_pb2.OpenCaseApplication, size: int, count: int) -> None:
    del app.documents[:]
    for i in range(count):
        app.documents.add(document_id=f"scan-{i}", kind="death_certificate", size=size, sha256="ab" * 32)


BIG = {"big": b"%PDF synthetic scan " * (cv.UPLOAD_CHUNK_BYTES // 20 + 100)}  # just over one chunk
Stream = Callable[[], list[object]]
OPEN_REFUSALS: list[tuple[str, Stream, grpc.StatusCode, str]] = []


def _refusal(name: str, code: grpc.StatusCode, error: str) -> Callable[[Stream], Stream]:
    def add(stream: Stream) -> Stream:
        OPEN_REFUSALS.append((name, stream, code, error))
        return stream

    return add


def _bad_id_number(app: county_pb2.OpenCaseApplication) -> None:
    last = app.child_id_number[-1]
    app.child_id_number = app.child_id_number[:-1] + ("1" if last != "1" else "2")


INVALID, PRECONDITION = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION


@_refusal("invalid_id_number", INVALID, "invalid_id_number")
def _s1() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, _bad_id_number), *pieces]


@_refusal("unknown_division", INVALID, "invalid_division_code")
def _s2() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "registration_division", "999999")), *pieces]


@_refusal("division_no_node_serves", INVALID, "invalid_case")
def _s3() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "registration_division", "520524")), *pieces]


@_refusal("unknown_case_type", INVALID, "invalid_case")
def _s4() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "case_type", "pension")), *pieces]


@_refusal("facts_of_the_other_programme_family", INVALID, "invalid_case")
def _s5() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "case_type", "living_subsidy")), *pieces]


@_refusal("no_facts", INVALID, "invalid_case")
def _s6() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: a.ClearField("recognition")), *pieces]


@_refusal("empty_local_reference", INVALID, "invalid_case")
def _s7() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "child_ref", " ")), *pieces]


@_refusal("request_id_not_a_uuid", INVALID, "invalid_case")
def _s8() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [_edited(first, lambda a: setattr(a, "request_id", "42")), *pieces]


@_refusal("document_over_50_mib", INVALID, "invalid_case")
def _s9() -> list[object]:
    first, _ = _opening(81, FILES)
    return [_edited(first, lambda a: _declare_large(a, 50 * 1024 * 1024 + 1, 1))]


@_refusal("documents_over_the_call_limit_together", INVALID, "invalid_case")
def _s10() -> list[object]:
    first, _ = _opening(81, FILES)
    return [_edited(first, lambda a: _declare_large(a, 40 * 1024 * 1024, 3))]


@_refusal("missing_document", PRECONDITION, "attachment_refused")
def _s11() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [first, *[p for p in pieces if p.chunk.document_id == "father-death"]]


@_refusal("bytes_do_not_match_the_reference", PRECONDITION, "attachment_refused")
def _s12() -> list[object]:
    first, pieces = _opening(81, FILES)
    pieces[0].chunk.data = bytes(reversed(pieces[0].chunk.data))
    return [first, *pieces]


@_refusal("more_bytes_than_declared", PRECONDITION, "attachment_refused")
def _s13() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [first, *pieces, pieces[0]]


@_refusal("chunk_of_an_unlisted_document", INVALID, "invalid_input")
def _s14() -> list[object]:
    first, pieces = _opening(81, FILES)
    stray = county_pb2.OpenCaseRequest(chunk=cw.chunk_to_wire("stray", b"x"))
    return [first, *pieces, stray]


@_refusal("chunk_over_1_mib", INVALID, "invalid_input")
def _s15() -> list[object]:
    first, _ = _opening(81, BIG)
    return [first, county_pb2.OpenCaseRequest(chunk=cw.chunk_to_wire("big", BIG["big"]))]


@_refusal("empty_chunk", INVALID, "invalid_input")
def _s16() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [first, county_pb2.OpenCaseRequest(chunk=cw.chunk_to_wire("father-death", b"")), *pieces]


@_refusal("chunk_before_the_application", INVALID, "invalid_input")
def _s17() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [*pieces, first]


@_refusal("two_applications", INVALID, "invalid_input")
def _s18() -> list[object]:
    first, pieces = _opening(81, FILES)
    return [first, first, *pieces]


@_refusal("empty_stream", INVALID, "invalid_input")
def _s19() -> list[object]:
    return []


@pytest.mark.parametrize(("stream", "code", "error"), [pytest.param(s, c, e, id=n) for n, s, c, e in OPEN_REFUSALS])
def test_opening_refuses_bad_input_and_stores_nothing(
    pair: Pair, stream: Stream, code: grpc.StatusCode, error: str
) -> None:
    lj = pair.nodes[LJ]
    md = lj.metadata(Role.CASE_OFFICER)
    messages = stream()
    before = lj.counts()
    with grpc.insecure_channel(lj.address) as ch:
        stub = county_pb2_grpc.CountyStub(ch)
        answer = refused(lambda: stub.OpenCase(iter(messages), timeout=TIMEOUT, metadata=md))
    assert (answer.code(), (answer.details() or "").partition(":")[0]) == (code, error)
    assert lj.counts() == before, "a refused OpenCase stores nothing (no case, document, message or audit entry)"
    assert lj.parts.store.rows() == []
    # The public message names the error, never a value of the application.
    first = next((m for m in messages if isinstance(m, county_pb2.OpenCaseRequest) and m.HasField("application")), None)
    if first is not None:
        for value in (first.application.child_id_number, first.application.child_name):
            assert value not in (answer.details() or "")


def test_opening_outside_the_callers_scope_or_in_another_role_is_refused(pair: Pair) -> None:
    lj = pair.nodes[LJ]
    lj.token(Role.CASE_OFFICER, "500109")  # creating it is audited
    before = lj.counts()
    with lj.client(Role.CASE_OFFICER, "500109") as elsewhere:  # 北碚区's officer: neither place of this case
        outside = refused(lambda: elsewhere.open_case(orphan_draft(82, FILES), FILES))
    assert (outside.code(), (outside.details() or "").partition(":")[0]) == (INVALID, "outside_scope")
    assert lj.counts() == before
    with lj.client(Role.CASE_OFFICER, "500157") as own:  # this node's county: in scope
        assert own.open_case(orphan_draft(82, FILES), FILES).status is lc.Status.PUSHED
    with lj.client(Role.REGISTRATION_STAFF) as staff:
        denied = refused(lambda: staff.open_case(orphan_draft(83, FILES), FILES))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    last = audit.tail(lj.node.engine, 1)[0]
    assert (last.action, last.reference) == ("county_denied", "OpenCase")
    assert len(lj.parts.store.rows()) == 1


def test_resubmitting_refuses_bad_input_and_changes_nothing(pair: Pair) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    with lj.client(Role.CASE_OFFICER) as officer:
        case_id = officer.open_case(orphan_draft(84, FILES), FILES).case_id
        pair.settle()
        register = b"synthetic household register"
        reference = evidence_document("register", EvidenceKind.HOUSEHOLD_REGISTER, register)
        before = lj.counts()
        # Nothing was requested yet: the lifecycle (and custody) refuse it.
        assert refused(lambda: officer.resubmit(case_id, [(reference, register)])).code() == PRECONDITION
        with nb.client(Role.REGISTRATION_STAFF) as staff:
            staff.request_material(case_id, [EvidenceKind.HOUSEHOLD_REGISTER])
        pair.settle()
        before = lj.counts()
        md = lj.metadata(Role.CASE_OFFICER)
        header = cw.resubmission_to_wire(cv.Resubmission(case_id, (reference,)))
        chunk = county_pb2.ResubmitCaseRequest(chunk=cw.chunk_to_wire("register", register))
        wrong = county_pb2.ResubmitCaseRequest(chunk=cw.chunk_to_wire("register", register.upper()))
        existing = cw.resubmission_to_wire(
            cv.Resubmission(case_id, (evidence_document("father-death", EvidenceKind.OTHER, register),))
        )
        existing_chunk = county_pb2.ResubmitCaseRequest(chunk=cw.chunk_to_wire("father-death", register))
        with grpc.insecure_channel(lj.address) as ch:
            stub = county_pb2_grpc.CountyStub(ch)
            for name, messages, code in [
                ("no documents", [cw.resubmission_to_wire(cv.Resubmission(case_id, ()))], INVALID),
                ("no bytes", [header], PRECONDITION),
                ("bytes that do not match", [header, wrong], PRECONDITION),
                ("a document id the case has", [existing, existing_chunk], grpc.StatusCode.ALREADY_EXISTS),
                ("no header", [chunk], INVALID),
                ("an unknown case", [cw.resubmission_to_wire(cv.Resubmission(UNKNOWN_CASE, (reference,))), chunk],
                 grpc.StatusCode.NOT_FOUND),
            ]:  # fmt: skip
                answer = refused(lambda m=messages: stub.ResubmitCase(iter(m), timeout=TIMEOUT, metadata=md))
                assert answer.code() == code, name
        assert lj.counts() == before
        assert lj.parts.store.load(case_id).state.status is lc.Status.MATERIAL_REQUESTED
        assert officer.resubmit(case_id, [(reference, register)]) is lc.Status.RESUBMITTED


def test_a_case_is_transferred_through_the_county_api(trio: Pair) -> None:
    lj, nb, bb = trio.nodes[LJ], trio.nodes[NB], trio.nodes[BB]
    with lj.client(Role.CASE_OFFICER) as officer:
        case_id = officer.open_case(orphan_draft(91, FILES), FILES).case_id
    trio.settle()
    with nb.client(Role.REGISTRATION_STAFF) as staff:
        before = nb.counts()
        for name, bad, code in [
            ("a division that never existed", lambda: staff.transfer(case_id, "999999"), INVALID),
            ("this node's own division", lambda: staff.transfer(case_id, "511321"), INVALID),
            ("a division no node serves", lambda: staff.transfer(case_id, "520524"), INVALID),
            ("a reason that is no code", lambda: staff.transfer(case_id, "500109", reason="户籍迁出"), INVALID),
            ("an unknown case", lambda: staff.transfer(UNKNOWN_CASE, "500109"), grpc.StatusCode.NOT_FOUND),
        ]:
            assert refused(bad).code() == code, name
        assert nb.counts() == before, "a refused transfer changes nothing"
        with nb.client(Role.CASE_OFFICER) as wrong_role:
            assert refused(lambda: wrong_role.transfer(case_id, "500109")).code() == grpc.StatusCode.PERMISSION_DENIED
        assert staff.transfer(case_id, "500109") is lc.Status.TRANSFERRED
        entries = [(e.actor, e.action, e.detail) for e in audit.tail(nb.node.engine, 2)]
        assert entries == [
            (NB, "case_transfer", "reason=registration_moved to=cq-beibei division=500109"),
            (nb.caller_id(Role.REGISTRATION_STAFF), "county_case_action", "action=transfer state=transferred"),
        ]
        assert refused(lambda: staff.transfer(case_id, "500109")).code() == PRECONDITION
    trio.settle()
    with bb.client(Role.REGISTRATION_STAFF) as new_staff:
        detail = new_staff.get_case(case_id)
        assert (detail.status, detail.registration_node, detail.registration_division, detail.holder) == (
            lc.Status.RECEIVED,
            BB,
            "500109",
            BB,
        )
        assert all(d.state is DocumentState.COMPLETE for d in detail.documents)
        for name, data in FILES.items():
            assert _stored_bytes(bb, case_id, name) == data
        assert new_staff.first_review(case_id) is lc.Status.FIRST_REVIEWED
    with lj.client(Role.CASE_OFFICER) as officer:
        assert officer.get_case(case_id).registration_node == BB


# --- the pure parts ---------------------------------------------------------------------------------------


def test_the_action_roles_table() -> None:
    registration = {"request_material", "first_review", "approve", "reject", "return"}
    for kind in cv.CaseActionKind:
        expected = Role.REGISTRATION_STAFF if kind.value in registration else Role.CASE_OFFICER
        assert cv.ACTION_ROLES[kind] is expected, kind
        for role in Role:
            assert cv.may_take(role, kind) == (role is expected), (kind, role)


@pytest.mark.parametrize(
    ("scope", "accepting", "registration", "visible"),
    [
        pytest.param("", "500157", "511321", True, id="unscoped"),
        pytest.param("500157", "500157", "511321", True, id="county_accepting"),
        pytest.param("511321", "500157", "511321", True, id="county_registration"),
        pytest.param("500109", "500157", "511321", False, id="county_neither"),
        pytest.param("51", "500157", "511321", True, id="province_registration"),
        pytest.param("50", "500157", "511321", True, id="province_accepting"),
        pytest.param("52", "500157", "511321", False, id="province_neither"),
        pytest.param("5001", "500157", "511321", False, id="malformed_scope_covers_nothing"),
    ],
)
def test_case_scope(scope: str, accepting: str, registration: str, visible: bool) -> None:
    assert cv.case_in_scope(Caller("ct-x", Role.CASE_OFFICER, scope), accepting, registration) is visible


def test_finding_scope() -> None:
    f = Finding(Code.MATCHED, FindingRole.REGISTRATION, FindingSide.BOTH, "sc-nanbu", "511321", "r", "n")
    ledger = Finding(Code.INVALID_IDENTIFIER, FindingRole.LEDGER, FindingSide.LOCAL, record_ref="r")
    caller = Caller("ct-x", Role.COUNTY_SYSTEM, "511321")
    assert cv.finding_in_scope(caller, "500157", f)
    assert not cv.finding_in_scope(caller, "500157", ledger)
    assert cv.finding_in_scope(Caller("ct-x", Role.COUNTY_SYSTEM, "500157"), "500157", ledger)
    assert not cv.finding_in_scope(Caller("ct-x", Role.COUNTY_SYSTEM, "520524"), "500157", f)


def test_parse_hints_reads_back_what_the_findings_write_and_drops_anything_else() -> None:
    link = Link("a", "b", Band.REVIEW, 0.7312, "fuzzy", {"name": "agree", "birth": "partial", "sex": "unknown"})
    parsed = parse_hints(_hints(link))
    assert (parsed.stage, parsed.score, dict(parsed.hints), parsed.outcome) == (
        "fuzzy",
        0.731,
        {"name": "agree", "birth": "partial", "sex": "unknown"},
        "",
    )
    assert parse_hints("outcome=probable").outcome == "probable"
    junk = parse_hints("stage=guess score=7 name=张三 phone=138 outcome=matched birth=agree,extra")
    assert (junk.stage, junk.score, dict(junk.hints), junk.outcome) == ("", None, {"birth": "agree"}, "")


def test_the_case_id_of_an_opening_is_the_callers_request_ids() -> None:
    request = "6f1c2b9e-0d4a-4e43-9a53-2f0f3b8c1d7e"
    case_id = cv.opened_case_id(LJ, "ct-0123456789abcdef", request)
    assert cv.check_case_id(case_id) == case_id
    assert uuid.UUID(case_id).version == 4
    assert cv.opened_case_id(LJ, "ct-0123456789abcdef", request) == case_id, "a retry finds its case"
    others = {
        cv.opened_case_id(NB, "ct-0123456789abcdef", request),  # another node
        cv.opened_case_id(LJ, "ct-fedcba9876543210", request),  # another caller
        cv.opened_case_id(LJ, "ct-0123456789abcdef", str(uuid.UUID(int=1))),  # another request
        cv.opened_case_id(LJ + "c", "t-0123456789abcdef", request),  # the parts are length-prefixed
    }
    assert case_id not in others
    assert len(others) == 4
    with pytest.raises(InvalidCase):
        cv.CaseOpening(request.upper(), orphan_draft(1, FILES))


def test_a_retry_is_the_same_application_only() -> None:
    draft = orphan_draft(64, FILES)
    case = Case(
        case_id=cv.opened_case_id(LJ, "ct-x", str(uuid.UUID(int=7))),
        application=draft.application,
        accepting_node=LJ,
        accepting_division="500157",
        registration_node=NB,
        registration_division="511321",
        child_ref=draft.child_ref,
        accepted_on=date(2026, 12, 1),
    )
    stored = CaseFile(case, draft.child)
    assert cv.same_application(stored, draft)
    assert cv.same_application(stored, dataclasses.replace(draft, registration_division="511300"))
    other_files = {**FILES, "father-death": b"another scan"}
    assert not cv.same_application(stored, orphan_draft(64, other_files))  # a document differs
    assert not cv.same_application(stored, orphan_draft(65, FILES))  # another child
    assert not cv.same_application(stored, dataclasses.replace(draft, child_ref="another"))


@pytest.mark.parametrize(
    ("declared", "chunks", "error"),
    [
        pytest.param({"a": 3, "b": 2}, [("a", b"ab"), ("b", b"xy"), ("a", b"c")], None, id="interleaved"),
        pytest.param({"a": 3}, [("a", b"abc")], None, id="one_chunk"),
        pytest.param({"a": 3}, [("b", b"abc")], InputError, id="unlisted_document"),
        pytest.param({"a": 3}, [("a", b"")], InputError, id="empty_chunk"),
        pytest.param({"a": 3}, [("a", b"ab"), ("a", b"cd")], AttachmentRefused, id="beyond_the_declared_size"),
        pytest.param({"a": 3, "b": 2}, [("a", b"abc")], AttachmentRefused, id="a_document_without_bytes"),
        pytest.param({"a": 3}, [("a", b"a")], None, id="short_is_the_services_check"),
    ],
)
def test_a_document_upload(declared: dict[str, int], chunks: list[tuple[str, bytes]], error: type | None) -> None:
    refs = [EvidenceDocument(i, EvidenceKind.OTHER, "ab" * 32, size) for i, size in declared.items()]

    def upload() -> dict[str, bytes]:
        assembled = cv.DocumentUpload(refs)
        for document_id, data in chunks:
            assembled.add(document_id, data)
        return assembled.finish()

    if error is not None:
        with pytest.raises(error):
            upload()
        return
    got = upload()
    for document_id in declared:
        assert got[document_id] == b"".join(d for i, d in chunks if i == document_id)


def test_a_document_upload_is_bounded_before_any_byte() -> None:
    big = cv.MAX_UPLOAD_BYTES // 2
    with pytest.raises(InvalidCase):
        cv.DocumentUpload([EvidenceDocument(f"d{i}", EvidenceKind.OTHER, "ab" * 32, big) for i in range(3)])
    with pytest.raises(InvalidCase):
        cv.DocumentUpload([EvidenceDocument("d", EvidenceKind.OTHER, "ab" * 32, 1)] * 2)
    assert cv.DocumentUpload([EvidenceDocument(f"d{i}", EvidenceKind.OTHER, "ab" * 32, big) for i in range(2)])
    upload = cv.DocumentUpload([EvidenceDocument("d", EvidenceKind.OTHER, "ab" * 32, 3 * cv.UPLOAD_CHUNK_BYTES)])
    with pytest.raises(InputError):
        upload.add("d", bytes(cv.UPLOAD_CHUNK_BYTES + 1))
    data = bytes(range(256)) * (cv.UPLOAD_CHUNK_BYTES // 128 + 1)
    ref = evidence_document("d", EvidenceKind.OTHER, data)
    assert [len(c) for _, c in cv.chunks([(ref, data)])] == [cv.UPLOAD_CHUNK_BYTES, cv.UPLOAD_CHUNK_BYTES, 256]


def test_case_commands_check_their_arguments() -> None:
    case = "00000000-0000-4000-8000-000000000001"
    for bad in (
        lambda: cv.CaseCommand(case, cv.CaseActionKind.REQUEST_MATERIAL),
        lambda: cv.CaseCommand(case, cv.CaseActionKind.APPROVE),
        lambda: cv.CaseCommand(case, cv.CaseActionKind.APPROVE, payment_month=date(2026, 3, 2)),
        lambda: cv.CaseCommand(case, cv.CaseActionKind.REJECT, reason_code="evidence_missing"),
        lambda: cv.CaseCommand(case, cv.CaseActionKind.RETURN, text="缺材料"),
    ):
        with pytest.raises(InvalidCase):
            bad()
    secret = cv.CaseCommand(case, cv.CaseActionKind.REJECT, reason_code="evidence_missing", text="申请人张三")
    assert "张三" not in repr(secret)
    with pytest.raises(InvalidCase):
        cv.check_case_id("00000000-0000-4000-8000-00000000000G")
    assert cv.check_case_id("0000000a-0000-4000-8000-000000000001")
    with pytest.raises(InvalidCase):
        cv.check_case_id("0000000A-0000-4000-8000-000000000001")


# --- wire round trips ---------------------------------------------------------------------------------------


def test_wire_round_trips_of_the_new_messages() -> None:
    summary = IntakeSummary(
        PERIOD,
        3,
        {ChildKind.MIGRANT: 2, ChildKind.LEFT_BEHIND: 1, ChildKind.NEITHER: 0},
        1,
        (Rejection(4, "invalid_record", "the child record is not valid: sex is unspecified"),),
    )
    outcome = cw.RosterOutcome(4, summary)
    assert cw.roster_outcome_from_wire(cw.roster_outcome_to_wire(outcome)) == outcome
    held = cw.RosterOutcome(4, dataclasses.replace(summary, accepted=0, stored=False))
    assert cw.roster_outcome_from_wire(cw.roster_outcome_to_wire(held)) == held
    record = child(41)
    assert cw.roster_row_from_wire(cw.roster_row_to_wire(record)) == record

    for line in (
        cv.MatchLine(
            Code.MATCHED, FindingRole.REGISTRATION, "p", "511321", "r", "n", "exact", 1.0, (("sex", "agree"),)
        ),
        cv.MatchLine(Code.REVIEW, FindingRole.RESIDENCE, "p", "511321", "n", "g", outcome="probable"),
    ):
        assert cw.match_line_from_wire(cw.match_line_to_wire(line)) == line

    at = datetime(2026, 12, 6, 3, 4, 5, 678000, tzinfo=UTC)
    detail = cv.CaseDetail(
        case_id="00000000-0000-4000-8000-000000000001",
        side=CaseSide.REGISTRATION,
        programme=Programme.ORPHAN,
        status=lc.Status.DECIDED,
        accepting_node=LJ,
        accepting_division="500157",
        registration_node=NB,
        registration_division="511321",
        accepted_on=date(2026, 12, 1),
        flag="duplicate_application",
        child_ref="ref-1",
        clocks=(
            cv.ClockLine(
                ClockStep.PUSH, 3, date(2026, 12, 1), date(2026, 12, 4), date(2026, 12, 1), True, False, False, False
            ),
            cv.ClockLine(ClockStep.DECISION, 15, None, None, None, False, True, False, False),
        ),
        documents=(cv.DocumentLine("d1", EvidenceKind.DEATH_CERTIFICATE, 12, "ab" * 32, DocumentState.COMPLETE),),
        history=(cv.HistoryLine(at, lc.Role.RESIDENCE_STAFF, lc.ActionKind.ACCEPT, lc.Status.ACCEPTED, NB),),
        requested_items=(EvidenceKind.HOUSEHOLD_REGISTER,),
        decision="not_approved",
        payment_from=None,
        reason_code="evidence_missing",
        holder="",
        pending_to=LJ,
        custody_closed=False,
    )
    assert cw.case_detail_from_wire(cw.case_detail_to_wire(detail)) == detail
    oversight = cv.for_oversight(detail)
    assert cw.case_detail_from_wire(cw.case_detail_to_wire(oversight)) == oversight

    case = detail.case_id
    for command in (
        cv.CaseCommand(case, cv.CaseActionKind.REQUEST_MATERIAL, items=(EvidenceKind.OTHER,), note="n"),
        cv.CaseCommand(case, cv.CaseActionKind.FIRST_REVIEW),
        cv.CaseCommand(case, cv.CaseActionKind.APPROVE, payment_month=date(2027, 1, 1)),
        cv.CaseCommand(case, cv.CaseActionKind.REJECT, reason_code="evidence_missing", text="t"),
        cv.CaseCommand(case, cv.CaseActionKind.RETURN, reason_code="evidence_missing", text="t"),
        cv.CaseCommand(case, cv.CaseActionKind.NOTIFY_APPLICANT),
        cv.CaseCommand(case, cv.CaseActionKind.CLOSE),
        cv.CaseCommand(case, cv.CaseActionKind.WITHDRAW),
    ):
        assert cw.case_command_from_wire(cw.case_command_to_wire(command)) == command
    assert cw.case_state_from_wire(cw.case_state_to_wire(case, lc.Status.CLOSED)) is lc.Status.CLOSED

    custody = cv.CustodySummary(
        case, CaseType.ORPHAN, LJ, date(2026, 12, 1), NB, "", LJ, NB, False, "h2",
        (cv.CustodyLine(0, Kind.GENESIS, LJ, at, "h1"), cv.CustodyLine(1, Kind.OFFER, LJ, at, "h2")), 0, 1,
    )  # fmt: skip
    assert cw.custody_summary_from_wire(cw.custody_summary_to_wire(custody)) == custody

    for draft in (orphan_draft(66, FILES), living_subsidy_draft(67, b"scan")):
        opening = cv.CaseOpening(str(uuid.UUID(int=66)), draft)
        assert cw.opening_from_wire(cw.opening_to_wire(opening).application) == opening
    unknown_since = dataclasses.replace(
        orphan_draft(68, FILES).application, mother=ParentStatus(ParentSituation.MISSING)
    )
    opening = cv.CaseOpening(
        str(uuid.UUID(int=68)), dataclasses.replace(orphan_draft(68, FILES), application=unknown_since)
    )
    assert cw.opening_from_wire(cw.opening_to_wire(opening).application) == opening
    opened = cv.OpenedCase(case, lc.Status.PUSHED, NB, "511321", replayed=True)
    assert cw.opened_from_wire(cw.opened_to_wire(opened)) == opened
    resubmission = cv.Resubmission(case, (document("r", EvidenceKind.HOUSEHOLD_REGISTER, b"register"),))
    assert cw.resubmission_from_wire(cw.resubmission_to_wire(resubmission).header) == resubmission
    order = cv.TransferOrder(case, "500109", "registration_moved")
    assert cw.transfer_from_wire(cw.transfer_to_wire(order)) == order
    assert cw.transfer_from_wire(county_pb2.TransferCaseRequest(case_id=case, to_division="500109")) == order
