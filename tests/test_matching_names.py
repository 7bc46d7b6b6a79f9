"""Name normalisation (gateway.matching.names) as a table of named cases: each pair must fold to the
same pinyin syllables (and, where both are written in characters, the same characters)."""

from __future__ import annotations

import pytest

from gateway.matching.names import COMPOUND_SURNAMES, SURNAME_READINGS, normalise_name, segment_pinyin
from gateway.synth.names import load_surnames

# (case, written one way, written another way, same characters too?)
SAME_NAME = [
    ("traditional_to_simplified", "張曉明", "张晓明", True),
    ("full_width_latin", "ＺＨＡＮＧ　ＸＩＡＯＭＩＮＧ", "Zhang Xiaoming", True),
    ("spaces_inside", "张 晓 明", "张晓明", True),
    ("ideographic_space", "张\u3000晓明", "张晓明", True),
    ("middle_dot_u00b7", "次仁·卓玛", "次仁卓玛", True),
    ("middle_dot_bullet", "艾力•买买提", "艾力·买买提", True),
    ("middle_dot_katakana", "艾力・买买提", "艾力买买提", True),
    ("middle_dot_hyphenation_point", "艾力‧买买提", "艾力买买提", True),
    ("middle_dot_full_stop", "艾力.买买提", "艾力买买提", True),
    ("homophone_given_name", "张小明", "张晓明", False),
    ("homophone_surname", "章晓明", "张晓明", False),
    ("pinyin_spaced", "Zhang Xiaoming", "张晓明", False),
    ("pinyin_joined_lower", "zhangxiaoming", "张晓明", False),
    ("pinyin_upper_hyphen", "ZHANG Xiao-ming", "张晓明", False),
    ("pinyin_tone_marks", "Zhāng Xiǎomíng", "张晓明", False),
    ("pinyin_u_umlaut", "Lü Wei", "吕伟", False),
    ("pinyin_passport_yu", "LYU Wei", "吕伟", False),
    ("pinyin_v_for_u_umlaut", "lvwei", "吕伟", False),
    ("surname_zeng", "Zeng Xiaoming", "曾小明", False),
    ("surname_shan", "Shan Tianfang", "单田芳", False),
    ("surname_xie", "Xie Jin", "解缙", False),
    ("surname_qiu", "Qiu Ying", "仇英", False),
    ("surname_piao", "Piao Shu", "朴树", False),
    ("surname_ou", "Ou Jiaming", "区家明", False),
    ("surname_zha", "Zha Liangyong", "查良镛", False),
    ("surname_ge", "Ge Nie", "盖聂", False),
    ("surname_miao", "Miao Si", "缪斯", False),
    ("surname_zhai", "Zhai Li", "翟丽", False),
    ("compound_yuchi", "Yuchi Gong", "尉迟恭", False),
    ("compound_ouyang", "OUYANG Nana", "欧阳娜娜", False),
    ("compound_zhuge", "Zhuge Liang", "诸葛亮", False),
    ("compound_zhangsun", "Zhangsun Wuji", "长孙无忌", False),
    ("traditional_compound_surname", "歐陽娜娜", "欧阳娜娜", True),
]


@pytest.mark.parametrize(("case", "one", "other", "same_chars"), SAME_NAME, ids=[c[0] for c in SAME_NAME])
def test_same_name_folds_to_the_same_pinyin(case: str, one: str, other: str, same_chars: bool) -> None:
    a, b = normalise_name(one), normalise_name(other)
    assert a.syllables == b.syllables, case
    if same_chars:
        assert a.chars == b.chars, case


DIFFERENT = [
    ("different_given_name", "张晓明", "张晓红"),
    ("surname_read_as_surname_not_common_reading", "曾小明", "Ceng Xiaoming"),
    ("different_surname", "王晓明", "张晓明"),
]


@pytest.mark.parametrize(("case", "one", "other"), DIFFERENT, ids=[c[0] for c in DIFFERENT])
def test_different_names_stay_different(case: str, one: str, other: str) -> None:
    assert normalise_name(one).syllables != normalise_name(other).syllables, case


def test_latin_name_has_no_characters_and_han_name_drops_stray_symbols() -> None:
    assert normalise_name("Zhang Xiaoming").chars == ""
    assert normalise_name("张晓明(小)").chars == "张晓明小"
    assert normalise_name("").empty


SEGMENTS = [
    ("greedy_is_not_enough", "xian", ("xian",)),
    ("three_syllables", "zhangxiaoming", ("zhang", "xiao", "ming")),
    ("not_pinyin", "smith", None),
    ("umlaut_v", "lvwei", ("lv", "wei")),
]


@pytest.mark.parametrize(("case", "letters", "expected"), SEGMENTS, ids=[c[0] for c in SEGMENTS])
def test_segment_pinyin(case: str, letters: str, expected: tuple[str, ...] | None) -> None:
    assert segment_pinyin(letters) == expected, case


def test_surname_table_agrees_with_the_generator_surnames() -> None:
    """Every surname the generator marks as specially read, and every compound surname, is read
    as the surname table of gateway/data says (ü written v here, yu there)."""
    for surname in load_surnames():
        if not (surname.special_reading or surname.compound):
            continue
        expected = surname.pinyin.replace("lyu", "lv")
        got = "".join(normalise_name(surname.text + "明").syllables[:-1])
        assert got == expected, f"surname row {surname.text!r} is read differently"
        if surname.compound:
            assert surname.text in COMPOUND_SURNAMES
        else:
            assert surname.text in SURNAME_READINGS or got == expected
