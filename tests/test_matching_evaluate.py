"""gateway.matching.evaluate on tiny hand-made cases: every count can be checked by eye."""

from __future__ import annotations

import pytest

from gateway.errors import InputError
from gateway.matching.evaluate import (
    EXACT,
    FUZZY,
    Link,
    SiblingLink,
    TruthPair,
    evaluate,
    read_links,
    read_siblings,
    read_truth,
)

# Four children in both ledgers. Rows 1-2 of each side carry valid IDs (exact stage); pair 3 has
# a missing ID on the residence side, pair 4 a homophone and a lunar birthday, both without ID.
TRUTH = [
    TruthPair(1, 11, ("clean",)),
    TruthPair(2, 12, ("typo",)),
    TruthPair(3, 13, ("id_missing",)),
    TruthPair(4, 14, ("homophone", "lunar_birthday", "id_missing")),
]
REG_VALID = {1, 2, 3, 5}
RES_VALID = {11, 12, 15}
SIBLINGS = [SiblingLink(1, 15, "twin"), SiblingLink(5, 11, "twin"), SiblingLink(2, 16, "sibling")]


def test_perfect_links_score_one_everywhere() -> None:
    links = [Link(p.registration_row, p.residence_row, "matched", 0.99) for p in TRUTH]
    result = evaluate(TRUTH, links, registration_valid_id=REG_VALID, residence_valid_id=RES_VALID, siblings=SIBLINGS)
    assert (result.overall.precision, result.overall.recall, result.overall.f1) == (1.0, 1.0, 1.0)
    assert result.stages[EXACT].true_positives == 2
    assert result.stages[FUZZY].true_positives == 2
    assert all(k.recall == 1.0 for k in result.kinds.values())
    assert result.twins_auto_matched == 0
    assert result.sibling_pairs == {"sibling": 1, "twin": 2}
    assert result.failing_kinds(0.95) == []
    assert result.misses == {}


def test_misses_false_links_review_and_twins_are_counted_where_they_belong() -> None:
    links = [
        Link(1, 11, "matched", 1.0),  # true, exact
        Link(2, 12, "review", 0.7),  # true but only for review: a miss of kind typo
        Link(4, 14, "matched", 0.9),  # true, fuzzy
        Link(5, 11, "matched", 0.95),  # false: row 5's twin is row 1 (twin cross-link), exact stage
        Link(3, 16, "matched", 0.8),  # false: row 16 is in the residence ledger only; fuzzy stage
        Link(6, 17, "review", 0.6),  # false, review
    ]
    result = evaluate(
        TRUTH,
        links,
        registration_valid_id=REG_VALID,
        residence_valid_id=RES_VALID,
        siblings=SIBLINGS,
        kinds_order=("clean", "typo", "truncated"),
    )
    overall = result.overall
    assert (overall.true_positives, overall.false_positives, overall.false_negatives) == (2, 2, 2)
    assert overall.precision == 0.5
    assert overall.recall == 0.5
    assert overall.f1 == 0.5
    exact, fuzzy = result.stages[EXACT], result.stages[FUZZY]
    assert (exact.true_positives, exact.false_positives, exact.false_negatives) == (1, 1, 1)
    assert (fuzzy.true_positives, fuzzy.false_positives, fuzzy.false_negatives) == (1, 1, 1)
    assert (result.review_true, result.review_false) == (1, 1)
    assert result.recall_with_review == 0.75
    assert result.twins_auto_matched == 1
    assert result.sibling_auto_matched == {"sibling": 0, "twin": 1}

    kinds = result.kinds
    assert list(kinds)[:3] == ["clean", "typo", "truncated"]  # kinds_order first, even when empty
    assert kinds["truncated"].pairs == 0
    assert kinds["truncated"].recall == 1.0
    assert (kinds["typo"].pairs, kinds["typo"].matched, kinds["typo"].in_review) == (1, 0, 1)
    assert kinds["typo"].stage_recall(EXACT) == 0.0
    assert kinds["typo"].stage_recall(FUZZY) is None
    assert kinds["homophone"].recall == 1.0
    assert kinds["lunar_birthday"].stage_recall(FUZZY) == 1.0
    # id_missing: pair 3 missed, pair 4 found -> 0.5; the false link from row 3 is charged to it.
    assert kinds["id_missing"].recall == 0.5
    assert kinds["id_missing"].false_matches == 1
    # Row 16 (link from row 3) and row 5 (the twin link (5, 11)) are in one ledger only; row 11
    # is pair 1's, so the twin link is also charged to clean.
    assert kinds["non_overlap"].false_matches == 2
    assert kinds["clean"].false_matches == 1
    assert result.failing_kinds(0.95) == ["typo", "id_missing"]

    miss = result.misses["id_missing"][0]
    assert (miss.registration_row, miss.residence_row, miss.band) == (3, 13, None)
    assert miss.other_residence_row == 16  # what row 3 was wrongly auto-linked to instead
    assert result.misses["typo"][0].band == "review"
    worst = result.false_matches["clean"][0]
    assert (worst.registration_row, worst.residence_row, worst.relation) == (5, 11, "twin")

    doc = result.to_json()
    assert doc["overall"]["f1"] == 0.5
    assert doc["kinds"]["typo"]["recall_with_review"] == 1.0
    assert doc["misses"]["typo"][0]["band"] == "review"
    assert doc["false_matches"]["clean"][0]["relation"] == "twin"


def test_a_pair_with_several_kinds_counts_for_each() -> None:
    result = evaluate(TRUTH, [], registration_valid_id=REG_VALID, residence_valid_id=RES_VALID)
    for kind in ("homophone", "lunar_birthday"):
        assert result.kinds[kind].pairs == 1
    assert result.kinds["id_missing"].pairs == 2
    assert result.overall.recall == 0.0
    assert result.overall.precision == 1.0  # nothing predicted, nothing wrong
    assert result.overall.f1 == 0.0


def test_examples_are_the_worst_first_and_limited() -> None:
    truth = [TruthPair(i, 100 + i, ("typo",)) for i in range(1, 6)]
    links = [
        Link(1, 101, "review", 0.7),
        Link(2, 102, "review", 0.5),
        Link(3, 200, "matched", 0.9),
        Link(4, 201, "matched", 0.99),
    ]
    result = evaluate(truth, links, registration_valid_id=set(), residence_valid_id=set(), examples_per_kind=3)
    assert [e.registration_row for e in result.misses["typo"]] == [3, 4, 5]  # not linked at all
    assert [e.registration_row for e in result.false_matches["typo"]] == [4, 3]  # highest score first


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InputError):
        Link(1, 2, "maybe", 0.5)
    with pytest.raises(InputError):
        Link(0, 2, "matched", 0.5)
    with pytest.raises(InputError):
        evaluate(
            [TruthPair(1, 2, ("clean",)), TruthPair(1, 3, ("clean",))],
            [],
            registration_valid_id=set(),
            residence_valid_id=set(),
        )
    with pytest.raises(InputError):
        evaluate(
            [],
            [Link(1, 2, "matched", 1.0), Link(1, 2, "review", 0.5)],
            registration_valid_id=set(),
            residence_valid_id=set(),
        )


def test_the_files_round_trip() -> None:
    links = read_links(["registration_row,residence_row,band,score", "3,7,matched,0.97", "4,8,review,0.61", ""])
    assert links == [Link(3, 7, "matched", 0.97), Link(4, 8, "review", 0.61)]
    truth = read_truth(["\ufeffregistration_row,residence_row,kinds", "1,2,homophone;id_missing", "3,4,clean"])
    assert truth == [TruthPair(1, 2, ("homophone", "id_missing")), TruthPair(3, 4, ("clean",))]
    assert read_siblings(["registration_row,residence_row,relation", "1,4,twin"]) == [SiblingLink(1, 4, "twin")]
    for bad in (
        ["registration_row,residence_row,score"],
        ["registration_row,residence_row,band,score", "1,2,matched,high"],
        ["registration_row,residence_row,band,score", "1,2,auto,0.9"],
        ["registration_row,residence_row,band,score", "0,2,matched,0.9"],
        ["registration_row,residence_row,band,score", "1,2"],
        [],
    ):
        with pytest.raises(InputError):
            read_links(bad)
