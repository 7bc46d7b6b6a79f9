"""Classification of a child (gateway.domain.classify) and the province rule book it reads
(gateway.domain.rules, gateway/data/province_rules.toml).

The division table is the real ``DivisionTable.load_default()`` when ``gateway.domain.divisions``
exists, otherwise :class:`FakeDivisions`, which knows just the codes these tests use and the Nov
2025 Chongqing change. ``test_fake_agrees_with_real_table`` keeps the fake honest.
"""

from __future__ import annotations

import importlib
from datetime import date
from typing import Any, ClassVar

import pytest

from gateway.domain.classify import ChildFacts, Classification, Reason, classify
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.domain.records import ChildKind, ParentSituation
from gateway.domain.rules import DivisionResolver, load_rules
from gateway.errors import (
    ConfigError,
    InputError,
    InvalidDivisionCode,
    InvalidRecord,
    SuccessorUnknown,
)

P = ParentSituation
K = ChildKind
R = Reason

WANZHOU = "500101"  # 万州区, not central
YUZHONG = "500103"  # 渝中区
JIANGBEI = "500105"  # 江北区, retired Nov 2025 -> 500157
SHAPINGBA = "500106"  # 沙坪坝区
BEIBEI = "500109"  # 北碚区
YUBEI = "500112"  # 渝北区, retired Nov 2025 -> 500157 and 500109
LIANGJIANG = "500157"  # 两江新区, created Nov 2025
JINJIANG = "510104"  # 四川省成都市锦江区
NO_SUCCESSOR = "500199"  # made up: a retired code whose successor nobody recorded


class FakeDivisions:
    """The two methods of DivisionTable, for the codes these tests use."""

    CURRENT: ClassVar[frozenset[str]] = frozenset(
        {WANZHOU, YUZHONG, "500104", SHAPINGBA, "500107", "500108", BEIBEI, "500113", LIANGJIANG, JINJIANG}
    )
    RETIRED: ClassVar[dict[str, tuple[str, ...]]] = {JIANGBEI: (LIANGJIANG,), YUBEI: (LIANGJIANG, BEIBEI)}

    def resolve_all(self, code: str) -> tuple[str, ...]:
        if code in self.CURRENT:
            return (code,)
        if code in self.RETIRED:
            return self.RETIRED[code]
        raise InvalidDivisionCode(code)

    def is_current(self, code: str) -> bool:
        return code in self.CURRENT


class WithUnknownSuccessor:
    """Any table, plus one retired code whose successor is unknown."""

    def __init__(self, inner: DivisionResolver) -> None:
        self.inner = inner

    def resolve_all(self, code: str) -> tuple[str, ...]:
        return () if code == NO_SUCCESSOR else self.inner.resolve_all(code)

    def is_current(self, code: str) -> bool:
        return False if code == NO_SUCCESSOR else self.inner.is_current(code)


def _real_table() -> tuple[Any, str]:
    """The packaged DivisionTable, or None and why not (while it is still being written)."""
    try:
        module = importlib.import_module("gateway.domain.divisions")
    except ModuleNotFoundError:
        return None, "gateway.domain.divisions does not exist yet"
    try:
        return module.DivisionTable.load_default(), ""
    except ConfigError as exc:
        return None, f"the packaged division table does not load: {exc}"


REAL_TABLE, NO_REAL_TABLE = _real_table()
TABLE: DivisionResolver = WithUnknownSuccessor(REAL_TABLE if REAL_TABLE is not None else FakeDivisions())
RULES = load_rules()


def facts(**overrides: Any) -> ChildFacts:
    """A migrant child from Chengdu living in Chongqing with both parents since 2025; override at will."""
    values: dict[str, Any] = {
        "birth_date": date(2015, 5, 20),
        "registration_division": JINJIANG,
        "residence_division": SHAPINGBA,
        "living_since": date(2025, 1, 1),
        "father": P.WITH_CHILD,
        "mother": P.WITH_CHILD,
    }
    values.update(overrides)
    return ChildFacts(**values)


def at_home(**overrides: Any) -> ChildFacts:
    """A child living in its registration county (万州), both parents at home; override at will."""
    values: dict[str, Any] = {
        "registration_division": WANZHOU,
        "residence_division": WANZHOU,
        "living_since": None,
        "father": P.AT_HOME,
        "mother": P.AT_HOME,
    }
    values.update(overrides)
    return facts(**values)


MIGRANT = (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.WITH_PARENT, R.AWAY_6_MONTHS_OR_MORE)

# --- outcomes -------------------------------------------------------------------------------------

CASES = [
    # Where the child lives.
    pytest.param(facts(), "2026Q4", K.MIGRANT, MIGRANT, None, id="cross_province_sichuan_to_chongqing"),
    pytest.param(
        facts(registration_division=YUZHONG, residence_division=WANZHOU),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        None,
        id="chongqing_central_yuzhong_to_noncentral_wanzhou",
    ),
    pytest.param(
        facts(registration_division=WANZHOU, residence_division=YUZHONG),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        None,
        id="chongqing_noncentral_wanzhou_to_central_yuzhong",
    ),
    pytest.param(
        facts(registration_division=YUZHONG, residence_division=SHAPINGBA),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.EXEMPT_MOVE, R.NO_PARENT_AWAY),
        None,
        id="chongqing_central_yuzhong_to_shapingba_is_exempt",
    ),
    pytest.param(
        facts(registration_division=JIANGBEI, residence_division=YUZHONG),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.EXEMPT_MOVE, R.NO_PARENT_AWAY),
        None,
        id="retired_jiangbei_to_yuzhong_is_exempt",
    ),
    pytest.param(
        facts(registration_division=YUBEI, residence_division=SHAPINGBA),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.EXEMPT_MOVE, R.NO_PARENT_AWAY),
        None,
        id="retired_yubei_to_shapingba_is_exempt_both_successors_central",
    ),
    pytest.param(
        facts(registration_division=YUBEI, residence_division=LIANGJIANG),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.SAME_COUNTY_AFTER_RECODING, R.NO_PARENT_AWAY),
        None,
        id="retired_yubei_to_liangjiang_is_no_move",
    ),
    pytest.param(
        facts(registration_division=YUBEI, residence_division=WANZHOU),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        None,
        id="retired_yubei_to_noncentral_wanzhou",
    ),
    pytest.param(
        facts(
            registration_division=YUBEI,
            residence_division=LIANGJIANG,
            father=P.WORKING_AWAY,
            mother=P.WORKING_AWAY,
        ),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.NOT_AWAY, R.SAME_COUNTY_AFTER_RECODING, R.BOTH_PARENTS_AWAY),
        None,
        id="retired_yubei_to_liangjiang_parents_away_is_left_behind",
    ),
    pytest.param(
        facts(
            registration_division=YUZHONG,
            residence_division=SHAPINGBA,
            father=P.WORKING_AWAY,
            mother=P.WORKING_AWAY,
        ),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.EXEMPT_MOVE, R.BOTH_PARENTS_AWAY),
        None,
        id="exempt_move_with_both_parents_away_is_left_behind",
    ),
    # Accompaniment.
    pytest.param(
        facts(father=P.WORKING_AWAY, mother=P.WORKING_AWAY),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.UNACCOMPANIED, R.AWAY_6_MONTHS_OR_MORE),
        None,
        id="unaccompanied",
    ),
    pytest.param(
        facts(father=P.WORKING_AWAY, mother=P.WORKING_AWAY, guardian_with_child=True),
        "2026Q4",
        K.MIGRANT,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.WITH_GUARDIAN, R.AWAY_6_MONTHS_OR_MORE),
        None,
        id="with_grandparents_as_guardians",
    ),
    pytest.param(
        facts(father=P.WITH_CHILD, mother=P.DECEASED),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        None,
        id="with_one_parent",
    ),
    pytest.param(
        facts(father=P.WORKING_AWAY, mother=P.AT_HOME, living_since=date(2026, 11, 1)),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.UNACCOMPANIED, R.AWAY_LESS_THAN_6_MONTHS),
        None,
        id="unaccompanied_and_recent_gives_both_reasons",
    ),
    # Six months away, judged on the period's last day.
    pytest.param(
        facts(living_since=date(2026, 3, 30)),
        "2026Q3",
        K.MIGRANT,
        MIGRANT,
        None,
        id="exactly_6_months_on_last_day",
    ),
    pytest.param(
        facts(living_since=date(2026, 3, 31)),
        "2026Q3",
        K.MIGRANT,
        MIGRANT,
        None,
        id="mar31_plus_6_months_clamps_to_sep30",
    ),
    pytest.param(
        facts(living_since=date(2026, 4, 1)),
        "2026Q3",
        K.NEITHER,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.WITH_PARENT, R.AWAY_LESS_THAN_6_MONTHS),
        None,
        id="one_day_short_of_6_months",
    ),
    pytest.param(
        facts(living_since=date(2026, 5, 31)),
        "2026-11",
        K.MIGRANT,
        MIGRANT,
        None,
        id="monthly_period_may31_reaches_nov30",
    ),
    pytest.param(
        facts(living_since=None),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.WITH_PARENT, R.LIVING_SINCE_UNKNOWN),
        None,
        id="living_since_unknown_is_not_counted",
    ),
    pytest.param(
        facts(living_since=date(2027, 2, 1)),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.AWAY_FROM_REGISTRATION, R.WITH_PARENT, R.AWAY_LESS_THAN_6_MONTHS),
        None,
        id="living_since_after_the_period",
    ),
    # Age, judged on the period's first day.
    pytest.param(
        facts(birth_date=date(2010, 11, 15)),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        date(2026, 11, 15),
        id="turns_16_during_period_is_counted",
    ),
    pytest.param(
        facts(birth_date=date(2010, 12, 31)),
        "2026Q4",
        K.MIGRANT,
        MIGRANT,
        date(2026, 12, 31),
        id="turns_16_on_last_day_is_counted",
    ),
    pytest.param(
        facts(birth_date=date(2010, 10, 1)),
        "2026Q4",
        K.NEITHER,
        (R.AGED_16_OR_OVER,),
        date(2026, 10, 1),
        id="turns_16_on_first_day_is_not_counted",
    ),
    pytest.param(
        facts(birth_date=date(2010, 9, 30)),
        "2026Q4",
        K.NEITHER,
        (R.AGED_16_OR_OVER,),
        None,
        id="turned_16_the_day_before_the_period",
    ),
    pytest.param(
        facts(birth_date=date(2012, 2, 29)),
        "2028Q1",
        K.MIGRANT,
        MIGRANT,
        date(2028, 2, 29),
        id="feb29_birthday_turns_16_on_feb29_in_leap_year",
    ),
    pytest.param(
        facts(birth_date=date(2084, 2, 29), living_since=date(2090, 1, 1)),
        "2100-02",
        K.MIGRANT,
        MIGRANT,
        None,
        id="feb29_birthday_still_15_through_feb_2100",
    ),
    pytest.param(
        facts(birth_date=date(2084, 2, 29), living_since=date(2090, 1, 1)),
        "2100-03",
        K.NEITHER,
        (R.AGED_16_OR_OVER,),
        date(2100, 3, 1),
        id="feb29_birthday_turns_16_on_mar1_2100",
    ),
    pytest.param(
        at_home(birth_date=date(2026, 11, 10), father=P.WORKING_AWAY, mother=P.WORKING_AWAY),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.NOT_AWAY, R.BOTH_PARENTS_AWAY),
        None,
        id="born_during_the_period",
    ),
    # Left-behind.
    pytest.param(
        at_home(father=P.WORKING_AWAY, mother=P.WORKING_AWAY),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.NOT_AWAY, R.BOTH_PARENTS_AWAY),
        None,
        id="both_parents_away",
    ),
    pytest.param(
        at_home(father=P.WORKING_AWAY, mother=P.IMPRISONED),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.NOT_AWAY, R.ONE_AWAY_OTHER_INCAPABLE),
        None,
        id="one_away_other_imprisoned",
    ),
    pytest.param(
        at_home(father=P.DECEASED, mother=P.WORKING_AWAY),
        "2026Q4",
        K.LEFT_BEHIND,
        (R.UNDER_16, R.NOT_AWAY, R.ONE_AWAY_OTHER_INCAPABLE),
        None,
        id="mother_away_father_deceased",
    ),
    pytest.param(
        at_home(father=P.WORKING_AWAY, mother=P.AT_HOME),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.ONE_AWAY_OTHER_CAPABLE),
        None,
        id="one_away_other_at_home",
    ),
    pytest.param(
        at_home(),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.NO_PARENT_AWAY),
        None,
        id="family_at_home",
    ),
    pytest.param(
        at_home(father=P.DECEASED, mother=P.DECEASED),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.NO_PARENT_AWAY),
        None,
        id="orphan_is_not_left_behind",
    ),
    pytest.param(
        at_home(father=P.WORKING_AWAY, mother=P.UNKNOWN),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.PARENT_SITUATION_UNKNOWN),
        None,
        id="one_away_other_unknown_is_flagged",
    ),
    pytest.param(
        at_home(father=P.UNKNOWN, mother=P.DECEASED),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.PARENT_SITUATION_UNKNOWN),
        None,
        id="one_deceased_other_unknown_is_flagged",
    ),
    pytest.param(
        at_home(father=P.UNKNOWN, mother=P.AT_HOME),
        "2026Q4",
        K.NEITHER,
        (R.UNDER_16, R.NOT_AWAY, R.NO_PARENT_AWAY),
        None,
        id="one_unknown_other_at_home_cannot_be_left_behind",
    ),
    pytest.param(
        at_home(father=P.WORKING_AWAY, mother=P.WORKING_AWAY, birth_date=date(2009, 1, 1)),
        "2026Q4",
        K.NEITHER,
        (R.AGED_16_OR_OVER,),
        None,
        id="left_behind_aged_17_is_neither",
    ),
]


@pytest.mark.parametrize(("child", "label", "kind", "reasons", "turns_16_on"), CASES)
def test_classify(
    child: ChildFacts, label: str, kind: ChildKind, reasons: tuple[Reason, ...], turns_16_on: date | None
) -> None:
    result = classify(child, MonitoringPeriod.parse(label), RULES, TABLE)
    assert result == Classification(kind, reasons, turns_16_on)


INCAPABLE = sorted(RULES.national.lacks_guardianship_capacity)


@pytest.mark.parametrize("situation", [pytest.param(s, id=f"other_parent_{s.value}") for s in INCAPABLE])
def test_every_incapacity_makes_left_behind(situation: ParentSituation) -> None:
    child = at_home(father=P.WORKING_AWAY, mother=situation)
    result = classify(child, MonitoringPeriod.parse("2026Q4"), RULES, TABLE)
    assert result.kind is K.LEFT_BEHIND
    assert result.reasons[-1] is R.ONE_AWAY_OTHER_INCAPABLE


# --- errors ---------------------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(
        lambda: facts(birth_date=date(2027, 1, 1), living_since=None),
        InvalidRecord,
        "after the end of monitoring period",
        id="born_after_the_period",
    ),
    pytest.param(
        lambda: facts(birth_date=date(2020, 5, 1), living_since=date(2020, 4, 30)),
        InvalidRecord,
        "before the birth date",
        id="living_since_before_birth",
    ),
    pytest.param(
        lambda: facts(residence_division="50010"),
        InvalidDivisionCode,
        "residence_division",
        id="five_digit_residence_code",
    ),
    pytest.param(
        lambda: facts(registration_division="５００１０３"),
        InvalidDivisionCode,
        "registration_division",
        id="full_width_registration_code",
    ),
    pytest.param(
        lambda: facts(residence_division=NO_SUCCESSOR),
        SuccessorUnknown,
        NO_SUCCESSOR,
        id="residence_successor_unknown",
    ),
    pytest.param(
        lambda: facts(registration_division=NO_SUCCESSOR),
        SuccessorUnknown,
        NO_SUCCESSOR,
        id="registration_successor_unknown",
    ),
    pytest.param(
        lambda: facts(registration_division=NO_SUCCESSOR, birth_date=date(2000, 1, 1)),
        SuccessorUnknown,
        NO_SUCCESSOR,
        id="successor_unknown_raises_even_when_over_age",
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), ERROR_CASES)
def test_classify_refuses(build: Any, error: type[InputError], message: str) -> None:
    with pytest.raises(error, match=message):
        classify(build(), MonitoringPeriod.parse("2026Q4"), RULES, TABLE)


def test_residence_province_without_rules_is_a_config_error() -> None:
    only_chongqing = load_rules(_rules_text(provinces='[provinces.50]\nname = "重庆市"\n'))
    with pytest.raises(ConfigError, match=r"no table for province 51.*\[provinces\.51\]"):
        classify(
            facts(registration_division=SHAPINGBA, residence_division=JINJIANG),
            MonitoringPeriod.parse("2026Q4"),
            only_chongqing,
            TABLE,
        )


# --- province overrides ---------------------------------------------------------------------------

OVERRIDE_CASES = [
    pytest.param(
        "min_months_away = 3",
        facts(living_since=date(2026, 9, 30)),
        K.MIGRANT,
        None,
        id="three_months_suffice_in_this_province",
    ),
    pytest.param(
        "age_limit = 14",
        facts(birth_date=date(2012, 12, 1)),
        K.MIGRANT,
        date(2026, 12, 1),
        id="lower_age_limit_sets_its_own_birthday",
    ),
    pytest.param(
        "age_limit = 14",
        facts(birth_date=date(2012, 6, 1)),
        K.NEITHER,
        None,
        id="lower_age_limit_excludes_older_child",
    ),
    pytest.param(
        'lacks_guardianship_capacity = ["deceased"]',
        at_home(father=P.WORKING_AWAY, mother=P.IMPRISONED),
        K.NEITHER,
        None,
        id="narrower_incapacity_list",
    ),
]


@pytest.mark.parametrize(("override", "child", "kind", "turns_16_on"), OVERRIDE_CASES)
def test_province_override(override: str, child: ChildFacts, kind: ChildKind, turns_16_on: date | None) -> None:
    rules = load_rules(
        _rules_text(
            provinces=f'[provinces.50]\nname = "重庆市"\n{override}\n'
            f'[provinces.51]\nname = "四川省"\n\n[provinces.11]\nname = "北京市"\n'
        )
    )
    result = classify(child, MonitoringPeriod.parse("2026Q4"), rules, TABLE)
    assert (result.kind, result.turns_16_on) == (kind, turns_16_on)


# --- exemptions -----------------------------------------------------------------------------------

EXEMPT_CASES = [
    pytest.param(SHAPINGBA, YUZHONG, True, id="shapingba_yuzhong"),
    pytest.param(YUZHONG, JIANGBEI, True, id="retired_jiangbei_resolves_into_group"),
    pytest.param(LIANGJIANG, YUBEI, True, id="retired_yubei_both_successors_in_group"),
    pytest.param(BEIBEI, "500113", True, id="beibei_banan"),
    pytest.param(YUZHONG, YUZHONG, True, id="membership_only_same_code"),
    pytest.param(WANZHOU, YUZHONG, False, id="wanzhou_is_not_central"),
    pytest.param(YUZHONG, WANZHOU, False, id="central_to_wanzhou"),
    pytest.param(SHAPINGBA, JINJIANG, False, id="cross_province"),
    pytest.param(JINJIANG, JINJIANG, False, id="province_without_groups"),
]


@pytest.mark.parametrize(("residence", "registration", "expected"), EXEMPT_CASES)
def test_exempt(residence: str, registration: str, expected: bool) -> None:
    assert RULES.exempt(residence, registration, TABLE) is expected


def test_exempt_never_guesses_a_successor() -> None:
    with pytest.raises(SuccessorUnknown):
        RULES.exempt(YUZHONG, NO_SUCCESSOR, TABLE)


GROUP_DATA_CASES = [
    pytest.param(
        f'"{YUZHONG}", "{YUBEI}", "{LIANGJIANG}"',
        f"{YUBEI} now maps to {BEIBEI}, which the group does not list",
        id="successor_of_listed_retired_code_not_listed",
    ),
    pytest.param(
        f'"{YUZHONG}", "{NO_SUCCESSOR}"',
        f"{NO_SUCCESSOR} is retired and its successor is unknown",
        id="listed_code_successor_unknown",
    ),
    pytest.param(
        f'"{YUZHONG}", "500198"',
        "listed county 500198 is not usable",
        id="listed_code_unknown_to_the_table",
    ),
]


@pytest.mark.parametrize(("counties", "message"), GROUP_DATA_CASES)
def test_group_data_checked_against_division_table(counties: str, message: str) -> None:
    rules = load_rules(
        _rules_text(
            provinces=f'[provinces.50]\nname = "重庆市"\n'
            f'[[provinces.50.exemption_groups]]\nname = "g"\ncounties = [{counties}]\n'
        )
    )
    with pytest.raises(ConfigError, match=rf"provinces\.50\.exemption_groups\[0\] \(g\).*{message}"):
        rules.exempt(YUZHONG, SHAPINGBA, TABLE)


# --- the packaged rule file -----------------------------------------------------------------------


def test_packaged_rules() -> None:
    assert RULES.national.cadence is Cadence.QUARTERLY
    assert (RULES.national.age_limit, RULES.national.min_months_away) == (16, 6)
    assert RULES.national.lacks_guardianship_capacity == {
        P.DECEASED,
        P.MISSING,
        P.IMPRISONED,
        P.COMPULSORY_DETOX,
        P.SEVERE_ILLNESS,
        P.SEVERE_DISABILITY,
        P.GUARDIANSHIP_REVOKED,
        P.DEPORTED,
    }
    assert len(RULES.provinces) == 31
    chongqing = RULES.for_province("50")
    assert chongqing.name == "重庆市"
    (central,) = chongqing.exemption_groups
    assert set(central.counties) == {
        "500103",
        "500104",
        "500105",
        "500106",
        "500107",
        "500108",
        "500109",
        "500112",
        "500113",
        "500157",
    }
    # Resolving the group through the division table must not trip its consistency checks.
    assert central.current_counties(TABLE, "central") == {
        "500103",
        "500104",
        "500106",
        "500107",
        "500108",
        "500109",
        "500113",
        "500157",
    }


@pytest.mark.parametrize(
    ("code", "error"),
    [
        pytest.param("99", ConfigError, id="unlisted_province"),
        pytest.param("5", InvalidDivisionCode, id="one_digit"),
        pytest.param("500103", InvalidDivisionCode, id="county_code_not_province"),
    ],
)
def test_for_province_refuses(code: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        RULES.for_province(code)


# --- bad rule files -------------------------------------------------------------------------------

NATIONAL = """
[national]
cadence = "quarterly"
age_limit = 16
min_months_away = 6
lacks_guardianship_capacity = ["deceased", "imprisoned"]
"""


def _rules_text(
    *,
    provinces: str = '[provinces.50]\nname = "重庆市"\n',
    national: str = NATIONAL,
    head: str = "format = 1",
) -> str:
    return f"{head}\n{national}\n{provinces}"


def _group(counties: str, name: str = "中心城区", extra: str = "") -> str:
    return f'[[provinces.50.exemption_groups]]\nname = "{name}"\ncounties = [{counties}]\n{extra}'


BAD_RULES = [
    pytest.param("format = 1\n[national\n", "not valid TOML", id="not_toml"),
    pytest.param(_rules_text(head="format = 1\nversion = 2"), "unknown key 'version'", id="unknown_top_level_key"),
    pytest.param(_rules_text(head="format = 2"), "format: this software reads format 1, not 2", id="format_2"),
    pytest.param(_rules_text(head="format = true"), "format: this software reads format 1", id="format_bool"),
    pytest.param(_rules_text(head=""), "missing required key 'format'", id="no_format"),
    pytest.param(_rules_text(national=""), "missing required key 'national'", id="no_national"),
    pytest.param(_rules_text(provinces=""), "missing required key 'provinces'", id="no_provinces"),
    pytest.param(_rules_text(provinces="[provinces]\n"), "provinces: must hold at least one", id="empty_provinces"),
    pytest.param(
        _rules_text(national=NATIONAL + "max_age = 18\n"),
        "national: unknown key 'max_age'",
        id="national_unknown_key",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace("age_limit = 16\n", "")),
        "national: missing required key 'age_limit'",
        id="national_missing_age_limit",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace("age_limit = 16", "age_limit = true")),
        "national.age_limit: must be an integer, not a boolean",
        id="age_limit_boolean",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace("age_limit = 16", 'age_limit = "16"')),
        "national.age_limit: must be an integer, not a string",
        id="age_limit_string",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace("age_limit = 16", "age_limit = 19")),
        "national.age_limit: must be between 1 and 18, not 19",
        id="age_limit_adult",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace("min_months_away = 6", "min_months_away = 0")),
        "national.min_months_away: must be between 1 and 24, not 0",
        id="zero_months_away",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('"quarterly"', '"weekly"')),
        "national.cadence: 'weekly' is not a cadence",
        id="unknown_cadence",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('"imprisoned"]', '"unknown"]')),
        r"national.lacks_guardianship_capacity\[1\]: 'unknown' cannot mean",
        id="unknown_situation_cannot_be_incapable",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('"imprisoned"]', '"working_away"]')),
        r"lacks_guardianship_capacity\[1\]: 'working_away' cannot mean",
        id="working_away_cannot_be_incapable",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('"imprisoned"]', '"jailed"]')),
        r"lacks_guardianship_capacity\[1\]: 'jailed' is not a parent situation",
        id="misspelt_situation",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('"imprisoned"]', '"deceased"]')),
        r"lacks_guardianship_capacity\[1\]: 'deceased' is listed twice",
        id="duplicate_situation",
    ),
    pytest.param(
        _rules_text(national=NATIONAL.replace('["deceased", "imprisoned"]', "[]")),
        "lacks_guardianship_capacity: must list at least one",
        id="empty_incapacity_list",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.5]\nname = "x"\n'),
        "provinces.5: province key '5' must be the two-digit",
        id="one_digit_province",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.cq]\nname = "重庆市"\n'),
        "provinces.cq: province key 'cq'",
        id="letters_as_province",
    ),
    pytest.param(
        _rules_text(provinces="[provinces.50]\n"),
        "provinces.50: missing required key 'name'",
        id="province_without_name",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = ""\n'),
        "provinces.50.name: must be a non-empty string",
        id="province_empty_name",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\nexemptions = []\n'),
        "provinces.50: unknown key 'exemptions'",
        id="province_unknown_key",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\ncadence = "yearly"\n'),
        "provinces.50.cadence: 'yearly' is not a cadence",
        id="province_bad_cadence",
    ),
    pytest.param(
        _rules_text(head='format = 1\nprovinces = ["50"]', provinces=""),
        "provinces: must be a table, not an array",
        id="provinces_not_a_table",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103"')),
        r"exemption_groups\[0\].counties: an exemption group needs at least two",
        id="group_of_one",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103", "510104"')),
        r"exemption_groups\[0\].counties\[1\]: 510104 is not in province 50",
        id="group_code_in_other_province",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103", "50010"')),
        r"counties\[1\]: '50010' is not a six-digit",
        id="group_code_five_digits",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103", 500106')),
        r"counties\[1\]: must be a non-empty string, not an integer",
        id="group_code_as_integer",
    ),
    pytest.param(
        _rules_text(provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103", "500103"')),
        r"counties\[1\]: 500103 is already listed at .*counties\[0\]",
        id="county_twice_in_a_group",
    ),
    pytest.param(
        _rules_text(
            provinces='[provinces.50]\nname = "重庆市"\n'
            + _group('"500103", "500106"', name="a")
            + _group('"500106", "500107"', name="b")
        ),
        r"exemption_groups\[1\].counties\[0\]: 500106 is already listed at .*exemption_groups\[0\]",
        id="county_in_two_groups",
    ),
    pytest.param(
        _rules_text(
            provinces='[provinces.50]\nname = "重庆市"\n'
            + _group('"500103", "500106"', name="a")
            + _group('"500107", "500108"', name="a")
        ),
        r"exemption_groups\[1\].name: group name 'a' is used twice",
        id="group_name_twice",
    ),
    pytest.param(
        _rules_text(
            provinces='[provinces.50]\nname = "重庆市"\n' + _group('"500103", "500106"', extra='since = "2025"\n')
        ),
        r"exemption_groups\[0\]: unknown key 'since'",
        id="group_unknown_key",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_RULES)
def test_bad_rule_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_rules(text)


# --- the fake stays honest ------------------------------------------------------------------------


@pytest.mark.skipif(REAL_TABLE is None, reason=NO_REAL_TABLE)
def test_fake_agrees_with_real_table() -> None:
    fake = FakeDivisions()
    for code in sorted(FakeDivisions.CURRENT | set(FakeDivisions.RETIRED)):
        assert set(REAL_TABLE.resolve_all(code)) == set(fake.resolve_all(code)), code
        assert REAL_TABLE.is_current(code) is fake.is_current(code), code


@pytest.mark.skipif(REAL_TABLE is None, reason=NO_REAL_TABLE)
def test_every_province_in_the_division_table_has_rules() -> None:
    codes = {division.code[:2] for division in REAL_TABLE.provinces() if REAL_TABLE.current_counties(division.code)}
    # Hong Kong and Macao are routing codes in the table (places without counties) but have no
    # civil-affairs bureau in the national child-welfare system, so no monitoring rules.
    assert codes - {"81", "82"} == {rules.code for rules in RULES.provinces}
    for rules in RULES.provinces:
        for group in rules.exemption_groups:
            group.current_counties(REAL_TABLE, f"{rules.code}/{group.name}")


def test_facts_repr_hides_personal_dates() -> None:
    text = repr(facts(birth_date=date(2015, 5, 20), living_since=date(2025, 1, 2)))
    assert "2015" not in text
    assert "2025" not in text
