"""gateway.synth.ledgers: a pair of ledgers with known truth, and corruptions that do what they say.

Failures name row numbers and kinds only, never a name, a date or an ID number (the suite's log
and message hygiene): each check collects the rows that break it and compares that list with [].
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import date
from pathlib import Path

import opencc
import pytest
from lunardate import LunarDate
from pypinyin import Style, lazy_pinyin

from gateway.domain import idnumber
from gateway.errors import InputError
from gateway.matching.evaluate import read_siblings, read_truth
from gateway.synth.export import CSV_HEADER
from gateway.synth.ledgers import (
    COL_BIRTH,
    COL_ID,
    COL_NAME,
    CORRUPTIONS,
    DATE_KINDS,
    ID_KINDS,
    KINDS,
    NAME_KINDS,
    REGISTER_HEADER,
    STACKED,
    TWIN,
    LedgerPair,
    LedgerSpec,
    generate_ledgers,
    homophone_index,
    iter_rows,
    write_ledger_files,
)

ROWS = 1500


@pytest.fixture(scope="module")
def pair() -> LedgerPair:
    return generate_ledgers(LedgerSpec(rows=ROWS, overlap=0.7, seed=11))


def _cells(p: LedgerPair) -> tuple[list[list[str]], list[list[str]]]:
    return list(iter_rows(p.registration_lines)), list(iter_rows(p.residence_lines))


def _single(p: LedgerPair, kind: str) -> list[tuple[int, int]]:
    """Pairs whose registration row is untouched and whose residence row carries only ``kind``."""
    return [
        (t.registration_row, t.residence_row)
        for t in p.truth
        if p.registration_kinds[t.registration_row - 1] == () and p.residence_kinds[t.residence_row - 1] == (kind,)
    ]


def _pinyin(text: str) -> list[str]:
    return list(lazy_pinyin(text, style=Style.NORMAL, errors="ignore"))


def test_sizes_overlap_and_truth(pair: LedgerPair) -> None:
    assert len(pair.registration_lines) == ROWS
    assert len(pair.residence_lines) == ROWS
    assert len(pair.truth) == round(0.7 * ROWS)
    assert len({t.registration_row for t in pair.truth}) == len(pair.truth)  # once in each ledger
    assert len({t.residence_row for t in pair.truth}) == len(pair.truth)
    assert all(1 <= t.registration_row <= ROWS and 1 <= t.residence_row <= ROWS for t in pair.truth)
    # Shuffled: row order says nothing about partners.
    assert sum(t.registration_row == t.residence_row for t in pair.truth) < 20


def test_every_kind_is_present(pair: LedgerPair) -> None:
    counts = Counter(k for t in pair.truth for k in t.kinds)
    missing = [k for k in KINDS if counts[k] < 5]
    assert missing == []
    singles = [k for k in CORRUPTIONS if not _single(pair, k)]
    assert singles == []


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    spec = LedgerSpec(rows=200, overlap=0.5, seed=3)
    a, b = generate_ledgers(spec), generate_ledgers(spec)
    assert a.registration_lines == b.registration_lines
    assert a.residence_lines == b.residence_lines
    assert a.truth == b.truth
    assert a.siblings == b.siblings
    assert a.register_lines == b.register_lines
    c = generate_ledgers(LedgerSpec(rows=200, overlap=0.5, seed=4))
    assert c.residence_lines != a.residence_lines
    assert c.register_lines != a.register_lines


@pytest.mark.parametrize("overlap", [0.5, 0.9])
def test_overlap_fraction(overlap: float) -> None:
    p = generate_ledgers(LedgerSpec(rows=400, overlap=overlap, seed=5))
    assert len(p.truth) == round(overlap * 400)
    assert len(p.registration_lines) == len(p.residence_lines) == 400


def test_twins_and_siblings_are_labelled(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    relations = Counter(s.relation for s in pair.siblings)
    assert relations["twin"] >= 10
    assert relations["sibling"] >= 100
    truth = {(t.registration_row, t.residence_row) for t in pair.truth}
    wrong = []
    for s in pair.siblings:
        a, b = reg[s.registration_row - 1], res[s.residence_row - 1]
        if (s.registration_row, s.residence_row) in truth:
            wrong.append(s.registration_row)
        guardian = CSV_HEADER.index("监护人姓名")
        if a[guardian] != b[guardian]:
            wrong.append(s.registration_row)  # same household, same guardian
        dated = {*DATE_KINDS, STACKED}
        untouched = not (dated & set(pair.registration_kinds[s.registration_row - 1]))
        untouched = untouched and not (dated & set(pair.residence_kinds[s.residence_row - 1]))
        same_day = a[COL_BIRTH] == b[COL_BIRTH]
        if untouched and same_day != (s.relation == "twin"):
            wrong.append(s.registration_row)
    assert wrong == []


def test_one_name_or_date_kind_per_row_and_an_independent_id_status() -> None:
    p = generate_ledgers(LedgerSpec(rows=4000, overlap=0.7, seed=12))
    rows = p.residence_kinds
    name_or_date = [sum(k in NAME_KINDS or k in DATE_KINDS or k == STACKED for k in kinds) for kinds in rows]
    assert max(name_or_date) == 1  # one kind, or the single label "stacked"
    stacked = sum(STACKED in kinds for kinds in rows) / len(rows)
    assert 0.03 <= stacked <= 0.07  # stacked_rate 5 %
    missing = sum("id_missing" in kinds for kinds in rows) / len(rows)
    mistyped = sum("id_mistyped" in kinds for kinds in rows) / len(rows)
    assert 0.17 <= missing <= 0.23
    assert 0.08 <= mistyped <= 0.12
    # Independent: about as many ID problems among rows with a name or date kind as among the rest.
    with_kind = [kinds for kinds, n in zip(rows, name_or_date, strict=True) if n]
    without = [kinds for kinds, n in zip(rows, name_or_date, strict=True) if not n]
    share = [sum(bool(set(ID_KINDS) & set(k)) for k in group) / len(group) for group in (with_kind, without)]
    assert abs(share[0] - share[1]) < 0.05
    # The registration ledger only loses or mistypes ID numbers.
    assert all(set(kinds) <= set(ID_KINDS) for kinds in p.registration_kinds)


def test_stacked_rows_change_both_name_and_date(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    stacked = [t for t in pair.truth if STACKED in t.kinds]
    assert len(stacked) >= 20
    bad = [
        t.registration_row
        for t in stacked
        if reg[t.registration_row - 1][COL_NAME] == res[t.residence_row - 1][COL_NAME]
        or reg[t.registration_row - 1][COL_BIRTH] == res[t.residence_row - 1][COL_BIRTH]
    ]
    assert bad == []


def test_lone_twins_have_only_their_co_twin_in_the_other_ledger() -> None:
    p = generate_ledgers(LedgerSpec(rows=4000, overlap=0.7, seed=12))
    reg, res = _cells(p)
    in_truth_reg = {t.registration_row for t in p.truth}
    in_truth_res = {t.residence_row for t in p.truth}
    lone = [
        s
        for s in p.siblings
        if s.relation == "twin" and s.registration_row not in in_truth_reg and s.residence_row not in in_truth_res
    ]
    assert len(lone) == p.lone_twins >= 5
    guardian = CSV_HEADER.index("监护人姓名")
    bad = [
        s.registration_row
        for s in lone
        if reg[s.registration_row - 1][guardian] != res[s.residence_row - 1][guardian]
        or reg[s.registration_row - 1][COL_NAME] == res[s.residence_row - 1][COL_NAME]
    ]
    assert bad == []


def test_clean_pairs_are_identical(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    clean = [t for t in pair.truth if t.kinds == ("clean",)]
    assert len(clean) > 100
    cols = (COL_NAME, COL_ID, COL_BIRTH)
    bad = [
        t.registration_row
        for t in clean
        if any(reg[t.registration_row - 1][c] != res[t.residence_row - 1][c] for c in cols)
    ]
    assert bad == []


def test_name_corruptions_do_what_they_say(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    s2t = opencc.OpenCC("s2t")
    bad: list[tuple[str, int]] = []
    for r, s in _single(pair, "homophone"):
        a, b = reg[r - 1][COL_NAME], res[s - 1][COL_NAME]
        differs = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
        if len(a) != len(b) or len(differs) != 1 or _pinyin(a) != _pinyin(b):
            bad.append(("homophone", r))
    for r, s in _single(pair, "typo"):
        a, b = reg[r - 1][COL_NAME], res[s - 1][COL_NAME]
        differs = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
        if len(a) != len(b) or len(differs) != 1 or _pinyin(a[differs[0]]) == _pinyin(b[differs[0]]):
            bad.append(("typo", r))
    for r, s in _single(pair, "traditional"):
        a, b = reg[r - 1][COL_NAME], res[s - 1][COL_NAME]
        if a == b or s2t.convert(a) != b:
            bad.append(("traditional", r))
    forms = Counter()
    for r, s in _single(pair, "pinyin_name"):
        b = res[s - 1][COL_NAME]
        words = b.split(" ")
        if not b.isascii() or not all(w.isalpha() for w in words) or len(words) > 2:
            bad.append(("pinyin_name", r))
        forms["lower" if b.islower() else "upper" if b.isupper() else "title"] += 1
    for r, s in _single(pair, "truncated"):
        a, b = reg[r - 1][COL_NAME], res[s - 1][COL_NAME]
        if b != a[:-1].rstrip("·") or len(a) < 3:
            bad.append(("truncated", r))
    assert bad == []
    assert set(forms) == {"lower", "upper", "title"}


def test_homophone_index_holds_only_homophones() -> None:
    index = homophone_index()
    assert len(index) > 20
    bad = [py for py, chars in index.items() if len(chars) < 2 or any(_pinyin(ch) != [py] for ch in chars)]
    assert bad == []


def test_date_corruptions_do_what_they_say(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    bad: list[tuple[str, int]] = []

    def dates(r: int, s: int) -> tuple[date, date]:
        return date.fromisoformat(reg[r - 1][COL_BIRTH]), date.fromisoformat(res[s - 1][COL_BIRTH])

    for r, s in _single(pair, "day_month_swap"):
        a, b = dates(r, s)
        if not (a.day <= 12 and a.day != a.month and b == date(a.year, a.day, a.month)):
            bad.append(("day_month_swap", r))
    for r, s in _single(pair, "day_off_by_one"):
        a, b = dates(r, s)
        if abs((b - a).days) != 1:
            bad.append(("day_off_by_one", r))
    for r, s in _single(pair, "lunar_birthday"):
        a, b = dates(r, s)
        if a == b or LunarDate(b.year, b.month, b.day).to_solar_date() != a:
            bad.append(("lunar_birthday", r))
    for r, s in _single(pair, "year_typo"):
        a, b = dates(r, s)
        ya, yb = f"{a.year:04d}", f"{b.year:04d}"
        one_digit = sum(x != y for x, y in zip(ya, yb, strict=True)) == 1
        if (a.month, a.day) != (b.month, b.day) or a.year == b.year or not (abs(a.year - b.year) == 1 or one_digit):
            bad.append(("year_typo", r))
    assert bad == []


def test_id_corruptions_do_what_they_say(pair: LedgerPair) -> None:
    reg, res = _cells(pair)
    bad: list[tuple[str, int]] = []
    for r, s in _single(pair, "id_missing"):
        if res[s - 1][COL_ID] != "" or not pair.registration_valid_id[r - 1]:
            bad.append(("id_missing", r))
    swaps = changes = 0
    for r, s in _single(pair, "id_mistyped"):
        a, b = reg[r - 1][COL_ID], res[s - 1][COL_ID]
        if len(b) != 18 or idnumber.check_character(b[:17]) == b[17] or pair.residence_valid_id[s - 1]:
            bad.append(("id_mistyped", r))
            continue
        differs = [i for i in range(18) if a[i] != b[i]]
        if len(differs) == 1:
            changes += 1
        elif (
            len(differs) == 2
            and differs[1] == differs[0] + 1
            and (a[differs[0]], a[differs[1]]) == (b[differs[1]], b[differs[0]])
        ):
            swaps += 1
        else:
            bad.append(("id_mistyped", r))
    assert bad == []
    assert swaps
    assert changes
    # Every row the generator says has a valid ID has one; the others do not.
    flags = [(row, pair.registration_valid_id[i]) for i, row in enumerate(reg)]
    flags += [(row, pair.residence_valid_id[i]) for i, row in enumerate(res)]
    wrong = 0
    for row, valid in flags:
        number = row[COL_ID]
        ok = len(number) == 18 and idnumber.check_character(number[:17]) == number[17]
        wrong += ok != valid
    assert wrong == 0


def test_files_are_national_csv_and_truth_reads_back(pair: LedgerPair, tmp_path: Path) -> None:
    files = write_ledger_files(pair, tmp_path)
    raw = files.residence.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == ROWS + 1
    assert b"\r\n" in raw
    with files.truth.open(encoding="utf-8") as f:
        assert read_truth(f) == pair.truth
    with files.siblings.open(encoding="utf-8") as f:
        assert read_siblings(f) == pair.siblings
    register = files.register.read_bytes()
    assert register.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(register.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == REGISTER_HEADER == ("户号", "姓名", "性别", "公民身份号码", "出生日期", "与户主关系")
    assert len(rows) == len(pair.register_lines) + 1


def test_register_holds_both_twins_of_a_lone_twin_pair() -> None:
    """A lone twin's co-twin lives in the residence ledger only; the register lists both, in one
    household (row numbers only in messages)."""
    p = generate_ledgers(LedgerSpec(rows=1500, overlap=0.7, seed=11))
    assert p.lone_twins > 0
    register = {cells[3]: cells[0] for cells in iter_rows(p.register_lines)}  # ID number -> 户号
    reg = list(iter_rows(p.registration_lines))
    res = list(iter_rows(p.residence_lines))
    twins = [
        s
        for s in p.siblings
        if s.relation == TWIN
        and p.registration_valid_id[s.registration_row - 1]
        and p.residence_valid_id[s.residence_row - 1]
    ]
    assert twins  # not vacuous
    apart = [
        (s.registration_row, s.residence_row)
        for s in twins
        if register.get(reg[s.registration_row - 1][COL_ID], "?") != register.get(res[s.residence_row - 1][COL_ID])
    ]
    assert apart == []


def test_bad_specs_are_refused() -> None:
    with pytest.raises(InputError):
        LedgerSpec(rows=0, overlap=0.5)
    with pytest.raises(InputError):
        LedgerSpec(rows=10, overlap=1.5)
    with pytest.raises(InputError):
        LedgerSpec(rows=10, overlap=0.5, clean_rate=2.0)
    with pytest.raises(InputError):
        LedgerSpec(rows=10, overlap=0.5, clean_rate=0.9, stacked_rate=0.2)
    with pytest.raises(InputError):
        LedgerSpec(rows=10, overlap=0.5, id_missing_rate=0.6, id_mistyped_rate=0.6)
