"""The case lifecycle as a table: every legal move per role, and the complement of the table refused."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.cases.lifecycle import (
    CHINA,
    TRANSITIONS,
    Accept,
    Action,
    ActionKind,
    Approve,
    CaseState,
    Close,
    DeliverResult,
    FirstReview,
    NotifyApplicant,
    Push,
    Receive,
    Reject,
    RequestMaterial,
    Resubmit,
    Return,
    Role,
    Status,
    Transfer,
    Withdraw,
    allowed,
    apply,
    new_state,
    render_markdown,
    route_registration,
)
from gateway.cases.types import EvidenceKind, Programme, ProgrammeFamily
from gateway.cli import main
from gateway.domain.divisions import DivisionTable
from gateway.domain.records import ParentSituation
from gateway.errors import (
    AmbiguousSuccessor,
    EventOutOfOrder,
    IllegalTransition,
    InvalidCase,
    InvalidDivisionCode,
    MaterialAlreadyRequested,
    UnknownReasonCode,
)
from tests.test_cases_types import case, recognition, subsidy

ROOT = Path(__file__).resolve().parent.parent
S, N, G = Role.RESIDENCE_STAFF, Role.RESIDENCE_NODE, Role.REGISTRATION_NODE
ACCEPTED_ON = date(2026, 3, 2)

CASES = {
    ProgrammeFamily.RECOGNITION: case(
        application=recognition(Programme.ORPHAN, ParentSituation.DECEASED, ParentSituation.DECEASED)
    ),
    ProgrammeFamily.SUBSIDY: case(application=subsidy(Programme.NURSING_SUBSIDY, 1)),
}

# A well-formed action of each kind (the table decides whether it is allowed).
ACTIONS: dict[ActionKind, Action] = {
    ActionKind.ACCEPT: Accept(),
    ActionKind.PUSH: Push(),
    ActionKind.RECEIVE: Receive(),
    ActionKind.REQUEST_MATERIAL: RequestMaterial((EvidenceKind.DEATH_CERTIFICATE,)),
    ActionKind.RESUBMIT: Resubmit(),
    ActionKind.FIRST_REVIEW: FirstReview(),
    ActionKind.APPROVE: Approve(date(2026, 4, 1)),
    ActionKind.REJECT: Reject("other", "见说明"),
    ActionKind.DELIVER_RESULT: DeliverResult(),
    ActionKind.NOTIFY_APPLICANT: NotifyApplicant(),
    ActionKind.RETURN: Return("other", "见说明"),
    ActionKind.TRANSFER: Transfer("gz-zhijin", "520524"),
    ActionKind.WITHDRAW: Withdraw(),
    ActionKind.CLOSE: Close(),
}

_A = ActionKind
_TO_RECEIVED = [(S, _A.ACCEPT), (N, _A.PUSH), (G, _A.RECEIVE)]
# How to reach each state (the shortest path through the table), per family.
PATHS: dict[ProgrammeFamily, dict[Status, list[tuple[Role, ActionKind]]]] = {}
for _family in ProgrammeFamily:
    _review = [(G, _A.FIRST_REVIEW)] if _family is ProgrammeFamily.RECOGNITION else []
    _decided = [*_TO_RECEIVED, *_review, (G, _A.APPROVE)]
    PATHS[_family] = {
        Status.NEW: [],
        Status.ACCEPTED: _TO_RECEIVED[:1],
        Status.PUSHED: _TO_RECEIVED[:2],
        Status.RECEIVED: _TO_RECEIVED,
        Status.MATERIAL_REQUESTED: [*_TO_RECEIVED, (G, _A.REQUEST_MATERIAL)],
        Status.RESUBMITTED: [*_TO_RECEIVED, (G, _A.REQUEST_MATERIAL), (N, _A.RESUBMIT)],
        Status.DECIDED: _decided,
        Status.RESULT_DELIVERED: [*_decided, (G, _A.DELIVER_RESULT)],
        Status.APPLICANT_NOTIFIED: [*_decided, (G, _A.DELIVER_RESULT), (S, _A.NOTIFY_APPLICANT)],
        Status.CLOSED: [*_decided, (G, _A.DELIVER_RESULT), (S, _A.NOTIFY_APPLICANT), (N, _A.CLOSE)],
        Status.RETURNED: [*_TO_RECEIVED, (G, _A.RETURN)],
        Status.TRANSFERRED: [*_TO_RECEIVED, (G, _A.TRANSFER)],
        Status.WITHDRAWN: [*_TO_RECEIVED[:1], (S, _A.WITHDRAW)],
    }
    if _family is ProgrammeFamily.RECOGNITION:
        PATHS[_family][Status.FIRST_REVIEWED] = [*_TO_RECEIVED, (G, _A.FIRST_REVIEW)]


def at(step: int) -> datetime:
    """The step-th event: the acceptance date at 09:00 China time, then ten minutes apart."""
    return datetime(ACCEPTED_ON.year, ACCEPTED_ON.month, ACCEPTED_ON.day, 9, tzinfo=CHINA) + timedelta(
        minutes=10 * step
    )


def reach(family: ProgrammeFamily, status: Status) -> CaseState:
    state = new_state(CASES[family])
    for step, (role, kind) in enumerate(PATHS[family][status]):
        state = apply(state, role, ACTIONS[kind], at(step))
    assert state.status is status
    return state


def _legal() -> list[Any]:
    return [
        pytest.param(family, rule, id=f"{family}-{rule.source}-{rule.role}-{rule.action}")
        for family in ProgrammeFamily
        for rule in TRANSITIONS
        if family in rule.families
    ]


def _illegal() -> list[Any]:
    """The complement of the table over every reachable state, every role and every action."""
    params = []
    for family in ProgrammeFamily:
        table = allowed(family)
        for status, role, kind in itertools.product(PATHS[family], Role, ActionKind):
            if (status, role, kind) not in table:
                params.append(pytest.param(family, status, role, kind, id=f"{family}-{status}-{role}-{kind}"))
    return params


@pytest.mark.parametrize(("family", "rule"), _legal())
def test_every_legal_transition(family: ProgrammeFamily, rule: Any) -> None:
    state = reach(family, rule.source)
    new = apply(state, rule.role, ACTIONS[rule.action], at(20))
    assert new.status is rule.target
    assert new.history[-1].action is rule.action
    assert new.history[-1].source is rule.source
    assert state.status is rule.source  # the old state is unchanged


@pytest.mark.parametrize(("family", "status", "role", "kind"), _illegal())
def test_every_other_move_is_illegal(family: ProgrammeFamily, status: Status, role: Role, kind: ActionKind) -> None:
    state = reach(family, status)
    with pytest.raises(IllegalTransition):
        apply(state, role, ACTIONS[kind], at(20))


def test_paths_cover_every_state_a_rule_mentions() -> None:
    for family in ProgrammeFamily:
        mentioned = {r.source for r in TRANSITIONS if family in r.families}
        mentioned |= {r.target for r in TRANSITIONS if family in r.families}
        assert mentioned == set(PATHS[family]), family
        outgoing = {source for source, _, _ in allowed(family)}
        assert set(PATHS[family]) - outgoing == {Status.CLOSED}, "only closed is terminal"


# --- the rules beyond the table ------------------------------------------------------------------

R, SUB = ProgrammeFamily.RECOGNITION, ProgrammeFamily.SUBSIDY


def _second_request_after_resubmission() -> None:
    apply(reach(SUB, Status.RESUBMITTED), G, ACTIONS[_A.REQUEST_MATERIAL], at(20))


def _second_request_after_transfer() -> None:
    state = reach(SUB, Status.RESUBMITTED)
    state = apply(state, G, ACTIONS[_A.TRANSFER], at(20))
    state = apply(state, G, Receive(), at(21))
    assert state.registration_node == "gz-zhijin"
    apply(state, G, ACTIONS[_A.REQUEST_MATERIAL], at(22))


GUARDS: dict[str, tuple[Any, type[Exception]]] = {
    "second_material_request_after_resubmission": (_second_request_after_resubmission, MaterialAlreadyRequested),
    "second_material_request_after_transfer": (_second_request_after_transfer, MaterialAlreadyRequested),
    "material_request_without_items": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, RequestMaterial(()), at(20)),
        InvalidCase,
    ),
    "material_request_item_twice": (
        lambda: apply(
            reach(SUB, Status.RECEIVED),
            G,
            RequestMaterial((EvidenceKind.DIBAO_CERTIFICATE, EvidenceKind.DIBAO_CERTIFICATE)),
            at(20),
        ),
        InvalidCase,
    ),
    "accepted_on_another_day": (
        lambda: apply(new_state(CASES[SUB]), S, Accept(), at(0) + timedelta(days=1)),
        InvalidCase,
    ),
    "accepted_at_utc_evening_is_next_china_day": (
        lambda: apply(new_state(CASES[SUB]), S, Accept(), datetime(2026, 3, 2, 17, tzinfo=CHINA) + timedelta(hours=7)),
        InvalidCase,
    ),
    "naive_time": (lambda: apply(new_state(CASES[SUB]), S, Accept(), datetime(2026, 3, 2, 9)), EventOutOfOrder),
    "time_before_last_event": (
        lambda: apply(reach(SUB, Status.ACCEPTED), N, Push(), at(0) - timedelta(minutes=1)),
        EventOutOfOrder,
    ),
    "payment_not_from_a_first_of_month": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Approve(date(2026, 4, 2)), at(20)),
        InvalidCase,
    ),
    "payment_before_acceptance_month": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Approve(date(2026, 2, 1)), at(20)),
        InvalidCase,
    ),
    "reject_with_unknown_code": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Reject("nope", "x"), at(20)),
        UnknownReasonCode,
    ),
    "reject_with_a_return_only_code": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Reject("not_registered_here", "x"), at(20)),
        UnknownReasonCode,
    ),
    "reject_subsidy_with_a_recognition_code": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Reject("apply_as_orphan", "x"), at(20)),
        UnknownReasonCode,
    ),
    "reject_without_text": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Reject("other", "  "), at(20)),
        InvalidCase,
    ),
    "return_with_a_reject_only_code": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Return("disability_not_severe", "x"), at(20)),
        UnknownReasonCode,
    ),
    "transfer_to_the_same_node": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Transfer("sc-nanbu", "511321"), at(20)),
        InvalidCase,
    ),
    "transfer_to_a_malformed_division": (
        lambda: apply(reach(SUB, Status.RECEIVED), G, Transfer("gz-zhijin", "52052"), at(20)),
        InvalidCase,
    ),
    "decide_recognition_before_first_review": (
        lambda: apply(reach(R, Status.RECEIVED), G, ACTIONS[_A.APPROVE], at(20)),
        IllegalTransition,
    ),
}


@pytest.mark.parametrize(("attempt", "error"), GUARDS.values(), ids=GUARDS.keys())
def test_guards(attempt: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        attempt()


def test_material_request_is_a_kind_of_illegal_transition() -> None:
    assert issubclass(MaterialAlreadyRequested, IllegalTransition)
    assert MaterialAlreadyRequested.code != IllegalTransition.code


def test_decisions_are_kept() -> None:
    approved = apply(reach(SUB, Status.RECEIVED), G, Approve(date(2026, 4, 1)), at(20))
    assert approved.decision is not None
    assert approved.decision.approved
    assert approved.decision.payment_from == date(2026, 4, 1)
    rejected = apply(reach(SUB, Status.RESUBMITTED), G, Reject("disability_not_severe", "三级"), at(20))
    assert rejected.decision is not None
    assert not rejected.decision.approved
    assert rejected.decision.reason_code == "disability_not_severe"
    assert rejected.material_request == ACTIONS[_A.REQUEST_MATERIAL]
    returned = apply(reach(R, Status.FIRST_REVIEWED), G, Return("not_registered_here", "查无此人"), at(20))
    assert returned.return_reason == "not_registered_here"


def test_transfer_moves_the_case_to_the_new_registration_node() -> None:
    state = apply(reach(R, Status.FIRST_REVIEWED), G, Transfer("gz-zhijin", "520524"), at(20))
    assert (state.registration_node, state.registration_division) == ("gz-zhijin", "520524")
    assert state.history[-1].registration_node == "gz-zhijin"
    assert state.case.registration_node == "sc-nanbu"  # the case keeps where it was first pushed


# --- routing a transfer --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def divisions() -> DivisionTable:
    return DivisionTable.load_default()


ROUTES: dict[str, tuple[str, str | None, str | type[Exception]]] = {
    "current_code_stays": ("511321", None, "511321"),
    "retired_jiangbei_goes_to_liangjiang": ("500105", None, "500157"),
    "retired_yubei_is_ambiguous": ("500112", None, AmbiguousSuccessor),
    "retired_yubei_with_the_record_naming_beibei": ("500112", "500109", "500109"),
    "never_existed": ("999999", None, InvalidDivisionCode),
    "province_code_is_not_a_route": ("500000", None, InvalidDivisionCode),
}


@pytest.mark.parametrize(("division", "hint", "expected"), ROUTES.values(), ids=ROUTES.keys())
def test_route_registration(
    divisions: DivisionTable, division: str, hint: str | None, expected: str | type[Exception]
) -> None:
    if isinstance(expected, str):
        assert route_registration(division, divisions, hint=hint) == expected
    else:
        with pytest.raises(expected):
            route_registration(division, divisions, hint=hint)


# --- the docs table ------------------------------------------------------------------------------


def test_docs_table_matches_the_lifecycle() -> None:
    docs = (ROOT / "docs" / "case-lifecycle.md").read_text(encoding="utf-8")
    assert docs == render_markdown(), "docs/case-lifecycle.md is stale: run `tongban cases render-docs`"


def test_render_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "case-lifecycle.md"
    assert main(["cases", "render-docs", "--out", str(out), "--check"]) == 1
    assert main(["cases", "render-docs", "--out", str(out)]) == 0
    assert main(["cases", "render-docs", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert main(["cases", "render-docs", "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
