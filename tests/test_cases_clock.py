"""Statutory clocks: working days across holidays with make-up days, pauses, restarts, limits of the data."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from gateway.cases.clock import (
    LIMITS,
    Step,
    default_calendar,
    due_dates,
    load_calendar,
    overdue,
)
from gateway.cases.lifecycle import (
    CHINA,
    Accept,
    Action,
    Approve,
    CaseState,
    DeliverResult,
    FirstReview,
    NotifyApplicant,
    Push,
    Receive,
    RequestMaterial,
    Resubmit,
    Return,
    Role,
    Transfer,
    Withdraw,
    apply,
    new_state,
)
from gateway.cases.types import Case, EvidenceKind, Programme, ProgrammeFamily
from gateway.domain.records import ParentSituation
from gateway.errors import CalendarNotCovered, ConfigError
from tests.test_cases_types import case, recognition, subsidy

S, N, G = Role.RESIDENCE_STAFF, Role.RESIDENCE_NODE, Role.REGISTRATION_NODE
CAL = default_calendar()
d = date.fromisoformat


# --- the calendar -------------------------------------------------------------------------------

WORKING_DAYS: dict[str, tuple[str, bool]] = {
    "2025_new_year_wednesday_only": ("2025-01-01", False),
    "2025_jan_2_thursday_works": ("2025-01-02", True),
    "2025_spring_festival_makeup_sunday": ("2025-01-26", True),
    "2025_spring_festival_eve": ("2025-01-28", False),
    "2025_spring_festival_last_day_tuesday": ("2025-02-04", False),
    "2025_spring_festival_wednesday_after": ("2025-02-05", True),
    "2025_spring_festival_makeup_saturday": ("2025-02-08", True),
    "2025_national_day_makeup_sunday": ("2025-09-28", True),
    "2025_national_and_mid_autumn_last_day": ("2025-10-08", False),
    "2025_october_9_thursday_works": ("2025-10-09", True),
    "2025_national_day_makeup_saturday": ("2025-10-11", True),
    "2025_ordinary_saturday": ("2025-10-18", False),
    "2025_new_year_eve_wednesday": ("2025-12-31", True),
    "2026_new_year_saturday": ("2026-01-03", False),
    "2026_new_year_makeup_sunday": ("2026-01-04", True),
    "2026_spring_festival_makeup_saturday_before": ("2026-02-14", True),
    "2026_spring_festival_first_day_sunday": ("2026-02-15", False),
    "2026_spring_festival_weekday_inside": ("2026-02-18", False),
    "2026_spring_festival_last_day_monday": ("2026-02-23", False),
    "2026_spring_festival_tuesday_after": ("2026-02-24", True),
    "2026_spring_festival_makeup_saturday_after": ("2026-02-28", True),
    "2026_qingming_monday": ("2026-04-06", False),
    "2026_labour_day_tuesday": ("2026-05-05", False),
    "2026_labour_day_makeup_saturday": ("2026-05-09", True),
    "2026_dragon_boat_friday": ("2026-06-19", False),
    "2026_national_day_makeup_sunday_before": ("2026-09-20", True),
    "2026_mid_autumn_friday": ("2026-09-25", False),
    "2026_national_day_wednesday_last": ("2026-10-07", False),
    "2026_national_day_thursday_after": ("2026-10-08", True),
    "2026_national_day_makeup_saturday_after": ("2026-10-10", True),
    "2026_ordinary_sunday": ("2026-10-11", False),
}


@pytest.mark.parametrize(("day", "working"), WORKING_DAYS.values(), ids=WORKING_DAYS.keys())
def test_working_days(day: str, working: bool) -> None:
    assert CAL.is_working_day(d(day)) is working


@pytest.mark.parametrize("day", ["2024-12-31", "2027-01-01", "2027-06-01"])
def test_a_year_without_a_table_is_an_error(day: str) -> None:
    with pytest.raises(CalendarNotCovered):
        CAL.is_working_day(d(day))


# (start, working days, expected due day) — the start day is never counted.
ADDING: dict[str, tuple[str, int, str]] = {
    "thursday_plus_3_crosses_spring_festival_with_makeup_saturday": ("2026-02-12", 3, "2026-02-24"),
    "friday_plus_1_is_the_makeup_saturday": ("2026-02-13", 1, "2026-02-14"),
    "makeup_saturday_plus_1_jumps_the_holiday": ("2026-02-14", 1, "2026-02-24"),
    "start_inside_the_holiday": ("2026-02-18", 1, "2026-02-24"),
    "before_national_day_plus_3_ends_on_makeup_saturday": ("2026-09-30", 3, "2026-10-10"),
    "friday_plus_3_counts_the_makeup_sunday": ("2025-09-26", 3, "2025-09-30"),
    "across_2025_national_day_and_mid_autumn": ("2025-09-30", 2, "2025-10-10"),
    "across_the_year_end": ("2025-12-30", 2, "2026-01-04"),
    "fifteen_across_mid_autumn_and_national_day": ("2026-09-18", 15, "2026-10-15"),
    "ordinary_week_plus_10": ("2026-03-02", 10, "2026-03-16"),
}


@pytest.mark.parametrize(("start", "count", "due"), ADDING.values(), ids=ADDING.keys())
def test_add_working_days(start: str, count: int, due: str) -> None:
    assert CAL.add_working_days(d(start), count) == d(due)


def test_counting_past_the_calendar_is_an_error() -> None:
    assert CAL.add_working_days(d("2026-12-29"), 2) == d("2026-12-31")
    with pytest.raises(CalendarNotCovered):
        CAL.add_working_days(d("2026-12-29"), 3)


def test_packaged_calendar_names_its_sources() -> None:
    assert sorted(CAL.years) == [2025, 2026]
    assert "国办发明电〔2024〕12号" in CAL.years[2025].source
    assert "2025年11月4日" in CAL.years[2026].source


_GOOD_YEAR = """format = 1
[years.2026]
source = "test"
holidays = [{ name = "国庆节", first = 2026-10-01, last = 2026-10-07, days = 7 }]
makeup_workdays = [2026-10-10]
"""

BAD_CALENDARS: dict[str, str] = {
    "not_toml": "format = ",
    "wrong_format": _GOOD_YEAR.replace("format = 1", "format = 2"),
    "unknown_top_level_key": _GOOD_YEAR + "extra = 1\n",
    "year_key_not_four_digits": _GOOD_YEAR.replace("years.2026", "years.26"),
    "no_source": _GOOD_YEAR.replace('source = "test"', 'source = ""'),
    "day_count_differs_from_dates": _GOOD_YEAR.replace("days = 7", "days = 8"),
    "holiday_in_another_year": _GOOD_YEAR.replace("first = 2026-10-01", "first = 2025-10-01"),
    "last_before_first": _GOOD_YEAR.replace("last = 2026-10-07, days = 7", "last = 2026-09-30, days = 7"),
    "makeup_day_on_a_weekday": _GOOD_YEAR.replace("[2026-10-10]", "[2026-10-09]"),
    "makeup_day_inside_the_holiday": _GOOD_YEAR.replace("[2026-10-10]", "[2026-10-03]"),
    "makeup_day_listed_twice": _GOOD_YEAR.replace("[2026-10-10]", "[2026-10-10, 2026-10-10]"),
    "makeup_day_with_a_time": _GOOD_YEAR.replace("[2026-10-10]", "[2026-10-10T09:00:00]"),
    "overlapping_holidays": _GOOD_YEAR.replace(
        "days = 7 }]", 'days = 7 }, { name = "x", first = 2026-10-07, last = 2026-10-08, days = 2 }]'
    ),
}


def test_the_good_calendar_loads() -> None:
    assert load_calendar(_GOOD_YEAR).is_working_day(d("2026-10-10"))


@pytest.mark.parametrize("text", BAD_CALENDARS.values(), ids=BAD_CALENDARS.keys())
def test_bad_calendar_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        load_calendar(text)


# --- the clocks of a case -----------------------------------------------------------------------

ORPHAN = recognition(Programme.ORPHAN, ParentSituation.DECEASED, ParentSituation.DECEASED)
NURSING = subsidy(Programme.NURSING_SUBSIDY, 1)


def run(application: Any, accepted_on: str, steps: list[tuple[Role, Action, str]]) -> tuple[Case, CaseState]:
    """Accept on ``accepted_on`` then apply ``steps``, each at 10:00 China time plus its index in minutes."""
    c = case(application=application, accepted_on=d(accepted_on))
    state = new_state(c)
    for index, (role, action, day) in enumerate([(S, Accept(), accepted_on), *steps]):
        when = datetime.fromisoformat(day).replace(hour=10, tzinfo=CHINA) + timedelta(minutes=index)
        state = apply(state, role, action, when)
    return c, state


def test_limits_are_those_of_spec() -> None:
    assert dict(LIMITS[ProgrammeFamily.RECOGNITION]) == {
        Step.PUSH: 3,
        Step.FIRST_REVIEW: 15,
        Step.DECISION: 15,
        Step.NOTIFY: 3,
    }
    assert dict(LIMITS[ProgrammeFamily.SUBSIDY]) == {Step.PUSH: 3, Step.DECISION: 10, Step.NOTIFY: 3}


def test_push_due_on_the_makeup_saturday_before_spring_festival() -> None:
    c, state = run(NURSING, "2026-02-11", [])
    clocks = due_dates(c, state.history)
    assert clocks[Step.PUSH].due == d("2026-02-14")  # Thu 12 (1), Fri 13 (2), Sat 14 make-up (3)
    assert clocks[Step.DECISION].started_on is None
    assert clocks[Step.DECISION].due is None
    assert overdue(c, state.history, d("2026-02-14")) == []  # the due day itself is on time
    assert [x.step for x in overdue(c, state.history, d("2026-02-15"))] == [Step.PUSH]


def test_push_on_the_first_day_after_the_holiday_is_late() -> None:
    c, state = run(NURSING, "2026-02-11", [(N, Push(), "2026-02-24")])
    push = due_dates(c, state.history)[Step.PUSH]
    assert push.completed
    assert push.late
    assert push.stopped_on == d("2026-02-24")
    assert overdue(c, state.history, d("2026-03-01")) == []  # stopped: late, but no longer an alert


def test_orphan_first_review_across_mid_autumn_and_national_day() -> None:
    c, state = run(ORPHAN, "2026-09-16", [(N, Push(), "2026-09-17"), (G, Receive(), "2026-09-18")])
    clocks = due_dates(c, state.history)
    assert clocks[Step.PUSH].completed
    assert not clocks[Step.PUSH].late
    review = clocks[Step.FIRST_REVIEW]
    # Sun 20 make-up (1), 21-24 (2-5), 25-27 中秋, 28-30 (6-8), 1-7 国庆, 8-9 (9-10), Sat 10 make-up (11), 12-15 (12-15)
    assert (review.started_on, review.due) == (d("2026-09-18"), d("2026-10-15"))
    assert overdue(c, state.history, d("2026-10-15")) == []
    assert [x.step for x in overdue(c, state.history, d("2026-10-16"))] == [Step.FIRST_REVIEW]
    c, state = run(
        ORPHAN,
        "2026-09-16",
        [(N, Push(), "2026-09-17"), (G, Receive(), "2026-09-18"), (G, FirstReview(), "2026-10-15")],
    )
    clocks = due_dates(c, state.history)
    assert clocks[Step.FIRST_REVIEW].completed
    assert not clocks[Step.FIRST_REVIEW].late
    assert (clocks[Step.DECISION].started_on, clocks[Step.DECISION].due) == (d("2026-10-15"), d("2026-11-05"))


def test_subsidy_decision_across_spring_festival_2025() -> None:
    c, state = run(NURSING, "2025-01-20", [(N, Push(), "2025-01-21"), (G, Receive(), "2025-01-22")])
    # Thu 23 (1), Fri 24 (2), Sun 26 make-up (3), Mon 27 (4), 28 Jan-4 Feb 春节, 5-7 (5-7), Sat 8 make-up (8),
    # Mon 10 (9), Tue 11 (10)
    assert due_dates(c, state.history)[Step.DECISION].due == d("2025-02-11")


def test_material_request_pauses_the_clock_and_resumes_with_the_days_used() -> None:
    received = [(N, Push(), "2026-03-02"), (G, Receive(), "2026-03-02")]
    request = (G, RequestMaterial((EvidenceKind.DISABILITY_CERTIFICATE,)), "2026-03-04")
    c, state = run(NURSING, "2026-03-02", received)
    assert due_dates(c, state.history)[Step.DECISION].due == d("2026-03-16")  # no pause
    c, state = run(NURSING, "2026-03-02", [*received, request])
    decision = due_dates(c, state.history)[Step.DECISION]
    assert decision.paused
    assert decision.due is None
    assert overdue(c, state.history, d("2026-12-31")) == []  # waiting for the applicant is not overdue
    c, state = run(NURSING, "2026-03-02", [*received, request, (N, Resubmit(), "2026-03-20")])
    decision = due_dates(c, state.history)[Step.DECISION]
    # Tue 3 (1), Wed 4 the request day (2); paused to Fri 20 (not counted); Mon 23 (3) … Wed 1 April (10)
    assert not decision.paused
    assert decision.due == d("2026-04-01")
    assert overdue(c, state.history, d("2026-04-01")) == []
    assert [x.step for x in overdue(c, state.history, d("2026-04-02"))] == [Step.DECISION]


def test_a_request_made_after_the_due_day_does_not_hide_the_overdue_step() -> None:
    received = [(N, Push(), "2026-03-02"), (G, Receive(), "2026-03-02")]
    request = (G, RequestMaterial((EvidenceKind.DISABILITY_CERTIFICATE,)), "2026-03-20")
    c, state = run(NURSING, "2026-03-02", [*received, request])
    decision = due_dates(c, state.history)[Step.DECISION]
    assert decision.due == d("2026-03-16")
    assert not decision.paused
    assert [x.step for x in overdue(c, state.history, d("2026-03-21"))] == [Step.DECISION]


def test_a_transfer_restarts_the_review_clock_at_the_new_node() -> None:
    steps = [
        (N, Push(), "2026-03-02"),
        (G, Receive(), "2026-03-02"),
        (G, Transfer("gz-zhijin", "520524"), "2026-03-05"),
        (G, Receive(), "2026-03-10"),
    ]
    c, state = run(NURSING, "2026-03-02", steps)
    decision = due_dates(c, state.history)[Step.DECISION]
    assert (decision.started_on, decision.due) == (d("2026-03-10"), d("2026-03-24"))
    c, state = run(NURSING, "2026-03-02", steps[:3])
    decision = due_dates(c, state.history)[Step.DECISION]
    assert decision.stopped_on == d("2026-03-05")
    assert not decision.completed
    assert overdue(c, state.history, d("2026-06-01")) == []


def test_withdrawal_stops_the_clock() -> None:
    c, state = run(NURSING, "2026-03-02", [(S, Withdraw(), "2026-03-03")])
    push = due_dates(c, state.history)[Step.PUSH]
    assert push.stopped_on == d("2026-03-03")
    assert not push.completed
    assert overdue(c, state.history, d("2026-04-01")) == []


def test_notify_clock_starts_on_result_or_return() -> None:
    decided = [
        (N, Push(), "2026-04-28"),
        (G, Receive(), "2026-04-29"),
        (G, Approve(date(2026, 5, 1)), "2026-04-30"),
        (G, DeliverResult(), "2026-04-30"),
    ]
    c, state = run(NURSING, "2026-04-27", decided)
    notify = due_dates(c, state.history)[Step.NOTIFY]
    # 1-5 May 劳动节, Wed 6 (1), Thu 7 (2), Fri 8 (3)
    assert (notify.started_on, notify.due) == (d("2026-04-30"), d("2026-05-08"))
    c, state = run(NURSING, "2026-04-27", [*decided, (S, NotifyApplicant(), "2026-05-09")])
    notify = due_dates(c, state.history)[Step.NOTIFY]
    assert notify.completed
    assert notify.late
    c, state = run(
        ORPHAN,
        "2026-04-27",
        [(N, Push(), "2026-04-28"), (G, Receive(), "2026-04-29"), (G, Return("other", "见说明"), "2026-04-30")],
    )
    clocks = due_dates(c, state.history)
    assert clocks[Step.FIRST_REVIEW].stopped_on == d("2026-04-30")
    assert not clocks[Step.FIRST_REVIEW].completed
    assert clocks[Step.NOTIFY].due == d("2026-05-08")


def test_both_ends_compute_the_same_clock_from_the_same_events() -> None:
    c, state = run(NURSING, "2026-09-28", [(N, Push(), "2026-09-30"), (G, Receive(), "2026-10-09")])
    residence = due_dates(c, state.history)
    # The other end holds the same events with their times in UTC: dates are still China dates.
    registration = due_dates(c, tuple(replace(e, at=e.at.astimezone(UTC)) for e in state.history))
    assert residence == registration
    assert residence[Step.DECISION].due == d("2026-10-22")  # Sat 10 make-up (1), 12-16 (2-6), 19-22 (7-10)


def test_a_clock_that_runs_past_the_calendar_is_an_error() -> None:
    c, state = run(NURSING, "2026-12-29", [])
    with pytest.raises(CalendarNotCovered):
        due_dates(c, state.history)
    with pytest.raises(CalendarNotCovered):
        overdue(c, state.history, d("2027-01-05"))
