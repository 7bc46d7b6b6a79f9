"""Scoring a matcher's links against known truth (issue 5): precision, recall, F1 and where it fails.

Pure: every input is a value (truth pairs, predicted links, sibling pairs, the rows that carry a
valid ID number); :func:`evaluate` returns an :class:`Evaluation` and does no I/O. The ``read_*``
helpers parse the CSV files :mod:`gateway.synth.ledgers` and ``tongban match`` write, from any
iterable of text lines.

What is counted
---------------
* A **link** is (registration row, residence row, band, score), rows numbered from 1 with the
  header excluded; ``band`` is ``matched`` (linked automatically) or ``review`` (for a person).
* **Precision, recall, F1** are those of the automatic links (band ``matched``): a ``review`` link
  is not a link until a person confirms it. ``recall_with_review`` says how many true pairs are at
  least in front of a reviewer.
* **Stages.** A true pair is *exact* when both its rows carry a valid ID number, *fuzzy*
  otherwise; a predicted link likewise by its own two rows. Each stage has its own precision and
  recall (a false link between two rows with valid IDs is an exact-stage false positive).
* **Kinds.** A true pair carries the kinds of corruption of its rows (``clean`` when none);
  recall is reported per kind, a pair with several kinds counting once for each, overall and
  within each stage. A false automatic link is charged to the kinds of the true pairs its two rows
  belong to (``non_overlap`` for a row that is in one ledger only).
* **Siblings.** Pairs of rows that are two different children of one household (``twin``:
  same birth date, ``sibling``): every such pair linked automatically is counted by relation; the
  goal is none.
* **Examples** for the matcher's author: per kind, the worst misses (no link at all first, then
  the lowest scores) and the worst false links (highest scores first) — row numbers, bands, scores
  and kinds only, never a name or a number.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import InputError

MATCHED = "matched"
REVIEW = "review"
BANDS = (MATCHED, REVIEW)
EXACT = "exact"
FUZZY = "fuzzy"
STAGES = (EXACT, FUZZY)
CLEAN = "clean"
NON_OVERLAP = "non_overlap"
LINKS_HEADER = ("registration_row", "residence_row", "band", "score")
TRUTH_HEADER = ("registration_row", "residence_row", "kinds")
SIBLINGS_HEADER = ("registration_row", "residence_row", "relation")
KIND_SEPARATOR = ";"


@dataclass(frozen=True)
class TruthPair:
    """One child in both ledgers: its row in each and the kinds of corruption its rows carry."""

    registration_row: int
    residence_row: int
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class SiblingLink:
    """Two different children of one household, one row in each ledger: never the same child."""

    registration_row: int
    residence_row: int
    relation: str  # "twin" (same birth date) or "sibling"


@dataclass(frozen=True)
class Link:
    """One predicted link, as ``tongban match`` writes it."""

    registration_row: int
    residence_row: int
    band: str
    score: float

    def __post_init__(self) -> None:
        if self.band not in BANDS:
            raise InputError("a link's band must be 'matched' or 'review'")
        if self.registration_row < 1 or self.residence_row < 1:
            raise InputError("link rows are numbered from 1")


@dataclass(frozen=True)
class Rates:
    """Counts of one population of automatic links, and the rates they give."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
        }


@dataclass(frozen=True)
class KindFigures:
    """Recall on the true pairs carrying one kind (overall and per stage), and the false
    automatic links charged to it."""

    kind: str
    pairs: int
    matched: int
    in_review: int
    stage_pairs: Mapping[str, int]
    stage_matched: Mapping[str, int]
    false_matches: int
    solo_pairs: int = 0
    solo_matched: int = 0

    @property
    def recall(self) -> float:
        return self.matched / self.pairs if self.pairs else 1.0

    def stage_recall(self, stage: str) -> float | None:
        n = self.stage_pairs.get(stage, 0)
        return self.stage_matched.get(stage, 0) / n if n else None

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "matched": self.matched,
            "in_review": self.in_review,
            "recall": self.recall,
            "recall_with_review": (self.matched + self.in_review) / self.pairs if self.pairs else 1.0,
            "false_matches": self.false_matches,
            "solo_pairs": self.solo_pairs,
            "solo_recall": self.solo_matched / self.solo_pairs if self.solo_pairs else None,
            **{f"{stage}_pairs": self.stage_pairs.get(stage, 0) for stage in STAGES},
            **{f"{stage}_recall": self.stage_recall(stage) for stage in STAGES},
        }


@dataclass(frozen=True)
class Example:
    """A miss (a true pair not linked automatically) or a false automatic link: rows, band, score
    and kinds only. For a miss, ``other_residence_row`` / ``other_registration_row`` name the rows
    its two rows were wrongly auto-linked to instead (if any)."""

    registration_row: int
    residence_row: int
    kinds: tuple[str, ...]
    band: str | None  # the pair's own band (None: not linked at all)
    score: float | None
    other_residence_row: int | None = None
    other_registration_row: int | None = None
    relation: str | None = None  # twin / sibling, for a false link between siblings

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "registration_row": self.registration_row,
            "residence_row": self.residence_row,
            "kinds": list(self.kinds),
            "band": self.band,
            "score": self.score,
        }
        if self.other_residence_row is not None:
            out["registration_row_auto_linked_to"] = self.other_residence_row
        if self.other_registration_row is not None:
            out["residence_row_auto_linked_to"] = self.other_registration_row
        if self.relation is not None:
            out["relation"] = self.relation
        return out


@dataclass(frozen=True)
class Evaluation:
    overall: Rates
    stages: Mapping[str, Rates]
    kinds: Mapping[str, KindFigures]
    review_true: int
    review_false: int
    recall_with_review: float
    sibling_auto_matched: Mapping[str, int]
    sibling_pairs: Mapping[str, int]
    links: int
    misses: Mapping[str, tuple[Example, ...]] = field(repr=False)
    false_matches: Mapping[str, tuple[Example, ...]] = field(repr=False)

    @property
    def twins_auto_matched(self) -> int:
        return self.sibling_auto_matched.get("twin", 0)

    def failing_kinds(self, min_recall: float) -> list[str]:
        """Kinds whose recall is below ``min_recall``, worst first."""
        bad = [k for k in self.kinds.values() if k.pairs and k.recall < min_recall]
        return [k.kind for k in sorted(bad, key=lambda k: k.recall)]

    def to_json(self, *, examples: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "overall": self.overall.to_json(),
            "stages": {name: rates.to_json() for name, rates in self.stages.items()},
            "kinds": {name: figures.to_json() for name, figures in self.kinds.items()},
            "review": {"true": self.review_true, "false": self.review_false},
            "recall_with_review": self.recall_with_review,
            "sibling_pairs": dict(self.sibling_pairs),
            "sibling_auto_matched": dict(self.sibling_auto_matched),
            "links": self.links,
        }
        if examples:
            out["misses"] = {k: [e.to_json() for e in v] for k, v in self.misses.items() if v}
            out["false_matches"] = {k: [e.to_json() for e in v] for k, v in self.false_matches.items() if v}
        return out


def evaluate(
    truth: Iterable[TruthPair],
    links: Iterable[Link],
    *,
    registration_valid_id: Collection[int],
    residence_valid_id: Collection[int],
    siblings: Iterable[SiblingLink] = (),
    kinds_order: Iterable[str] = (),
    context_kinds: Collection[str] = (),
    examples_per_kind: int = 10,
) -> Evaluation:
    """Score ``links`` against ``truth`` (see the module docstring).

    ``registration_valid_id`` / ``residence_valid_id`` are the row numbers (from 1) whose ID
    cell holds a valid number: they decide the stage. A pair is *solo* for a kind when that kind
    is its only one apart from ``context_kinds`` (say the ID kinds, which only decide the stage):
    ``solo_recall`` shows what the kind does on its own. ``kinds_order`` lists kinds to report even
    when no pair carries them (then first, in that order). Raises
    :class:`~gateway.errors.InputError` if a row appears in two true pairs or a pair is linked twice.
    """
    by_reg: dict[int, TruthPair] = {}
    by_res: dict[int, TruthPair] = {}
    truth_list = list(truth)
    for pair in truth_list:
        if pair.registration_row in by_reg or pair.residence_row in by_res:
            raise InputError("a row appears in two true pairs")
        by_reg[pair.registration_row] = pair
        by_res[pair.residence_row] = pair

    link_of: dict[tuple[int, int], Link] = {}
    auto_by_reg: dict[int, list[Link]] = defaultdict(list)
    auto_by_res: dict[int, list[Link]] = defaultdict(list)
    for link in links:
        key = (link.registration_row, link.residence_row)
        if key in link_of:
            raise InputError("a pair of rows is linked twice")
        link_of[key] = link
        if link.band == MATCHED:
            auto_by_reg[link.registration_row].append(link)
            auto_by_res[link.residence_row].append(link)

    def stage_of(reg: int, res: int) -> str:
        return EXACT if reg in registration_valid_id and res in residence_valid_id else FUZZY

    sibling_relation = {(s.registration_row, s.residence_row): s.relation for s in siblings}

    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    review_true = review_false = 0
    kind_pairs: Counter[str] = Counter()
    kind_matched: Counter[str] = Counter()
    kind_review: Counter[str] = Counter()
    kind_fp: Counter[str] = Counter()
    solo_pairs: Counter[str] = Counter()
    solo_matched: Counter[str] = Counter()
    stage_pairs: dict[str, Counter[str]] = defaultdict(Counter)
    stage_matched: dict[str, Counter[str]] = defaultdict(Counter)
    misses: dict[str, list[Example]] = defaultdict(list)
    false_matches: dict[str, list[Example]] = defaultdict(list)
    sibling_auto: Counter[str] = Counter()

    for pair in truth_list:
        stage = stage_of(pair.registration_row, pair.residence_row)
        found = link_of.get((pair.registration_row, pair.residence_row))
        matched = found is not None and found.band == MATCHED
        (tp if matched else fn)[stage] += 1
        alone = [k for k in pair.kinds if k not in context_kinds] or list(pair.kinds)
        if len(alone) == 1:
            solo_pairs[alone[0]] += 1
            solo_matched[alone[0]] += matched
        for kind in pair.kinds:
            kind_pairs[kind] += 1
            stage_pairs[kind][stage] += 1
            if matched:
                kind_matched[kind] += 1
                stage_matched[kind][stage] += 1
            elif found is not None:
                kind_review[kind] += 1
        if not matched:
            wrong_res = [x.residence_row for x in auto_by_reg.get(pair.registration_row, [])]
            wrong_reg = [x.registration_row for x in auto_by_res.get(pair.residence_row, [])]
            example = Example(
                pair.registration_row,
                pair.residence_row,
                pair.kinds,
                found.band if found else None,
                found.score if found else None,
                wrong_res[0] if wrong_res else None,
                wrong_reg[0] if wrong_reg else None,
            )
            for kind in pair.kinds:
                misses[kind].append(example)

    for (reg, res), link in link_of.items():
        own = by_reg.get(reg)
        true = own is not None and own.residence_row == res
        if link.band == REVIEW:
            if true:
                review_true += 1
            else:
                review_false += 1
            continue
        if true:
            continue
        fp[stage_of(reg, res)] += 1
        relation = sibling_relation.get((reg, res))
        if relation is not None:
            sibling_auto[relation] += 1
        charged = [*(own.kinds if own else (NON_OVERLAP,))]
        other = by_res.get(res)
        charged += other.kinds if other else (NON_OVERLAP,)
        blamed = tuple(dict.fromkeys(charged))
        example = Example(reg, res, blamed, link.band, link.score, relation=relation)
        for kind in blamed:
            kind_fp[kind] += 1
            false_matches[kind].append(example)

    order = list(dict.fromkeys([*kinds_order, *sorted(kind_pairs), *sorted(kind_fp)]))
    kinds = {
        kind: KindFigures(
            kind,
            kind_pairs[kind],
            kind_matched[kind],
            kind_review[kind],
            dict(stage_pairs[kind]),
            dict(stage_matched[kind]),
            kind_fp[kind],
            solo_pairs[kind],
            solo_matched[kind],
        )
        for kind in order
    }
    total_true = len(truth_list)
    relations = Counter(sibling_relation.values())
    return Evaluation(
        overall=Rates(sum(tp.values()), sum(fp.values()), sum(fn.values())),
        stages={stage: Rates(tp[stage], fp[stage], fn[stage]) for stage in STAGES},
        kinds=kinds,
        review_true=review_true,
        review_false=review_false,
        recall_with_review=(sum(tp.values()) + review_true) / total_true if total_true else 1.0,
        sibling_auto_matched={rel: sibling_auto[rel] for rel in sorted(set(relations) | set(sibling_auto))},
        sibling_pairs=dict(sorted(relations.items())),
        links=len(link_of),
        misses={k: _worst_misses(v, examples_per_kind) for k, v in misses.items()},
        false_matches={k: _worst_false(v, examples_per_kind) for k, v in false_matches.items()},
    )


def _worst_misses(examples: list[Example], limit: int) -> tuple[Example, ...]:
    # Not linked at all first, then the lowest scores; row numbers break ties (deterministic).
    return tuple(
        sorted(
            examples,
            key=lambda e: (e.band is not None, e.score if e.score is not None else 0.0, e.registration_row),
        )[:limit]
    )


def _worst_false(examples: list[Example], limit: int) -> tuple[Example, ...]:
    return tuple(sorted(examples, key=lambda e: (-(e.score or 0.0), e.registration_row))[:limit])


# --- reading the files ------------------------------------------------------------------------------


def _rows(lines: Iterable[str], header: tuple[str, ...], what: str) -> Iterable[tuple[int, list[str]]]:
    reader = csv.reader(lines)
    first = next(reader, None)
    if first is None or tuple(c.strip().lstrip("\ufeff") for c in first[: len(header)]) != header:
        raise InputError(f"{what}: the header must be {','.join(header)}")
    for number, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) < len(header):
            raise InputError(f"{what}: line {number} has {len(cells)} cells, expected {len(header)}")
        yield number, cells


def _int(text: str, what: str, number: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{what}: line {number}: a row number must be an integer") from None
    if value < 1:
        raise InputError(f"{what}: line {number}: rows are numbered from 1")
    return value


def read_links(lines: Iterable[str]) -> list[Link]:
    """Parse a ``LINKS.csv`` (``registration_row,residence_row,band,score``)."""
    out: list[Link] = []
    for number, cells in _rows(lines, LINKS_HEADER, "links"):
        try:
            score = float(cells[3])
        except ValueError:
            raise InputError(f"links: line {number}: the score must be a number") from None
        band = cells[2].strip()
        if band not in BANDS:
            raise InputError(f"links: line {number}: the band must be 'matched' or 'review'")
        out.append(Link(_int(cells[0], "links", number), _int(cells[1], "links", number), band, score))
    return out


def read_truth(lines: Iterable[str]) -> list[TruthPair]:
    """Parse a truth file (``registration_row,residence_row,kinds``, kinds joined with ``;``)."""
    return [
        TruthPair(
            _int(cells[0], "truth", number),
            _int(cells[1], "truth", number),
            tuple(k for k in cells[2].split(KIND_SEPARATOR) if k) or (CLEAN,),
        )
        for number, cells in _rows(lines, TRUTH_HEADER, "truth")
    ]


def read_siblings(lines: Iterable[str]) -> list[SiblingLink]:
    """Parse a siblings file (``registration_row,residence_row,relation``)."""
    return [
        SiblingLink(_int(cells[0], "siblings", number), _int(cells[1], "siblings", number), cells[2].strip())
        for number, cells in _rows(lines, SIBLINGS_HEADER, "siblings")
    ]
