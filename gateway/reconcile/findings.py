"""Findings of a period's reconciliation (SPEC §5): a pure function of what the node knows.

Every county node plays two roles in one run. As the **registration place** (户籍地) it has matched
each residence node's complete roster against its own ledger (one :class:`PeerMatch` per sender);
as the **residence place** (居住地) it has received the registration nodes' answers to its own
notices (one :class:`Answers` per registration node). :func:`reconcile` turns those, the facts of
its own ledger and which rosters arrived, into

* **findings** — one row per thing a person should know, naming the local record (``record_ref``)
  and/or the peer's reference (``peer_ref``: a notice reference, a registration reference or a
  roster id), the peer node and its division, and a ``detail`` of codes and counts — never a name,
  an ID number or a birth date;
* **replies** — the ``match_result`` answers this node owes each sender, one per notice.

The rules, in the words of :class:`Code`:

==================================  =====================================================================
as registration place               (a link is a pair the matcher proposed between a ledger record and a notice)
==================================  =====================================================================
``matched``                         an automatic link with no discrepancy
``review``                          a link below the automatic bar (or an ID held twice): a person decides;
                                    ``detail`` holds the matcher's per-field hints and score, no values
``living_here_recorded_left_behind``  an automatic link to a record of a left-behind child (留守, at home)
``claimed_by_two``                  one record linked automatically by notices of two residence nodes
                                    (one finding per link; the reply says ``claimed_elsewhere``)
``inconsistent_identifier``         an exact ID-token link whose birth year-month or sex disagree (the reply
                                    says ``probable``: not auto-linked), or a fuzzy link where one side has a
                                    valid ID and the other none
``not_in_ledger``                   a notice linked to nothing (reply ``not_found``)
``gone_but_absent``                 a record of a child gone to county X, X's complete roster arrived, and no
                                    notice of it is linked to the record
``roster_missing``                  records of children gone to X, and no roster from X at all (one finding per
                                    county, with the count): **missing, never "no children"**
``roster_incomplete``               a roster that arrived incomplete (one finding per roster)
==================================  =====================================================================

As residence place, from each answer: ``matched``; ``review`` (probable / possible);
``living_here_recorded_left_behind`` (ledger status left-behind); ``claimed_by_two`` (claimed
elsewhere); ``not_in_ledger`` (not found: the registration place does not know the child); and
``results_missing`` for a registration county that has not answered all of this node's notices.
Every role: ``invalid_identifier`` for each own ledger record without a valid ID number.

An automatic link can carry several findings (left-behind *and* claimed twice); ``matched`` is
given only when there is nothing else to say, so a report of findings other than ``matched`` and
``review`` is the list of discrepancies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.domain.records import ChildKind, Sex
from gateway.matching import Band, Link, Thresholds
from gateway.matching import MatchResult as Links
from gateway.wire import LedgerStatus, MatchOutcome, MatchResult


class Code(StrEnum):
    MATCHED = "matched"
    REVIEW = "review"
    LIVING_HERE_RECORDED_LEFT_BEHIND = "living_here_recorded_left_behind"
    GONE_BUT_ABSENT = "gone_but_absent"
    CLAIMED_BY_TWO = "claimed_by_two"
    ROSTER_MISSING = "roster_missing"
    ROSTER_INCOMPLETE = "roster_incomplete"
    RESULTS_MISSING = "results_missing"
    NOT_IN_LEDGER = "not_in_ledger"
    INVALID_IDENTIFIER = "invalid_identifier"
    INCONSISTENT_IDENTIFIER = "inconsistent_identifier"


class Role(StrEnum):
    """The role this node played for a finding."""

    REGISTRATION = "registration"  # 户籍地: it matched a sender's roster against its ledger
    RESIDENCE = "residence"  # 居住地: it read a registration node's answers to its notices
    LEDGER = "ledger"  # its own ledger, whatever the role (identifiers)


class Side(StrEnum):
    """Whose records a finding concerns."""

    LOCAL = "local"  # this node's ledger
    PEER = "peer"  # the peer's roster or notices
    BOTH = "both"  # a disagreement between the two


@dataclass(frozen=True)
class Finding:
    """One finding. No personal data: references, codes, counts."""

    code: Code
    role: Role
    side: Side
    peer: str = ""  # the peer node id ("" when no node serves the peer division)
    peer_division: str = ""
    record_ref: str = ""  # this node's record id
    peer_ref: str = ""  # the peer's notice reference, registration reference or roster id
    detail: str = ""  # hints, reasons and counts (never a value of a record)


# Labels of the report (Chinese for the county staff, English beside them). ``{county}`` is the
# peer division's name. A role-specific label wins over the general one.
LABELS: Mapping[tuple[Code, Role | None], tuple[str, str]] = {
    (Code.MATCHED, None): ("已匹配", "matched"),
    (Code.REVIEW, None): ("待人工核对", "for a person to review"),
    (Code.LIVING_HERE_RECORDED_LEFT_BEHIND, None): (
        "流入地报告在此居住但户籍地登记为留守",
        "reported living at the residence place but recorded as left-behind at home",
    ),
    (Code.GONE_BUT_ABSENT, None): (
        "户籍地登记外出至{county}但{county}名册中无此儿童",
        "recorded as gone to {county} but absent from its complete roster",
    ),
    (Code.CLAIMED_BY_TWO, None): ("被两个流入地同时报告", "claimed by two residence places"),
    (Code.ROSTER_MISSING, None): ("未收到{county}名册", "no roster received from {county}"),
    (Code.ROSTER_INCOMPLETE, None): ("{county}名册不完整", "incomplete roster from {county}"),
    (Code.RESULTS_MISSING, None): ("未收到{county}比对结果", "no match results from {county} for every notice"),
    (Code.NOT_IN_LEDGER, None): (
        "流入地报告的儿童不在本地台账中",
        "a child the residence place reported is not in this ledger",
    ),
    (Code.NOT_IN_LEDGER, Role.RESIDENCE): (
        "户籍地台账中无此儿童",
        "child not known at the registration place",
    ),
    (Code.INVALID_IDENTIFIER, None): ("身份证号缺失或无效", "ID number missing or invalid"),
    (Code.INCONSISTENT_IDENTIFIER, None): (
        "身份证号与出生年月、性别或对方记录不一致",
        "ID number inconsistent with birth month, sex or the other record",
    ),
}


def label(code: Code, role: Role, county: str = "") -> tuple[str, str]:
    """``(Chinese, English)`` label of a finding, with ``{county}`` filled in."""
    zh, en = LABELS.get((code, role)) or LABELS[(code, None)]
    county = county or "对方县"
    return zh.format(county=county), en.format(county=county)


# --- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFact:
    """What reconciliation needs of one own ledger record (no name, no ID number)."""

    record_id: str
    kind: ChildKind
    registration_division: str
    residence_division: str
    valid_id: bool
    sex: Sex
    birth_year_month: str


@dataclass(frozen=True)
class NoticeFact:
    """What a received notice said, beside its encodings (which only the matcher reads)."""

    notice_ref: str
    has_token: bool
    sex: Sex
    birth_year_month: str


def _record_ref(record_id: str) -> str:
    return record_id


@dataclass(frozen=True)
class PeerMatch:
    """One sender's latest complete roster, matched: ``links`` left refs are own record ids, right
    refs notice references. ``registration_ref`` makes the opaque reference a reply carries."""

    peer: str
    peer_division: str
    roster_id: str
    links: Links
    notices: Mapping[str, NoticeFact]
    registration_ref: Callable[[str], str] = _record_ref


@dataclass(frozen=True)
class RosterProblem:
    """A roster that arrived incomplete (``detail``: what is missing, counts only)."""

    peer: str
    peer_division: str
    roster_id: str
    detail: str


@dataclass(frozen=True)
class Answers:
    """A registration node's answers to this node's notices (the latest per notice)."""

    peer: str
    peer_division: str
    results: Sequence[MatchResult]


@dataclass(frozen=True)
class Reply:
    """The answers owed to one sender for its roster."""

    peer: str
    roster_id: str
    results: tuple[MatchResult, ...]


@dataclass(frozen=True)
class Reconciliation:
    findings: tuple[Finding, ...]
    replies: tuple[Reply, ...] = field(default=())

    def counts(self) -> dict[Code, int]:
        out: dict[Code, int] = defaultdict(int)
        for f in self.findings:
            out[f.code] += 1
        return dict(out)


# --- the rules -----------------------------------------------------------------------------------


def _ledger_status(fact: LedgerFact, own_division: str) -> LedgerStatus:
    if fact.kind is ChildKind.LEFT_BEHIND:
        return LedgerStatus.LEFT_BEHIND
    if fact.kind is ChildKind.MIGRANT or fact.residence_division != own_division:
        return LedgerStatus.MIGRANT
    return LedgerStatus.NEITHER


def _inconsistency(link: Link, record: LedgerFact, notice: NoticeFact) -> str:
    """Why a link's identifiers disagree ("" when they do not): codes, never values."""
    if link.stage == "exact":
        reasons = []
        if record.birth_year_month != notice.birth_year_month:
            reasons.append("birth_year_month")
        if record.sex is not notice.sex:
            reasons.append("sex")
        return "exact_id_token_but:" + ",".join(reasons) if reasons else ""
    if record.valid_id != notice.has_token:
        return "id_on_one_side_only:" + ("local" if record.valid_id else "peer")
    return ""


def _hints(link: Link) -> str:
    hints = ",".join(f"{k}={v}" for k, v in sorted(link.hints.items()))
    return f"stage={link.stage} score={link.score:.3f} {hints}"


HINT_FIELDS = frozenset({"name", "birth", "sex"})
HINT_LEVELS = frozenset({"agree", "partial", "disagree", "unknown"})
_STAGES = frozenset({"exact", "fuzzy"})
_OUTCOMES = frozenset({MatchOutcome.PROBABLE.value, MatchOutcome.POSSIBLE.value})


@dataclass(frozen=True)
class MatchHints:
    """What the ``detail`` of a ``matched`` or ``review`` finding says about its link."""

    stage: str = ""
    score: float | None = None
    hints: Mapping[str, str] = field(default_factory=dict)
    outcome: str = ""


def parse_hints(detail: str) -> MatchHints:
    """Read back what :func:`_hints` (registration role) or the residence role's ``outcome=…`` wrote.

    Fails closed: only the known keys with known values are kept (``stage`` exact/fuzzy, ``score``
    a number in [0, 1], ``outcome`` probable/possible, a field of :data:`HINT_FIELDS` with a level of
    :data:`HINT_LEVELS`); anything else in the text is dropped, never passed on."""
    stage, score, outcome = "", None, ""
    hints: dict[str, str] = {}
    for token in detail.replace(",", " ").split():
        key, sep, value = token.partition("=")
        if not sep:
            continue
        if key == "stage" and value in _STAGES:
            stage = value
        elif key == "score":
            try:
                number = float(value)
            except ValueError:
                continue
            if 0.0 <= number <= 1.0:
                score = number
        elif key == "outcome" and value in _OUTCOMES:
            outcome = value
        elif key in HINT_FIELDS and value in HINT_LEVELS:
            hints[key] = value
    return MatchHints(stage, score, hints, outcome)


def _review_outcome(link: Link, thresholds: Thresholds) -> MatchOutcome:
    # Probable: an exact ID held twice, or a score that reached the automatic bar but lost on the
    # margin (twins, siblings); possible: a score below the automatic bar.
    return MatchOutcome.PROBABLE if link.stage == "exact" or link.score >= thresholds.auto else MatchOutcome.POSSIBLE


def _as_registration(
    own_division: str,
    ledger: Mapping[str, LedgerFact],
    matches: Sequence[PeerMatch],
    incomplete: Sequence[RosterProblem],
    node_for_division: Mapping[str, str],
    thresholds: Thresholds,
) -> tuple[list[Finding], list[Reply]]:
    findings: list[Finding] = []
    replies: list[Reply] = []
    claimed: dict[str, set[str]] = defaultdict(set)  # record id -> peers with an automatic link
    linked: dict[str, set[str]] = defaultdict(set)  # record id -> peers with any link
    for pm in matches:
        for link in pm.links.links:
            linked[str(link.left)].add(pm.peer)
            if link.band is Band.MATCHED:
                claimed[str(link.left)].add(pm.peer)

    for pm in matches:
        results: list[MatchResult] = []

        def add(code: Code, side: Side, record: str = "", ref: str = "", detail: str = "", pm: PeerMatch = pm) -> None:
            findings.append(Finding(code, Role.REGISTRATION, side, pm.peer, pm.peer_division, record, ref, detail))

        for link in pm.links.links:
            record_id, notice_ref = str(link.left), str(link.right)
            record, notice = ledger[record_id], pm.notices[notice_ref]
            reason = _inconsistency(link, record, notice)
            status = _ledger_status(record, own_division)
            reg_ref = pm.registration_ref(record_id)
            if link.band is Band.REVIEW:
                add(Code.REVIEW, Side.BOTH, record_id, notice_ref, _hints(link))
                if reason:
                    add(Code.INCONSISTENT_IDENTIFIER, Side.BOTH, record_id, notice_ref, reason)
                results.append(MatchResult(notice_ref, _review_outcome(link, thresholds), status, reg_ref))
                continue
            others = sorted(claimed[record_id] - {pm.peer})
            said = False
            if others:
                add(Code.CLAIMED_BY_TWO, Side.BOTH, record_id, notice_ref, "also_claimed_by:" + ",".join(others))
                said = True
            if reason:
                add(Code.INCONSISTENT_IDENTIFIER, Side.BOTH, record_id, notice_ref, reason)
                said = True
            if record.kind is ChildKind.LEFT_BEHIND:
                add(Code.LIVING_HERE_RECORDED_LEFT_BEHIND, Side.BOTH, record_id, notice_ref)
                said = True
            if not said:
                add(Code.MATCHED, Side.BOTH, record_id, notice_ref, _hints(link))
            # An exact token whose birth month or sex disagree is not auto-linked: a person decides.
            outcome = MatchOutcome.PROBABLE if reason and link.stage == "exact" else MatchOutcome.MATCHED
            claimed_elsewhere = bool(others) and outcome is MatchOutcome.MATCHED
            results.append(MatchResult(notice_ref, outcome, status, reg_ref, claimed_elsewhere=claimed_elsewhere))
        for unmatched in pm.links.unmatched_right:
            add(Code.NOT_IN_LEDGER, Side.PEER, ref=str(unmatched))
            results.append(MatchResult(str(unmatched), MatchOutcome.NOT_FOUND))
        replies.append(Reply(pm.peer, pm.roster_id, tuple(results)))

    # Children recorded as gone to another county: in that county's complete roster, or not?
    complete = {pm.peer for pm in matches}
    gone: dict[str, list[str]] = defaultdict(list)  # division -> record ids
    for record in ledger.values():
        if record.residence_division != own_division:
            gone[record.residence_division].append(record.record_id)
    problems_by_peer: dict[str, list[RosterProblem]] = defaultdict(list)
    for problem in incomplete:
        problems_by_peer[problem.peer].append(problem)
    reported_incomplete: set[str] = set()
    for division, record_ids in sorted(gone.items()):
        peer = node_for_division.get(division, "")
        if peer and peer in complete:
            for record_id in sorted(record_ids):
                if peer not in linked[record_id]:
                    findings.append(
                        Finding(Code.GONE_BUT_ABSENT, Role.REGISTRATION, Side.BOTH, peer, division, record_id)
                    )
            continue
        count = f"{len(record_ids)} children recorded as gone there"
        if peer and problems_by_peer.get(peer):
            for problem in problems_by_peer[peer]:
                findings.append(
                    Finding(
                        Code.ROSTER_INCOMPLETE, Role.REGISTRATION, Side.PEER, peer, division, "",
                        problem.roster_id, f"{problem.detail}; {count}",
                    )
                )  # fmt: skip
            reported_incomplete.add(peer)
            continue
        detail = count if peer else f"{count}; no active node serves this division"
        findings.append(Finding(Code.ROSTER_MISSING, Role.REGISTRATION, Side.PEER, peer, division, detail=detail))
    for problem in incomplete:
        if problem.peer not in reported_incomplete:
            findings.append(
                Finding(
                    Code.ROSTER_INCOMPLETE, Role.REGISTRATION, Side.PEER, problem.peer, problem.peer_division, "",
                    problem.roster_id, problem.detail,
                )
            )  # fmt: skip
    return findings, replies


def _as_residence(
    own_division: str,
    ledger: Mapping[str, LedgerFact],
    answers: Sequence[Answers],
    node_for_division: Mapping[str, str],
) -> list[Finding]:
    findings: list[Finding] = []
    answered: set[str] = set()
    for a in answers:

        def add(code: Code, side: Side, record: str, ref: str = "", detail: str = "", a: Answers = a) -> None:
            findings.append(Finding(code, Role.RESIDENCE, side, a.peer, a.peer_division, record, ref, detail))

        for r in a.results:
            answered.add(r.notice_ref)
            if r.outcome is MatchOutcome.NOT_FOUND:
                add(Code.NOT_IN_LEDGER, Side.BOTH, r.notice_ref)
            elif r.outcome is not MatchOutcome.MATCHED:
                add(Code.REVIEW, Side.BOTH, r.notice_ref, r.registration_ref, f"outcome={r.outcome.value}")
            else:
                said = False
                if r.claimed_elsewhere:
                    add(Code.CLAIMED_BY_TWO, Side.BOTH, r.notice_ref, r.registration_ref)
                    said = True
                if r.ledger_status is LedgerStatus.LEFT_BEHIND:
                    add(Code.LIVING_HERE_RECORDED_LEFT_BEHIND, Side.BOTH, r.notice_ref, r.registration_ref)
                    said = True
                if not said:
                    add(Code.MATCHED, Side.BOTH, r.notice_ref, r.registration_ref)
    # The notices this node owes an answer for: its migrant children registered elsewhere.
    expected: dict[str, list[str]] = defaultdict(list)
    for record in ledger.values():
        if record.kind is ChildKind.MIGRANT and record.registration_division != own_division:
            expected[record.registration_division].append(record.record_id)
    for division, record_ids in sorted(expected.items()):
        missing = [r for r in record_ids if r not in answered]
        if missing:
            peer = node_for_division.get(division, "")
            detail = f"{len(missing)} of {len(record_ids)} children without an answer"
            if not peer:
                detail += "; no active node serves this division"
            findings.append(Finding(Code.RESULTS_MISSING, Role.RESIDENCE, Side.PEER, peer, division, detail=detail))
    return findings


def reconcile(
    *,
    own_division: str,
    ledger: Iterable[LedgerFact],
    matches: Sequence[PeerMatch] = (),
    incomplete: Sequence[RosterProblem] = (),
    answers: Sequence[Answers] = (),
    node_for_division: Mapping[str, str] | None = None,
    thresholds: Thresholds | None = None,
) -> Reconciliation:
    """The findings and replies of one node for one period (see the module docstring).

    ``ledger`` is every own record of the period; ``matches`` the senders' latest complete rosters
    as matched; ``incomplete`` the rosters that did not complete; ``answers`` what registration
    nodes said about this node's notices; ``node_for_division`` the active node serving each
    division (from the directory). Deterministic: findings come in a stable order.
    """
    facts = {f.record_id: f for f in ledger}
    nodes = node_for_division or {}
    t = thresholds or Thresholds()
    findings = [
        Finding(Code.INVALID_IDENTIFIER, Role.LEDGER, Side.LOCAL, record_ref=f.record_id)
        for f in sorted(facts.values(), key=lambda f: f.record_id)
        if not f.valid_id
    ]
    registration, replies = _as_registration(own_division, facts, matches, incomplete, nodes, t)
    findings += registration
    findings += _as_residence(own_division, facts, answers, nodes)
    return Reconciliation(tuple(findings), tuple(replies))
