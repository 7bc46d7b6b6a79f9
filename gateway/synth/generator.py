"""Seeded synthetic county ledgers (台账) for demos, tests and benchmarks.

:func:`generate` streams :class:`~gateway.domain.records.ChildRecord` objects household by
household. Nothing in it is a real person: names come from :mod:`gateway.synth.names`, ID numbers
are built with :func:`gateway.domain.idnumber.make` on real division codes with random birth
dates and sequence numbers, phones are random.

What the data looks like
------------------------
* **Households** of one to three children (twins can make a birth of two) sharing the surname
  (usually the father's), the registration county, the parents' situations and the guardian.
  Siblings are born at least :data:`MIN_SIBLING_GAP_DAYS` apart; twins (:data:`TWIN_RATE` of
  births) share a birth date and get consecutive sequence numbers of their sexes' parities.
* **Scenarios** (:data:`SCENARIOS`) set the parents' situations: families that moved with the
  child to a residence county (some less than six months ago, so not yet migrant), children left
  with grandparents while both parents work away (or one works away and the other cannot care),
  and ordinary families at home. The record's ``kind`` is then whatever the real
  :func:`~gateway.domain.classify.classify` says about its facts — never set by the scenario.
* **ID prefixes** are where the number was issued at birth registration: usually the
  registration county, but a predecessor code for children born before their county was created
  or absorbed part of another (Chongqing, Nov 2025: a 2015 child registered in 两江新区 500157 has
  an ID starting 500112 or 500105), and another county of the province for families whose
  household registration moved (:data:`HUKOU_MOVED_RATE`). Predecessors are read from the
  table's successor links; a county recoded without a recorded link (开县 500234 → 开州区 500154
  in 2016) gives its older children the current code, which real numbers would not have. Every
  prefix passes ``table.existed``. Numbers are unique across the whole generated set.
* A share of records has no ID number at all (``SynthSpec.missing_id_rate``).

Determinism
-----------
Household *i* draws from its own :class:`random.Random` seeded with the string
``"tongban-synth:{seed}:{i}"`` (string seeds are hashed with SHA-512 by :mod:`random`, not with the
per-process salted ``hash()``), so the same spec gives the same records in any process. The
first *n* households of a larger run equal a run of *n* households (household *i* depends only on
its own generator and the ID numbers households 0 … *i*-1 used). ``imported_at`` is the period's
first day, midnight UTC.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from random import Random

from gateway.domain import idnumber
from gateway.domain.classify import ChildFacts, classify
from gateway.domain.divisions import DivisionTable, parse_links_tsv
from gateway.domain.period import MonitoringPeriod, add_months
from gateway.domain.records import (
    ChildKind,
    ChildRecord,
    Disability,
    DisabilityCategory,
    Guardian,
    GuardianshipSituation,
    KeyCareFlag,
    ParentSituation,
    ParentStatus,
    Provenance,
    Sex,
)
from gateway.domain.rules import RuleBook
from gateway.errors import ConfigError, InputError, InvalidDivisionCode
from gateway.synth.names import Family, NameMaker, NameStyle, PersonName
from gateway.synth.weighted import Weighted

# --- rates (the report of what the generator produces quotes these) -------------------------------

MALE_SHARE = 0.53  # sex ratio at birth around 113 boys per 100 girls (2010s)
BIRTHS_PER_HOUSEHOLD: tuple[tuple[int, float], ...] = ((1, 0.45), (2, 0.43), (3, 0.12))
MAX_CHILDREN = 3  # a twin birth is only drawn when it keeps the household at or under this
TWIN_RATE = 0.02  # share of births (deliveries) that are twins
TWINS_SAME_SEX = 2 / 3  # identical twins (~1/3) plus half of fraternal ones
MIN_SIBLING_GAP_DAYS = 300  # about ten months
MEAN_EXTRA_GAP_DAYS = 900  # gap = minimum + gamma(2, 450) days: mean about 3.3 years
MAX_SIBLING_GAP_DAYS = 2600
AGED_OUT_MONTHS = 3  # ledgers still hold children up to 16 years and 3 months old
RECENT_MOVE_RATE = 0.12  # migrant-scenario families that moved less than ~6 months before period end
MEAN_MONTHS_AWAY = 30  # otherwise months since the move: 6 + exponential with this mean
MAX_MONTHS_AWAY = 180
HUKOU_MOVED_RATE = 0.05  # households whose registration moved from another county of the province
ABSORBED_PART_SHARE = 0.25  # households of a county that absorbed part of a retired one, from that part
DISABILITY_RATE = 0.008  # children with a disability certificate
PSYCH_RATE = 0.005  # 心理和行为异常
ASKED_FOR_HELP_RATE = 0.004  # 主动提出救助帮扶需求
VAGRANCY_RATE = 0.0005  # 流浪
HARDSHIP_RATE = 0.03  # 家庭生活困难, per household (times the scenario's factor)
GUARDIAN_PHONE_RATE = 0.96

# National births per year (10,000s, National Bureau of Statistics), used to weight birth years;
# years outside the table take the nearest one.
_BIRTHS_10K: dict[int, int] = {
    2005: 1617, 2006: 1585, 2007: 1595, 2008: 1608, 2009: 1591, 2010: 1592, 2011: 1604,
    2012: 1635, 2013: 1640, 2014: 1687, 2015: 1655, 2016: 1786, 2017: 1723, 2018: 1523,
    2019: 1465, 2020: 1202, 2021: 1062, 2022: 956, 2023: 902, 2024: 954, 2025: 900,
}  # fmt: skip

# Relative weights when a county has several predecessors (渝北 had about 2.3 times 江北's people).
_PREDECESSOR_WEIGHT: dict[str, float] = {"500112": 0.7, "500105": 0.3}

_DISABILITY_CATEGORIES: tuple[tuple[DisabilityCategory, float], ...] = (
    (DisabilityCategory.VISUAL, 5),
    (DisabilityCategory.HEARING, 10),
    (DisabilityCategory.SPEECH, 12),
    (DisabilityCategory.PHYSICAL, 20),
    (DisabilityCategory.INTELLECTUAL, 28),
    (DisabilityCategory.MENTAL, 15),  # includes autism among children
    (DisabilityCategory.MULTIPLE, 10),
)
_DISABILITY_LEVELS: tuple[tuple[int, float], ...] = ((1, 20), (2, 30), (3, 30), (4, 20))

_P = ParentSituation
_INCAPABLE: tuple[tuple[ParentSituation, float], ...] = (
    (_P.DECEASED, 22),
    (_P.MISSING, 25),  # often a mother who left after a divorce and cannot be reached
    (_P.SEVERE_ILLNESS, 15),
    (_P.SEVERE_DISABILITY, 12),
    (_P.IMPRISONED, 14),
    (_P.COMPULSORY_DETOX, 5),
    (_P.GUARDIANSHIP_REVOKED, 2),
    (_P.DEPORTED, 5),
)
_ABSENT: tuple[tuple[ParentSituation, float], ...] = ((_P.DECEASED, 35), (_P.MISSING, 35), (_P.UNKNOWN, 30))
_INCAPABLE_W = Weighted(_INCAPABLE)
_ABSENT_W = Weighted(_ABSENT)


def _only(situation: ParentSituation) -> Weighted[ParentSituation]:
    return Weighted([(situation, 1.0)])


class GuardianRule(Enum):
    PARENT = "parent"  # the parent with the child (WITH_CHILD when moved, AT_HOME at home)
    GRANDPARENT = "grandparent"  # 祖父母 / 外祖父母 / 其他亲属
    RELATIVE = "relative"  # 其他亲属 or 祖父母
    NONE = "none"


@dataclass(frozen=True)
class Scenario:
    """One kind of household: who is where, who looks after the children."""

    name: str
    weight: float
    moves: bool  # lives in a residence county other than the registration county
    father: Weighted[ParentSituation]
    mother: Weighted[ParentSituation]
    guardianship: GuardianshipSituation
    guardian: GuardianRule
    hardship_factor: float = 1.0
    lacks_guardian: bool = False  # every child flagged 监护缺失


_G = GuardianshipSituation
_WITH, _AWAY, _HOME = _only(_P.WITH_CHILD), _only(_P.WORKING_AWAY), _only(_P.AT_HOME)
_DEAD, _UNKNOWN = _only(_P.DECEASED), _only(_P.UNKNOWN)
_BY_PARENT, _BY_GRANDPARENT = GuardianRule.PARENT, GuardianRule.GRANDPARENT
# Weights are relative; migrant-type households dominate because the generator is for counties
# that exchange migrant records. The classification of each child is still classify()'s.
SCENARIOS: tuple[Scenario, ...] = (
    # Moved with the child (流动 once six months have passed).
    Scenario("moved_both_parents", 30, True, _WITH, _WITH, _G.PARENTS, _BY_PARENT),
    Scenario("moved_mother_father_away", 6, True, _AWAY, _WITH, _G.PARENTS, _BY_PARENT),
    Scenario("moved_father_mother_away", 3, True, _WITH, _AWAY, _G.PARENTS, _BY_PARENT),
    Scenario("moved_mother_father_home", 2, True, _HOME, _WITH, _G.PARENTS, _BY_PARENT),
    Scenario("moved_single_mother", 2, True, _ABSENT_W, _WITH, _G.ONE_PARENT, _BY_PARENT, 2.0),
    Scenario("moved_single_father", 1.5, True, _WITH, _ABSENT_W, _G.ONE_PARENT, _BY_PARENT, 2.0),
    Scenario("moved_with_grandparents", 1.5, True, _AWAY, _AWAY, _G.ENTRUSTED, _BY_GRANDPARENT),
    # Left at home with grandparents (留守).
    Scenario("home_both_parents_away", 17, False, _AWAY, _AWAY, _G.ENTRUSTED, _BY_GRANDPARENT, 1.5),
    Scenario("home_father_away_mother_incapable", 3, False, _AWAY, _INCAPABLE_W, _G.ENTRUSTED, _BY_GRANDPARENT, 2.5),
    Scenario("home_mother_away_father_incapable", 2, False, _INCAPABLE_W, _AWAY, _G.ENTRUSTED, _BY_GRANDPARENT, 2.5),
    Scenario("home_father_away_mother_unknown", 0.5, False, _AWAY, _UNKNOWN, _G.ENTRUSTED, _BY_GRANDPARENT),
    # At home with a parent.
    Scenario("home_both_parents", 20, False, _HOME, _HOME, _G.PARENTS, _BY_PARENT),
    Scenario("home_father_away", 10, False, _AWAY, _HOME, _G.PARENTS, _BY_PARENT),
    Scenario("home_mother_away", 2, False, _HOME, _AWAY, _G.PARENTS, _BY_PARENT),
    Scenario("home_single_mother", 1.2, False, _ABSENT_W, _HOME, _G.ONE_PARENT, _BY_PARENT, 2.0),
    Scenario("home_single_father", 0.8, False, _HOME, _ABSENT_W, _G.ONE_PARENT, _BY_PARENT, 2.0),
    # Without parental care.
    Scenario("orphaned_with_relatives", 0.3, False, _DEAD, _ABSENT_W, _G.ENTRUSTED, GuardianRule.RELATIVE, 4.0),
    Scenario("in_institution", 0.1, False, _DEAD, _ABSENT_W, _G.INSTITUTION, GuardianRule.NONE, 2.0),
    Scenario("no_guardian", 0.1, False, _INCAPABLE_W, _INCAPABLE_W, _G.NONE, GuardianRule.NONE, 4.0, True),
)

_GRANDPARENT_RELATIONS = Weighted([("祖父母", 65), ("外祖父母", 27), ("其他亲属", 8)])
_RELATIVE_RELATIONS = Weighted([("其他亲属", 60), ("祖父母", 40)])
_PHONE_SECOND_DIGIT = Weighted([("3", 30), ("5", 25), ("8", 25), ("9", 10), ("7", 8), ("4", 1), ("6", 1)])
_BIRTHS_W = Weighted(BIRTHS_PER_HOUSEHOLD)
_DISABILITY_CATEGORIES_W = Weighted(_DISABILITY_CATEGORIES)
_DISABILITY_LEVELS_W = Weighted(_DISABILITY_LEVELS)


# --- the spec --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``residence_divisions`` are the counties migrant families live in,
    ``registration_divisions`` the counties the children are registered in (current codes)."""

    seed: int
    period: MonitoringPeriod
    residence_divisions: tuple[str, ...]
    registration_divisions: tuple[str, ...]
    households: int
    missing_id_rate: float = 0.01
    node_id: str = "synth"

    def __post_init__(self) -> None:
        if self.households < 0:
            raise InputError("the number of households must not be negative")
        if not 0.0 <= self.missing_id_rate <= 1.0:
            raise InputError("missing_id_rate must be between 0 and 1")
        if not self.residence_divisions or not self.registration_divisions:
            raise InputError("name at least one residence and one registration division")
        for code in (*self.residence_divisions, *self.registration_divisions):
            if len(code) != 6 or not code.isascii() or not code.isdigit():
                raise InvalidDivisionCode("a division code is six digits")
        if not self.node_id:
            raise InputError("node_id must not be empty")


@dataclass(frozen=True)
class Household:
    """One generated household: its scenario and its children's records, eldest first."""

    index: int
    scenario: str
    style: NameStyle
    family_name: str  # what the children's names share: surname, Uyghur father's name, "" (Tibetan)
    registration_division: str
    residence_division: str
    children: tuple[ChildRecord, ...]


# --- public API ------------------------------------------------------------------------------------


def generate(spec: SynthSpec, table: DivisionTable, rules: RuleBook) -> Iterator[ChildRecord]:
    """Stream the records of ``spec.households`` households, eldest child of each first.

    Checked when called, before any record is made: every division of the spec is a current
    routing code (:class:`~gateway.errors.InvalidDivisionCode`, or
    :class:`~gateway.errors.RetiredDivision` naming the successors). Records are made as they
    are consumed; memory beyond the current household is the set of ID numbers already used
    (one integer each). Errors of :func:`~gateway.domain.classify.classify` (a province without
    rules, say) propagate.
    """
    return (child for household in generate_households(spec, table, rules) for child in household.children)


def generate_households(spec: SynthSpec, table: DivisionTable, rules: RuleBook) -> Iterator[Household]:
    """Like :func:`generate`, one :class:`Household` at a time (for tests and demos that need the
    family structure). Checks the spec when called, as :func:`generate` does."""
    builder = _Builder(spec, table, rules)
    return (builder.household(index) for index in range(spec.households))


def roster_for(records: Iterable[ChildRecord], owner_division: str) -> Iterator[ChildRecord]:
    """The ledger ``owner_division`` keeps (SPEC §1): migrant children living there (流入地为主)
    and left-behind children registered there (户籍地为主). Order is kept."""
    for record in records:
        if owner_of(record) == owner_division:
            yield record


def owner_of(record: ChildRecord) -> str | None:
    """The county whose ledger holds ``record``: the residence for a migrant child, the
    registration place for a left-behind child, ``None`` for any other."""
    if record.kind is ChildKind.MIGRANT:
        return record.residence_division
    if record.kind is ChildKind.LEFT_BEHIND:
        return record.registration_division
    return None


def facts_of(record: ChildRecord) -> ChildFacts:
    """The classification facts a record carries.

    A guardian other than the parents lives with the child (``guardian_with_child``) exactly when
    the child is entrusted (委托照护) and lives outside its registration county: the guardian is
    where the child is.
    """
    return _facts(
        record.birth_date,
        record.registration_division,
        record.residence_division,
        record.living_since,
        record.father.situation,
        record.mother.situation,
        record.guardianship,
    )


def _facts(
    born: date,
    registration: str,
    residence: str,
    living_since: date | None,
    father: ParentSituation,
    mother: ParentSituation,
    guardianship: GuardianshipSituation,
) -> ChildFacts:
    return ChildFacts(
        birth_date=born,
        registration_division=registration,
        residence_division=residence,
        living_since=living_since,
        father=father,
        mother=mother,
        guardian_with_child=guardianship is GuardianshipSituation.ENTRUSTED and residence != registration,
    )


# --- internals -------------------------------------------------------------------------------------


def _first_of_edition(edition: str) -> date:
    return date(int(edition[:4]), int(edition[4:]), 1)


def _ordinal_key(prefix: str, born: date, sequence: int) -> int:
    """The first 17 digits of an ID number as one integer (cheap to keep in a set)."""
    return ((int(prefix) * 10_000 + born.year) * 10_000 + born.month * 100 + born.day) * 1000 + sequence


@dataclass(frozen=True)
class _Predecessor:
    code: str
    weight: float
    until: date  # numbers issued before this day carry the old code


@dataclass(frozen=True)
class _PrefixPlan:
    """How numbers of one registration county were issued before recent code changes."""

    share: float  # households whose children born before ``until`` carry a predecessor code
    predecessors: Weighted[_Predecessor]


@dataclass
class _Child:
    born: date
    sex: Sex
    twin_of_previous: bool = False
    id_number: str | None = None


class _Serials:
    """Hands out sequence numbers so that every (prefix, birth date, sequence) is used once."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def take(self, rng: Random, prefix: str, born: date, sexes: Sequence[Sex]) -> list[int]:
        """Free sequence numbers for children born together, consecutive in their parities
        (odd = male): e.g. 137 and 139 for twin boys, 137 and 138 for a boy and a girl."""
        for _ in range(32):
            first = self._first(rng, sexes[0])
            run = self._run(first, sexes)
            if run is not None and self._free(prefix, born, run):
                return self._claim(prefix, born, run)
        for first in range(1, 1000):  # a crowded day: take the lowest free run
            if (first % 2 == 1) != (sexes[0] is Sex.MALE):
                continue
            run = self._run(first, sexes)
            if run is not None and self._free(prefix, born, run):
                return self._claim(prefix, born, run)
        raise ConfigError(
            f"no free ID sequence numbers left for division {prefix} on one birth date; "
            "generate fewer households or add registration divisions"
        )

    @staticmethod
    def _first(rng: Random, sex: Sex) -> int:
        return 2 * rng.randrange(500) + 1 if sex is Sex.MALE else 2 * rng.randrange(1, 500)

    @staticmethod
    def _run(first: int, sexes: Sequence[Sex]) -> list[int] | None:
        run = [first]
        for sex in sexes[1:]:
            nxt = run[-1] + 1
            if (nxt % 2 == 1) != (sex is Sex.MALE):
                nxt += 1
            if nxt > 999:
                return None
            run.append(nxt)
        return run

    def _free(self, prefix: str, born: date, run: Sequence[int]) -> bool:
        return all(_ordinal_key(prefix, born, s) not in self._used for s in run)

    def _claim(self, prefix: str, born: date, run: Sequence[int]) -> list[int]:
        self._used.update(_ordinal_key(prefix, born, s) for s in run)
        return list(run)


class _Builder:
    """Everything shared between households: checked spec, pools, the ID registry."""

    def __init__(self, spec: SynthSpec, table: DivisionTable, rules: RuleBook) -> None:
        for code in dict.fromkeys((*spec.residence_divisions, *spec.registration_divisions)):
            table.current(code)  # raises InvalidDivisionCode / RetiredDivision
        self.spec = spec
        self.table = table
        self.rules = rules
        self.names = NameMaker.default()
        self.serials = _Serials()
        self.provenance = Provenance(
            source=f"synth:seed={spec.seed}",
            imported_at=datetime.combine(spec.period.start, time(0, 0), tzinfo=UTC),
            node_id=spec.node_id,
        )
        self.moving = Weighted([(s, s.weight) for s in SCENARIOS])
        self.staying = Weighted([(s, s.weight) for s in SCENARIOS if not s.moves])
        oldest = add_months(spec.period.start, -(16 * 12 + AGED_OUT_MONTHS)) + timedelta(days=1)
        self.birth_years = _birth_years(oldest, spec.period.end)
        self.plans = self._prefix_plans()
        self._province_counties: dict[str, tuple[tuple[str, str], ...]] = {}

    # prefixes -----------------------------------------------------------------------------------

    def _prefix_plans(self) -> dict[str, _PrefixPlan]:
        """For each registration county, the retired codes whose numbers it inherited.

        Read from the table's successor links: a link old → county effective E means children
        registered there and born before E may carry ``old``. If the county itself first appears
        at E, every such child does (the county did not exist); otherwise only the households of
        the absorbed part (:data:`ABSORBED_PART_SHARE`).
        """
        wanted = set(self.spec.registration_divisions)
        found: dict[str, list[_Predecessor]] = {}
        created_by_link: dict[str, bool] = {}
        for link in parse_links_tsv(self.table.to_tsv()[1]):
            if link.new not in wanted or not self.table.existed(link.old):
                continue
            until = _first_of_edition(link.effective)
            weight = _PREDECESSOR_WEIGHT.get(link.old, 1.0)
            found.setdefault(link.new, []).append(_Predecessor(link.old, weight, until))
            created = self.table.lookup(link.new).valid_from >= link.effective
            created_by_link[link.new] = created_by_link.get(link.new, False) or created
        return {
            code: _PrefixPlan(
                share=1.0 if created_by_link[code] else ABSORBED_PART_SHARE,
                predecessors=Weighted([(p, p.weight) for p in sorted(preds, key=lambda p: p.code)]),
            )
            for code, preds in sorted(found.items())
        }

    def _counties_of(self, province: str) -> tuple[tuple[str, str], ...]:
        counties = self._province_counties.get(province)
        if counties is None:
            counties = tuple((d.code, d.valid_from) for d in self.table.current_counties(province))
            self._province_counties[province] = counties
        return counties

    def _prefixes(self, rng: Random, registration: str, births: Sequence[date]) -> list[str]:
        """Issuing division of each child's number (see the module docstring)."""
        prefixes = [registration] * len(births)
        plan = self.plans.get(registration)
        if plan is not None and rng.random() < plan.share:
            old = plan.predecessors.pick(rng)
            prefixes = [old.code if born < old.until else p for born, p in zip(births, prefixes, strict=True)]
        if rng.random() < HUKOU_MOVED_RATE:
            moved_on = births[0] + timedelta(days=rng.randrange(max(1, (self.spec.period.start - births[0]).days)))
            edition = f"{births[0].year:04d}{births[0].month:02d}"
            candidates = [
                code
                for code, valid_from in self._counties_of(registration[:2])
                if code != registration and valid_from <= edition
            ]
            if candidates:
                origin = rng.choice(candidates)
                prefixes = [origin if born < moved_on else p for born, p in zip(births, prefixes, strict=True)]
        return [p if self.table.existed(p) else registration for p in prefixes]

    # households ---------------------------------------------------------------------------------

    def household(self, index: int) -> Household:
        spec = self.spec
        rng = Random(f"tongban-synth:{spec.seed}:{index}")
        registration = rng.choice(spec.registration_divisions)
        scenario = self.moving.pick(rng)
        residence = registration
        if scenario.moves:
            elsewhere = [code for code in spec.residence_divisions if code != registration]
            if elsewhere:
                residence = rng.choice(elsewhere)
            else:  # nowhere to move to: the family stays at home
                scenario = self.staying.pick(rng)
        family = self.names.family(rng, registration)
        children = self._children(rng)
        births = [c.born for c in children]

        moved_on = self._move_date(rng) if scenario.moves else None
        father = self._parent(rng, scenario.father.pick(rng), moved_on, births)
        mother = self._parent(rng, scenario.mother.pick(rng), moved_on, births)
        guardian = self._guardian(rng, scenario, family, father, mother)
        hardship = rng.random() < HARDSHIP_RATE * scenario.hardship_factor

        self._number(rng, registration, children)
        records = []
        for child in children:
            name = self.names.child(rng, family, child.sex, child.born)
            living_since = max(moved_on, child.born) if moved_on is not None else None
            records.append(
                self._record(
                    rng, scenario, registration, residence, child, name, living_since,
                    father, mother, guardian, hardship,
                )
            )  # fmt: skip
        return Household(
            index,
            scenario.name,
            family.style,
            family.children_family,
            registration,
            residence,
            tuple(records),
        )

    def _children(self, rng: Random) -> list[_Child]:
        births = _BIRTHS_W.pick(rng)
        gaps = [
            MIN_SIBLING_GAP_DAYS + min(int(rng.gammavariate(2.0, MEAN_EXTRA_GAP_DAYS / 2)), MAX_SIBLING_GAP_DAYS)
            for _ in range(births - 1)
        ]
        latest = self.spec.period.end - timedelta(days=sum(gaps))
        eldest = self._birth_date(rng)
        while eldest > latest:  # rejection keeps the birth-year weights; accepts over half the time
            eldest = self._birth_date(rng)
        children: list[_Child] = []
        born = eldest
        for birth in range(births):
            if birth:
                born += timedelta(days=gaps[birth - 1])
            if len(children) + 2 <= MAX_CHILDREN and rng.random() < TWIN_RATE:
                first = Sex.MALE if rng.random() < MALE_SHARE else Sex.FEMALE
                second = first if rng.random() < TWINS_SAME_SEX else _other(first)
                children += [_Child(born, first), _Child(born, second, twin_of_previous=True)]
            elif len(children) < MAX_CHILDREN:
                children.append(_Child(born, Sex.MALE if rng.random() < MALE_SHARE else Sex.FEMALE))
        return children

    def _birth_date(self, rng: Random) -> date:
        first, days = self.birth_years.pick(rng)
        return first + timedelta(days=rng.randrange(days))

    def _move_date(self, rng: Random) -> date:
        end = self.spec.period.end
        if rng.random() < RECENT_MOVE_RATE:
            return end - timedelta(days=rng.randrange(183))
        months = min(6 + int(rng.expovariate(1 / MEAN_MONTHS_AWAY)), MAX_MONTHS_AWAY)
        return add_months(end, -months) - timedelta(days=rng.randrange(28))

    def _parent(
        self, rng: Random, situation: ParentSituation, moved_on: date | None, births: Sequence[date]
    ) -> ParentStatus:
        start = self.spec.period.start
        if situation is ParentSituation.WITH_CHILD:
            return ParentStatus(situation, moved_on)
        if situation is ParentSituation.WORKING_AWAY:
            return ParentStatus(situation, start - timedelta(days=30 + rng.randrange(3650)))
        if situation in (ParentSituation.AT_HOME, ParentSituation.UNKNOWN):
            return ParentStatus(situation)
        # Death, disappearance, prison …: after the youngest child's birth, before the period.
        youngest = births[-1]
        days = (start - youngest).days
        return ParentStatus(situation, youngest + timedelta(days=rng.randrange(days)) if days > 0 else youngest)

    def _guardian(
        self, rng: Random, scenario: Scenario, family: Family, father: ParentStatus, mother: ParentStatus
    ) -> Guardian | None:
        if scenario.guardian is GuardianRule.NONE:
            return None
        if scenario.guardian is GuardianRule.PARENT:
            present = (ParentSituation.WITH_CHILD, ParentSituation.AT_HOME)
            mother_here = mother.situation in present and (father.situation not in present or rng.random() < 0.6)
            if mother_here or father.situation in present:
                relation = "母亲" if mother_here else "父亲"
                person = family.mother if mother_here else family.father
                return Guardian(person.full, relation, self._phone(rng))
        rules = _RELATIVE_RELATIONS if scenario.guardian is GuardianRule.RELATIVE else _GRANDPARENT_RELATIONS
        relation = rules.pick(rng)
        sex = Sex.FEMALE if rng.random() < 0.55 else Sex.MALE
        person = (
            self.names.relative(rng, family, sex)
            if relation == "其他亲属"
            else self.names.grandparent(rng, family, maternal=relation == "外祖父母", sex=sex)
        )
        return Guardian(person.full, relation, self._phone(rng))

    @staticmethod
    def _phone(rng: Random) -> str | None:
        if rng.random() >= GUARDIAN_PHONE_RATE:
            return None
        return f"1{_PHONE_SECOND_DIGIT.pick(rng)}{rng.randrange(10**9):09d}"

    def _number(self, rng: Random, registration: str, children: list[_Child]) -> None:
        """Give each child its ID number (or none), twins consecutive sequence numbers."""
        prefixes = self._prefixes(rng, registration, [c.born for c in children])
        has_id = [rng.random() >= self.spec.missing_id_rate for _ in children]
        i = 0
        while i < len(children):
            group = [i]
            if i + 1 < len(children) and children[i + 1].twin_of_previous and has_id[i] and has_id[i + 1]:
                group.append(i + 1)
            if has_id[i]:
                born = children[i].born
                serials = self.serials.take(rng, prefixes[i], born, [children[k].sex for k in group])
                for k, serial in zip(group, serials, strict=True):
                    children[k].id_number = idnumber.make(prefixes[i], born, serial)
            i += len(group)

    def _record(
        self,
        rng: Random,
        scenario: Scenario,
        registration: str,
        residence: str,
        child: _Child,
        name: PersonName,
        living_since: date | None,
        father: ParentStatus,
        mother: ParentStatus,
        guardian: Guardian | None,
        hardship: bool,
    ) -> ChildRecord:
        facts = _facts(
            child.born, registration, residence, living_since,
            father.situation, mother.situation, scenario.guardianship,
        )  # fmt: skip
        kind = classify(facts, self.spec.period, self.rules, self.table).kind
        flags: set[KeyCareFlag] = set()
        if hardship:
            flags.add(KeyCareFlag.FAMILY_HARDSHIP)
        if scenario.lacks_guardian:
            flags.add(KeyCareFlag.LACK_OF_GUARDIANSHIP)
        if rng.random() < PSYCH_RATE * (2 if kind is ChildKind.LEFT_BEHIND else 1):
            flags.add(KeyCareFlag.PSYCH_BEHAVIOURAL)
        if rng.random() < ASKED_FOR_HELP_RATE:
            flags.add(KeyCareFlag.ASKED_FOR_HELP)
        if rng.random() < VAGRANCY_RATE:
            flags.add(KeyCareFlag.VAGRANCY)
        disability = None
        if rng.random() < DISABILITY_RATE:
            disability = Disability(_DISABILITY_CATEGORIES_W.pick(rng), _DISABILITY_LEVELS_W.pick(rng))
        return ChildRecord(
            record_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            id_number=child.id_number,
            name=name.full,
            sex=child.sex,
            birth_date=child.born,
            registration_division=registration,
            residence_division=residence,
            living_since=living_since,
            guardianship=scenario.guardianship,
            father=father,
            mother=mother,
            kind=kind,
            provenance=self.provenance,
            guardian=guardian,
            disability=disability,
            key_care=frozenset(flags),
        )


def _birth_years(lo: date, hi: date) -> Weighted[tuple[date, int]]:
    """(first day, number of days) of each calendar year's part of [lo, hi], weighted by the
    year's national births times its days in the window."""
    spans: list[tuple[tuple[date, int], float]] = []
    for year in range(lo.year, hi.year + 1):
        first, last = max(lo, date(year, 1, 1)), min(hi, date(year, 12, 31))
        days = (last - first).days + 1
        births = _BIRTHS_10K.get(year, _BIRTHS_10K[min(max(year, 2005), 2025)])
        spans.append(((first, days), births * days))
    return Weighted(spans)


def _other(sex: Sex) -> Sex:
    return Sex.FEMALE if sex is Sex.MALE else Sex.MALE
