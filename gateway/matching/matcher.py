"""The matcher: link a registration ledger (left) to residence notices (right), one to one.

Stages, in order:

1. **Exact** — entries with equal, non-empty ``id_token`` are linked (score 1.0). A token held once
   on each side is ``matched``; a token held more than once on a side (a duplicate ID in a ledger)
   links its entries in input order as ``review``. The extras join the fuzzy stage.
2. **Fuzzy** — every remaining pair that is *allowed* is scored; a pair is **never allowed when both
   entries have a non-empty id_token** (two different valid IDs are two different children, however
   alike their names and birth dates). The score of a pair::

       name  = 0.75 · Dice(name_pinyin)² + 0.25 · Dice(name_chars)²   (both have characters)
             = Dice(name_pinyin)²                                       (one was typed in pinyin)
       birth = Dice(birth)
       score = 0.6 · name + 0.4 · birth − 0.25 · [both sexes known and different]

   A missing name or birth date (``b""`` or an all-zero filter) counts :data:`NEUTRAL` — about what
   two unrelated filters share — so that a pair with a missing field can reach review but never
   ``auto`` with the default thresholds. Unknown sex is neutral.
3. **Assignment** — candidate pairs by descending score (ties by position), each entry used once
   (greedy). A pair is ``matched`` when ``score ≥ auto`` **and** it beats the next-best candidate of
   *either* entry by at least ``margin``; otherwise ``review`` when ``score ≥ review``; else it is
   not linked. A candidate below ``auto`` is never auto-linked. The margin rule is what keeps twins
   and siblings with the same birth date (and guardian) from being auto-matched to each other: each
   twin has a close competitor, so anything short of a clear winner goes to a person.

The squares spread names that differ in one character (twins 王子涵 / 王子轩: pinyin Dice about
0.8, because they share the surname and most letter bigrams) away from the same name, while a
homophone or a name typed in pinyin keeps a pinyin Dice of 1.

Speed: Dice² ≤ Dice ≤ cosine (the arithmetic mean of two counts bounds their geometric mean), so the
fuzzy stage first computes an **upper bound** of every score — the same weighted sum with cosine
instead of Dice, with the sex penalty, the neutral values and the forbidden pairs folded in as
extra columns — as one float32 matrix product per chunk of left rows (BLAS), keeps the pairs whose
bound reaches ``min(review, auto − margin)``, and computes exact Dice scores for those only. No
blocking: every allowed pair is considered, so nothing is lost to a blocking key. Memory is bounded
by the tile (16 MiB of scores at a time) plus the two bound matrices (about 1.6 KB per entry).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from gateway.domain.records import Sex
from gateway.matching.bloom import BIRTH, NAME_CHARS, NAME_PINYIN, split_birth, split_name

Ref = str | int

W_NAME = 0.6
W_BIRTH = 0.4
PINYIN_SHARE = 0.75  # of the name score, when both names have characters
SEX_PENALTY = 0.25
NEUTRAL = 0.45  # a missing field's similarity: about the Dice of two unrelated 40–50 % filters
FORBIDDEN = -100.0
_EPSILON = 1e-4  # float32 rounding of the bound
_TILE = 2048  # scores are computed in tiles of _TILE × _TILE (float32: 16 MiB)

# Per-field agreement hints (no values): thresholds on the field similarity.
AGREE = 0.9
PARTIAL = 0.7


@dataclass(frozen=True)
class Entry:
    """One record as the matcher sees it: nothing in clear but sex and birth year-month.

    ``ref`` identifies it to the caller (a row number, a notice reference). ``id_token`` is the
    pairwise token of a valid ID number, ``b""`` when there is none (or it was invalid).
    ``name_encoding`` and ``birth_encoding`` come from :func:`gateway.matching.encode` under the same
    pair key as the other side's (``b""`` when unknown). ``birth_year_month`` (``"2015-06"``) is
    carried for the caller's reports; the score uses the birth encoding only.
    """

    ref: Ref
    id_token: bytes = field(default=b"", repr=False)
    name_encoding: bytes = field(default=b"", repr=False)
    birth_encoding: bytes = field(default=b"", repr=False)
    sex: Sex | None = field(default=None, repr=False)
    birth_year_month: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds: ``auto`` to link automatically (with ``margin`` over the next-best
    candidate of either entry), ``review`` to propose a link for a person to decide.
    ``ValueError`` unless ``0 ≤ review ≤ auto ≤ 1`` and ``0 ≤ margin ≤ 1``."""

    auto: float = 0.85
    review: float = 0.75
    margin: float = 0.05

    def __post_init__(self) -> None:
        if not (0.0 <= self.review <= self.auto <= 1.0 and 0.0 <= self.margin <= 1.0):
            raise ValueError("thresholds need 0 <= review <= auto <= 1 and 0 <= margin <= 1")


class Band(StrEnum):
    MATCHED = "matched"
    REVIEW = "review"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Link:
    """A proposed pair. ``stage`` is ``"exact"`` or ``"fuzzy"``; ``hints`` say per field whether the
    two sides ``agree``, ``partial``-ly agree, ``disagree`` or one is ``unknown`` — never a value."""

    left: Ref
    right: Ref
    band: Band
    score: float
    stage: str
    hints: Mapping[str, str]


@dataclass(frozen=True)
class MatchResult:
    """``links`` (matched and review, best first within each stage), and the refs left unlinked
    (``not_found``) on each side, in input order."""

    links: tuple[Link, ...]
    unmatched_left: tuple[Ref, ...]
    unmatched_right: tuple[Ref, ...]

    def band_count(self, band: Band, stage: str | None = None) -> int:
        return sum(1 for x in self.links if x.band is band and (stage is None or x.stage == stage))


# --- the prepared side -------------------------------------------------------------------------------


@dataclass
class _Side:
    chars: npt.NDArray[np.uint8]  # packed filters, one row per entry
    pinyin: npt.NDArray[np.uint8]
    birth: npt.NDArray[np.uint8]
    n_chars: npt.NDArray[np.float32]  # popcounts
    n_pinyin: npt.NDArray[np.float32]
    n_birth: npt.NDArray[np.float32]
    sex: npt.NDArray[np.int8]  # 0 unknown, 1 male, 2 female
    has_token: npt.NDArray[np.bool_]

    @property
    def name_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_pinyin, 0)

    @property
    def chars_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_chars, 0)

    @property
    def birth_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_birth, 0)


def _prepare(entries: Sequence[Entry], side: str) -> _Side:
    n = len(entries)
    chars = np.zeros((n, NAME_CHARS.nbytes), dtype=np.uint8)
    pinyin = np.zeros((n, NAME_PINYIN.nbytes), dtype=np.uint8)
    birth = np.zeros((n, BIRTH.nbytes), dtype=np.uint8)
    sex = np.zeros(n, dtype=np.int8)
    has_token = np.zeros(n, dtype=np.bool_)
    for i, e in enumerate(entries):
        try:
            name = split_name(e.name_encoding)
            born = split_birth(e.birth_encoding)
        except ValueError as exc:
            raise ValueError(f"{side} entry at position {i}: {exc}") from None
        if name is not None:
            chars[i] = np.frombuffer(name[0], dtype=np.uint8)
            pinyin[i] = np.frombuffer(name[1], dtype=np.uint8)
        if born is not None:
            birth[i] = np.frombuffer(born, dtype=np.uint8)
        sex[i] = 1 if e.sex is Sex.MALE else 2 if e.sex is Sex.FEMALE else 0
        has_token[i] = bool(e.id_token)

    def ones(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        counts: npt.NDArray[np.float32] = np.bitwise_count(a).sum(axis=1, dtype=np.int32).astype(np.float32)
        return counts

    return _Side(chars, pinyin, birth, ones(chars), ones(pinyin), ones(birth), sex, has_token)


def _dice(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], na: npt.NDArray[np.float32], nb: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    inter = np.bitwise_count(a & b).sum(axis=1, dtype=np.int32)
    total = (na + nb).astype(np.float64)
    out: npt.NDArray[np.float64] = np.divide(2.0 * inter, total, out=np.zeros(len(total)), where=total > 0)
    return out


@dataclass
class _Parts:
    name: npt.NDArray[np.float64]
    birth: npt.NDArray[np.float64]
    sex_agree: npt.NDArray[np.int8]  # 1 agree, -1 disagree, 0 unknown
    name_known: npt.NDArray[np.bool_]
    birth_known: npt.NDArray[np.bool_]

    @property
    def score(self) -> npt.NDArray[np.float64]:
        name = np.where(self.name_known, self.name, NEUTRAL)
        birth = np.where(self.birth_known, self.birth, NEUTRAL)
        return W_NAME * name + W_BIRTH * birth - SEX_PENALTY * (self.sex_agree < 0)


def _parts(L: _Side, R: _Side, i: npt.NDArray[np.intp], j: npt.NDArray[np.intp]) -> _Parts:
    """Exact field similarities of the pairs (i[k], j[k])."""
    dp = _dice(L.pinyin[i], R.pinyin[j], L.n_pinyin[i], R.n_pinyin[j])
    dc = _dice(L.chars[i], R.chars[j], L.n_chars[i], R.n_chars[j])
    both_chars = ~(L.chars_missing[i] | R.chars_missing[j])
    # Squared: two different given names of one family still share most bigrams (Dice ~0.8); the
    # square spreads them away from the same name (1.0) while keeping a homophone (pinyin 1.0) high.
    dp, dc = dp * dp, dc * dc
    name = np.where(both_chars, PINYIN_SHARE * dp + (1 - PINYIN_SHARE) * dc, dp)
    birth = _dice(L.birth[i], R.birth[j], L.n_birth[i], R.n_birth[j])
    sl, sr = L.sex[i], R.sex[j]
    sex_agree = np.where((sl == 0) | (sr == 0), 0, np.where(sl == sr, 1, -1)).astype(np.int8)
    return _Parts(
        name=name,
        birth=birth,
        sex_agree=sex_agree,
        name_known=~(L.name_missing[i] | R.name_missing[j]),
        birth_known=~(L.birth_missing[i] | R.birth_missing[j]),
    )


def _level(value: float, known: bool) -> str:
    if not known:
        return "unknown"
    return "agree" if value >= AGREE else "partial" if value >= PARTIAL else "disagree"


def _hints(p: _Parts, k: int) -> dict[str, str]:
    return {
        "name": _level(float(p.name[k]), bool(p.name_known[k])),
        "birth": _level(float(p.birth[k]), bool(p.birth_known[k])),
        "sex": {1: "agree", -1: "disagree", 0: "unknown"}[int(p.sex_agree[k])],
    }


# --- the bound matrices --------------------------------------------------------------------------------


def _unpack_scaled(
    packed: npt.NDArray[np.uint8], counts: npt.NDArray[np.float32], weight: float
) -> npt.NDArray[np.float32]:
    bits = np.unpackbits(packed, axis=1).astype(np.float32)
    scale = np.divide(np.float32(weight), np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
    bits *= scale[:, None]
    return bits


def _bound_matrices(L: _Side, R: _Side) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Matrices A (left) and B (right) with ``A @ B.T`` ≥ every pair's score (see the module docstring).

    Left rows carry the weights; right rows are only normalised. The character part of the name
    (weight 0.15, or the pinyin's extra share when one side has no characters) is bounded by its
    maximum, a constant, which keeps the product a third smaller. Extra columns fold in, as sums of
    products of a left and a right value: "either side lacks X" (``a + b − a·b``), the sex penalty
    and the forbidden pairs.
    """
    wn, wb = W_NAME, W_BIRTH
    one_l = np.ones(len(L.sex), dtype=np.float32)
    one_r = np.ones(len(R.sex), dtype=np.float32)
    extra_a: list[npt.NDArray[np.float32]] = [wn * (1 - PINYIN_SHARE) * one_l]
    extra_b: list[npt.NDArray[np.float32]] = [one_r]

    def either(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_], value: float) -> None:
        fa, fb = a.astype(np.float32), b.astype(np.float32)
        extra_a.extend([value * fa, value * one_l, value * fa])
        extra_b.extend([one_r, fb, -fb])

    either(L.name_missing, R.name_missing, wn * NEUTRAL)
    either(L.birth_missing, R.birth_missing, wb * NEUTRAL)
    extra_a.extend([-SEX_PENALTY * (L.sex == 1), -SEX_PENALTY * (L.sex == 2)])
    extra_b.extend([(R.sex == 2).astype(np.float32), (R.sex == 1).astype(np.float32)])
    extra_a.append(FORBIDDEN * L.has_token.astype(np.float32))
    extra_b.append(R.has_token.astype(np.float32))
    a = np.hstack(
        [
            _unpack_scaled(L.pinyin, L.n_pinyin, wn * PINYIN_SHARE),
            _unpack_scaled(L.birth, L.n_birth, wb),
            np.stack(extra_a, axis=1).astype(np.float32),
        ]
    )
    b = np.hstack(
        [
            _unpack_scaled(R.pinyin, R.n_pinyin, 1.0),
            _unpack_scaled(R.birth, R.n_birth, 1.0),
            np.stack(extra_b, axis=1).astype(np.float32),
        ]
    )
    return np.ascontiguousarray(a), np.ascontiguousarray(b.T)


def _candidates(
    L: _Side, R: _Side, floor: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], _Parts]:
    """Every allowed pair with score ≥ floor: (left index, right index, score, parts)."""
    nl, nr = len(L.sex), len(R.sex)
    empty = np.zeros(0, dtype=np.intp)
    if nl == 0 or nr == 0:
        return empty, empty, np.zeros(0), _parts(L, R, empty, empty)
    a, bt = _bound_matrices(L, R)
    cut = np.float32(floor - _EPSILON)
    found_i: list[npt.NDArray[np.intp]] = []
    found_j: list[npt.NDArray[np.intp]] = []
    # Tiles of TILE × TILE scores (16 MiB): big enough for BLAS, small enough to stay in cache
    # for the comparison that follows.
    for r0 in range(0, nl, _TILE):
        rows = a[r0 : r0 + _TILE]
        for c0 in range(0, nr, _TILE):
            bound = rows @ bt[:, c0 : c0 + _TILE]
            ii, jj = np.nonzero(bound >= cut)
            if len(ii):
                found_i.append(ii.astype(np.intp) + r0)
                found_j.append(jj.astype(np.intp) + c0)
    i = np.concatenate(found_i) if found_i else empty
    j = np.concatenate(found_j) if found_j else empty
    score = _parts(L, R, i, j).score
    keep = score >= floor
    i, j, score = i[keep], j[keep], score[keep]
    return i, j, score, _parts(L, R, i, j)


# --- matching ------------------------------------------------------------------------------------------


def match(left: Sequence[Entry], right: Sequence[Entry], thresholds: Thresholds | None = None) -> MatchResult:
    """Link ``left`` (the registration ledger) to ``right`` (residence notices); see the module docstring.

    Raises ``ValueError`` (naming the side and position, never a value) when an encoding has an
    unknown layout. Deterministic: the same inputs give the same result.
    """
    t = thresholds or Thresholds()
    L, R = _prepare(left, "left"), _prepare(right, "right")
    links: list[Link] = []
    used_l = np.zeros(len(left), dtype=np.bool_)
    used_r = np.zeros(len(right), dtype=np.bool_)

    # 1. exact
    by_token: defaultdict[bytes, list[int]] = defaultdict(list)
    for j, e in enumerate(right):
        if e.id_token:
            by_token[e.id_token].append(j)
    left_by_token: defaultdict[bytes, list[int]] = defaultdict(list)
    for i, e in enumerate(left):
        if e.id_token:
            left_by_token[e.id_token].append(i)
    pairs: list[tuple[int, int, Band]] = []
    for token, lis in left_by_token.items():
        rjs = by_token.get(token)
        if not rjs:
            continue
        band = Band.MATCHED if len(lis) == 1 and len(rjs) == 1 else Band.REVIEW
        pairs.extend((i, j, band) for i, j in zip(lis, rjs, strict=False))
    pairs.sort()
    if pairs:
        ei = np.array([p[0] for p in pairs], dtype=np.intp)
        ej = np.array([p[1] for p in pairs], dtype=np.intp)
        parts = _parts(L, R, ei, ej)
        for k, (i, j, band) in enumerate(pairs):
            used_l[i] = used_r[j] = True
            links.append(Link(left[i].ref, right[j].ref, band, 1.0, "exact", _hints(parts, k)))

    # 2. fuzzy, on what is left
    rest_l = np.flatnonzero(~used_l)
    rest_r = np.flatnonzero(~used_r)
    floor = min(t.review, t.auto - t.margin)
    ci, cj, score, parts = _candidates(_subset(L, rest_l), _subset(R, rest_r), floor)
    if len(ci):
        # The best and second-best candidate score of every entry, for the margin rule.
        top_l = _top_two(ci, score, len(rest_l))
        top_r = _top_two(cj, score, len(rest_r))
        order = np.lexsort((cj, ci, -score))
        taken_l = np.zeros(len(rest_l), dtype=np.bool_)
        taken_r = np.zeros(len(rest_r), dtype=np.bool_)
        for k in order:
            i, j, s = int(ci[k]), int(cj[k]), float(score[k])
            if s < t.review:
                break
            if taken_l[i] or taken_r[j]:
                continue
            competitor = max(_other(top_l, i, int(k)), _other(top_r, j, int(k)))
            band = Band.MATCHED if s >= t.auto and s - competitor >= t.margin else Band.REVIEW
            taken_l[i] = taken_r[j] = True
            li, rj = int(rest_l[i]), int(rest_r[j])
            links.append(Link(left[li].ref, right[rj].ref, band, round(s, 6), "fuzzy", _hints(parts, int(k))))
            used_l[li] = used_r[rj] = True
    return MatchResult(
        links=tuple(links),
        unmatched_left=tuple(left[int(i)].ref for i in np.flatnonzero(~used_l)),
        unmatched_right=tuple(right[int(j)].ref for j in np.flatnonzero(~used_r)),
    )


def _subset(s: _Side, idx: npt.NDArray[np.intp]) -> _Side:
    return _Side(
        s.chars[idx], s.pinyin[idx], s.birth[idx], s.n_chars[idx], s.n_pinyin[idx], s.n_birth[idx],
        s.sex[idx], s.has_token[idx],
    )  # fmt: skip


@dataclass
class _TopTwo:
    best: npt.NDArray[np.float64]  # best score per entry (-inf: none)
    best_k: npt.NDArray[np.intp]  # candidate index of the best
    second: npt.NDArray[np.float64]


def _top_two(owner: npt.NDArray[np.intp], score: npt.NDArray[np.float64], n: int) -> _TopTwo:
    best = np.full(n, -np.inf)
    best_k = np.full(n, -1, dtype=np.intp)
    second = np.full(n, -np.inf)
    order = np.lexsort((np.arange(len(score)), -score))  # by descending score, then candidate index
    for k in order:
        o = int(owner[k])
        if best_k[o] < 0:
            best[o], best_k[o] = score[k], k
        elif second[o] == -np.inf:
            second[o] = score[k]
    return _TopTwo(best, best_k, second)


def _other(top: _TopTwo, o: int, k: int) -> float:
    """The best score of entry ``o`` with anyone but in candidate ``k`` (-inf when none)."""
    return float(top.second[o]) if int(top.best_k[o]) == k else float(top.best[o])
