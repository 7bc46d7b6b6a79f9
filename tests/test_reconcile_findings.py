"""The reconciliation rules (SPEC §5) as a table of named cases, run by one pure function.

This node is 四川省南部县 (511321, ``sc-nanbu``). As registration place it has matched the complete
rosters of 两江新区 (500157, ``cq-liangjiang``) and 北碚区 (500109, ``cq-beibei``); 织金县 (520524,
``gz-zhijin``) is in the directory but sent nothing; 500112 has no node. Each case gives the ledger
facts, the matcher's links, the rosters that arrived and the answers received, and names the
findings (code, role, peer, local record, peer reference) and the replies it expects.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import pytest

from gateway.domain.records import ChildKind, Sex
from gateway.exchange.tokens import field_key
from gateway.matching import Band, Link, Thresholds
from gateway.matching import MatchResult as Links
from gateway.reconcile.findings import (
    Answers,
    Code,
    LedgerFact,
    NoticeFact,
    PeerMatch,
    Role,
    RosterProblem,
    Side,
    label,
    reconcile,
)
from gateway.reconcile.service import registration_refs
from gateway.wire import LedgerStatus, MatchOutcome, MatchResult

HERE = "511321"
LJ, BB, ZJ = "cq-liangjiang", "cq-beibei", "gz-zhijin"
NODES = {"500157": LJ, "500109": BB, "520524": ZJ, HERE: "sc-nanbu"}
DIVISION = {LJ: "500157", BB: "500109", ZJ: "520524"}


def fact(
    ref: str,
    *,
    kind: ChildKind = ChildKind.LEFT_BEHIND,
    residence: str = HERE,
    registration: str = HERE,
    valid: bool = True,
    sex: Sex = Sex.MALE,
    ym: str = "2015-06",
) -> LedgerFact:
    return LedgerFact(ref, kind, registration, residence, valid, sex, ym)


def gone(ref: str, to: str, **kw: object) -> LedgerFact:
    return fact(ref, kind=ChildKind.NEITHER, residence=to, **kw)  # type: ignore[arg-type]


def notice(ref: str, *, token: bool = True, sex: Sex = Sex.MALE, ym: str = "2015-06") -> NoticeFact:
    return NoticeFact(ref, token, sex, ym)


def link(left: str, right: str, band: Band = Band.MATCHED, stage: str = "exact", score: float = 1.0) -> Link:
    return Link(left, right, band, score, stage, {"name": "agree", "birth": "agree", "sex": "agree"})


def roster(peer: str, notices: list[NoticeFact], links: list[Link]) -> PeerMatch:
    linked = {x.right for x in links}
    return PeerMatch(
        peer=peer,
        peer_division=DIVISION[peer],
        roster_id=f"roster-{peer}",
        links=Links(tuple(links), (), tuple(n.notice_ref for n in notices if n.notice_ref not in linked)),
        notices={n.notice_ref: n for n in notices},
        registration_ref=lambda record_id: "reg:" + record_id,
    )


def found(notice_ref: str, record: str, outcome: MatchOutcome, status: LedgerStatus, **kw: bool) -> MatchResult:
    return MatchResult(notice_ref, outcome, status, "reg:" + record, **kw)


@dataclass
class Case:
    ledger: list[LedgerFact] = field(default_factory=list)
    matches: list[PeerMatch] = field(default_factory=list)
    incomplete: list[RosterProblem] = field(default_factory=list)
    answers: list[Answers] = field(default_factory=list)
    # (code, role, peer, record_ref, peer_ref)
    findings: set[tuple[Code, Role, str, str, str]] = field(default_factory=set)
    replies: dict[str, set[MatchResult]] = field(default_factory=dict)


R, Res, L = Role.REGISTRATION, Role.RESIDENCE, Role.LEDGER
M, LB = LedgerStatus.MIGRANT, LedgerStatus.LEFT_BEHIND
MATCHED, PROBABLE, POSSIBLE, NOT_FOUND = (
    MatchOutcome.MATCHED,
    MatchOutcome.PROBABLE,
    MatchOutcome.POSSIBLE,
    MatchOutcome.NOT_FOUND,
)

CASES: dict[str, Case] = {
    # --- as registration place ------------------------------------------------------------------
    "matched_child_recorded_as_gone_there": Case(
        ledger=[gone("r1", "500157")],
        matches=[roster(LJ, [notice("n1")], [link("r1", "n1")])],
        findings={(Code.MATCHED, R, LJ, "r1", "n1")},
        replies={LJ: {found("n1", "r1", MATCHED, M)}},
    ),
    "review_below_the_automatic_bar_is_possible": Case(
        ledger=[gone("r1", "500157", valid=False)],
        matches=[roster(LJ, [notice("n1", token=False)], [link("r1", "n1", Band.REVIEW, "fuzzy", 0.7)])],
        findings={(Code.REVIEW, R, LJ, "r1", "n1"), (Code.INVALID_IDENTIFIER, L, "", "r1", "")},
        replies={LJ: {found("n1", "r1", POSSIBLE, M)}},
    ),
    "review_that_lost_on_the_margin_is_probable": Case(
        ledger=[gone("r1", "500157", valid=False)],
        matches=[roster(LJ, [notice("n1", token=False)], [link("r1", "n1", Band.REVIEW, "fuzzy", 0.9)])],
        findings={(Code.REVIEW, R, LJ, "r1", "n1"), (Code.INVALID_IDENTIFIER, L, "", "r1", "")},
        replies={LJ: {found("n1", "r1", PROBABLE, M)}},
    ),
    "living_here_recorded_left_behind": Case(
        ledger=[fact("r1", kind=ChildKind.LEFT_BEHIND)],
        matches=[roster(LJ, [notice("n1")], [link("r1", "n1")])],
        findings={(Code.LIVING_HERE_RECORDED_LEFT_BEHIND, R, LJ, "r1", "n1")},
        replies={LJ: {found("n1", "r1", MATCHED, LB)}},
    ),
    "gone_but_absent_from_a_complete_roster": Case(
        ledger=[gone("r1", "500157")],
        matches=[roster(LJ, [notice("n1")], [])],
        findings={(Code.GONE_BUT_ABSENT, R, LJ, "r1", ""), (Code.NOT_IN_LEDGER, R, LJ, "", "n1")},
        replies={LJ: {MatchResult("n1", NOT_FOUND)}},
    ),
    "gone_there_and_only_proposed_for_review_is_not_absent": Case(
        ledger=[gone("r1", "500157", valid=False)],
        matches=[roster(LJ, [notice("n1", token=False)], [link("r1", "n1", Band.REVIEW, "fuzzy", 0.7)])],
        findings={(Code.REVIEW, R, LJ, "r1", "n1"), (Code.INVALID_IDENTIFIER, L, "", "r1", "")},
        replies={LJ: {found("n1", "r1", POSSIBLE, M)}},
    ),
    "claimed_by_two_residence_places": Case(
        ledger=[fact("r1", kind=ChildKind.NEITHER)],
        matches=[
            roster(LJ, [notice("n1")], [link("r1", "n1")]),
            roster(BB, [notice("m1")], [link("r1", "m1", stage="fuzzy", score=0.95)]),
        ],
        findings={(Code.CLAIMED_BY_TWO, R, LJ, "r1", "n1"), (Code.CLAIMED_BY_TWO, R, BB, "r1", "m1")},
        replies={
            LJ: {found("n1", "r1", MATCHED, LedgerStatus.NEITHER, claimed_elsewhere=True)},
            BB: {found("m1", "r1", MATCHED, LedgerStatus.NEITHER, claimed_elsewhere=True)},
        },
    ),
    "one_automatic_link_and_one_for_review_is_not_claimed_twice": Case(
        ledger=[fact("r1", kind=ChildKind.NEITHER)],
        matches=[
            roster(LJ, [notice("n1")], [link("r1", "n1")]),
            roster(BB, [notice("m1", token=False)], [link("r1", "m1", Band.REVIEW, "fuzzy", 0.7)]),
        ],
        findings={
            (Code.MATCHED, R, LJ, "r1", "n1"),
            (Code.REVIEW, R, BB, "r1", "m1"),
            (Code.INCONSISTENT_IDENTIFIER, R, BB, "r1", "m1"),  # a valid ID here, none there
        },
        replies={
            LJ: {found("n1", "r1", MATCHED, LedgerStatus.NEITHER)},
            BB: {found("m1", "r1", POSSIBLE, LedgerStatus.NEITHER)},
        },
    ),
    "roster_missing_from_a_county_with_a_node": Case(
        ledger=[gone("r1", "520524"), gone("r2", "520524")],
        findings={(Code.ROSTER_MISSING, R, ZJ, "", "")},
    ),
    "roster_missing_from_a_county_without_a_node": Case(
        ledger=[gone("r1", "500112")],
        findings={(Code.ROSTER_MISSING, R, "", "", "")},
    ),
    "roster_incomplete_from_a_county_children_went_to": Case(
        ledger=[gone("r1", "500157")],
        incomplete=[RosterProblem(LJ, "500157", "roster-7", "2 of 5 batch(es) missing")],
        findings={(Code.ROSTER_INCOMPLETE, R, LJ, "", "roster-7")},
    ),
    "roster_incomplete_from_a_county_nobody_went_to": Case(
        incomplete=[RosterProblem(BB, "500109", "roster-8", "no manifest; 3 batch(es) received")],
        findings={(Code.ROSTER_INCOMPLETE, R, BB, "", "roster-8")},
    ),
    "not_in_ledger": Case(
        ledger=[fact("r1")],
        matches=[roster(LJ, [notice("n1"), notice("n2")], [link("r1", "n1")])],
        findings={
            (Code.LIVING_HERE_RECORDED_LEFT_BEHIND, R, LJ, "r1", "n1"),
            (Code.NOT_IN_LEDGER, R, LJ, "", "n2"),
        },
        replies={LJ: {found("n1", "r1", MATCHED, LB), MatchResult("n2", NOT_FOUND)}},
    ),
    "invalid_identifier_in_the_ledger": Case(
        ledger=[fact("r1", valid=False), fact("r2")],
        findings={(Code.INVALID_IDENTIFIER, L, "", "r1", "")},
    ),
    "inconsistent_identifier_exact_token_other_sex_is_not_auto_linked": Case(
        ledger=[gone("r1", "500157")],
        matches=[roster(LJ, [notice("n1", sex=Sex.FEMALE)], [link("r1", "n1")])],
        findings={(Code.INCONSISTENT_IDENTIFIER, R, LJ, "r1", "n1")},
        replies={LJ: {found("n1", "r1", PROBABLE, M)}},
    ),
    "inconsistent_identifier_exact_token_other_birth_month": Case(
        ledger=[gone("r1", "500157")],
        matches=[roster(LJ, [notice("n1", ym="2015-07")], [link("r1", "n1")])],
        findings={(Code.INCONSISTENT_IDENTIFIER, R, LJ, "r1", "n1")},
        replies={LJ: {found("n1", "r1", PROBABLE, M)}},
    ),
    "inconsistent_identifier_fuzzy_link_with_an_id_on_one_side": Case(
        ledger=[gone("r1", "500157", valid=False)],
        matches=[roster(LJ, [notice("n1", token=True)], [link("r1", "n1", stage="fuzzy", score=0.93)])],
        findings={(Code.INCONSISTENT_IDENTIFIER, R, LJ, "r1", "n1"), (Code.INVALID_IDENTIFIER, L, "", "r1", "")},
        replies={LJ: {found("n1", "r1", MATCHED, M)}},
    ),
    # --- as residence place ---------------------------------------------------------------------
    "answers_to_own_notices": Case(
        ledger=[fact(f"s{i}", kind=ChildKind.MIGRANT, registration="500157", residence=HERE) for i in range(1, 6)],
        answers=[
            Answers(
                LJ,
                "500157",
                [
                    found("s1", "x1", MATCHED, M),
                    found("s2", "x2", MATCHED, LB),
                    found("s3", "x3", MATCHED, M, claimed_elsewhere=True),
                    found("s4", "x4", PROBABLE, M),
                    MatchResult("s5", NOT_FOUND),
                ],
            )
        ],
        findings={
            (Code.MATCHED, Res, LJ, "s1", "reg:x1"),
            (Code.LIVING_HERE_RECORDED_LEFT_BEHIND, Res, LJ, "s2", "reg:x2"),
            (Code.CLAIMED_BY_TWO, Res, LJ, "s3", "reg:x3"),
            (Code.REVIEW, Res, LJ, "s4", "reg:x4"),
            (Code.NOT_IN_LEDGER, Res, LJ, "s5", ""),
        },
    ),
    "results_missing_from_a_registration_county": Case(
        ledger=[
            fact("s1", kind=ChildKind.MIGRANT, registration="500109", residence=HERE),
            fact("s2", kind=ChildKind.MIGRANT, registration="500157", residence=HERE),
        ],
        answers=[Answers(LJ, "500157", [found("s2", "x2", MATCHED, M)])],
        findings={(Code.RESULTS_MISSING, Res, BB, "", ""), (Code.MATCHED, Res, LJ, "s2", "reg:x2")},
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_findings(name: str) -> None:
    case = CASES[name]
    result = reconcile(
        own_division=HERE,
        ledger=case.ledger,
        matches=case.matches,
        incomplete=case.incomplete,
        answers=case.answers,
        node_for_division=NODES,
        thresholds=Thresholds(auto=0.85, review=0.65, margin=0.05),
    )
    got = {(f.code, f.role, f.peer, f.record_ref, f.peer_ref) for f in result.findings}
    assert got == case.findings
    assert len(got) == len(result.findings)  # nothing said twice
    assert {r.peer: set(r.results) for r in result.replies} == case.replies


def test_every_code_is_covered_by_a_case() -> None:
    covered = {code for case in CASES.values() for code, *_ in case.findings}
    assert covered == set(Code)


def test_counts_and_details_say_how_many_without_personal_data() -> None:
    result = reconcile(
        own_division=HERE,
        ledger=[gone("r1", "520524"), gone("r2", "520524")],
        node_for_division=NODES,
    )
    (missing,) = result.findings
    assert (missing.side, missing.peer_division, missing.detail) == (
        Side.PEER,
        "520524",
        "2 children recorded as gone there",
    )
    assert result.counts() == {Code.ROSTER_MISSING: 1}


def test_every_finding_has_a_chinese_and_an_english_label() -> None:
    for code in Code:
        for role in Role:
            zh, en = label(code, role, "织金县")
            assert zh
            assert en
            assert "{" not in zh + en
    assert label(Code.ROSTER_MISSING, Role.REGISTRATION, "织金县")[0] == "未收到织金县名册"
    assert label(Code.NOT_IN_LEDGER, Role.RESIDENCE)[1] == "child not known at the registration place"


def test_the_registration_ref_is_the_documented_hmac_shortened() -> None:
    key = hashlib.sha256(b"tongban test: registration ref").digest()
    refs = registration_refs(key)
    for record_id in ("r-1", "0b7c6f1e-8d1a-4c4e-9a57-3f2b1d0e9c11"):
        documented = hmac.digest(field_key(key, "registration-ref"), record_id.encode(), "sha256")[:16].hex()
        assert refs(record_id) == documented
    assert refs("r-1") != registration_refs(hashlib.sha256(b"another pair").digest())("r-1")
