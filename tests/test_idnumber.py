"""GB 11643 resident ID numbers, as a table of named cases (STYLE habit 6).

Every number below is synthetic: built by ``idnumber.make`` or hand-made with a correct check
character for a made-up sequence; none belongs to a real person.
"""

from __future__ import annotations

from datetime import date

import pytest

from gateway.domain import idnumber
from gateway.domain.records import Sex
from gateway.errors import IdProblem, InvalidIdNumber

TODAY = date(2026, 11, 23)

# 11010519491231002X is the standard's own worked example (check character X).
STANDARD_EXAMPLE = "11010519491231002X"
MALE_2015 = idnumber.make("500112", date(2015, 6, 1), 123)  # retired prefix: still a valid number
FEMALE_2012 = idnumber.make("511321", date(2012, 2, 29), 42)


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in s)


@pytest.mark.parametrize(
    ("raw", "number", "born", "sex"),
    [
        pytest.param(STANDARD_EXAMPLE, STANDARD_EXAMPLE, date(1949, 12, 31), Sex.FEMALE, id="x_check_character"),
        pytest.param(STANDARD_EXAMPLE.lower(), STANDARD_EXAMPLE, date(1949, 12, 31), Sex.FEMALE, id="lower_case_x"),
        pytest.param(
            _fullwidth(STANDARD_EXAMPLE),
            STANDARD_EXAMPLE,
            date(1949, 12, 31),
            Sex.FEMALE,
            id="full_width_digits_and_x",
        ),
        pytest.param(" 110105 19491231 002X ", STANDARD_EXAMPLE, date(1949, 12, 31), Sex.FEMALE, id="spaces"),
        pytest.param(
            "110105\u300019491231002x",
            STANDARD_EXAMPLE,
            date(1949, 12, 31),
            Sex.FEMALE,
            id="ideographic_space",
        ),
        pytest.param("'" + MALE_2015, MALE_2015, date(2015, 6, 1), Sex.MALE, id="excel_apostrophe"),
        pytest.param(MALE_2015, MALE_2015, date(2015, 6, 1), Sex.MALE, id="odd_sequence_is_male"),
        pytest.param(FEMALE_2012, FEMALE_2012, date(2012, 2, 29), Sex.FEMALE, id="leap_day_birth"),
    ],
)
def test_valid_numbers(raw: str, number: str, born: date, sex: Sex) -> None:
    rid = idnumber.parse(raw, today=TODAY)
    assert rid.number == number
    assert rid.birth_date == born
    assert rid.sex == sex
    assert rid.issuing_division == number[:6]
    assert number not in repr(rid)


def _with_check(body17: str) -> str:
    return body17 + idnumber.check_character(body17)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param("", IdProblem.EMPTY, id="empty"),
        pytest.param("   ", IdProblem.EMPTY, id="only_spaces"),
        pytest.param(STANDARD_EXAMPLE[:-1], IdProblem.LENGTH, id="seventeen_chars"),
        pytest.param("110105491231002", IdProblem.LENGTH, id="old_15_digit_format"),
        pytest.param(STANDARD_EXAMPLE + "1", IdProblem.LENGTH, id="nineteen_chars"),
        pytest.param("11010519491231X02X", IdProblem.CHARACTER, id="x_not_last"),
        pytest.param("11010519491231002Y", IdProblem.CHARACTER, id="letter_other_than_x"),
        pytest.param("11010519491231002٣", IdProblem.CHARACTER, id="non_ascii_digit"),
        pytest.param("110105194912310021", IdProblem.CHECK_CHARACTER, id="wrong_check_digit"),
        pytest.param("110105194912310029", IdProblem.CHECK_CHARACTER, id="digit_where_x_belongs"),
        pytest.param(
            MALE_2015[:-1] + ("X" if MALE_2015[-1] != "X" else "0"),
            IdProblem.CHECK_CHARACTER,
            id="x_where_digit_belongs",
        ),
        pytest.param(_with_check("51132120130229004"), IdProblem.BIRTH_DATE, id="feb_29_in_common_year"),
        pytest.param(_with_check("51132120121301004"), IdProblem.BIRTH_DATE, id="month_13"),
        pytest.param(_with_check("51132118991231004"), IdProblem.BIRTH_DATE, id="before_1900"),
        pytest.param(_with_check("51132120270101004"), IdProblem.BIRTH_IN_FUTURE, id="born_in_future"),
    ],
)
def test_invalid_numbers_name_the_rule(raw: str, problem: IdProblem) -> None:
    with pytest.raises(InvalidIdNumber) as info:
        idnumber.parse(raw, today=TODAY)
    assert info.value.reason is problem
    digits = idnumber.normalise(raw)
    if len(digits) >= 6:
        assert digits not in str(info.value), "error text must never echo the number"


@pytest.mark.parametrize(
    ("prefix", "existed", "ok"),
    [
        pytest.param("500112", {"500112"}, True, id="retired_prefix_still_valid"),
        pytest.param("999999", {"500112"}, False, id="never_existed"),
    ],
)
def test_prefix_checked_against_history(prefix: str, existed: set[str], ok: bool) -> None:
    number = idnumber.make(prefix, date(2015, 6, 1), 7)
    if ok:
        assert idnumber.parse(number, division_existed=existed.__contains__).issuing_division == prefix
    else:
        with pytest.raises(InvalidIdNumber) as info:
            idnumber.parse(number, division_existed=existed.__contains__)
        assert info.value.reason is IdProblem.UNKNOWN_PREFIX


def test_check_character_matches_the_standard_weights() -> None:
    # Every single-digit change of a valid body changes the check character (MOD 11-2 detects it).
    body = STANDARD_EXAMPLE[:17]
    assert idnumber.check_character(body) == "X"
    for i in range(17):
        for d in "0123456789":
            if d != body[i]:
                changed = body[:i] + d + body[i + 1 :]
                assert idnumber.check_character(changed) != "X"


def test_make_refuses_bad_input() -> None:
    with pytest.raises(InvalidIdNumber):
        idnumber.make("5001", date(2015, 1, 1), 1)
    with pytest.raises(InvalidIdNumber):
        idnumber.make("500112", date(2015, 1, 1), 1000)
