"""The county API's access control (issue 7): every call × every role against a real server.

One node serves on 127.0.0.1 for the whole module, with one API token per role. The table
:data:`EXPECTED` is written out here on purpose — it restates ``gateway/data/county_permissions.toml``
so that changing a permission means changing a test a reviewer reads, and a call added to the
service without a row here fails the suite. Allowed calls answer OK (or the call's own error,
:data:`ALLOWED_ANSWER`); denied calls answer ``PERMISSION_DENIED`` and leave an audit entry
``county_denied`` naming the token's id (never the token). No token, a malformed, unknown or revoked
one: ``UNAUTHENTICATED``, audited too (actor ``anonymous``). Tokens are stored only as hashes and
never appear in the database, the audit trail or the logs.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select
from tongban.v1 import common_pb2, county_pb2, county_pb2_grpc

from gateway import audit
from gateway import config as config_mod
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.service import InboxItem
from gateway.cases.store import Side as CaseSide
from gateway.cases.types import Programme
from gateway.cli import main
from gateway.cli.county import DEFAULT_DOCS
from gateway.client import CountyClient
from gateway.county import auth
from gateway.county import wire as cw
from gateway.county.permissions import CALLS, Role, load_permissions, parse_permissions, render_markdown
from gateway.errors import ConfigError, InputError, PermissionTableInvalid, RecordNotFound, TokenInvalid, TokenMissing
from gateway.node import init_node, open_node
from gateway.reconcile.findings import Code, Finding
from gateway.reconcile.findings import Role as FindingRole
from gateway.reconcile.findings import Side as FindingSide
from gateway.server import NodeServer
from gateway.store.schema import county_tokens
from gateway.trust.keyfile import ENV_PASSPHRASE
from tests.conftest import SessionLog
from tests.test_cases_service import FILES, orphan_draft

TIMEOUT = 5.0
A, D = True, False  # allow, deny
# call -> (county_system, case_officer, registration_staff, node_operator, provincial_operator)
EXPECTED: dict[str, tuple[bool, bool, bool, bool, bool]] = {
    "GetNodeInfo": (A, A, A, A, A),
    "ListFindings": (A, D, D, D, D),
    "CaseInbox": (D, A, A, D, A),
    "ListDeadLetters": (D, D, D, A, D),
    "AuditTail": (D, D, D, A, D),
    "SubmitRoster": (A, D, D, D, D),
    "ListMatches": (A, D, D, D, D),
    "GetCase": (D, A, A, D, A),
    "CaseAction": (D, A, A, D, D),
    "GetCustody": (D, A, A, D, A),
    "OpenCase": (D, A, D, D, D),
    "ResubmitCase": (D, A, D, D, D),
    "TransferCase": (D, D, A, D, D),
}
ROLES = tuple(Role)
SCOPES = {Role.PROVINCIAL_OPERATOR: "50"}
A_CASE = "00000000-0000-4000-8000-000000000001"
# What an allowed call answers on this module's node: it is not enrolled, so it has no case parts
# and the case calls answer FAILED_PRECONDITION (cases_unavailable) — after the table admitted them.
ALLOWED_ANSWER: dict[str, grpc.StatusCode] = {
    "GetCase": grpc.StatusCode.FAILED_PRECONDITION,
    "CaseAction": grpc.StatusCode.FAILED_PRECONDITION,
    "GetCustody": grpc.StatusCode.FAILED_PRECONDITION,
    "OpenCase": grpc.StatusCode.FAILED_PRECONDITION,
    "ResubmitCase": grpc.StatusCode.FAILED_PRECONDITION,
    "TransferCase": grpc.StatusCode.FAILED_PRECONDITION,
}


def _roster() -> Iterator[county_pb2.SubmitRosterRequest]:
    yield county_pb2.SubmitRosterRequest(header=county_pb2.RosterHeader(period="2026Q3"))


def _open_case() -> Iterator[county_pb2.OpenCaseRequest]:
    application = county_pb2.OpenCaseApplication(request_id=A_CASE, case_type="orphan", registration_division="511321")
    yield county_pb2.OpenCaseRequest(application=application)


def _resubmit_case() -> Iterator[county_pb2.ResubmitCaseRequest]:
    document = county_pb2.DocumentRef(document_id="d1", kind="household_register", size=1, sha256="ab" * 32)
    yield county_pb2.ResubmitCaseRequest(header=county_pb2.ResubmitHeader(case_id=A_CASE, documents=[document]))
    yield county_pb2.ResubmitCaseRequest(chunk=county_pb2.DocumentChunk(document_id="d1", data=b"x"))


def _case_action(role: Role) -> county_pb2.CaseActionRequest:
    """An action the role may take within CaseAction (cv.ACTION_ROLES), so the table is what decides."""
    if role is Role.CASE_OFFICER:
        return county_pb2.CaseActionRequest(case_id=A_CASE, close=county_pb2.NoArguments())
    return county_pb2.CaseActionRequest(case_id=A_CASE, first_review=county_pb2.NoArguments())


Metadata = tuple[tuple[str, str], ...]
Invoke = Callable[[county_pb2_grpc.CountyStub, Metadata, Role], object]
INVOKE: dict[str, Invoke] = {
    "GetNodeInfo": lambda s, md, r: s.GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=TIMEOUT, metadata=md),
    "ListFindings": lambda s, md, r: s.ListFindings(
        county_pb2.ListFindingsRequest(period="2026Q3"), timeout=TIMEOUT, metadata=md
    ),
    "CaseInbox": lambda s, md, r: s.CaseInbox(county_pb2.CaseInboxRequest(), timeout=TIMEOUT, metadata=md),
    "ListDeadLetters": lambda s, md, r: s.ListDeadLetters(
        county_pb2.ListDeadLettersRequest(), timeout=TIMEOUT, metadata=md
    ),
    "AuditTail": lambda s, md, r: s.AuditTail(county_pb2.AuditTailRequest(n=5), timeout=TIMEOUT, metadata=md),
    "SubmitRoster": lambda s, md, r: s.SubmitRoster(_roster(), timeout=TIMEOUT, metadata=md),
    "ListMatches": lambda s, md, r: list(
        s.ListMatches(county_pb2.ListMatchesRequest(period="2026Q3"), timeout=TIMEOUT, metadata=md)
    ),
    "GetCase": lambda s, md, r: s.GetCase(county_pb2.GetCaseRequest(case_id=A_CASE), timeout=TIMEOUT, metadata=md),
    "CaseAction": lambda s, md, r: s.CaseAction(_case_action(r), timeout=TIMEOUT, metadata=md),
    "GetCustody": lambda s, md, r: s.GetCustody(
        county_pb2.GetCustodyRequest(case_id=A_CASE), timeout=TIMEOUT, metadata=md
    ),
    "OpenCase": lambda s, md, r: s.OpenCase(_open_case(), timeout=TIMEOUT, metadata=md),
    "ResubmitCase": lambda s, md, r: s.ResubmitCase(_resubmit_case(), timeout=TIMEOUT, metadata=md),
    "TransferCase": lambda s, md, r: s.TransferCase(
        county_pb2.TransferCaseRequest(case_id=A_CASE, to_division="500109"), timeout=TIMEOUT, metadata=md
    ),
}


@dataclass
class County:
    server: NodeServer
    config_dir: Path
    tokens: dict[Role, str]
    ids: dict[Role, str]
    made: list[str]  # every token this module created, to look for in the logs

    def stub(self, channel: grpc.Channel) -> county_pb2_grpc.CountyStub:
        return county_pb2_grpc.CountyStub(channel)


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    d = tmp_path_factory.mktemp("county") / "node"
    with pytest.MonkeyPatch.context() as mp:  # the per-test passphrase fixture is function-scoped
        mp.setenv(ENV_PASSPHRASE, secrets.token_hex(16))
        mp.setattr("gateway.trust.keyfile.SCRYPT_N", 2**10)
        init_node(d, node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
        server = NodeServer(open_node(config_mod.load(d / "node.toml")))
    tokens, ids = {}, {}
    for role in ROLES:
        token, info = auth.create(
            server.node.engine, role=role, label=f"测试 {role.value}", division=SCOPES.get(role, "")
        )
        tokens[role], ids[role] = token, info.token_id
    server.start()
    try:
        yield County(server, d, tokens, ids, list(tokens.values()))
    finally:
        server.stop(grace=0)


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# --- the table ----------------------------------------------------------------------------------------


def test_the_table_in_this_test_is_the_packaged_table_and_covers_the_service() -> None:
    service = county_pb2.DESCRIPTOR.services_by_name["County"]
    assert tuple(m.name for m in service.methods) == CALLS == tuple(EXPECTED) == tuple(INVOKE)
    permissions = load_permissions()
    for call, verdicts in EXPECTED.items():
        assert tuple(permissions.allows(call, r) for r in ROLES) == verdicts, call


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.value)
@pytest.mark.parametrize("call", CALLS)
def test_every_call_for_every_role(county: County, call: str, role: Role) -> None:
    allowed = EXPECTED[call][ROLES.index(role)]
    engine = county.server.node.engine
    before = audit.tail(engine, 1)
    with grpc.insecure_channel(county.server.county_address) as ch:
        invoke = lambda: INVOKE[call](county.stub(ch), bearer(county.tokens[role]), role)  # noqa: E731
        if allowed:
            answer = ALLOWED_ANSWER.get(call, grpc.StatusCode.OK)
            if answer is grpc.StatusCode.OK:
                invoke()
            else:
                assert refused(invoke).code() == answer, call
            after = [e for e in audit.tail(engine, 5) if not before or e.seq > before[0].seq]
            assert all(e.action != "county_denied" for e in after), "an admitted call left no refusal"
            return
        error = refused(invoke)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "call_denied: the caller's role may not make this call"
    last = audit.tail(engine, 1)[0]
    assert (last.action, last.actor, last.purpose, last.reference) == (
        "county_denied",
        county.ids[role],
        "county_api",
        call,
    )
    assert last.detail == f"role={role.value}"
    audit.verify(engine)


# --- who is refused before the table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        pytest.param((), "token_missing", id="no_credentials"),
        pytest.param((("authorization", "Basic dXNlcjpwYXNz"),), "token_missing", id="not_bearer"),
        pytest.param((("authorization", "Bearer "),), "token_missing", id="empty_bearer"),
        pytest.param((("authorization", "Bearer tbc1_short"),), "token_invalid", id="malformed"),
        pytest.param((("authorization", "Bearer " + auth.new_token()),), "token_invalid", id="unknown"),
    ],
)
@pytest.mark.parametrize("call", CALLS)
def test_without_a_valid_token_every_call_is_unauthenticated(
    county: County, call: str, metadata: tuple[tuple[str, str], ...], code: str
) -> None:
    with grpc.insecure_channel(county.server.county_address) as ch:
        error = refused(lambda: INVOKE[call](county.stub(ch), metadata, Role.NODE_OPERATOR))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (error.details() or "").startswith(f"{code}: ")
    # Every refused call is audited: actor anonymous, the call, the reason; no token material.
    engine = county.server.node.engine
    last = audit.tail(engine, 1)[0]
    assert (last.actor, last.action, last.purpose, last.reference, last.detail) == (
        "anonymous",
        "county_denied",
        "county_api",
        call,
        f"reason={code}",
    )
    presented = dict(metadata).get("authorization", "").partition(" ")[2]
    if presented:
        county.made.append(presented)  # looked for in the database, the audit trail and the logs
    audit.verify(engine)


def test_a_revoked_token_is_refused_from_its_next_call(county: County) -> None:
    engine = county.server.node.engine
    token, info = auth.create(engine, role=Role.NODE_OPERATOR, label="leaving")
    county.made.append(token)
    with CountyClient(county.server.county_address, token, timeout=TIMEOUT) as client:
        assert client.audit_tail(3)
        revoked = auth.revoke(engine, info.token_id)
        assert revoked.revoked_at is not None
        assert not revoked.active
        error = refused(lambda: client.audit_tail(3))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "token_invalid: the API token is not valid on this node"
    last = audit.tail(engine, 1)[0]
    assert (last.actor, last.action, last.reference, last.detail) == (
        "anonymous",
        "county_denied",
        "AuditTail",
        "reason=token_invalid",
    )
    assert auth.revoke(engine, info.token_id).revoked_at == revoked.revoked_at  # revoking twice keeps the time
    actions = [(e.action, e.reference) for e in audit.tail(engine, 50)]
    assert ("county_token_created", info.token_id) in actions
    assert ("county_token_revoked", info.token_id) in actions


# --- tokens: hashed, never stored or logged ---------------------------------------------------------------


def test_tokens_are_random_and_only_their_hash_is_stored(county: County) -> None:
    engine = county.server.node.engine
    token = county.tokens[Role.COUNTY_SYSTEM]
    assert re.fullmatch(r"tbc1_[A-Za-z0-9_-]{43}", token)
    assert len(set(county.tokens.values())) == len(ROLES)
    with engine.connect() as conn:
        rows = conn.execute(select(county_tokens)).all()
    stored = {bytes(r.token_hash) for r in rows}
    assert auth.hash_token(token) in stored
    assert all(len(h) == 32 for h in stored)
    db_file = Path(str(engine.url.database))
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))  # with -wal / -journal
    for made in county.made:
        assert made.encode() not in raw, "a token was found in the node database"
    for e in audit.entries(engine):
        assert not any(t in f"{e.actor} {e.reference} {e.detail}" for t in county.made), "a token in the audit trail"


def test_authenticate_checks_in_order(county: County) -> None:
    engine = county.server.node.engine
    with pytest.raises(TokenMissing):
        auth.authenticate(engine, None)
    with pytest.raises(TokenInvalid):
        auth.authenticate(engine, "not a token")
    with pytest.raises(TokenInvalid):
        auth.authenticate(engine, auth.new_token())
    info = auth.authenticate(engine, county.tokens[Role.PROVINCIAL_OPERATOR])
    assert (info.role, info.division, info.token_id) == (Role.PROVINCIAL_OPERATOR, "50", county.ids[info.role])


@pytest.mark.parametrize(
    ("role", "division", "ok"),
    [
        pytest.param(Role.PROVINCIAL_OPERATOR, "50", True, id="province_operator_with_province"),
        pytest.param(Role.PROVINCIAL_OPERATOR, "", False, id="province_operator_without_scope"),
        pytest.param(Role.PROVINCIAL_OPERATOR, "500157", False, id="province_operator_with_county"),
        pytest.param(Role.COUNTY_SYSTEM, "", True, id="county_system_unscoped"),
        pytest.param(Role.REGISTRATION_STAFF, "500157", True, id="staff_with_county"),
        pytest.param(Role.CASE_OFFICER, "50", False, id="officer_with_province"),
    ],
)
def test_division_scope(role: Role, division: str, ok: bool) -> None:
    if ok:
        assert auth.check_scope(role, division) == division
    else:
        with pytest.raises(InputError):
            auth.check_scope(role, division)


def test_revoking_an_unknown_or_malformed_id_is_an_error(county: County) -> None:
    with pytest.raises(RecordNotFound):
        auth.revoke(county.server.node.engine, "ct-0000000000000000")
    with pytest.raises(InputError):
        auth.revoke(county.server.node.engine, "tbc1_whatever")


def test_the_plaintext_county_listener_is_loopback_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token travels in clear on the plaintext listener; with `[county] tls` see tests/test_county_tls.py."""
    init_node(tmp_path / "n", node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
    monkeypatch.setenv("TONGBAN_COUNTY_LISTEN", "0.0.0.0:7302")
    node = open_node(config_mod.load(tmp_path / "n" / "node.toml"))
    try:
        with pytest.raises(ConfigError, match=r"county\.listen"):
            NodeServer(node)
    finally:
        node.engine.dispose()


# --- the client --------------------------------------------------------------------------------------


def test_the_client_makes_every_call(county: County) -> None:
    with CountyClient(county.server.county_address, county.tokens[Role.NODE_OPERATOR], timeout=TIMEOUT) as c:
        assert c.node_info().node_id == "cq-liangjiang"
        assert c.dead_letters() == []
        assert [e.seq for e in c.audit_tail(3)] == [e.seq for e in audit.tail(county.server.node.engine, 3)]
    with CountyClient(county.server.county_address, county.tokens[Role.COUNTY_SYSTEM], timeout=TIMEOUT) as c:
        assert c.list_findings("2026Q3") == []
        assert refused(lambda: c.list_findings("2026-13")).code() == grpc.StatusCode.INVALID_ARGUMENT
    with CountyClient(county.server.county_address, county.tokens[Role.REGISTRATION_STAFF], timeout=TIMEOUT) as c:
        assert c.case_inbox(include_closed=True) == []
        unavailable = refused(lambda: c.transfer(A_CASE, "500109"))
        assert (unavailable.details() or "").startswith("cases_unavailable: ")  # this node is not enrolled
    with CountyClient(county.server.county_address, county.tokens[Role.CASE_OFFICER], timeout=TIMEOUT) as c:
        assert refused(lambda: c.resubmit(A_CASE, [])).code() == grpc.StatusCode.FAILED_PRECONDITION
        draft = orphan_draft(1, FILES)
        assert refused(lambda: c.open_case(draft, FILES)).code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_client_retries_unavailable_only_and_gives_up(county: County) -> None:
    calls: list[int] = []
    # Nothing listens on port 1: every attempt is UNAVAILABLE, and the last one is raised.
    with CountyClient("127.0.0.1:1", county.tokens[Role.NODE_OPERATOR], timeout=1.0, attempts=3, backoff=0.01) as c:
        original = c._stub.GetNodeInfo

        def counting(*args: object, **kwargs: object) -> object:
            calls.append(1)
            return original(*args, **kwargs)

        c._stub.GetNodeInfo = counting  # type: ignore[method-assign]
        assert refused(c.node_info).code() == grpc.StatusCode.UNAVAILABLE
    assert len(calls) == 3
    # A final status (here UNAUTHENTICATED) is not retried.
    with CountyClient(county.server.county_address, "tbc1_bad", timeout=TIMEOUT, attempts=3, backoff=0.01) as c:
        calls.clear()
        original = c._stub.GetNodeInfo
        c._stub.GetNodeInfo = counting  # type: ignore[method-assign]
        assert refused(c.node_info).code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(calls) == 1


# --- wire round trips ---------------------------------------------------------------------------------


def test_county_wire_round_trips() -> None:
    finding = Finding(
        Code.GONE_BUT_ABSENT,
        next(iter(FindingRole)),
        next(iter(FindingSide)),
        peer="sc-nanbu",
        peer_division="511321",
        record_ref="r-1",
        peer_ref="n-1",
    )
    assert cw.finding_from_wire(cw.finding_to_wire(finding)) == finding
    item = InboxItem(
        "c-1", CaseSide.REGISTRATION, Programme.ORPHAN, lc.Status.RECEIVED, date(2026, 12, 1),
        ClockStep.DECISION, True, "500157", "511321", None,
    )  # fmt: skip
    assert cw.inbox_item_from_wire(cw.inbox_item_to_wire(item)) == item
    quiet = dataclasses.replace(item, due=None, due_step=None, overdue=False, flag="duplicate")
    assert cw.inbox_item_from_wire(cw.inbox_item_to_wire(quiet)) == quiet
    at = datetime(2026, 12, 6, 3, 4, 5, 678000, tzinfo=UTC)
    letter = cw.DeadLetter("m-1", "sc-nanbu", "migrant_notice", 7, at, "delivery_failed: gave up")
    assert cw.dead_letter_from_wire(cw.dead_letter_to_wire(letter)) == letter
    line = cw.AuditLine(9, at, "cq-liangjiang", "send", "migrant_notice", "m-1", "to=sc-nanbu", bytes(range(32)))
    assert cw.audit_line_from_wire(cw.audit_line_to_wire(line)) == line
    with pytest.raises(InputError):
        cw.inbox_item_from_wire(county_pb2.InboxItem(case_id="c", side="elsewhere"))


# --- the permission table loads fail closed -----------------------------------------------------------------


def _packaged() -> str:
    return (Path(__file__).resolve().parents[1] / "gateway" / "data" / "county_permissions.toml").read_text("utf-8")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        pytest.param(
            lambda t: t.replace('county_system = "deny"\n', "", 1), "a call without a role", id="missing_verdict"
        ),
        pytest.param(
            lambda t: t.replace('= "deny"', '= "maybe"', 1), "a verdict other than allow/deny", id="bad_verdict"
        ),
        pytest.param(lambda t: t + '\n[calls.Upload]\nsummary = "x"\n', "an unknown call", id="unknown_call"),
        pytest.param(lambda t: t + '\n[roles.auditor]\nsummary = "x"\n', "an unknown role", id="unknown_role"),
        pytest.param(lambda t: t.split("[calls.AuditTail]")[0], "a call left out", id="missing_call"),
        pytest.param(
            lambda t: t.replace("[calls.GetNodeInfo]\n", '[calls.GetNodeInfo]\nauditor = "allow"\n'),
            "a verdict for an unknown role",
            id="verdict_for_unknown_role",
        ),
        pytest.param(lambda t: t + "\n[defaults]\nverdict = 'allow'\n", "a default", id="unknown_section"),
        pytest.param(lambda t: "calls = [", "not TOML", id="not_toml"),
    ],
)
def test_a_broken_table_is_refused(edit: Callable[[str], str], why: str) -> None:
    with pytest.raises(PermissionTableInvalid):
        parse_permissions(edit(_packaged()))


def test_the_docs_are_rendered_from_the_table() -> None:
    assert DEFAULT_DOCS.read_text(encoding="utf-8") == render_markdown(load_permissions()), (
        "docs/county-permissions.md is out of date: run `tongban county render-docs`"
    )
    assert main(["county", "render-docs", "--check"]) == 0


# --- the command line ----------------------------------------------------------------------------------------


def test_token_commands(county: County, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(county.config_dir)
    assert main(["county", "token", "create", "--role", "case_officer", "--label", "受理窗口", "--config", cfg]) == 0
    out = capsys.readouterr().out
    token = re.findall(r"^tbc1_\S+$", out, flags=re.M)[0]
    county.made.append(token)
    token_id = re.findall(r"created (ct-[0-9a-f]{16})", out)[0]
    assert auth.authenticate(county.server.node.engine, token).role is Role.CASE_OFFICER
    assert main(["county", "token", "list", "--config", cfg]) == 0
    listing = capsys.readouterr().out
    assert token_id in listing
    assert "受理窗口" in listing
    assert token not in listing
    assert main(["county", "token", "revoke", token_id, "--config", cfg]) == 0
    capsys.readouterr()
    with pytest.raises(TokenInvalid):
        auth.authenticate(county.server.node.engine, token)
    assert main(["county", "token", "create", "--role", "provincial_operator", "--label", "x", "--config", cfg]) == 65


def test_zz_no_token_was_logged(county: County, session_log: SessionLog) -> None:
    """Runs last in this module: nothing the module did put a token into the session's log."""
    text = session_log.path.read_text(encoding="utf-8") if session_log.path.exists() else ""
    assert county.made
    assert not any(t in text for t in county.made), "a token was found in the logs"
    assert not any(any(t in m for t in county.made) for m in session_log.exception_messages), "a token in an error"
