"""Monitoring periods and calendar arithmetic (gateway.domain.period)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.period import Cadence, MonitoringPeriod, add_months, age_on, nth_birthday
from gateway.errors import InputError, InvalidRecord

# --- labels ---------------------------------------------------------------------------------------

PARSE_CASES = [
    pytest.param("2026-11", date(2026, 11, 1), date(2026, 11, 30), Cadence.MONTHLY, id="month_november"),
    pytest.param("2028-02", date(2028, 2, 1), date(2028, 2, 29), Cadence.MONTHLY, id="month_leap_february"),
    pytest.param("2100-02", date(2100, 2, 1), date(2100, 2, 28), Cadence.MONTHLY, id="month_2100_not_leap"),
    pytest.param("2026Q1", date(2026, 1, 1), date(2026, 3, 31), Cadence.QUARTERLY, id="quarter_1"),
    pytest.param("2026Q2", date(2026, 4, 1), date(2026, 6, 30), Cadence.QUARTERLY, id="quarter_2"),
    pytest.param("2026Q3", date(2026, 7, 1), date(2026, 9, 30), Cadence.QUARTERLY, id="quarter_3"),
    pytest.param("2026Q4", date(2026, 10, 1), date(2026, 12, 31), Cadence.QUARTERLY, id="quarter_4"),
    pytest.param("2026H1", date(2026, 1, 1), date(2026, 6, 30), Cadence.HALF_YEARLY, id="half_1"),
    pytest.param("2026H2", date(2026, 7, 1), date(2026, 12, 31), Cadence.HALF_YEARLY, id="half_2"),
]


@pytest.mark.parametrize(("label", "start", "end", "cadence"), PARSE_CASES)
def test_parse(label: str, start: date, end: date, cadence: Cadence) -> None:
    period = MonitoringPeriod.parse(label)
    assert (period.start, period.end, period.label, period.cadence) == (start, end, label, cadence)
    assert str(period) == label


BAD_LABELS = [
    pytest.param("", id="empty"),
    pytest.param("2026", id="year_only"),
    pytest.param("2026q4", id="lower_case_q"),
    pytest.param("2026h2", id="lower_case_h"),
    pytest.param("2026Q0", id="quarter_0"),
    pytest.param("2026Q5", id="quarter_5"),
    pytest.param("2026H3", id="half_3"),
    pytest.param("2026-1", id="month_not_zero_padded"),
    pytest.param("2026-13", id="month_13"),
    pytest.param("2026-00", id="month_00"),
    pytest.param("2026/11", id="slash"),
    pytest.param("202611", id="no_separator"),
    pytest.param(" 2026Q4", id="leading_space"),
    pytest.param("2026Q4\n", id="trailing_newline"),
    pytest.param("２０２６Q4", id="full_width_digits"),
    pytest.param("26Q4", id="two_digit_year"),
    pytest.param("0000Q1", id="year_zero"),
    pytest.param("2026-Q4", id="hyphen_before_quarter"),
]


@pytest.mark.parametrize("label", BAD_LABELS)
def test_parse_rejects(label: str) -> None:
    with pytest.raises(InputError, match=r"2026-11, 2026Q4 or 2026H2|no year 0000"):
        MonitoringPeriod.parse(label)


CONTAINING_CASES = [
    pytest.param(date(2026, 11, 15), Cadence.MONTHLY, "2026-11", id="monthly_mid_month"),
    pytest.param(date(2026, 1, 1), Cadence.QUARTERLY, "2026Q1", id="quarterly_new_year"),
    pytest.param(date(2026, 3, 31), Cadence.QUARTERLY, "2026Q1", id="quarterly_last_day_q1"),
    pytest.param(date(2026, 4, 1), Cadence.QUARTERLY, "2026Q2", id="quarterly_first_day_q2"),
    pytest.param(date(2026, 12, 31), Cadence.QUARTERLY, "2026Q4", id="quarterly_new_years_eve"),
    pytest.param(date(2026, 6, 30), Cadence.HALF_YEARLY, "2026H1", id="half_yearly_june_30"),
    pytest.param(date(2026, 7, 1), Cadence.HALF_YEARLY, "2026H2", id="half_yearly_july_1"),
]


@pytest.mark.parametrize(("day", "cadence", "label"), CONTAINING_CASES)
def test_containing(day: date, cadence: Cadence, label: str) -> None:
    period = MonitoringPeriod.containing(day, cadence)
    assert period == MonitoringPeriod.parse(label)
    assert day in period


NEIGHBOUR_CASES = [
    pytest.param("2026-11", "2026-10", "2026-12", id="month"),
    pytest.param("2026-12", "2026-11", "2027-01", id="month_into_next_year"),
    pytest.param("2026-01", "2025-12", "2026-02", id="month_from_previous_year"),
    pytest.param("2026Q4", "2026Q3", "2027Q1", id="quarter_into_next_year"),
    pytest.param("2026Q1", "2025Q4", "2026Q2", id="quarter_from_previous_year"),
    pytest.param("2026H2", "2026H1", "2027H1", id="half_into_next_year"),
    pytest.param("2026H1", "2025H2", "2026H2", id="half_from_previous_year"),
]


@pytest.mark.parametrize(("label", "previous", "following"), NEIGHBOUR_CASES)
def test_next_and_previous(label: str, previous: str, following: str) -> None:
    period = MonitoringPeriod.parse(label)
    assert period.previous().label == previous
    assert period.next().label == following


EDGE_OF_CALENDAR = [
    pytest.param("9999H2", "next", id="nothing_after_9999H2"),
    pytest.param("9999-12", "next", id="nothing_after_9999_12"),
    pytest.param("0001Q1", "previous", id="nothing_before_0001Q1"),
]


@pytest.mark.parametrize(("label", "direction"), EDGE_OF_CALENDAR)
def test_no_period_beyond_the_calendar(label: str, direction: str) -> None:
    period = MonitoringPeriod.parse(label)
    with pytest.raises(InputError, match="no monitoring period"):
        period.next() if direction == "next" else period.previous()


CONTAINS_CASES = [
    pytest.param("2026Q4", date(2026, 10, 1), True, id="first_day_inclusive"),
    pytest.param("2026Q4", date(2026, 12, 31), True, id="last_day_inclusive"),
    pytest.param("2026Q4", date(2026, 9, 30), False, id="day_before"),
    pytest.param("2026Q4", date(2027, 1, 1), False, id="day_after"),
    pytest.param("2028-02", date(2028, 2, 29), True, id="leap_day"),
]


@pytest.mark.parametrize(("label", "day", "expected"), CONTAINS_CASES)
def test_contains(label: str, day: date, expected: bool) -> None:
    assert (day in MonitoringPeriod.parse(label)) is expected


def test_contains_refuses_datetime() -> None:
    with pytest.raises(TypeError, match="time zone"):
        _ = datetime(2026, 11, 1, 12, 0) in MonitoringPeriod.parse("2026Q4")


INCONSISTENT_CONSTRUCTIONS = [
    pytest.param(date(2026, 10, 1), date(2026, 12, 30), "2026Q4", id="wrong_end"),
    pytest.param(date(2026, 7, 1), date(2026, 12, 31), "2026Q4", id="wrong_start"),
    pytest.param(date(2026, 10, 1), date(2026, 12, 31), "2026H2", id="wrong_label"),
    pytest.param(date(2026, 10, 1), date(2026, 12, 31), "Q4", id="bad_label"),
]


@pytest.mark.parametrize(("start", "end", "label"), INCONSISTENT_CONSTRUCTIONS)
def test_direct_construction_is_checked(start: date, end: date, label: str) -> None:
    with pytest.raises(InputError):
        MonitoringPeriod(start, end, label)


def test_direct_construction_when_consistent() -> None:
    assert MonitoringPeriod(date(2026, 10, 1), date(2026, 12, 31), "2026Q4") == MonitoringPeriod.parse("2026Q4")


# --- calendar months ------------------------------------------------------------------------------

ADD_MONTHS_CASES = [
    pytest.param(date(2026, 3, 15), 6, date(2026, 9, 15), id="plain"),
    pytest.param(date(2026, 8, 31), 6, date(2027, 2, 28), id="aug31_plus_6_common_year"),
    pytest.param(date(2027, 8, 31), 6, date(2028, 2, 29), id="aug31_plus_6_leap_year"),
    pytest.param(date(2026, 3, 31), 6, date(2026, 9, 30), id="mar31_plus_6_clamps_to_sep30"),
    pytest.param(date(2026, 1, 31), 1, date(2026, 2, 28), id="jan31_plus_1"),
    pytest.param(date(2028, 2, 29), 12, date(2029, 2, 28), id="leap_day_plus_a_year"),
    pytest.param(date(2026, 7, 1), 6, date(2027, 1, 1), id="across_new_year"),
    pytest.param(date(2026, 12, 31), -6, date(2026, 6, 30), id="backwards_clamps"),
    pytest.param(date(2026, 1, 15), -1, date(2025, 12, 15), id="backwards_across_new_year"),
    pytest.param(date(2026, 5, 31), 0, date(2026, 5, 31), id="zero"),
    pytest.param(date(2026, 5, 31), 120, date(2036, 5, 31), id="ten_years"),
]


@pytest.mark.parametrize(("day", "months", "expected"), ADD_MONTHS_CASES)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


@pytest.mark.parametrize(
    ("day", "months"),
    [
        pytest.param(date(9999, 12, 1), 1, id="after_9999"),
        pytest.param(date(1, 1, 31), -1, id="before_year_1"),
    ],
)
def test_add_months_outside_calendar(day: date, months: int) -> None:
    with pytest.raises(OverflowError):
        add_months(day, months)


# --- ages -----------------------------------------------------------------------------------------

AGE_CASES = [
    pytest.param(date(2010, 11, 15), date(2026, 11, 14), 15, id="day_before_16th_birthday"),
    pytest.param(date(2010, 11, 15), date(2026, 11, 15), 16, id="on_16th_birthday"),
    pytest.param(date(2010, 11, 15), date(2026, 11, 16), 16, id="day_after_16th_birthday"),
    pytest.param(date(2010, 11, 15), date(2010, 11, 15), 0, id="day_of_birth"),
    pytest.param(date(2012, 2, 29), date(2013, 2, 28), 0, id="feb29_not_yet_on_feb28_common_year"),
    pytest.param(date(2012, 2, 29), date(2013, 3, 1), 1, id="feb29_reached_on_mar1_common_year"),
    pytest.param(date(2012, 2, 29), date(2016, 2, 28), 3, id="feb29_not_yet_on_feb28_leap_year"),
    pytest.param(date(2012, 2, 29), date(2016, 2, 29), 4, id="feb29_reached_on_feb29_leap_year"),
    pytest.param(date(2084, 2, 29), date(2100, 2, 28), 15, id="feb29_2100_is_not_leap_feb28"),
    pytest.param(date(2084, 2, 29), date(2100, 3, 1), 16, id="feb29_2100_is_not_leap_mar1"),
    pytest.param(date(2010, 12, 31), date(2026, 1, 1), 15, id="new_years_eve_baby"),
]


@pytest.mark.parametrize(("birth", "day", "expected"), AGE_CASES)
def test_age_on(birth: date, day: date, expected: int) -> None:
    assert age_on(birth, day) == expected


def test_age_before_birth_is_refused() -> None:
    with pytest.raises(InvalidRecord):
        age_on(date(2020, 5, 1), date(2020, 4, 30))


NTH_BIRTHDAY_CASES = [
    pytest.param(date(2010, 11, 15), 16, date(2026, 11, 15), id="ordinary"),
    pytest.param(date(2012, 2, 29), 16, date(2028, 2, 29), id="feb29_to_leap_year"),
    pytest.param(date(2012, 2, 29), 1, date(2013, 3, 1), id="feb29_to_common_year"),
    pytest.param(date(2084, 2, 29), 16, date(2100, 3, 1), id="feb29_to_century_common_year"),
    pytest.param(date(2010, 11, 15), 0, date(2010, 11, 15), id="zero_years"),
]


@pytest.mark.parametrize(("birth", "years", "expected"), NTH_BIRTHDAY_CASES)
def test_nth_birthday(birth: date, years: int, expected: date) -> None:
    assert nth_birthday(birth, years) == expected


# --- properties -----------------------------------------------------------------------------------

days = st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31))


@given(day=days, cadence=st.sampled_from(Cadence))
def test_periods_tile_the_calendar(day: date, cadence: Cadence) -> None:
    period = MonitoringPeriod.containing(day, cadence)
    assert period.start <= day <= period.end
    assert MonitoringPeriod.parse(period.label) == period
    assert period.next().start == period.end + timedelta(days=1)
    assert period.next().previous() == period
    assert period.previous().next() == period


@given(birth=days, years=st.integers(min_value=0, max_value=100))
def test_age_and_nth_birthday_agree(birth: date, years: int) -> None:
    birthday = nth_birthday(birth, years)
    assert age_on(birth, birthday) == years
    if years:
        assert age_on(birth, birthday - timedelta(days=1)) == years - 1


@given(day=days, months=st.integers(min_value=-1200, max_value=1200))
def test_add_months_keeps_or_clamps_the_day(day: date, months: int) -> None:
    moved = add_months(day, months)
    assert (moved.year * 12 + moved.month) - (day.year * 12 + day.month) == months
    assert moved.day == day.day or (moved.day < day.day and (moved + timedelta(days=1)).day == 1)
