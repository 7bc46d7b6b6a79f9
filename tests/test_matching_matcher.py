"""The matcher's rules (gateway.matching.matcher), as a table of named cases.

Each case lists the registration side (left) and the residence side (right) as synthetic people
and the links expected by ref; a link not listed must not exist."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from gateway.domain.records import Sex
from gateway.matching import Band, Encoder, Entry, Thresholds, match, matcher

KEY = bytes(range(32))  # test-only
ENC = Encoder(KEY)
M, F = Sex.MALE, Sex.FEMALE
D = date(2015, 6, 12)


@dataclass(frozen=True)
class P:
    """A synthetic person on one side: ref, name, birth date, sex, ID token label ("" = none)."""

    ref: str
    name: str
    born: date | None
    sex: Sex | None = None
    id: str = ""

    def entry(self) -> Entry:
        token = (self.id.encode() * 32)[:32] if self.id else b""
        return Entry(self.ref, token, ENC.name(self.name), ENC.birth(self.born), self.sex)


# (case, left, right, {(left ref, right ref): band})
CASES = [
    ("exact_on_id_token", [P("a", "张晓明", D, M, "1")], [P("x", "李华", date(2010, 1, 1), F, "1")],
     {("a", "x"): Band.MATCHED}),
    ("different_valid_ids_never_linked", [P("a", "张晓明", D, M, "1")], [P("x", "张晓明", D, M, "2")], {}),
    ("exact_stage_wins_over_a_better_fuzzy_look_alike",
     [P("a", "张晓明", D, M, "1"), P("b", "张晓明", D, M)], [P("x", "王强", date(2011, 2, 3), M, "1")],
     {("a", "x"): Band.MATCHED}),
    ("fuzzy_when_one_side_has_no_id", [P("a", "张晓明", D, M, "1")], [P("x", "张晓明", D, M)],
     {("a", "x"): Band.MATCHED}),
    ("homophone_and_pinyin_typed_name_match", [P("a", "张晓明", D, M), P("b", "欧阳娜娜", D, F)],
     [P("x", "张小明", D, M), P("y", "OUYANG Nana", D, F)], {("a", "x"): Band.MATCHED, ("b", "y"): Band.MATCHED}),
    ("traditional_and_dotted_names_match", [P("a", "張曉明", D, M), P("b", "次仁·卓玛", D, F)],
     [P("x", "张晓明", D, M), P("y", "次仁卓玛", D, F)], {("a", "x"): Band.MATCHED, ("b", "y"): Band.MATCHED}),
    ("one_to_one", [P("a", "张晓明", D, M)], [P("x", "张晓明", D, M), P("y", "张晓明", D, M)],
     {("a", "x"): Band.REVIEW}),
    # Twins: a lone look-alike one given character apart on the same day may be the co-twin (the
    # other twin absent from this ledger), so it is never linked automatically, only proposed.
    ("lone_co_twin_one_character_apart_goes_to_review",
     [P("a", "王子涵", D, M)], [P("y", "王子轩", D, M)], {("a", "y"): Band.REVIEW}),
    ("lone_co_twin_with_a_prefix_name_goes_to_review",
     [P("a", "王奕宇", D, M)], [P("y", "王奕", D, M)], {("a", "y"): Band.REVIEW}),
    ("lone_co_twin_of_the_other_sex_not_linked", [P("a", "王子涵", D, M)], [P("y", "王子萱", D, F)], {}),
    ("lone_co_twin_sex_unknown_goes_to_review",
     [P("a", "王子涵", D, None)], [P("y", "王子轩", D, M)], {("a", "y"): Band.REVIEW}),
    ("twin_look_alike_with_a_competitor_goes_to_review",
     [P("a", "王子涵", D, M)], [P("x", "王子轩", D, M), P("y", "王子瑞", D, M)], {("a", "x"): Band.REVIEW}),
    ("twins_each_matched_to_their_own",
     [P("a", "王子涵", D, M), P("b", "王子轩", D, M)], [P("x", "王子涵", D, M), P("y", "王子轩", D, M)],
     {("a", "x"): Band.MATCHED, ("b", "y"): Band.MATCHED}),
    ("identical_twins_records_go_to_review",
     [P("a", "王一诺", D, F), P("b", "王一诺", D, F)], [P("x", "王一诺", D, F)], {("a", "x"): Band.REVIEW}),
    ("different_known_sexes_never_linked", [P("a", "张晓明", D, M)], [P("x", "张晓明", D, F)], {}),
    ("unknown_sex_is_neutral", [P("a", "张晓明", D, None)], [P("x", "张晓明", D, M)], {("a", "x"): Band.MATCHED}),
    ("missing_birth_date_goes_to_review", [P("a", "张晓明", None, M)], [P("x", "张晓明", D, M)],
     {("a", "x"): Band.REVIEW}),
    ("not_found", [P("a", "张晓明", D, M)], [P("x", "李秀英", date(2009, 11, 30), F)], {}),
    ("one_day_off_still_linked", [P("a", "张晓明", D, M)], [P("x", "张晓明", D + timedelta(days=1), M)],
     {("a", "x"): Band.MATCHED}),
    ("lunar_birthday_still_linked", [P("a", "张晓明", date(2014, 3, 9), M)], [P("x", "张晓明", date(2014, 2, 9), M)],
     {("a", "x"): Band.MATCHED}),
    # Twins born either side of midnight differ by a day: a name that does not sound the same is
    # never enough for an automatic link.
    ("one_character_apart_and_a_day_off_goes_to_review", [P("a", "张晓明", D, M)],
     [P("x", "张晓红", D + timedelta(days=1), M)], {("a", "x"): Band.REVIEW}),
    ("truncated_name_goes_to_review", [P("a", "张晓明", D, M)], [P("x", "张晓", D, M)], {("a", "x"): Band.REVIEW}),
    ("homophone_and_a_day_off_still_linked", [P("a", "张晓明", D, M)],
     [P("x", "张小明", D + timedelta(days=1), M)], {("a", "x"): Band.MATCHED}),
    ("pinyin_cut_two_ways_still_linked", [P("a", "孙安宇", D, M)], [P("x", "sunanyu", D, M)],
     {("a", "x"): Band.MATCHED}),
    ("same_name_unrelated_date_goes_to_review", [P("a", "张晓明", D, M)], [P("x", "张晓明", date(2010, 1, 1), M)],
     {("a", "x"): Band.REVIEW}),
    ("other_name_unrelated_date_not_linked", [P("a", "张晓明", D, M)], [P("x", "张晓红", date(2010, 1, 1), M)], {}),
    ("one_character_apart_and_a_year_off_goes_to_review", [P("a", "张晓明", D, M)],
     [P("x", "张晓红", D.replace(year=2016), M)], {("a", "x"): Band.REVIEW}),
    ("sibling_born_another_year_not_linked", [P("a", "张晓明", D, M)], [P("x", "张晓红", date(2012, 2, 20), M)], {}),
    # A typo made one twin's record sound exactly like the co-twin (刘承凯 → 刘一凯 ~ 刘亦凯, 100k rows /
    # 90 %): the co-twin scores far above the true partner, but the true partner — born the same
    # day, a look-alike, with no partner of its own — may be the record's own child: review.
    ("twin_typed_into_a_homophone_of_the_co_twin_goes_to_review",
     [P("a", "刘亦凯", D, M), P("b", "刘承凯", D, M)], [P("y", "刘一凯", D, M)], {("a", "y"): Band.REVIEW}),
    ("twin_typed_into_a_homophone_of_the_co_twin_goes_to_review_right_side",
     [P("a", "刘一凯", D, M)], [P("x", "刘亦凯", D, M), P("y", "刘承凯", D, M)], {("a", "x"): Band.REVIEW}),
    ("twin_look_alike_with_a_partner_of_its_own_does_not_block",
     [P("a", "刘亦凯", D, M), P("b", "刘承凯", D, M)], [P("x", "刘亦凯", D, M), P("y", "刘承凯", D, M)],
     {("a", "x"): Band.MATCHED, ("b", "y"): Band.MATCHED}),
    # A competitor already linked automatically (to a candidate scoring at least as high) is
    # explained by its own link and does not hold back the next one: a year typo among namesakes
    # born on the same month and day in other years.
    ("year_typo_among_namesakes_linked_once_the_namesake_is_explained",
     [P("a", "张晓明", D, M), P("b", "张晓明", D.replace(year=2016), M)],
     [P("x", "张晓明", D.replace(year=2016), M), P("y", "张晓明", D.replace(year=2014), M)],
     {("b", "x"): Band.MATCHED, ("a", "y"): Band.MATCHED}),
    ("year_typo_still_linked", [P("a", "张晓明", D, M)], [P("x", "张晓明", D.replace(year=2016), M)],
     {("a", "x"): Band.MATCHED}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "left", "right", "expected"), CASES, ids=[c[0] for c in CASES])
def test_matcher_rules(case: str, left: list[P], right: list[P], expected: dict[tuple[str, str], Band]) -> None:
    result = match([p.entry() for p in left], [p.entry() for p in right])
    got = {(link.left, link.right): link.band for link in result.links}
    assert got == expected, case
    linked_left = {a for a, _ in got}
    linked_right = {b for _, b in got}
    assert set(result.unmatched_left) == {p.ref for p in left} - linked_left
    assert set(result.unmatched_right) == {p.ref for p in right} - linked_right


def test_exact_link_has_stage_score_and_hints_without_values() -> None:
    result = match([P("a", "张晓明", D, M, "1").entry()], [P("x", "张晓明", D, F, "1").entry()])
    (link,) = result.links
    assert (link.stage, link.score, link.band) == ("exact", 1.0, Band.MATCHED)
    assert dict(link.hints) == {"name": "agree", "birth": "agree", "sex": "disagree"}


def test_a_candidate_below_auto_is_never_auto_linked() -> None:
    left, right = [P("a", "张晓明", D, M).entry()], [P("x", "张晓红", D + timedelta(days=1), M).entry()]
    (link,) = match(left, right, Thresholds(auto=0.99, review=0.5, margin=0.0)).links
    assert link.score < 0.99
    assert link.band is Band.REVIEW


def test_blocked_search_finds_exactly_the_pairs_of_the_full_scan() -> None:
    """Blocking costs no recall: on generated ledgers (IDs dropped, so every pair is fuzzy) the
    blocked search and the bound scan over all pairs give the same candidates and scores."""
    from adapters.match_cli import entries_of
    from adapters.tabular import read_table
    from gateway.synth.ledgers import LedgerSpec, generate_ledgers, write_ledger_files

    pair = generate_ledgers(LedgerSpec(rows=1500, overlap=0.7, seed=5))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_ledger_files(pair, Path(tmp))
        sides = [entries_of(read_table(path), KEY, ENC)[0] for path in (files.registration, files.residence)]
    left, right = (matcher._prepare([replace(e, id_token=b"") for e in side], "x") for side in sides)
    missing = matcher._prepare([P("m", "张晓明", None, M).entry()], "x")
    left = matcher._Side(*(np.concatenate([getattr(left, f), getattr(missing, f)]) for f in left.__dataclass_fields__))
    blocked = matcher._candidates(left, right, 0.65, blocking=True)
    scanned = matcher._candidates(left, right, 0.65, blocking=False)
    assert len(blocked[0]) > 1000
    for got, want in zip(blocked[:3], scanned[:3], strict=True):
        assert np.array_equal(got, want)


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="thresholds"):
        Thresholds(auto=0.5, review=0.8)


def test_deterministic_and_empty_sides() -> None:
    people = [P(str(i), n, D + timedelta(days=i), M) for i, n in enumerate(["张晓明", "李华", "王芳", "赵强"])]
    entries = [p.entry() for p in people]
    assert match(entries, entries) == match(entries, entries)
    assert match([], entries).unmatched_right == tuple(p.ref for p in people)
    assert match(entries, []).links == ()


def test_bad_encoding_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="position 0") as info:
        match([Entry("a", b"", b"\x09" * 49, b"")], [])
    assert "\\x09" not in str(info.value)
