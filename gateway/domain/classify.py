"""Is a child migrant (流动), left-behind (留守) or neither, in a given monitoring period? (SPEC §1)

:func:`classify` is pure: the child's facts, the period, the province rule book and the division
table in; a :class:`Classification` out. It reads no clock, so the same inputs always give the same
answer, in any node, in any year.

The definitions
---------------
**流动儿童 (migrant)** — all of:

1. younger than the age limit (16, 不满十六周岁);
2. living outside the county of household registration (户籍地) — "county" meaning *current*
   county, see below — and the move is not one the province exempts;
3. accompanied: the father or mother moved with the child (``WITH_CHILD``, 随迁), or another
   guardian lives with the child (``guardian_with_child``);
4. has lived in the residence county for at least the minimum months (6).

**留守儿童 (left-behind)** — all of:

1. younger than the age limit;
2. living in the registration county (or moved only within an exemption group, see below);
3. both parents ``WORKING_AWAY`` (外出务工), or one working away and the other in a situation that
   lacks guardianship capacity (死亡、失踪、服刑在押、强制隔离戒毒、重病、重残、被撤销监护资格、被遣送 —
   the list is rule data, ``lacks_guardianship_capacity``).

Everyone else is **NEITHER**. Age limit, months and the incapacity list come from the rules of
the province the child *lives* in: migrants are monitored at the residence place (流入地为主), and a
left-behind child lives in the registration province anyway.

Counties and division changes
-----------------------------
Both codes are resolved through ``table.resolve_all`` to the current counties they stand for; a
code whose successor is unknown raises :class:`~gateway.errors.SuccessorUnknown` — never a guess.
The child is **away** only if the two resolved sets are disjoint. If they overlap, the child is
treated as not away (reasons ``NOT_AWAY`` and, when the raw codes differ,
``SAME_COUNTY_AFTER_RECODING``): after Chongqing's Nov 2025 change a child registered in 渝北区
500112 and living in 两江新区 500157 may never have moved at all — most of old 渝北 *is* 两江新区
now — and without proof of a move the child is not counted as having left.

Exempt moves
------------
A move both of whose ends lie in one exemption group of the province (Chongqing's central
districts) does not count as leaving the registration place: the child is not migrant, reason
``EXEMPT_MOVE``. Because the exemption says the child has *not* left the registration place, the
left-behind test then applies as for a child at home: a child who moved from 渝中 to 沙坪坝 to live
with grandparents while both parents work in Guangdong is left-behind (``EXEMPT_MOVE,
BOTH_PARENTS_AWAY``), not dropped from both counts. With a parent at hand the outcome is NEITHER
with ``EXEMPT_MOVE`` among the reasons.

Date conventions
----------------
* **Age is judged on the period's first day.** A child younger than the limit on that day is
  counted for the whole period; when the limit birthday falls inside the period (including on
  its first day, when the child is no longer counted) ``turns_16_on`` gives that date, so a
  ledger can show who ages out. A child born during the period is counted (age 0).
* **Time away is judged on the period's last day**: ``add_months(living_since, 6) <=
  period.end`` (calendar months, clamped at month end, 民法典 第二百零二条). Living since 31 March
  satisfies it on 30 September; living since 1 April does not.
* **Unknown ``living_since`` while away** gives NEITHER with ``LIVING_SINCE_UNKNOWN``: an unknown
  duration never silently counts as migrant, and the code tells the county what to find out.
  (It is ignored for a child who is not away.)
* A parent situation ``UNKNOWN`` never counts as working away or as lacking capacity. When it
  alone stands between the child and the left-behind count, the outcome is NEITHER with
  ``PARENT_SITUATION_UNKNOWN``, again so that the county follows it up.

Order of checks and errors
--------------------------
1. :class:`ChildFacts` checks itself on construction: division codes are six ASCII digits
   (:class:`~gateway.errors.InvalidDivisionCode`); ``living_since`` is not before the birth date
   (:class:`~gateway.errors.InvalidRecord`).
2. Birth date after the period's last day: :class:`~gateway.errors.InvalidRecord`.
3. Both codes resolved (:class:`~gateway.errors.SuccessorUnknown`, or whatever the table raises for
   a code it does not know); residence successors in several provinces raise
   :class:`~gateway.errors.AmbiguousSuccessor`; a residence province without rules raises
   :class:`~gateway.errors.ConfigError`. Data errors are raised whatever the outcome would be,
   even for a child over the age limit, so they are fixed rather than hidden.
4. Age, then location, then the migrant or left-behind test, as above.

``reasons`` traces the evaluation: one code per criterion evaluated, in this order, each saying
how it came out. Reason codes are stable; ``AGED_16_OR_OVER`` and the ``6_MONTHS`` codes are named
after the national values and keep their names where a province overrides the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from gateway.domain.period import MonitoringPeriod, add_months, age_on, nth_birthday
from gateway.domain.records import ChildKind, ParentSituation
from gateway.domain.rules import DivisionResolver, ProvinceRules, RuleBook, resolve_strict
from gateway.errors import AmbiguousSuccessor, InvalidDivisionCode, InvalidRecord


@dataclass(frozen=True)
class ChildFacts:
    """The facts about one child that the classification depends on, and nothing else.

    ``registration_division`` (户籍地) and ``residence_division`` (现居住地) are county-level GB/T
    2260 codes, current or retired. ``living_since`` is the day since which the child lives at the
    residence (``None`` if unknown). ``guardian_with_child`` says that a guardian other than the
    parents lives with the child at the residence.

    Personal dates are excluded from ``repr`` so the facts can appear in an error context.
    """

    birth_date: date = field(repr=False)
    registration_division: str
    residence_division: str
    living_since: date | None = field(repr=False)
    father: ParentSituation
    mother: ParentSituation
    guardian_with_child: bool = False

    def __post_init__(self) -> None:
        for label, code in (
            ("registration_division", self.registration_division),
            ("residence_division", self.residence_division),
        ):
            if len(code) != 6 or not code.isascii() or not code.isdigit():
                raise InvalidDivisionCode(f"{label} must be a six-digit division code")
        if self.living_since is not None and self.living_since < self.birth_date:
            raise InvalidRecord("living_since is before the birth date")


class Reason(StrEnum):
    """Stable codes explaining a classification, in evaluation order."""

    # Age, on the period's first day.
    UNDER_16 = "under_16"
    AGED_16_OR_OVER = "aged_16_or_over"
    # Where the child lives, in current counties.
    NOT_AWAY = "not_away"  # lives in (a county its registration code resolves to)
    SAME_COUNTY_AFTER_RECODING = "same_county_after_recoding"  # codes differ, counties overlap
    EXEMPT_MOVE = "exempt_move"  # moved only within a provincial exemption group
    AWAY_FROM_REGISTRATION = "away_from_registration"
    # Migrant test.
    WITH_PARENT = "with_parent"  # father or mother WITH_CHILD (随迁)
    WITH_GUARDIAN = "with_guardian"  # another guardian lives with the child
    UNACCOMPANIED = "unaccompanied"  # away with neither: a key-care concern, not a migrant count
    AWAY_6_MONTHS_OR_MORE = "away_6_months_or_more"
    AWAY_LESS_THAN_6_MONTHS = "away_less_than_6_months"
    LIVING_SINCE_UNKNOWN = "living_since_unknown"
    # Left-behind test.
    BOTH_PARENTS_AWAY = "both_parents_away"
    ONE_AWAY_OTHER_INCAPABLE = "one_away_other_incapable"
    ONE_AWAY_OTHER_CAPABLE = "one_away_other_capable"
    NO_PARENT_AWAY = "no_parent_away"
    PARENT_SITUATION_UNKNOWN = "parent_situation_unknown"


@dataclass(frozen=True)
class Classification:
    """The outcome: ``kind``, the ``reasons`` trace, and ``turns_16_on`` — the date the child
    reaches the age limit when that date falls inside the period, else ``None``."""

    kind: ChildKind
    reasons: tuple[Reason, ...]
    turns_16_on: date | None = None


def classify(facts: ChildFacts, period: MonitoringPeriod, rules: RuleBook, table: DivisionResolver) -> Classification:
    """Classify one child for one monitoring period.

    See the module docstring for the definitions, the date conventions and the order of checks.
    Raises :class:`~gateway.errors.InvalidRecord` (born after the period),
    :class:`~gateway.errors.SuccessorUnknown` / :class:`~gateway.errors.AmbiguousSuccessor`
    (division codes that cannot be resolved to one province),
    :class:`~gateway.errors.InvalidDivisionCode` (from the table, for a code that never existed) and
    :class:`~gateway.errors.ConfigError` (no rules for the residence province, inconsistent
    exemption data). Never returns a guess.
    """
    if facts.birth_date > period.end:
        raise InvalidRecord(f"the birth date is after the end of monitoring period {period.label}")

    residence_now = resolve_strict(table, facts.residence_division)
    registration_now = resolve_strict(table, facts.registration_division)
    province = _province_of(facts.residence_division, residence_now)
    province_rules = rules.for_province(province)

    limit_birthday = nth_birthday(facts.birth_date, province_rules.age_limit)
    turns_16_on = limit_birthday if limit_birthday in period else None
    # A child born during the period is under any limit on its first day; age_on would refuse a
    # day before the birth.
    if facts.birth_date <= period.start and age_on(facts.birth_date, period.start) >= province_rules.age_limit:
        return Classification(ChildKind.NEITHER, (Reason.AGED_16_OR_OVER,), turns_16_on)
    reasons = [Reason.UNDER_16]

    if residence_now & registration_now:
        reasons.append(Reason.NOT_AWAY)
        if facts.residence_division != facts.registration_division:
            reasons.append(Reason.SAME_COUNTY_AFTER_RECODING)
        kind = _left_behind_test(facts, province_rules, reasons)
    elif rules.exempt(facts.residence_division, facts.registration_division, table):
        reasons.append(Reason.EXEMPT_MOVE)
        kind = _left_behind_test(facts, province_rules, reasons)
    else:
        reasons.append(Reason.AWAY_FROM_REGISTRATION)
        kind = _migrant_test(facts, period, province_rules, reasons)
    return Classification(kind, tuple(reasons), turns_16_on)


def _province_of(code: str, current: frozenset[str]) -> str:
    """The one province the residence's current counties lie in."""
    provinces = {county[:2] for county in current}
    if len(provinces) != 1:
        # Only possible for a retired code split across provinces; their rules may differ, so the
        # record has to name the current county.
        raise AmbiguousSuccessor(code, tuple(sorted(current)))
    return provinces.pop()


def _migrant_test(
    facts: ChildFacts, period: MonitoringPeriod, rules: ProvinceRules, reasons: list[Reason]
) -> ChildKind:
    """Criteria 3 and 4 of 流动儿童 for a child who is away; appends one reason per criterion."""
    with_parent = ParentSituation.WITH_CHILD in (facts.father, facts.mother)
    if with_parent:
        reasons.append(Reason.WITH_PARENT)
    if facts.guardian_with_child:
        reasons.append(Reason.WITH_GUARDIAN)
    accompanied = with_parent or facts.guardian_with_child
    if not accompanied:
        reasons.append(Reason.UNACCOMPANIED)

    if facts.living_since is None:
        long_enough = False
        reasons.append(Reason.LIVING_SINCE_UNKNOWN)
    else:
        long_enough = add_months(facts.living_since, rules.min_months_away) <= period.end
        reasons.append(Reason.AWAY_6_MONTHS_OR_MORE if long_enough else Reason.AWAY_LESS_THAN_6_MONTHS)

    return ChildKind.MIGRANT if accompanied and long_enough else ChildKind.NEITHER


def _left_behind_test(facts: ChildFacts, rules: ProvinceRules, reasons: list[Reason]) -> ChildKind:
    """Criterion 3 of 留守儿童 for a child at home (or moved within an exemption group)."""
    parents = (facts.father, facts.mother)
    away = sum(p is ParentSituation.WORKING_AWAY for p in parents)
    incapable = sum(p in rules.lacks_guardianship_capacity for p in parents)
    unknown = sum(p is ParentSituation.UNKNOWN for p in parents)

    if away == 2:
        reasons.append(Reason.BOTH_PARENTS_AWAY)
        return ChildKind.LEFT_BEHIND
    if away == 1 and incapable == 1:
        reasons.append(Reason.ONE_AWAY_OTHER_INCAPABLE)
        return ChildKind.LEFT_BEHIND
    if unknown and away + incapable + unknown == 2:
        # Every known parent is away or incapable, so the unknown situation decides the outcome
        # (father working away and mother unknown; father deceased and mother unknown; both
        # unknown): name the gap instead of reporting a "no" the county has not established.
        reasons.append(Reason.PARENT_SITUATION_UNKNOWN)
    elif away == 0:
        reasons.append(Reason.NO_PARENT_AWAY)
    else:
        reasons.append(Reason.ONE_AWAY_OTHER_CAPABLE)
    return ChildKind.NEITHER
