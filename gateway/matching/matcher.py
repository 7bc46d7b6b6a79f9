"""The matcher: link a registration ledger (left) to residence notices (right), one to one.

Stages, in order:

1. **Exact** — entries with equal, non-empty ``id_token`` are linked (score 1.0). A token held once
   on each side is ``matched``; a token held more than once on a side (a duplicate ID in a ledger)
   links its entries in input order as ``review``. The extras join the fuzzy stage.
2. **Fuzzy** — every remaining pair that is *allowed* is scored; a pair is **never allowed when both
   entries have a non-empty id_token** (two different valid IDs are two different children, however
   alike their names and birth dates), **nor when both sexes are known and differ** (sex is carried
   in clear and, for a valid ID, read from the number). The score is a sum of per-field evidence in
   the spirit of Fellegi–Sunter (agreement adds, disagreement subtracts), on the similarities of
   :class:`_Parts`::

       name  = W_NAME · (Dice(pinyin) − NAME_FROM) / (1 − NAME_FROM)        # negative when unlike
             + W_CHARS · ramp(Dice(chars), CHARS_FROM)                      # both have characters
       birth = max(W_DAY · ramp(day, DAY_FROM), W_NEAR · ramp(near, NEAR_FROM))
             + W_MD · ramp(month–day, MD_FROM)
       score = name + birth + W_SEX · [sexes agree] + OFFSET                 (reported clipped to [0, 1])

   ``ramp(x, t)`` is 0 up to ``t`` and rises to 1 at 1. ``day`` is the Dice of the birth filters'
   day segments (1: the same date), ``near`` the mean share of each side's day found among the
   other's variants (±1 day, day–month swap, lunar reading: 1 for any of them), ``month–day`` the
   Dice of the month–day segments (1 for a typo in the year) — see :mod:`gateway.matching.bloom`.
   The ramps start high (0.8, 0.85, 0.9), so that only a real relation counts: two dates are
   **related** when the birth part is above 0. Two known dates that are *not* related count
   ``BIRTH_DISAGREE`` (−0.1), and such a pair is **not considered at all unless the names sound the
   same** (identical pinyin filters): a wrong date with the same name can still reach review, a
   wrong date with another name is nobody. The weights were fitted on the synthetic ledgers of
   :mod:`gateway.synth.ledgers`: a clean pair scores ≈1.2, one name *or* date error ≥ 0.85. A
   missing name counts ``NEUTRAL_NAME``, a missing birth date ``NEUTRAL_BIRTH``: a pair with a
   missing field can reach review but not ``auto`` with the default thresholds. For a left entry
   known to be a single birth, an edit of its name born the same day ("Single births", below)
   counts at least ``NAME_EDIT`` as its name part.
3. **Assignment** — candidate pairs by descending (unclipped) score, ties by position, each entry
   used once (greedy). A pair is ``matched`` when ``score ≥ auto``, **the names sound the same**
   (identical pinyin filters: the same name, a homophone, traditional characters, a name typed in
   pinyin), or the notice's name is an *edit* of a known single birth's ("Single births", below);
   it beats the next-best candidate of *either* entry by at least ``margin`` — leaving out the
   candidates whose other entry is already linked automatically (to a candidate scoring at least
   as high: it is explained by its own link, e.g. a namesake born on the same month–day in another
   year, the competitor of a year typo) — **and no co-twin look-alike is left over** (below);
   otherwise ``review`` when ``score ≥ review``; else it is not linked. A candidate below ``auto``
   is never auto-linked.

Single births. The registration node holds its children in plain and may know, from its household
register, that a child has no sibling born within a day (``Entry.single_birth``); it can also say
which character tokens a one-character edit of the child's name would keep (``Entry.name_edits``,
:meth:`gateway.matching.Encoder.name_edits`: for each position but the first, the ``name_chars``
bits of the tokens that do not involve that character, and the character filter of the name cut
short). For such a left entry a notice name is an **edit** when its character filter equals the
ledger name's cut short (王子涵 → 王子), or when, for some position, all those bits are set in it and
it sets at most ``EDIT_EXTRA_BITS`` bits the ledger name does not (one new character's tokens):
one character replaced (王子涵 → 王子轩, 王奕涵), dropped (王涵) or added; and the two differ. These
are exact tests on the filters, which a stranger sharing only the surname, or the surname and a
character in another place, does not pass. A name of one or two characters has no edits: a typo in
it leaves nothing but the surname. What an edit keeps can be common (王子□): a mask shared by so many
ledger names — or a cut-short name borne by so many ledger children — that more than
``EDIT_STRANGERS`` strangers born the same day are expected among the notices (the share of the
ledger × the number of notices ÷ ``BIRTH_DAYS``: Fellegi and Sunter's frequency-based weights) is
not used. An edit **born the same day** counts at least ``NAME_EDIT`` for its name part (a typo'd
three-character name then scores about 0.9) and may be linked automatically though the names do not
sound the same, under every other condition of the assignment (score ≥ ``auto``, the margin, no
co-twin look-alike of the record among the ledger's candidates; the notices' co-twin test is moot:
the child has no co-twin). With a date error as well it stays in review: strangers one character
apart born on a *related* day are too many (on the generated ledgers about two such links in five
were wrong). Without both fields, or for a child with a sibling born within a day, an edit goes to
**review** as below. The household register is required, not the ledger: a flag derived from the
ledger (no other child with the same guardian and birth date *in this ledger*) links a twin whose
co-twin lives elsewhere — the lone twins of the generated ledgers — automatically to the co-twin's
notice, which looks exactly like an edit (``python -m bench.matching --single-births``).

Twins. Two children of one household share surname, guardian and — twins — the birth date; what
tells them apart in a notice is the given name and, sometimes, the sex (in clear). A given-name
typo (one character replaced) or a name cut short is indistinguishable from a co-twin whose name
differs in one character or is a prefix (王子涵 / 王子轩, 王奕宇 / 王奕), and the co-twin may be the
only one of the two in the other ledger, so no margin can help. Hence the rule above: a fuzzy link
whose names do not sound the same goes to **review**, whatever its score (also with a date one day
off: twins are born either side of midnight) — unless the registration side knows the child is a
single birth (above). Different known sexes are never linked. Exact links (equal ID tokens) are
untouched: two twins have two different valid IDs.

The same typo can make a twin's record sound *exactly* like the co-twin (刘承凯 → 刘一凯 ~ 刘亦凯):
the co-twin's entry then scores far above the true partner and no margin helps. So a link that
sounds the same is still only ``review`` when another candidate of either entry is a **co-twin
look-alike** of its partner: born the same day (the same birth filter), another name (another
pinyin filter), looking like a mistyped form of the record (character Dice ≥ ``LOOK_ALIKE_CHARS``,
as one character replaced in a three-character name gives), with that record as its best candidate
and no sure partner of its own (a candidate that sounds the same and scores ≥ ``auto``) — it may be
the record's own child. Twins both present and well spelled are each their own sure partner, so
they stay ``matched``. Look-alikes are only recognised among the candidates (score ≥ the floor
below) and between names written in characters on both sides.

Speed. The candidates are every *allowed* pair with score ≥ ``min(review, auto − margin)``, found
without scoring all pairs (:func:`_blocked`), as the union of three disjoint searches that cover
exactly what the score allows:

(a) both dates known and related: entries are grouped by their birth filter (one group per date),
    the birth evidence is computed once per pair of *dates* (a few thousand a side: a float32
    matrix pre-selection, then the exact float64 test of :func:`_birth_evidence`), and the entries
    of every related pair of dates are scored — about two dozen related dates per date (the same
    day, its variants, the same month–day in other years);
(b) both dates known, unrelated, names that sound the same: a join on equal pinyin filters;
(c) a date unknown on either side: the bound scan below, on those rows only.

Pairs with two ID tokens or two different known sexes are dropped before scoring. The bound scan
(:func:`_scan`, also used whole for small problems, up to ``_SCAN_PAIRS`` pairs) relies on Dice ≤
cosine and every ramp ≤ its argument: an **upper bound** of every score — the same weighted sum with
cosines, the near share as it stands, the character part at its maximum, the neutral values and
forbidden pairs folded in as extra columns — is one float32 matrix product per tile, within the
blocks of one sex; the pairs whose bound reaches the floor are scored exactly. A single birth's
possible edit adds ``NAME_EDIT + W_NAME`` times the cosine of the day segments (1 on the same day),
which makes the bound looser, so with single births the blocked search takes over from
``_SCAN_PAIRS_SINGLE`` pairs. Nothing is lost to blocking: the two searches give the same pairs
(``tests/test_matching_matcher.py``, also with single births; at 10,000 rows, with and without ID
tokens, in ``docs/architecture.md``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property

import numpy as np
import numpy.typing as npt

from gateway.domain.records import Sex
from gateway.matching.bloom import (
    BIRTH,
    BIRTH_DAY_BITS,
    BIRTH_NEAR_BITS,
    EDIT_POSITIONS,
    NAME_CHARS,
    NAME_PINYIN,
    split_birth,
    split_name,
    split_name_edits,
)

Ref = str | int

W_NAME = 0.6
NAME_FROM = 0.5
W_CHARS = 0.1
CHARS_FROM = 0.5
W_DAY = 0.3
DAY_FROM = 0.8
W_NEAR = 0.25
NEAR_FROM = 0.85
W_MD = 0.15
MD_FROM = 0.9
BIRTH_DISAGREE = -0.1  # both dates known and unrelated (no same day, variant or month–day)
LOOK_ALIKE_CHARS = 0.65  # character Dice of a look-alike (a co-twin the typo may come from)
SAME_SOUND = 1.0  # pinyin Dice of names that sound the same (identical pinyin filters)
NAME_EDIT = 0.35  # the name part of a one-character edit of a known single birth's name (at least)
EDIT_EXTRA_BITS = 3 * NAME_CHARS.k  # character bits an edit may add: the tokens of one new character
EDIT_STRANGERS = 0.01  # expected strangers born the same day whose names keep what an edit keeps
BIRTH_DAYS = 16 * 365  # the birth dates of a ledger's children spread over about sixteen years
W_SEX = 0.05
SEX_PENALTY = 1.0
OFFSET = 0.05
NEUTRAL_NAME = 0.2
NEUTRAL_BIRTH = 0.0
FORBIDDEN = -100.0
_EPSILON = 1e-4  # float32 rounding of the bound
_TILE = 2048  # scores are computed in tiles of _TILE × _TILE (float32: 16 MiB)

# Per-field agreement hints (no values): thresholds on the field similarities.
NAME_AGREE = 0.9
NAME_PARTIAL = 0.7
DAY_AGREE = 0.9
NEAR_AGREE = 0.9


@dataclass(frozen=True)
class Entry:
    """One record as the matcher sees it: nothing in clear but sex and birth year-month.

    ``ref`` identifies it to the caller (a row number, a notice reference). ``id_token`` is the
    pairwise token of a valid ID number, ``b""`` when there is none (or it was invalid).
    ``name_encoding`` and ``birth_encoding`` come from :func:`gateway.matching.encode` under the same
    pair key as the other side's (``b""`` when unknown). ``birth_year_month`` (``"2015-06"``) is
    carried for the caller's reports; the score uses the birth encoding only.

    Two fields are the **registration side's own knowledge** and are refused (``ValueError``) on the
    right: they never travel. ``name_edits`` is :meth:`gateway.matching.Encoder.name_edits` of the
    ledger's plain name under the same pair key; ``single_birth`` is ``True`` only when the
    registration node knows **from its household register** — not merely from this ledger, which may
    lack a co-twin who lives elsewhere — that no other child of the household was born within a day
    of this one. With both, a notice whose name is a one-character edit of this child's may be linked
    automatically (module docstring, "Single births").
    """

    ref: Ref
    id_token: bytes = field(default=b"", repr=False)
    name_encoding: bytes = field(default=b"", repr=False)
    birth_encoding: bytes = field(default=b"", repr=False)
    sex: Sex | None = field(default=None, repr=False)
    birth_year_month: str | None = field(default=None, repr=False)
    single_birth: bool = field(default=False, repr=False)
    name_edits: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds: ``auto`` to link automatically (with ``margin`` over the next-best
    candidate of either entry), ``review`` to propose a link for a person to decide.
    ``ValueError`` unless ``0 ≤ review ≤ auto ≤ 1`` and ``0 ≤ margin ≤ 1``."""

    auto: float = 0.85
    review: float = 0.65
    margin: float = 0.1

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

_DAY = slice(0, BIRTH_DAY_BITS // 8)  # byte ranges of the birth filter's segments
_NEAR = slice(BIRTH_DAY_BITS // 8, (BIRTH_DAY_BITS + BIRTH_NEAR_BITS) // 8)
_MD = slice((BIRTH_DAY_BITS + BIRTH_NEAR_BITS) // 8, BIRTH.nbytes)


@dataclass
class _Side:
    chars: npt.NDArray[np.uint8]  # packed filters, one row per entry
    pinyin: npt.NDArray[np.uint8]
    day: npt.NDArray[np.uint8]
    near: npt.NDArray[np.uint8]
    md: npt.NDArray[np.uint8]
    n_chars: npt.NDArray[np.float32]  # popcounts
    n_pinyin: npt.NDArray[np.float32]
    n_day: npt.NDArray[np.float32]
    n_near: npt.NDArray[np.float32]
    n_md: npt.NDArray[np.float32]
    sex: npt.NDArray[np.int8]  # 0 unknown, 1 male, 2 female
    has_token: npt.NDArray[np.bool_]
    single: npt.NDArray[np.bool_]  # known to be a single birth (registration side only)
    edits: npt.NDArray[np.uint8]  # (entries, EDIT_POSITIONS, bytes): one-character edit masks
    n_edits: npt.NDArray[np.float32]  # (entries, EDIT_POSITIONS) popcounts; 0: none (or too common)
    cut: npt.NDArray[np.uint8]  # the character filter of the name cut short (all zero: none)
    n_cut: npt.NDArray[np.float32]  # its popcount; 0: none (or too common to count)

    def __len__(self) -> int:
        return len(self.sex)

    @property
    def name_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_pinyin, 0)

    @property
    def chars_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_chars, 0)

    @property
    def birth_missing(self) -> npt.NDArray[np.bool_]:
        return np.equal(self.n_day, 0)

    def subset(self, idx: npt.NDArray[np.intp]) -> _Side:
        return _Side(*(getattr(self, f.name)[idx] for f in fields(self)))


def _ones(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    counts: npt.NDArray[np.float32] = np.bitwise_count(a).sum(axis=1, dtype=np.int32).astype(np.float32)
    return counts


def _prepare(entries: Sequence[Entry], side: str, *, registration: bool = False) -> _Side:
    n = len(entries)
    chars = np.zeros((n, NAME_CHARS.nbytes), dtype=np.uint8)
    pinyin = np.zeros((n, NAME_PINYIN.nbytes), dtype=np.uint8)
    birth = np.zeros((n, BIRTH.nbytes), dtype=np.uint8)
    sex = np.zeros(n, dtype=np.int8)
    has_token = np.zeros(n, dtype=np.bool_)
    single = np.zeros(n, dtype=np.bool_)
    edits = np.zeros((n, EDIT_POSITIONS, NAME_CHARS.nbytes), dtype=np.uint8)
    cut = np.zeros((n, NAME_CHARS.nbytes), dtype=np.uint8)
    for i, e in enumerate(entries):
        if not registration and (e.single_birth or e.name_edits):
            raise ValueError(f"{side} entry at position {i}: single_birth and name_edits are the registration side's")
        try:
            name = split_name(e.name_encoding)
            born = split_birth(e.birth_encoding)
            edited = split_name_edits(e.name_edits)
        except ValueError as exc:
            raise ValueError(f"{side} entry at position {i}: {exc}") from None
        if edited is not None:
            cut[i] = np.frombuffer(edited[0], dtype=np.uint8)
            edits[i] = np.frombuffer(b"".join(edited[1]), dtype=np.uint8).reshape(EDIT_POSITIONS, -1)
        single[i] = e.single_birth
        if name is not None:
            chars[i] = np.frombuffer(name[0], dtype=np.uint8)
            pinyin[i] = np.frombuffer(name[1], dtype=np.uint8)
        if born is not None:
            birth[i] = np.frombuffer(born, dtype=np.uint8)
        sex[i] = 1 if e.sex is Sex.MALE else 2 if e.sex is Sex.FEMALE else 0
        has_token[i] = bool(e.id_token)
    day, near, md = (np.ascontiguousarray(birth[:, s]) for s in (_DAY, _NEAR, _MD))
    n_edits = np.bitwise_count(edits).sum(axis=2, dtype=np.int32).astype(np.float32)
    return _Side(
        chars, pinyin, day, near, md, _ones(chars), _ones(pinyin), _ones(day), _ones(near), _ones(md), sex, has_token,
        single, edits, n_edits, cut, _ones(cut),
    )  # fmt: skip


def _dice(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], na: npt.NDArray[np.float32], nb: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    inter = np.bitwise_count(a & b).sum(axis=1, dtype=np.int32)
    total = (na + nb).astype(np.float64)
    out: npt.NDArray[np.float64] = np.divide(2.0 * inter, total, out=np.zeros(len(total)), where=total > 0)
    return out


def _contained(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], na: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Share of a's bits that are set in b (0.0 when a is empty)."""
    inter = np.bitwise_count(a & b).sum(axis=1, dtype=np.int32)
    out: npt.NDArray[np.float64] = np.divide(inter, na.astype(np.float64), out=np.zeros(len(na)), where=na > 0)
    return out


@dataclass
class _Parts:
    """Field similarities of a list of pairs, each in [0, 1]."""

    pinyin: npt.NDArray[np.float64]  # Dice of the pinyin filters
    chars: npt.NDArray[np.float64]  # Dice of the character filters (0 when either has none)
    both_chars: npt.NDArray[np.bool_]
    day: npt.NDArray[np.float64]  # Dice of the day segments: 1 for the same date
    near: npt.NDArray[np.float64]  # mean share of each day found in the other's variants
    md: npt.NDArray[np.float64]  # Dice of the month–day segments
    sex_agree: npt.NDArray[np.int8]  # 1 agree, -1 disagree, 0 unknown
    name_known: npt.NDArray[np.bool_]
    birth_known: npt.NDArray[np.bool_]
    edited: npt.NDArray[np.bool_]  # right name a one-character edit of a single birth's left name

    @cached_property
    def edit(self) -> npt.NDArray[np.bool_]:
        """A known single birth's name with one character (not the first) replaced, dropped or
        added, born the same day (module docstring, "Single births")."""
        out: npt.NDArray[np.bool_] = self.edited & (self.day >= 1.0) & ~self.same_sound
        return out

    @cached_property
    def same_sound(self) -> npt.NDArray[np.bool_]:
        """Names that sound the same: identical pinyin filters (same name, homophone, traditional
        characters, typed in pinyin)."""
        out: npt.NDArray[np.bool_] = self.name_known & (self.pinyin >= SAME_SOUND)
        return out

    @cached_property
    def look_alike(self) -> npt.NDArray[np.bool_]:
        """Names in characters on both sides that look like one mistyped into the other (a
        character replaced or dropped): character Dice ≥ ``LOOK_ALIKE_CHARS``."""
        out: npt.NDArray[np.bool_] = self.both_chars & (self.chars >= LOOK_ALIKE_CHARS)
        return out

    @cached_property
    def birth_related(self) -> npt.NDArray[np.bool_]:
        """Both dates known and the same day, a variant of each other or the same month and day."""
        out: npt.NDArray[np.bool_] = self.birth_known & (self._birth_evidence > 0.0)
        return out

    @cached_property
    def _birth_evidence(self) -> npt.NDArray[np.float64]:
        return _birth_evidence(self.day, self.near, self.md)

    @cached_property
    def name(self) -> npt.NDArray[np.float64]:
        """The name part: pinyin evidence, plus a little for agreeing characters (when both sides
        have them: a homophone or a name typed in pinyin loses only that little)."""
        chars = np.where(self.both_chars, W_CHARS * _ramp(self.chars, CHARS_FROM), 0.0)
        pinyin = W_NAME * (self.pinyin - NAME_FROM) / (1.0 - NAME_FROM)  # negative below NAME_FROM
        name = np.where(self.edit, np.maximum(pinyin + chars, NAME_EDIT), pinyin + chars)
        return np.where(self.name_known, name, NEUTRAL_NAME)

    @cached_property
    def birth(self) -> npt.NDArray[np.float64]:
        """The birth part: the same day, or else one of its variants, plus the same month and day;
        ``BIRTH_DISAGREE`` for two known dates with none of these."""
        known = np.where(self.birth_related, self._birth_evidence, BIRTH_DISAGREE)
        return np.where(self.birth_known, known, NEUTRAL_BIRTH)

    @cached_property
    def allowed(self) -> npt.NDArray[np.bool_]:
        """Two known, unrelated dates are only worth a look when the names sound the same."""
        out: npt.NDArray[np.bool_] = ~self.birth_known | self.birth_related | self.same_sound
        return out

    @cached_property
    def raw(self) -> npt.NDArray[np.float64]:
        """The unclipped score (module docstring); ``FORBIDDEN`` for a pair not :attr:`allowed`."""
        sex = np.where(self.sex_agree > 0, W_SEX, np.where(self.sex_agree < 0, -SEX_PENALTY, 0.0))
        return np.where(self.allowed, self.name + self.birth + sex + OFFSET, FORBIDDEN)

    @cached_property
    def score(self) -> npt.NDArray[np.float64]:
        return np.clip(self.raw, 0.0, 1.0)


def _ramp(x: npt.NDArray[np.float64], start: float) -> npt.NDArray[np.float64]:
    """0 up to ``start``, then linear to 1 at 1: never above ``x`` itself on [0, 1]."""
    out: npt.NDArray[np.float64] = np.clip((x - start) / (1.0 - start), 0.0, 1.0)
    return out


def _birth_evidence(
    day: npt.NDArray[np.float64], near: npt.NDArray[np.float64], md: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The evidence of two known dates: the same day or else a variant, plus the same month–day
    (0 for unrelated dates). One function for pairs and for the date groups of the blocking."""
    out: npt.NDArray[np.float64] = np.maximum(
        W_DAY * _ramp(day, DAY_FROM), W_NEAR * _ramp(near, NEAR_FROM)
    ) + W_MD * _ramp(md, MD_FROM)
    return out


def _parts(L: _Side, R: _Side, i: npt.NDArray[np.intp], j: npt.NDArray[np.intp]) -> _Parts:
    """Exact field similarities of the pairs (i[k], j[k])."""
    near = 0.5 * (_contained(L.day[i], R.near[j], L.n_day[i]) + _contained(R.day[j], L.near[i], R.n_day[j]))
    sl, sr = L.sex[i], R.sex[j]
    chars = _dice(L.chars[i], R.chars[j], L.n_chars[i], R.n_chars[j])
    sex_agree = np.where((sl == 0) | (sr == 0), 0, np.where(sl == sr, 1, -1)).astype(np.int8)
    return _Parts(
        pinyin=_dice(L.pinyin[i], R.pinyin[j], L.n_pinyin[i], R.n_pinyin[j]),
        chars=chars,
        both_chars=~(L.chars_missing[i] | R.chars_missing[j]),
        day=_dice(L.day[i], R.day[j], L.n_day[i], R.n_day[j]),
        near=near,
        md=_dice(L.md[i], R.md[j], L.n_md[i], R.n_md[j]),
        sex_agree=sex_agree,
        name_known=~(L.name_missing[i] | R.name_missing[j]),
        birth_known=~(L.birth_missing[i] | R.birth_missing[j]),
        edited=_edited(L, R, i, j, chars),
    )


def _edited(
    L: _Side, R: _Side, i: npt.NDArray[np.intp], j: npt.NDArray[np.intp], chars: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Whether the right name is a one-character edit of the left name, for a left entry known to be
    a single birth (module docstring, "Single births"): the right name's character filter equals the
    left name's cut short, or, for some position, has every bit of the left name's edit mask and at
    most ``EDIT_EXTRA_BITS`` bits the left one has not; and the two filters differ."""
    out = np.zeros(len(i), dtype=np.bool_)
    if not L.single.any():
        return out
    # Only where it can hold: a single birth, characters on the right, another name, and the right
    # name holding the bits of an edit mask (as many at least) or exactly as many as the cut name.
    least = np.where(L.n_edits > 0, L.n_edits, np.inf).min(axis=1)
    inter = 0.5 * chars * (L.n_chars[i] + R.n_chars[j])
    some = (inter >= least[i] - 0.5) | ((L.n_cut[i] > 0) & (R.n_chars[j] == L.n_cut[i]))
    maybe = np.flatnonzero(L.single[i] & (R.n_chars[j] > 0) & (chars < 1.0) & some)
    if not len(maybe):
        return out
    li, rj = i[maybe], j[maybe]
    right = R.chars[rj]
    cut = np.all(right == L.cut[li], axis=1) & (L.n_cut[li] > 0)
    extra = np.bitwise_count(right & ~L.chars[li]).sum(axis=1, dtype=np.int32)
    masks = L.edits[li]
    kept = np.all((masks & right[:, None, :]) == masks, axis=2) & (L.n_edits[li] > 0)
    out[maybe] = cut | (kept.any(axis=1) & (extra <= EDIT_EXTRA_BITS))
    return out


def _level(value: float, known: bool, agree: float, partial: float) -> str:
    if not known:
        return "unknown"
    return "agree" if value >= agree else "partial" if value >= partial else "disagree"


def _hints(p: _Parts, k: int) -> dict[str, str]:
    known = bool(p.birth_known[k])
    birth = "unknown" if not known else "agree" if p.day[k] >= DAY_AGREE else "partial" if (
        p.near[k] >= NEAR_AGREE or p.md[k] >= DAY_AGREE) else "disagree"  # fmt: skip
    return {
        "name": _level(float(p.pinyin[k]), bool(p.name_known[k]), NAME_AGREE, NAME_PARTIAL),
        "birth": birth,
        "sex": {1: "agree", -1: "disagree", 0: "unknown"}[int(p.sex_agree[k])],
    }


# --- the bound matrices --------------------------------------------------------------------------------


def _unpack_scaled(
    packed: npt.NDArray[np.uint8], counts: npt.NDArray[np.float32], weight: float, power: float = 0.5
) -> npt.NDArray[np.float32]:
    bits = np.unpackbits(packed, axis=1).astype(np.float32)
    scale = np.divide(np.float32(weight), counts**power, out=np.zeros_like(counts), where=counts > 0)
    bits *= scale[:, None]
    return bits


def _bound_matrices(L: _Side, R: _Side) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Matrices A (left) and B (right) with ``A @ B.T`` ≥ every pair's raw score (module docstring).

    Dice ≤ cosine, and a cosine is a product of two unit vectors: left rows carry the weights, right
    rows are only normalised. The near similarity is a product as it stands (each day scaled by its
    own count, against the other side's variant bits). The character part of the name is bounded by
    its maximum, a constant. Extra columns fold in, as sums of products of a left and a right value:
    "either side lacks X" (``a + b − a·b``), the sex terms and the forbidden pairs.
    """
    wn = W_NAME
    one_l = np.ones(len(L), dtype=np.float32)
    one_r = np.ones(len(R), dtype=np.float32)
    name_scale = wn / (1.0 - NAME_FROM)
    known = (~L.name_missing).astype(np.float32)
    extra_a: list[npt.NDArray[np.float32]] = [(W_CHARS + OFFSET) * one_l, -name_scale * NAME_FROM * known]
    extra_b: list[npt.NDArray[np.float32]] = [one_r, (~R.name_missing).astype(np.float32)]

    def either(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_], value: float) -> None:
        fa, fb = a.astype(np.float32), b.astype(np.float32)
        extra_a.extend([value * fa, value * one_l, value * fa])
        extra_b.extend([one_r, fb, -fb])

    either(L.name_missing, R.name_missing, NEUTRAL_NAME)
    either(L.birth_missing, R.birth_missing, NEUTRAL_BIRTH)
    for mine, other in ((1, 2), (2, 1)):
        extra_a.extend([W_SEX * (L.sex == mine), -SEX_PENALTY * (L.sex == mine)])
        extra_b.extend([(R.sex == mine).astype(np.float32), (R.sex == other).astype(np.float32)])
    extra_a.append(FORBIDDEN * L.has_token.astype(np.float32))
    extra_b.append(R.has_token.astype(np.float32))
    half = 0.5 * W_NEAR
    # An edit raises the name part to NAME_EDIT (from −W_NAME at least) on the same day: a cosine of
    # the day segments, 1 for the same day, bounds it (columns only needed with single births).
    edit_a: list[npt.NDArray[np.float32]] = []
    edit_b: list[npt.NDArray[np.float32]] = []
    if L.single.any():
        edit_a.append(_unpack_scaled(L.day, L.n_day, NAME_EDIT + W_NAME) * L.single[:, None].astype(np.float32))
        edit_b.append(_unpack_scaled(R.day, R.n_day, 1.0))
    a = np.hstack(
        [
            _unpack_scaled(L.pinyin, L.n_pinyin, name_scale),
            _unpack_scaled(L.day, L.n_day, W_DAY),
            _unpack_scaled(L.day, L.n_day, half, power=1.0),
            _unpack_scaled(L.near, L.n_near, half, power=0.0),
            _unpack_scaled(L.md, L.n_md, W_MD),
            *edit_a,
            np.stack(extra_a, axis=1).astype(np.float32),
        ]
    )
    b = np.hstack(
        [
            _unpack_scaled(R.pinyin, R.n_pinyin, 1.0),
            _unpack_scaled(R.day, R.n_day, 1.0),
            _unpack_scaled(R.near, R.n_near, 1.0, power=0.0),
            _unpack_scaled(R.day, R.n_day, 1.0, power=1.0),
            _unpack_scaled(R.md, R.n_md, 1.0),
            *edit_b,
            np.stack(extra_b, axis=1).astype(np.float32),
        ]
    )
    return np.ascontiguousarray(a), np.ascontiguousarray(b.T)


def _scan(L: _Side, R: _Side, floor: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Every pair whose upper bound reaches ``floor`` (a superset of the pairs scoring ≥ floor), by
    the bound matrices, tile by tile. Pairs whose sexes are both known and differ are never allowed
    (see the module docstring), so the bound is only computed within the blocks of one sex (an
    unknown sex meets both)."""
    empty = np.zeros(0, dtype=np.intp)
    if len(L) == 0 or len(R) == 0:
        return empty, empty
    a, bt = _bound_matrices(L, R)
    cut = np.float32(floor - _EPSILON)
    found_i: list[npt.NDArray[np.intp]] = []
    found_j: list[npt.NDArray[np.intp]] = []
    rows_of = {s: np.flatnonzero(L.sex == s) for s in (0, 1, 2)}
    cols_of = {s: np.flatnonzero(R.sex == s) for s in (0, 1, 2)}
    blocks = [
        (rows_of[1], np.concatenate([cols_of[1], cols_of[0]])),
        (rows_of[2], np.concatenate([cols_of[2], cols_of[0]])),
        (rows_of[0], np.arange(len(R), dtype=np.intp)),
    ]
    for rows_idx, cols_idx in blocks:
        if not len(rows_idx) or not len(cols_idx):
            continue
        ab = a[rows_idx]
        bb = np.ascontiguousarray(bt[:, cols_idx])
        # Tiles of TILE × TILE scores (16 MiB): big enough for BLAS, small enough to stay in cache
        # for the comparison that follows.
        for r0 in range(0, len(rows_idx), _TILE):
            rows = ab[r0 : r0 + _TILE]
            for c0 in range(0, len(cols_idx), _TILE):
                bound = rows @ bb[:, c0 : c0 + _TILE]
                ii, jj = np.nonzero(bound >= cut)
                if len(ii):
                    found_i.append(rows_idx[ii + r0])
                    found_j.append(cols_idx[jj + c0])
    i = np.concatenate(found_i) if found_i else empty
    j = np.concatenate(found_j) if found_j else empty
    return i, j


@dataclass
class _Groups:
    """Entries grouped by an exact byte key: ``members[start[g]:start[g] + count[g]]`` are group g's."""

    keys: npt.NDArray[np.uint8]  # one row per group
    of: npt.NDArray[np.intp]  # each entry's group
    members: npt.NDArray[np.intp]
    start: npt.NDArray[np.intp]
    count: npt.NDArray[np.intp]


def _groups(rows: npt.NDArray[np.uint8]) -> _Groups:
    keys, of = np.unique(rows, axis=0, return_inverse=True)
    of = of.reshape(-1).astype(np.intp)
    count = np.bincount(of, minlength=len(keys)).astype(np.intp)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.intp)
    return _Groups(keys, of, np.argsort(of, kind="stable").astype(np.intp), start, count)


def _expand(
    gl: _Groups, gr: _Groups, gu: npt.NDArray[np.intp], gv: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Every (left entry, right entry) of the group pairs (gu[k], gv[k])."""
    cl, cr = gl.count[gu], gr.count[gv]
    sizes = cl * cr
    total = int(sizes.sum())
    k = np.repeat(np.arange(len(gu), dtype=np.intp), sizes)
    t = np.arange(total, dtype=np.intp) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = cr[k]
    i = gl.members[gl.start[gu][k] + t // width]
    j = gr.members[gr.start[gv][k] + t % width]
    return i, j


def _related_dates(gl: _Groups, gr: _Groups) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The pairs of date groups (known dates) with birth evidence > 0: the same day, a variant of
    each other or the same month and day — computed once per pair of *different dates* (a few
    thousand a side), with :func:`_birth_evidence`, exactly as for a pair of entries."""
    day_bytes, near_bytes = BIRTH_DAY_BITS // 8, BIRTH_NEAR_BITS // 8

    def cut(keys: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], ...]:
        return keys[:, :day_bytes], keys[:, day_bytes : day_bytes + near_bytes], keys[:, day_bytes + near_bytes :]

    ld, ln, lm = cut(gl.keys)
    rd, rn, rm = cut(gr.keys)
    known_l = np.flatnonzero(_ones(ld) > 0)
    known_r = np.flatnonzero(_ones(rd) > 0)
    if not len(known_l) or not len(known_r):
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty

    def bits(a: npt.NDArray[np.uint8], idx: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = np.unpackbits(a[idx], axis=1).astype(np.float32)
        return out

    rdb, rnb, rmb = bits(rd, known_r), bits(rn, known_r), bits(rm, known_r)
    n_rd, n_rm = _ones(rd[known_r]), _ones(rm[known_r])
    loose = np.float32(1e-3)  # float32 pre-selection, a little wide; the exact test follows
    found_u: list[npt.NDArray[np.intp]] = []
    found_v: list[npt.NDArray[np.intp]] = []
    for r0 in range(0, len(known_l), _TILE):
        idx = known_l[r0 : r0 + _TILE]
        ldb, lnb, lmb = bits(ld, idx), bits(ln, idx), bits(lm, idx)
        n_ld, n_lm = _ones(ld[idx])[:, None], _ones(lm[idx])[:, None]
        # A ramp is above 0 only above its start: test each similarity against its start.
        day = (ldb @ rdb.T) * 2 >= (DAY_FROM - loose) * (n_ld + n_rd)
        day |= (ldb @ rnb.T) / n_ld + (lnb @ rdb.T) / n_rd >= 2 * (NEAR_FROM - loose)
        day |= (lmb @ rmb.T) * 2 >= (MD_FROM - loose) * (n_lm + n_rm)
        uu, vv = np.nonzero(day)
        found_u.append(idx[uu])
        found_v.append(known_r[vv])
    u, v = np.concatenate(found_u), np.concatenate(found_v)
    # The exact test, in float64 as for a pair of entries.
    a_day, a_near, a_md = ld[u], ln[u], lm[u]
    b_day, b_near, b_md = rd[v], rn[v], rm[v]
    na_day, nb_day, na_md, nb_md = _ones(a_day), _ones(b_day), _ones(a_md), _ones(b_md)
    evidence = _birth_evidence(
        _dice(a_day, b_day, na_day, nb_day),
        0.5 * (_contained(a_day, b_near, na_day) + _contained(b_day, a_near, nb_day)),
        _dice(a_md, b_md, na_md, nb_md),
    )
    hit = evidence > 0.0
    return u[hit], v[hit]


_SCAN_PAIRS = 25_000_000  # up to this many pairs, the bound scan is faster than the blocked search
_SCAN_PAIRS_SINGLE = 1_000_000  # … when single births are known (their bound is loose)
_BATCH = 1 << 20  # pairs scored at a time in the blocked search (about 150 MiB of gathered filters)


def _blocked(L: _Side, R: _Side, floor: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Every allowed pair with score ≥ floor, without scoring all pairs (module docstring, "Speed").

    Three disjoint searches, whose union is every pair the score allows (:attr:`_Parts.allowed`):
    (a) both dates known and related — by pairs of date groups; (b) both dates known, unrelated, and
    the names sound the same — by groups of equal pinyin filters; (c) a date unknown on either
    side — by the bound scan of :func:`_scan` on those rows only."""
    empty = np.zeros(0, dtype=np.intp)
    birth_l = np.hstack([L.day, L.near, L.md])
    birth_r = np.hstack([R.day, R.near, R.md])
    dl, dr = _groups(birth_l), _groups(birth_r)
    out_i: list[npt.NDArray[np.intp]] = []
    out_j: list[npt.NDArray[np.intp]] = []

    def keep(i: npt.NDArray[np.intp], j: npt.NDArray[np.intp]) -> None:
        ok = ~(L.has_token[i] & R.has_token[j]) & ((L.sex[i] == 0) | (R.sex[j] == 0) | (L.sex[i] == R.sex[j]))
        i, j = i[ok], j[ok]
        if len(i):
            raw = _parts(L, R, i, j).raw
            hit = raw >= floor
            out_i.append(i[hit])
            out_j.append(j[hit])

    # (a) related dates, in batches of about _BATCH pairs.
    gu, gv = _related_dates(dl, dr)
    sizes = dl.count[gu] * dr.count[gv]
    edges = np.searchsorted(np.cumsum(sizes), np.arange(_BATCH, int(sizes.sum()) + _BATCH, _BATCH), side="left")
    lo = 0
    for hi in [*edges.tolist(), len(gu)]:
        hi = max(hi + 1, lo + 1) if hi < len(gu) else len(gu)
        if lo >= len(gu):
            break
        keep(*_expand(dl, dr, gu[lo:hi], gv[lo:hi]))
        lo = hi
    # (b) unrelated known dates, names that sound the same (equal pinyin filters).
    pl, pr = _groups(L.pinyin), _groups(R.pinyin)
    common_l, common_r = _common(pl.keys, pr.keys)
    named = _ones(pl.keys[common_l]) > 0
    i, j = _expand(pl, pr, common_l[named], common_r[named])
    both_known = ~(L.birth_missing[i] | R.birth_missing[j])
    i, j = i[both_known], j[both_known]
    related = np.isin(dl.of[i] * len(dr.count) + dr.of[j], gu * len(dr.count) + gv)
    keep(i[~related], j[~related])
    # (c) a date unknown on either side: the bound scan, on those rows only.
    miss_l, miss_r = np.flatnonzero(L.birth_missing), np.flatnonzero(R.birth_missing)
    known_l = np.flatnonzero(~L.birth_missing)
    for rows, cols in ((miss_l, np.arange(len(R), dtype=np.intp)), (known_l, miss_r)):
        if len(rows) and len(cols):
            si, sj = _scan(L.subset(rows), R.subset(cols), floor)
            keep(rows[si], cols[sj])
    if not out_i:
        return empty, empty
    return np.concatenate(out_i), np.concatenate(out_j)


def _common(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Indices (into a, into b) of the rows two sorted, unique row sets share."""
    both, inverse = np.unique(np.vstack([a, b]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    in_a = np.full(len(both), -1, dtype=np.intp)
    in_a[inverse[: len(a)]] = np.arange(len(a))
    from_b = in_a[inverse[len(a) :]]
    hit = np.flatnonzero(from_b >= 0)
    return from_b[hit], hit.astype(np.intp)


def _candidates(
    L: _Side, R: _Side, floor: float, *, blocking: bool | None = None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], _Parts]:
    """Every allowed pair with score ≥ floor: (left index, right index, score, parts), sorted by
    (left, right). ``blocking``: True the blocked search (:func:`_blocked`), False the bound scan
    over all pairs (:func:`_scan`), None (the default) the scan up to ``_SCAN_PAIRS`` pairs and the
    blocked search above. Both find the same pairs (``tests/test_matching_matcher.py`` checks it)."""
    empty = np.zeros(0, dtype=np.intp)
    if len(L) == 0 or len(R) == 0:
        return empty, empty, np.zeros(0), _parts(L, R, empty, empty)
    if blocking is None:
        # The blocked search has a fixed cost of about a second; the bound of a single birth's pairs
        # is loose (an edit may raise its name part), so they are searched by blocks sooner.
        blocking = len(L) * len(R) > (_SCAN_PAIRS_SINGLE if L.single.any() else _SCAN_PAIRS)
    i, j = _blocked(L, R, floor) if blocking else _scan(L, R, floor)
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    parts = _parts(L, R, i, j)
    keep = parts.raw >= floor
    i, j = i[keep], j[keep]
    parts = _parts(L, R, i, j)
    return i, j, parts.raw, parts


# --- matching ------------------------------------------------------------------------------------------


def match(left: Sequence[Entry], right: Sequence[Entry], thresholds: Thresholds | None = None) -> MatchResult:
    """Link ``left`` (the registration ledger) to ``right`` (residence notices); see the module docstring.

    Raises ``ValueError`` (naming the side and position, never a value) when an encoding has an
    unknown layout. Deterministic: the same inputs give the same result.
    """
    t = thresholds or Thresholds()
    L, R = _prepare(left, "left", registration=True), _prepare(right, "right")
    _drop_common_edits(L, len(R))
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
    Ls, Rs = L.subset(rest_l), R.subset(rest_r)
    ci, cj, score, parts = _candidates(Ls, Rs, floor)
    if len(ci):
        pool = _Pool(Ls, Rs, ci, cj, score, (parts.same_sound | parts.edit) & (score >= t.auto), parts.look_alike)
        order = np.lexsort((cj, ci, -score))
        for k in order:
            i, j, s = int(ci[k]), int(cj[k]), float(score[k])
            if s < t.review:
                break
            if pool.taken_l[i] or pool.taken_r[j]:
                continue
            sure = bool(pool.sure[k]) and s - pool.competitor(i, j, int(k)) >= t.margin and not pool.twin(i, j, int(k))
            band = Band.MATCHED if sure else Band.REVIEW
            pool.take(i, j, settled=sure)
            li, rj = int(rest_l[i]), int(rest_r[j])
            shown = round(min(max(s, 0.0), 1.0), 6)
            links.append(Link(left[li].ref, right[rj].ref, band, shown, "fuzzy", _hints(parts, int(k))))
            used_l[li] = used_r[rj] = True
    return MatchResult(
        links=tuple(links),
        unmatched_left=tuple(left[int(i)].ref for i in np.flatnonzero(~used_l)),
        unmatched_right=tuple(right[int(j)].ref for j in np.flatnonzero(~used_r)),
    )


def _drop_common_edits(L: _Side, n_right: int) -> None:
    """Forget the edit masks and cut-short names of the registration side that are common: those for
    which more than ``EDIT_STRANGERS`` strangers born the same day are expected on the other side —
    the share of the registration side's names with that mask (equal masks: equal kept tokens), or
    bearing the cut-short name (one at least), × the other side's size ÷ ``BIRTH_DAYS`` (the
    frequency-based weights of Fellegi and Sunter: agreeing on a common pattern, 王子□, says less
    than on a rare one)."""
    valid = L.n_edits > 0
    if not valid.any():
        return
    _, inverse, counts = np.unique(L.edits[valid], axis=0, return_inverse=True, return_counts=True)
    expected = counts[inverse.reshape(-1)] / len(L) * n_right / BIRTH_DAYS
    n_edits = L.n_edits[valid]
    n_edits[expected > EDIT_STRANGERS] = 0.0
    L.n_edits[valid] = n_edits
    # A name cut short is common when the ledger holds many children of that (shorter) name.
    cut = np.flatnonzero(L.n_cut > 0)
    names, of_name = np.unique(np.vstack([L.chars, L.cut[cut]]), axis=0, return_inverse=True)
    of_name = of_name.reshape(-1)
    same_name = np.bincount(of_name[: len(L)], minlength=len(names))[of_name[len(L) :]]
    expected = np.maximum(same_name, 1) / len(L) * n_right / BIRTH_DAYS
    L.n_cut[cut[expected > EDIT_STRANGERS]] = 0.0


class _Pool:
    """The fuzzy candidates during assignment: each entry's candidates, what is taken, and the two
    tests a candidate must pass besides its own score to be linked automatically (module docstring,
    "Assignment"). Indices are into the rest of each side; ``k`` is a candidate's index."""

    def __init__(
        self,
        L: _Side,
        R: _Side,
        ci: npt.NDArray[np.intp],
        cj: npt.NDArray[np.intp],
        score: npt.NDArray[np.float64],
        sure: npt.NDArray[np.bool_],
        look_alike: npt.NDArray[np.bool_],
    ) -> None:
        self.L, self.R, self.ci, self.cj, self.score, self.sure = L, R, ci, cj, score, sure
        self.look_alike = look_alike
        # Candidates are sorted by (left, right): left entry i's are start_l[i]:start_l[i + 1];
        # right entry j's are by_r[start_r[j]:start_r[j + 1]].
        self.start_l = np.searchsorted(ci, np.arange(len(L) + 1)).astype(np.intp)
        self.by_r = np.argsort(cj, kind="stable").astype(np.intp)
        self.start_r = np.searchsorted(cj[self.by_r], np.arange(len(R) + 1)).astype(np.intp)
        self.taken_l = np.zeros(len(L), dtype=np.bool_)
        self.taken_r = np.zeros(len(R), dtype=np.bool_)
        self.settled_l = np.zeros(len(L), dtype=np.bool_)  # taken by an automatic link
        self.settled_r = np.zeros(len(R), dtype=np.bool_)
        # Entries with a sure partner: a candidate whose name sounds the same (or is an edit of a
        # single birth's), scoring ≥ auto.
        self.has_sure_l = np.bincount(ci[sure], minlength=len(L)) > 0
        self.has_sure_r = np.bincount(cj[sure], minlength=len(R)) > 0
        # Each entry's best candidate score.
        self.best_l = np.full(len(L), -np.inf)
        np.maximum.at(self.best_l, ci, score)
        self.best_r = np.full(len(R), -np.inf)
        np.maximum.at(self.best_r, cj, score)

    def of_left(self, i: int) -> npt.NDArray[np.intp]:
        return np.arange(self.start_l[i], self.start_l[i + 1], dtype=np.intp)

    def of_right(self, j: int) -> npt.NDArray[np.intp]:
        return self.by_r[self.start_r[j] : self.start_r[j + 1]]

    def take(self, i: int, j: int, *, settled: bool) -> None:
        self.taken_l[i] = self.taken_r[j] = True
        if settled:
            self.settled_l[i] = self.settled_r[j] = True

    def competitor(self, i: int, j: int, k: int) -> float:
        """The best score of ``i`` or ``j`` with anyone else (-inf when none), leaving out the
        entries already linked automatically — to a candidate scoring at least as high, since the
        candidates are taken by descending score: they are explained by their own link."""
        ks, kr = self.of_left(i), self.of_right(j)
        ks = ks[(ks != k) & ~self.settled_r[self.cj[ks]]]
        kr = kr[(kr != k) & ~self.settled_l[self.ci[kr]]]
        rival = np.concatenate([self.score[ks], self.score[kr]])
        return float(rival.max()) if len(rival) else -np.inf

    def twin(self, i: int, j: int, k: int) -> bool:
        """Whether another candidate of ``j`` is a look-alike of ``i`` born the same day (same birth
        filter, another name) with no sure partner of its own — or the same for ``i`` and ``j``:
        then ``j`` may be that co-twin's record, its name mistyped into a homophone of ``i``'s."""
        L, R = self.L, self.R
        kr = self.of_right(j)
        kr = kr[(kr != k) & self.look_alike[kr]]
        others = self.ci[kr]
        if len(others) and _look_alikes(
            L, i, others, ~self.has_sure_l[others] & (self.score[kr] >= self.best_l[others])
        ):
            return True
        if L.single[i]:  # j cannot be the notice of a co-twin of i's: i has none
            return False
        kl = self.of_left(i)
        kl = kl[(kl != k) & self.look_alike[kl]]
        others = self.cj[kl]
        return bool(len(others)) and _look_alikes(
            R, j, others, ~self.has_sure_r[others] & (self.score[kl] >= self.best_r[others])
        )


def _look_alikes(side: _Side, o: int, others: npt.NDArray[np.intp], alone: npt.NDArray[np.bool_]) -> bool:
    """Whether one of ``others`` (where ``alone``) has the same known birth filter as ``o`` and
    another pinyin filter."""
    if not side.n_day[o]:
        return False
    same_day = np.all(side.day[others] == side.day[o], axis=1) & np.all(side.md[others] == side.md[o], axis=1)
    other_name = np.any(side.pinyin[others] != side.pinyin[o], axis=1)
    return bool(np.any(same_day & other_name & alone))
