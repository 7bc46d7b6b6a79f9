"""The case lifecycle: a pure state machine written as a table (SPEC §6).

:data:`TRANSITIONS` lists every move a case may make: **from** a state, by a **role**, through an
**action**, **to** a state, for which programme family. Anything not in the table is refused with
:class:`~gateway.errors.IllegalTransition` — the table is an allow-list, so a state, role or action
added later is refused until a row names it (fail closed). ``docs/case-lifecycle.md`` is rendered
from the same table (:func:`render_markdown`, ``tongban cases render-docs``).

Roles (who acts; every county node plays both node roles, for different cases):

* ``residence_staff`` — applicant-facing staff at the residence place (受理窗口): accept, tell the
  applicant the result, withdraw at the applicant's request;
* ``residence_node`` — the accepting node: push the case, send the resubmitted material, close;
* ``registration_node`` — the node of the registration place (户籍地) that decides.

The main line is accepted (受理) → pushed → received → [material requested ↔ resubmitted] →
(recognition only: township first review 乡镇初审) → decided → result delivered → applicant notified
→ closed; the side branches are returned (退回), transferred (转办, the 户籍 moved) and withdrawn.

**Material is requested once, in full (一次性告知).** The registration node may request material
only from ``received``, with the complete list of what is missing, and at most **once per case** —
across transfers too: :class:`~gateway.errors.MaterialAlreadyRequested` for a second request. So a
case goes through at most one request → resubmission cycle; a registration node that still lacks
something after the resubmission decides "not approved" (``evidence_missing``) or returns the case.

Guards beyond the table, each its own error: the action's time must be timezone-aware and not
before the case's last event (:class:`~gateway.errors.EventOutOfOrder`); acceptance happens on the
case's acceptance date; an approval names the month payment starts (not before the acceptance
month); a rejection or return cites a reason code allowed for it (:class:`~gateway.errors.
UnknownReasonCode`) with a text; a transfer names a different registration node and a six-digit
division. :func:`apply` returns the new state and never mutates the old one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import ClassVar

from gateway.cases.reasons import ReasonAction, ReasonTable, default_reasons
from gateway.cases.types import Case, EvidenceKind, Programme, ProgrammeFamily
from gateway.domain.divisions import DivisionTable
from gateway.errors import EventOutOfOrder, IllegalTransition, InvalidCase, MaterialAlreadyRequested

#: China Standard Time (no daylight saving since 1991): every date of a case is a date here.
CHINA = timezone(timedelta(hours=8), "CST")

MAX_REASON_TEXT = 500


def china_date(moment: datetime) -> date:
    """The calendar date of ``moment`` in China Standard Time; a naive datetime is refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise EventOutOfOrder("the time has no time zone")
    return moment.astimezone(CHINA).date()


class Status(StrEnum):
    NEW = "new"  # created, not yet accepted
    ACCEPTED = "accepted"  # 已受理
    PUSHED = "pushed"  # 已推送至户籍地
    RECEIVED = "received"  # 户籍地已接收
    MATERIAL_REQUESTED = "material_requested"  # 一次性告知补正
    RESUBMITTED = "resubmitted"  # 已补正
    FIRST_REVIEWED = "first_reviewed"  # 乡镇(街道)已初审 (recognition only)
    DECIDED = "decided"  # 已审批 (approved or not)
    RESULT_DELIVERED = "result_delivered"  # 结果已反馈受理地
    APPLICANT_NOTIFIED = "applicant_notified"  # 已告知申请人
    RETURNED = "returned"  # 已退回
    TRANSFERRED = "transferred"  # 已转办至新户籍地
    WITHDRAWN = "withdrawn"  # 已撤回
    CLOSED = "closed"  # 已办结归档

    @property
    def label_zh(self) -> str:
        return _STATUS_LABELS[self]


_STATUS_LABELS: dict[Status, str] = {
    Status.NEW: "新建",
    Status.ACCEPTED: "已受理",
    Status.PUSHED: "已推送",
    Status.RECEIVED: "已接收",
    Status.MATERIAL_REQUESTED: "一次性告知补正",
    Status.RESUBMITTED: "已补正",
    Status.FIRST_REVIEWED: "乡镇已初审",
    Status.DECIDED: "已审批",
    Status.RESULT_DELIVERED: "结果已反馈",
    Status.APPLICANT_NOTIFIED: "已告知申请人",
    Status.RETURNED: "已退回",
    Status.TRANSFERRED: "已转办",
    Status.WITHDRAWN: "已撤回",
    Status.CLOSED: "已归档",
}


class Role(StrEnum):
    RESIDENCE_STAFF = "residence_staff"  # 居住地受理窗口
    RESIDENCE_NODE = "residence_node"  # 居住地 (accepting) node
    REGISTRATION_NODE = "registration_node"  # 户籍地 node

    @property
    def label_zh(self) -> str:
        return {"residence_staff": "居住地受理人员", "residence_node": "居住地节点", "registration_node": "户籍地节点"}[
            self.value
        ]


class ActionKind(StrEnum):
    ACCEPT = "accept"  # 受理
    PUSH = "push"  # 推送
    RECEIVE = "receive"  # 接收
    REQUEST_MATERIAL = "request_material"  # 一次性告知补正
    RESUBMIT = "resubmit"  # 补正材料
    FIRST_REVIEW = "first_review"  # 乡镇初审
    APPROVE = "approve"  # 批准/认定
    REJECT = "reject"  # 不予批准
    DELIVER_RESULT = "deliver_result"  # 反馈结果
    NOTIFY_APPLICANT = "notify_applicant"  # 告知申请人
    RETURN = "return"  # 退回
    TRANSFER = "transfer"  # 转办
    WITHDRAW = "withdraw"  # 撤回
    CLOSE = "close"  # 归档


# --- actions (what a role does, with the facts the action carries) -------------------------------


@dataclass(frozen=True)
class Accept:
    kind: ClassVar[ActionKind] = ActionKind.ACCEPT


@dataclass(frozen=True)
class Push:
    kind: ClassVar[ActionKind] = ActionKind.PUSH


@dataclass(frozen=True)
class Receive:
    kind: ClassVar[ActionKind] = ActionKind.RECEIVE


@dataclass(frozen=True)
class RequestMaterial:
    """The one complete list of what is missing (一次性告知): at least one item, none twice."""

    items: tuple[EvidenceKind, ...]
    note: str = ""
    kind: ClassVar[ActionKind] = ActionKind.REQUEST_MATERIAL


@dataclass(frozen=True)
class Resubmit:
    kind: ClassVar[ActionKind] = ActionKind.RESUBMIT


@dataclass(frozen=True)
class FirstReview:
    kind: ClassVar[ActionKind] = ActionKind.FIRST_REVIEW


@dataclass(frozen=True)
class Approve:
    """Approved; payment starts in the month of ``payment_from`` (the first day of that month)."""

    payment_from: date
    kind: ClassVar[ActionKind] = ActionKind.APPROVE


@dataclass(frozen=True)
class Reject:
    """Not approved, with a reason code (``case_reasons.toml``, action ``reject``) and a text."""

    reason_code: str
    text: str = field(repr=False)
    kind: ClassVar[ActionKind] = ActionKind.REJECT


@dataclass(frozen=True)
class DeliverResult:
    kind: ClassVar[ActionKind] = ActionKind.DELIVER_RESULT


@dataclass(frozen=True)
class NotifyApplicant:
    kind: ClassVar[ActionKind] = ActionKind.NOTIFY_APPLICANT


@dataclass(frozen=True)
class Return:
    """Returned to the accepting place, with a reason code (action ``return``) and a text."""

    reason_code: str
    text: str = field(repr=False)
    kind: ClassVar[ActionKind] = ActionKind.RETURN


@dataclass(frozen=True)
class Transfer:
    """The 户籍 moved: the case follows the child to ``to_node`` (see :func:`route_registration`)."""

    to_node: str
    to_division: str
    kind: ClassVar[ActionKind] = ActionKind.TRANSFER


@dataclass(frozen=True)
class Withdraw:
    kind: ClassVar[ActionKind] = ActionKind.WITHDRAW


@dataclass(frozen=True)
class Close:
    kind: ClassVar[ActionKind] = ActionKind.CLOSE


Action = (
    Accept
    | Push
    | Receive
    | RequestMaterial
    | Resubmit
    | FirstReview
    | Approve
    | Reject
    | DeliverResult
    | NotifyApplicant
    | Return
    | Transfer
    | Withdraw
    | Close
)

# --- the table ----------------------------------------------------------------------------------

BOTH = frozenset(ProgrammeFamily)
RECOGNITION = frozenset({ProgrammeFamily.RECOGNITION})
SUBSIDY = frozenset({ProgrammeFamily.SUBSIDY})


@dataclass(frozen=True)
class Rule:
    """One allowed move: ``role`` may take ``action`` from ``source`` to ``target`` for ``families``."""

    source: Status
    role: Role
    action: ActionKind
    target: Status
    families: frozenset[ProgrammeFamily]


def _rules(
    sources: Iterable[Status],
    role: Role,
    action: ActionKind,
    target: Status,
    families: frozenset[ProgrammeFamily] = BOTH,
) -> list[Rule]:
    return [Rule(s, role, action, target, families) for s in sources]


_S, _N, _G = Role.RESIDENCE_STAFF, Role.RESIDENCE_NODE, Role.REGISTRATION_NODE
_A = ActionKind

#: Every allowed transition. Read it as: from SOURCE, ROLE may ACTION, giving TARGET.
TRANSITIONS: tuple[Rule, ...] = tuple(
    _rules([Status.NEW], _S, _A.ACCEPT, Status.ACCEPTED)
    + _rules([Status.ACCEPTED], _N, _A.PUSH, Status.PUSHED)
    # A transferred case is received by its new registration node like a pushed one.
    + _rules([Status.PUSHED, Status.TRANSFERRED], _G, _A.RECEIVE, Status.RECEIVED)
    + _rules([Status.RECEIVED], _G, _A.REQUEST_MATERIAL, Status.MATERIAL_REQUESTED)
    + _rules([Status.MATERIAL_REQUESTED], _N, _A.RESUBMIT, Status.RESUBMITTED)
    + _rules([Status.RECEIVED, Status.RESUBMITTED], _G, _A.FIRST_REVIEW, Status.FIRST_REVIEWED, RECOGNITION)
    + _rules([Status.FIRST_REVIEWED], _G, _A.APPROVE, Status.DECIDED, RECOGNITION)
    + _rules([Status.FIRST_REVIEWED], _G, _A.REJECT, Status.DECIDED, RECOGNITION)
    + _rules([Status.RECEIVED, Status.RESUBMITTED], _G, _A.APPROVE, Status.DECIDED, SUBSIDY)
    + _rules([Status.RECEIVED, Status.RESUBMITTED], _G, _A.REJECT, Status.DECIDED, SUBSIDY)
    + _rules([Status.DECIDED], _G, _A.DELIVER_RESULT, Status.RESULT_DELIVERED)
    + _rules([Status.RESULT_DELIVERED, Status.RETURNED], _S, _A.NOTIFY_APPLICANT, Status.APPLICANT_NOTIFIED)
    + _rules([Status.APPLICANT_NOTIFIED, Status.WITHDRAWN], _N, _A.CLOSE, Status.CLOSED)
    # Side branches. Return: not ours, or the requested material never came (逾期未补正).
    + _rules([Status.RECEIVED, Status.MATERIAL_REQUESTED, Status.RESUBMITTED], _G, _A.RETURN, Status.RETURNED)
    + _rules([Status.FIRST_REVIEWED], _G, _A.RETURN, Status.RETURNED, RECOGNITION)
    # Transfer: not while material is outstanding (the request belongs to the node that made it).
    + _rules([Status.RECEIVED, Status.RESUBMITTED], _G, _A.TRANSFER, Status.TRANSFERRED)
    + _rules([Status.FIRST_REVIEWED], _G, _A.TRANSFER, Status.TRANSFERRED, RECOGNITION)
    # Withdraw at the applicant's request, until the case is decided.
    + _rules(
        [
            Status.ACCEPTED,
            Status.PUSHED,
            Status.RECEIVED,
            Status.MATERIAL_REQUESTED,
            Status.RESUBMITTED,
            Status.TRANSFERRED,
        ],
        _S,
        _A.WITHDRAW,
        Status.WITHDRAWN,
    )
    + _rules([Status.FIRST_REVIEWED], _S, _A.WITHDRAW, Status.WITHDRAWN, RECOGNITION)
)

TERMINAL = frozenset({Status.CLOSED})


def allowed(family: ProgrammeFamily) -> dict[tuple[Status, Role, ActionKind], Status]:
    """The table for one programme family as ``(source, role, action) -> target``."""
    table: dict[tuple[Status, Role, ActionKind], Status] = {}
    for rule in TRANSITIONS:
        if family in rule.families:
            key = (rule.source, rule.role, rule.action)
            if key in table:  # pragma: no cover - guarded by a test; the table must be a function
                raise AssertionError(f"duplicate transition {key}")
            table[key] = rule.target
    return table


_ALLOWED: dict[ProgrammeFamily, dict[tuple[Status, Role, ActionKind], Status]] = {
    family: allowed(family) for family in ProgrammeFamily
}


# --- state and history --------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One applied transition: the history both ends keep and the clocks are computed from."""

    action: ActionKind
    role: Role
    source: Status
    target: Status
    at: datetime  # timezone-aware
    registration_node: str  # the registration node after the event

    @property
    def on(self) -> date:
        """The event's date in China Standard Time."""
        return china_date(self.at)


@dataclass(frozen=True)
class Decision:
    approved: bool
    payment_from: date | None = None  # approved: first day of the month payment starts
    reason_code: str | None = None  # not approved
    text: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CaseState:
    """Where a case stands. Build the first one with :func:`new_state`; only :func:`apply` makes others."""

    case: Case
    status: Status
    registration_node: str
    registration_division: str
    history: tuple[Event, ...] = ()
    material_request: RequestMaterial | None = None
    decision: Decision | None = None
    return_reason: str | None = None

    @property
    def material_requested(self) -> bool:
        return any(e.action is ActionKind.REQUEST_MATERIAL for e in self.history)


def new_state(case: Case) -> CaseState:
    """A case before acceptance: status ``new``, no history."""
    return CaseState(case, Status.NEW, case.registration_node, case.registration_division)


def _first_of_month(day: date) -> date:
    return day.replace(day=1)


def apply(
    state: CaseState,
    role: Role,
    action: Action,
    now: datetime,
    *,
    reasons: ReasonTable | None = None,
) -> CaseState:
    """Apply ``action`` taken by ``role`` at ``now``; return the new state or raise.

    Checked, in order:

    1. ``now`` is timezone-aware and not before the last event — :class:`EventOutOfOrder`;
    2. the table allows (state, role, action) for the case's programme family — else
       :class:`~gateway.errors.IllegalTransition` (the message names state, role and action only);
    3. the action's own rule: a second material request — :class:`~gateway.errors.
       MaterialAlreadyRequested`; an empty or repeated item list, an acceptance on another day than
       the acceptance date, a payment month that is not a first of month or is before the
       acceptance month, an empty reason text, a transfer to the same node or to a malformed
       division — :class:`~gateway.errors.InvalidCase`; a reason code not allowed for the action
       and programme — :class:`~gateway.errors.UnknownReasonCode`.

    ``reasons`` defaults to the packaged reason table.
    """
    day = china_date(now)
    if state.history and now < state.history[-1].at:
        raise EventOutOfOrder("the action is dated before the case's last event")
    family = state.case.programme.family
    target = _ALLOWED[family].get((state.status, role, action.kind))
    if target is None:
        if action.kind is ActionKind.REQUEST_MATERIAL and state.material_requested:
            raise MaterialAlreadyRequested()
        raise IllegalTransition(f"{role.value} may not {action.kind.value} a {family.value} case in {state.status}")
    changes: dict[str, object] = {}
    programme = state.case.programme
    match action:
        case Accept():
            if day != state.case.accepted_on:
                raise InvalidCase("a case is accepted on its acceptance date (受理日期)")
        case RequestMaterial(items=items):
            if state.material_requested:
                raise MaterialAlreadyRequested()
            if not items or len(set(items)) != len(items):
                raise InvalidCase("a material request lists every missing item once (一次性告知)")
            changes["material_request"] = action
        case Approve(payment_from=month):
            if month != _first_of_month(month) or isinstance(month, datetime):
                raise InvalidCase("payment_from must be the first day of a month")
            if month < _first_of_month(state.case.accepted_on):
                raise InvalidCase("payment cannot start before the month of acceptance")
            changes["decision"] = Decision(approved=True, payment_from=month)
        case Reject(reason_code=code, text=text):
            (reasons or default_reasons()).require(code, ReasonAction.REJECT, programme)
            changes["decision"] = Decision(approved=False, reason_code=code, text=_reason_text(text))
        case Return(reason_code=code, text=text):
            (reasons or default_reasons()).require(code, ReasonAction.RETURN, programme)
            _reason_text(text)
            changes["return_reason"] = code
        case Transfer(to_node=node, to_division=division):
            if node == state.registration_node or node == state.case.accepting_node:
                raise InvalidCase("a transfer goes to another registration node")
            if not (len(division) == 6 and division.isascii() and division.isdigit()):
                raise InvalidCase("a transfer names a six-digit division code")
            changes["registration_node"] = node
            changes["registration_division"] = division
        case _:
            pass
    event = Event(
        action=action.kind,
        role=role,
        source=state.status,
        target=target,
        at=now,
        registration_node=str(changes.get("registration_node", state.registration_node)),
    )
    return replace(state, status=target, history=(*state.history, event), **changes)  # type: ignore[arg-type]


def _reason_text(text: str) -> str:
    if not text.strip() or len(text) > MAX_REASON_TEXT:
        raise InvalidCase(f"a reason text is 1-{MAX_REASON_TEXT} characters")
    return text


def replay(case: Case, steps: Iterable[tuple[Role, Action, datetime]]) -> CaseState:
    """Apply ``steps`` in order from :func:`new_state` (both ends rebuild a case this way)."""
    state = new_state(case)
    for role, action, now in steps:
        state = apply(state, role, action, now)
    return state


# --- routing a transfer -------------------------------------------------------------------------


def route_registration(division: str, table: DivisionTable, *, hint: str | None = None) -> str:
    """The current registration county for a case whose child is registered in ``division``.

    The division comes from the child's record (never from the ID number's first six digits). A
    current routing code is returned as it is; a retired one follows its successor links through
    :meth:`~gateway.domain.divisions.DivisionTable.resolve`, so a case addressed to 江北区 500105
    goes to 两江新区 500157. Fails closed with the table's errors: ``InvalidDivisionCode`` (never
    existed, or not county-level), ``SuccessorUnknown`` (an operator must add the link) and
    ``AmbiguousSuccessor`` (several successors and ``hint`` — the record's own newer code, when it
    has one — names none of them). The node serving the code is then found in the directory.
    """
    return table.resolve(division, hint=hint)


# --- docs ---------------------------------------------------------------------------------------


def render_markdown(reasons: ReasonTable | None = None) -> str:
    """``docs/case-lifecycle.md``: the transition table, the reason codes and the clocks, generated
    from :data:`TRANSITIONS`, ``case_reasons.toml`` and :mod:`gateway.cases.clock` so that none of
    them is written twice."""
    from gateway.cases.clock import LIMITS, Step

    table = reasons or default_reasons()
    lines = [
        "# Case lifecycle",
        "",
        "<!-- Generated by `tongban cases render-docs` from gateway/cases/lifecycle.py, "
        "gateway/data/case_reasons.toml and gateway/cases/clock.py; do not edit by hand. -->",
        "",
        "A cross-province case (跨省通办, SPEC §6) moves only along the rows below: from a state, one role",
        "takes one action and the case enters the next state. Every other combination of state, role and",
        "action is refused (`illegal_transition`). Material is requested at most **once per case**, with",
        "the complete list (一次性告知): a second request is refused (`material_already_requested`).",
        "",
        "Roles: **residence staff** (居住地受理人员, applicant-facing), **residence node** (居住地节点,",
        "the accepting node), **registration node** (户籍地节点, decides).",
        "",
        "## Transitions",
        "",
        "| from | role | action | to | recognition (孤儿/事实无人抚养) | disability subsidies (两项补贴) |",
        "|---|---|---|---|---|---|",
    ]
    for rule in TRANSITIONS:
        lines.append(
            f"| `{rule.source}` {rule.source.label_zh} | {rule.role.label_zh} `{rule.role}` | `{rule.action}` "
            f"| `{rule.target}` {rule.target.label_zh} "
            f"| {_yes(ProgrammeFamily.RECOGNITION in rule.families)} "
            f"| {_yes(ProgrammeFamily.SUBSIDY in rule.families)} |"
        )
    lines += [
        "",
        '`closed` is terminal. Approval names the month payment starts; a decision "not approved" and a',
        "return cite a reason code from the table below, with a text.",
        "",
        "## Reason codes",
        "",
        "| code | 中文 | English | cited by | programmes |",
        "|---|---|---|---|---|",
    ]
    for r in table.reasons:
        actions = ", ".join(sorted(a.value for a in r.actions))
        programmes = ", ".join(p.value for p in sorted(r.programmes, key=list(Programme).index))
        lines.append(f"| `{r.code}` | {r.zh} | {r.en} | {actions} | {programmes} |")
    lines += [
        "",
        "## Statutory clocks (working days)",
        "",
        "| programme family | step | limit | starts on entering | stops on entering |",
        "|---|---|---:|---|---|",
    ]
    for family, steps in LIMITS.items():
        for step, limit in steps.items():
            lines.append(
                f"| {family.value} | `{step}` {step.label_zh} | {limit} | {_states(step.starts(family))} "
                f"| {_states(step.stops(family))} |"
            )
    lines += [
        "",
        "A clock counts working days (the holiday calendar with make-up days, `gateway/data/holidays.toml`)",
        "after the day it starts: the start day itself is not counted, and the step is due on the day the",
        "count reaches the limit. While material is requested (from the request until the resubmission)",
        f"the `{Step.FIRST_REVIEW}`/`{Step.DECISION}` clock is paused; it resumes the day after the",
        "resubmission with the days already used. A clock that needs a date outside the calendar's years",
        "is an error (`calendar_not_covered`), never a guess. See docs/domain-rules.md (Cases).",
        "",
    ]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "—"


def _states(states: frozenset[Status]) -> str:
    order = list(Status)
    return ", ".join(f"`{s}`" for s in sorted(states, key=order.index))
