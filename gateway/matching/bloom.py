"""Keyed Bloom-filter encodings of a name and a birth date (SPEC §3, §5): the notice's fuzzy fields.

A notice carries no plain name and no birth date (only the year-month). For the fuzzy stage it
carries two byte strings built here under the **pair key** (``gateway.exchange.tokens``), so only the
two nodes of a pair can make or test them, and they change every monitoring period.

Tokens and bits
---------------
Each field turns its value into a set of short **tokens** (q-grams, see below). Every token sets
``k`` bits of the field's filter of ``m`` bits (``m`` a power of two)::

    field key  = tokens.field_key(pair key, field name)              # one independent key per field
    digest     = HMAC-SHA256(field key, UTF-8 token)                  # 32 bytes
    positions  = the first k big-endian 16-bit words of digest, mod m # k ≤ 16, no double hashing

Bit ``p`` of a filter is bit ``7 - p % 8`` of byte ``p // 8`` (``numpy.unpackbits`` order). Without the
field key the positions of a token cannot be computed, so a filter cannot be tested against a
dictionary of names by a third party; with different keys the same name has unrelated bits.

=================  ========  ====  ==================================================================
field              m (bits)  k     tokens
=================  ========  ====  ==================================================================
``name_chars``     128       12    simplified characters: unigrams ``u:张`` and padded bigrams
                                   ``b:^张``, ``b:张晓`` … ``b:明$`` (empty for a name typed in pinyin)
``name_pinyin``    256       16    toneless pinyin: padded letter bigrams ``l:^z``, ``l:zh`` …
                                   ``l:g$`` over the joined letters (no syllable tokens: layout 3)
``birth``          128       6/3   three segments, see below (all zero when the date is unknown)
=================  ========  ====  ==================================================================

The name budgets are chosen so that typical names set about 40–50 % of the bits
(``tests/test_matching_encodings.py`` measures it on generated names and dates). The pinyin
filter holds **letters only** (layout 3; layout 2 also had syllable tokens): a name typed in Latin
letters can often be cut into syllables in two ways (``sunanyu``: sun·an·yu or su·nan·yu), and the
letters do not depend on the cut — so two names that *sound* the same have *identical* pinyin
filters, which is what the matcher asks of an automatic fuzzy link.

Speed: a name's filter is the OR of per-token masks, and every token belongs to one character
(unigram, the inner letter bigrams of its syllable), to one pair of neighbours (bigram, the letter
bigram across a syllable boundary) or to an end; :class:`Encoder` caches the masks per character,
per syllable, per pair and per end, so a never-seen name made of seen characters costs a few dictionary look-ups and no
HMAC (``bench``: well over 50,000 new names a second).

The birth filter is cut into three **segments**, so that the matcher can tell *which* kind of
agreement two dates have (a single Dice over mixed tokens cannot):

* bits 0–55, **day**: the token ``d:`` + ISO date of the day itself (k = 6);
* bits 56–111, **near**: the same kind of token for each *variant* of the day (:func:`birth_variants`:
  the day before and after, month and day swapped when that is a date, the lunar (农历) reading
  written as solar and the solar day whose lunar date is written so; lunardate, 1900–2099), under
  the **same field key and size** as the day segment — so one side's day bits are all set in the
  other's near segment exactly when its date is a variant of the other's (k = 6);
* bits 112–127, **month–day**: ``md:MM-DD`` (k = 3; survives a typo in the year).

Segment positions come from the big-endian 32-bit words of the HMAC, mod the segment size.

Name edits (registration side only)
-----------------------------------
The registration node holds its ledger in plain and describes, for the matcher's single-birth rule
(:mod:`gateway.matching.matcher`), the one-character edits of each ledger name:
:meth:`Encoder.name_edits` gives, for each position ``p`` = 1 … :data:`EDIT_POSITIONS` of a name of
three characters or more (never the first), the ``name_chars`` bits of the tokens that do not involve
character ``p`` (:func:`name_edit_tokens`: for 王子涵 at ``p`` = 2, ``u:王 u:子 b:^王 b:王子``). A
notice whose character filter holds all of them is that name with character ``p`` replaced, dropped
or followed by another; one whose character filter *equals* the name's without its last character
(also given) is that name cut short. These bytes stay with the registration node: they are not a
notice field.

Layout
------
Both encodings start with a layout byte (:data:`LAYOUT_VERSION`) and have fixed sizes::

    name_encoding  (49 bytes) = version ‖ name_chars (16 bytes) ‖ name_pinyin (32 bytes)
    birth_encoding (17 bytes) = version ‖ birth (16 bytes)
    name_edits    (113 bytes) = version ‖ cut-short name_chars (16 bytes) ‖ 6 × name_chars mask
                                (16 bytes each; all zero: no such name or position)

An all-zero filter means "unknown" (no name characters, no date). Anything else — another size or
version — is refused by :func:`split_name`, :func:`split_birth` and :func:`split_name_edits` with
``ValueError``.
"""

from __future__ import annotations

import contextlib
import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
from lunardate import LunarDate

from gateway.exchange.tokens import HmacSha256, field_key
from gateway.matching.names import NormalisedName, normalise_name

LAYOUT_VERSION = 3  # 1: one mixed birth filter; 2: syllable tokens in the pinyin filter (both refused)
_VERSION_BYTE = bytes([LAYOUT_VERSION])


@dataclass(frozen=True)
class FieldSpec:
    """One Bloom filter: its name (the field key's label), size in bits and bits per token."""

    name: str
    bits: int
    k: int

    @property
    def nbytes(self) -> int:
        return self.bits // 8


NAME_CHARS = FieldSpec("name_chars", 128, 12)
NAME_PINYIN = FieldSpec("name_pinyin", 256, 16)
BIRTH = FieldSpec("birth", 128, 6)  # k: bits per date token in the day and near segments
# The birth filter's three segments (bits 0–55, 56–111, 112–127): the day, its variants, month–day.
BIRTH_DAY_BITS = 56
BIRTH_NEAR_BITS = 56
BIRTH_MD_BITS = 16
BIRTH_DATE_K = BIRTH.k
BIRTH_MD_K = 3
#: One-character edits of a registration-ledger name are described at positions 1 … EDIT_POSITIONS.
EDIT_POSITIONS = 6
NAME_FIELDS = (NAME_CHARS, NAME_PINYIN)
BIRTH_FIELDS = (BIRTH,)
NAME_ENCODING_BYTES = 1 + sum(f.nbytes for f in NAME_FIELDS)
BIRTH_ENCODING_BYTES = 1 + sum(f.nbytes for f in BIRTH_FIELDS)
NAME_EDITS_BYTES = 1 + (1 + EDIT_POSITIONS) * NAME_CHARS.nbytes

if BIRTH.bits != BIRTH_DAY_BITS + BIRTH_NEAR_BITS + BIRTH_MD_BITS:
    raise RuntimeError("the birth segments must fill the birth filter")
for _f in (*NAME_FIELDS, *BIRTH_FIELDS):  # power of two: `% m` of a 16-bit word is unbiased
    if _f.bits & (_f.bits - 1) or not 8 <= _f.bits <= 65536 or not 1 <= _f.k <= 16:
        raise RuntimeError(f"bad Bloom filter parameters for {_f.name}")

_LUNAR_FIRST = date(1900, 1, 31)  # lunardate's range
_LUNAR_END = date(2100, 1, 1)


# --- tokens ------------------------------------------------------------------------------------------


def name_char_tokens(name: NormalisedName) -> list[str]:
    """Unigrams and padded bigrams of the simplified characters."""
    chars = name.chars
    if not chars:
        return []
    padded = f"^{chars}$"
    return [f"u:{c}" for c in chars] + [f"b:{padded[i : i + 2]}" for i in range(len(padded) - 1)]


def name_pinyin_tokens(name: NormalisedName) -> list[str]:
    """Padded letter bigrams of the joined pinyin (the letters only, not how they are cut)."""
    letters = name.letters
    if not letters:
        return []
    padded = f"^{letters}$"
    return [f"l:{padded[i : i + 2]}" for i in range(len(padded) - 1)]


def name_edit_tokens(name: NormalisedName) -> list[list[str]]:
    """For a name of three characters or more, and each position ``p`` = 1 … ``EDIT_POSITIONS`` of its
    characters (never the first), the character tokens (:func:`name_char_tokens`) that do not involve
    the character at ``p``: what a name with that one character replaced, dropped or followed by
    another still has in common with this one. ``[]`` for a shorter name or one typed in pinyin."""
    chars = name.chars
    if len(chars) < 3:
        return []
    padded = f"^{chars}$"
    out: list[list[str]] = []
    for p in range(1, min(len(chars), EDIT_POSITIONS + 1)):
        unigrams = [f"u:{c}" for q, c in enumerate(chars) if q != p]
        # padded[b : b + 2] holds characters b - 1 and b: it involves character p when b is p or p + 1.
        bigrams = [f"b:{padded[b : b + 2]}" for b in range(len(padded) - 1) if b not in (p, p + 1)]
        out.append(unigrams + bigrams)
    return out


def _lunar_as_solar(d: date) -> date | None:
    """The solar date of the day whose *lunar* date is written ``d`` (non-leap month), if any."""
    try:
        return LunarDate(d.year, d.month, d.day).to_solar_date()  # type: ignore[no-any-return]
    except ValueError:
        return None


def _solar_as_lunar(d: date) -> date | None:
    """The lunar date of solar day ``d``, written as if it were a solar date, if that is a date."""
    if not _LUNAR_FIRST <= d < _LUNAR_END:
        return None
    lunar = LunarDate.from_solar_date(d.year, d.month, d.day)
    try:
        return date(lunar.year, lunar.month, lunar.day)
    except ValueError:
        return None


def birth_variants(d: date) -> tuple[date, ...]:
    """The dates a ledger may have written instead of ``d``: the day before and after, the day with
    month and day swapped (when that is another date), the lunar reading of ``d`` written as solar
    and the solar day whose lunar date is written ``d`` (deterministic order, no repeats, not ``d``)."""
    days: list[date] = []
    for delta in (-1, 1):
        with contextlib.suppress(OverflowError):
            days.append(d + timedelta(days=delta))
    with contextlib.suppress(ValueError):  # the swap is a date only when the day is ≤ 12
        days.append(date(d.year, d.day, d.month))
    for other in (_lunar_as_solar(d), _solar_as_lunar(d)):
        if other is not None:
            days.append(other)
    return tuple(x for x in dict.fromkeys(days) if x != d)


@functools.lru_cache(maxsize=65536)
def birth_tokens(d: date) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The tokens of the three birth segments: ``(day, near, month_day)`` (see the module docstring)."""
    return (
        (f"d:{d.isoformat()}",),
        tuple(f"d:{x.isoformat()}" for x in birth_variants(d)),
        (f"md:{d.month:02d}-{d.day:02d}",),
    )


# --- filters -----------------------------------------------------------------------------------------


class FieldEncoder:
    """Sets the bits of one field's filter under one field key; caches token positions (names and
    dates repeat a lot, and an HMAC per token is most of the cost)."""

    def __init__(self, key: bytes, spec: FieldSpec) -> None:
        self.spec = spec
        self._hmac = HmacSha256(field_key(key, spec.name))
        self._masks: dict[str, int] = {}
        self._words = struct.Struct(f">{spec.k}H")

    def positions(self, token: str) -> tuple[int, ...]:
        """The k bit positions of a token (with repeats, as cut from the digest)."""
        digest = self._hmac.digest(token.encode("utf-8"))
        m = self.spec.bits
        return tuple(w % m for w in self._words.unpack_from(digest))

    def _mask(self, token: str) -> int:
        mask = self._masks.get(token)
        if mask is None:
            mask = 0
            top = self.spec.bits - 1
            for p in self.positions(token):
                mask |= 1 << (top - p)  # bit p = bit 7 - p % 8 of byte p // 8
            if len(self._masks) < 1_000_000:  # bounded: a pathological input cannot exhaust memory
                self._masks[token] = mask
        return mask

    def mask(self, tokens: Iterable[str]) -> int:
        """The OR of the tokens' masks, as an integer (position 0 the most significant bit)."""
        value = 0
        for token in tokens:
            value |= self._mask(token)
        return value

    def filter(self, tokens: Iterable[str]) -> bytes:
        return self.mask(tokens).to_bytes(self.spec.nbytes, "big")


class SegmentEncoder:
    """Sets the bits of one segment of the birth filter: ``k`` positions from the big-endian 32-bit
    words of ``HMAC-SHA256(field key, token)``, mod ``bits`` (any size; the bias of ``% bits`` on a
    32-bit word is below 10⁻⁸). Two segments built from one field key put a token on the same
    positions, which is what lets the matcher test one side's day against the other's variants."""

    def __init__(self, key: bytes, label: str, bits: int, k: int) -> None:
        if not 8 <= bits <= 65536 or not 1 <= k <= 8:
            raise RuntimeError(f"bad Bloom segment parameters for {label}")
        self.bits = bits
        self.k = k
        self._hmac = HmacSha256(field_key(key, label))
        self._masks: dict[str, int] = {}
        self._words = struct.Struct(f">{k}I")

    def positions(self, token: str) -> tuple[int, ...]:
        digest = self._hmac.digest(token.encode("utf-8"))
        m = self.bits
        return tuple(w % m for w in self._words.unpack_from(digest))

    def mask(self, tokens: Iterable[str]) -> int:
        """The segment's bits as an integer of ``bits`` bits, position 0 the most significant."""
        value = 0
        for token in tokens:
            m = self._masks.get(token)
            if m is None:
                m = 0
                for p in self.positions(token):
                    m |= 1 << (self.bits - 1 - p)
                if len(self._masks) < 1_000_000:
                    self._masks[token] = m
            value |= m
        return value


class Encoder:
    """The encodings of one pair key: use one instance for a whole roster (it caches the bits of
    every token and the encoding of every name and date it has seen, up to a bound)."""

    _CACHE_LIMIT = 1_000_000

    def __init__(self, key: bytes) -> None:
        self._chars = FieldEncoder(key, NAME_CHARS)
        self._pinyin = FieldEncoder(key, NAME_PINYIN)
        self._day = SegmentEncoder(key, "birth_date", BIRTH_DAY_BITS, BIRTH_DATE_K)
        self._md = SegmentEncoder(key, "birth_md", BIRTH_MD_BITS, BIRTH_MD_K)
        self._names: dict[str, bytes] = {}
        self._edits: dict[str, bytes] = {}
        self._births: dict[date, bytes] = {}
        # Masks of the pieces a name's tokens are made of (see the module docstring, "Speed").
        self._char_masks: dict[str, int] = {}  # u:c
        self._char_starts: dict[str, int] = {}  # b:^c
        self._char_pairs: dict[str, int] = {}  # b:cd
        self._char_ends: dict[str, int] = {}  # b:c$
        self._syllable_masks: dict[str, int] = {}  # the inner letter bigrams of a syllable
        self._letter_starts: dict[str, int] = {}  # l:^x
        self._letter_ends: dict[str, int] = {}  # l:x$
        self._letter_pairs: dict[str, int] = {}  # l:xy across a syllable boundary

    def _piece(self, field: FieldEncoder, cache: dict[str, int], piece: str, tokens: Sequence[str]) -> int:
        """The mask of one piece's tokens, cached by piece (bounded like every cache here)."""
        value = field.mask(tokens)
        if len(cache) < self._CACHE_LIMIT:
            cache[piece] = value
        return value

    def _chars_mask(self, chars: str) -> int:
        f, units, pairs = self._chars, self._char_masks, self._char_pairs
        head = chars[0]
        value = self._char_starts.get(head)
        if value is None:
            value = self._piece(f, self._char_starts, head, (f"b:^{head}",))
        previous = ""
        for c in chars:
            m = units.get(c)
            value |= m if m is not None else self._piece(f, units, c, (f"u:{c}",))
            if previous:
                pair = previous + c
                m = pairs.get(pair)
                value |= m if m is not None else self._piece(f, pairs, pair, (f"b:{pair}",))
            previous = c
        m = self._char_ends.get(previous)
        return value | (m if m is not None else self._piece(f, self._char_ends, previous, (f"b:{previous}$",)))

    def _pinyin_mask(self, syllables: tuple[str, ...]) -> int:
        f, masks, pairs = self._pinyin, self._syllable_masks, self._letter_pairs
        head = syllables[0][0]
        value = self._letter_starts.get(head)
        if value is None:
            value = self._piece(f, self._letter_starts, head, (f"l:^{head}",))
        last = ""
        for s in syllables:
            m = masks.get(s)
            if m is None:
                m = self._piece(f, masks, s, [f"l:{s[i : i + 2]}" for i in range(len(s) - 1)])
            value |= m
            if last:
                pair = last + s[0]
                m = pairs.get(pair)
                value |= m if m is not None else self._piece(f, pairs, pair, (f"l:{pair}",))
            last = s[-1]
        m = self._letter_ends.get(last)
        return value | (m if m is not None else self._piece(f, self._letter_ends, last, (f"l:{last}$",)))

    def name(self, name: str) -> bytes:
        out = self._names.get(name)
        if out is None:
            normalised = normalise_name(name)
            syllables = tuple(s for s in normalised.syllables if s)
            chars = self._chars_mask(normalised.chars) if normalised.chars else 0
            pinyin = self._pinyin_mask(syllables) if syllables else 0
            out = _VERSION_BYTE + chars.to_bytes(NAME_CHARS.nbytes, "big") + pinyin.to_bytes(NAME_PINYIN.nbytes, "big")
            if len(self._names) < self._CACHE_LIMIT:
                self._names[name] = out
        return out

    def name_edits(self, name: str) -> bytes:
        """The registration side's own description of a ledger name's one-character edits (it never
        travels; see :func:`split_name_edits`): the version byte, the ``name_chars`` filter of the
        name without its last character, and for each position of :func:`name_edit_tokens` the
        ``name_chars`` bits of the tokens that do not involve that character — all zero for a name
        of one or two characters or typed in pinyin, and past the end of the name."""
        out = self._edits.get(name)
        if out is None:
            normalised = normalise_name(name)
            masks = [self._chars.filter(tokens) for tokens in name_edit_tokens(normalised)]
            cut = self._chars_mask(normalised.chars[:-1]) if masks else 0
            padding = bytes(NAME_CHARS.nbytes) * (EDIT_POSITIONS - len(masks))
            out = _VERSION_BYTE + cut.to_bytes(NAME_CHARS.nbytes, "big") + b"".join(masks) + padding
            if len(self._edits) < self._CACHE_LIMIT:
                self._edits[name] = out
        return out

    def birth(self, birth_date: date | None) -> bytes:
        if birth_date is None:
            return _VERSION_BYTE + bytes(BIRTH.nbytes)
        out = self._births.get(birth_date)
        if out is None:
            day, near, md = birth_tokens(birth_date)
            value = (
                self._day.mask(day) << (BIRTH_NEAR_BITS + BIRTH_MD_BITS)
                | self._day.mask(near) << BIRTH_MD_BITS
                | self._md.mask(md)
            )
            out = _VERSION_BYTE + value.to_bytes(BIRTH.nbytes, "big")
            if len(self._births) < self._CACHE_LIMIT:
                self._births[birth_date] = out
        return out


@functools.lru_cache(maxsize=16)
def encoder_for(key: bytes) -> Encoder:
    """A cached :class:`Encoder` per pair key (a roster is encoded under one key)."""
    return Encoder(key)


# --- reading encodings back (the matcher) --------------------------------------------------------------


def split_name(encoding: bytes) -> tuple[bytes, bytes] | None:
    """``(name_chars, name_pinyin)`` filters of a name encoding; ``None`` for ``b""`` (unknown).
    ``ValueError`` for any other size or layout version."""
    if not encoding:
        return None
    if len(encoding) != NAME_ENCODING_BYTES or encoding[0] != LAYOUT_VERSION:
        raise ValueError("name encoding has an unknown layout")
    cut = 1 + NAME_CHARS.nbytes
    return encoding[1:cut], encoding[cut:]


def split_birth(encoding: bytes) -> bytes | None:
    """The birth filter of a birth encoding; ``None`` for ``b""`` (unknown). ``ValueError`` for any
    other size or layout version."""
    if not encoding:
        return None
    if len(encoding) != BIRTH_ENCODING_BYTES or encoding[0] != LAYOUT_VERSION:
        raise ValueError("birth encoding has an unknown layout")
    return encoding[1:]


def split_name_edits(encoding: bytes) -> tuple[bytes, list[bytes]] | None:
    """The cut-short filter and the ``EDIT_POSITIONS`` masks of a :meth:`Encoder.name_edits` encoding
    (all zero: none); ``None`` for ``b""`` (not given). ``ValueError`` for any other size or layout
    version."""
    if not encoding:
        return None
    if len(encoding) != NAME_EDITS_BYTES or encoding[0] != LAYOUT_VERSION:
        raise ValueError("name edits have an unknown layout")
    n = NAME_CHARS.nbytes
    return encoding[1 : 1 + n], [encoding[1 + n * (p + 1) : 1 + n * (p + 2)] for p in range(EDIT_POSITIONS)]


def fill_ratio(filter_bytes: bytes) -> float:
    """Share of the bits set in one filter."""
    if not filter_bytes:
        return 0.0
    bits = np.unpackbits(np.frombuffer(filter_bytes, dtype=np.uint8))
    return float(bits.mean())


def dice(a: bytes, b: bytes) -> float:
    """Dice coefficient ``2|A∧B| / (|A|+|B|)`` of two filters of the same size (0.0 when both empty)."""
    x = np.frombuffer(a, dtype=np.uint8)
    y = np.frombuffer(b, dtype=np.uint8)
    ones: npt.NDArray[np.uint8] = np.bitwise_count(x)
    total = int(ones.sum()) + int(np.bitwise_count(y).sum())
    return 0.0 if total == 0 else 2.0 * int(np.bitwise_count(x & y).sum()) / total
