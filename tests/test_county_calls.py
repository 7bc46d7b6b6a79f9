"""The county API's roster, match, case and custody calls (issue 7), on SQLite and PostgreSQL.

Two nodes of a real (test) PKI — 两江新区 (``cq-liangjiang``, 500157, accepts cases) and 南部县
(``sc-nanbu``, 511321, decides them) — each with its own database (both on the backend under test),
its :class:`~gateway.cases.wiring.CaseParts` and its county API served on 127.0.0.1 by
:func:`~gateway.county.servicer.county_server`. Envelopes move from a node's outbox to the peer's
real :class:`Receiver` in-process (as in ``tests/test_cases_custody.py``): only the node-to-node
sockets are missing. County systems, staff and provincial operators call through
:class:`gateway.client.CountyClient` with tokens of each role and scope.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg import sql
from tongban.v1 import county_pb2, county_pb2_grpc

from gateway import audit
from gateway import config as config_mod
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.store import DocumentState
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import EvidenceKind, Programme
from gateway.cases.wiring import CaseParts
from gateway.client import CountyClient
from gateway.county import auth
from gateway.county import views as cv
from gateway.county import wire as cw
from gateway.county.auth import Caller
from gateway.county.permissions import Role
from gateway.county.servicer import county_server
from gateway.custody.events import CaseType, Kind
from gateway.domain.codec import record_to_json
from gateway.domain.records import ChildKind, ChildRecord
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
from gateway.trust.store import utc_now
from gateway.wire import record_to_wire
from tests.factories import child
from tests.test_cases_service import FILES, document, orphan_draft
from tests.test_mtls import LivePki

LJ, NB = "cq-liangjiang", "sc-nanbu"
DIVISIONS = {LJ: "500157", NB: "511321"}
PERIOD = "2026Q3"
TIMEOUT = 10.0


# --- two nodes with their county APIs ------------------------------------------------------------------


@dataclass
class CountyNode:
    node: Node
    parts: CaseParts
    receiver: Receiver
    server: grpc.Server
    address: str
    tokens: dict[tuple[Role, str], str] = field(default_factory=dict)

    def client(self, role: Role, division: str = "") -> CountyClient:
        key = (role, division)
        if key not in self.tokens:
            self.tokens[key], _ = auth.create(
                self.node.engine, role=role, label=f"test {role.value}", division=division
            )
        return CountyClient(self.address, self.tokens[key], timeout=TIMEOUT, attempts=1)


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


@pytest.fixture
def second_db(db_url: str, tmp_path: Path, postgres_url: str | None) -> Iterator[str]:
    """A second empty database on the same backend (the other node's)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
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
def pair(tmp_path: Path, db_url: str, second_db: str) -> Iterator[Pair]:
    live = LivePki.create()
    directory = live.directory()
    profiles = load_profiles()
    nodes: dict[str, CountyNode] = {}
    for (node_id, division), url in zip(DIVISIONS.items(), (db_url, second_db), strict=True):
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


def test_case_commands_check_their_arguments() -> None:
    from gateway.errors import InvalidCase

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
