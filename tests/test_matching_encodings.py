"""Keyed Bloom-filter encodings (gateway.matching.bloom): sizes, determinism, keys, fill ratio and
the birth date's tolerance to the errors county ledgers make."""

from __future__ import annotations

import hashlib
import statistics
from datetime import date, timedelta
from random import Random

import pytest
from faker import Faker

from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import Sex
from gateway.domain.rules import load_rules
from gateway.matching import BIRTH_ENCODING_BYTES, NAME_ENCODING_BYTES, encode
from gateway.matching.bloom import (
    BIRTH,
    BIRTH_MD_BITS,
    BIRTH_NEAR_BITS,
    EDIT_POSITIONS,
    NAME_CHARS,
    NAME_EDITS_BYTES,
    NAME_PINYIN,
    Encoder,
    dice,
    fill_ratio,
    name_edit_tokens,
    split_birth,
    split_name,
    split_name_edits,
)
from gateway.matching.names import normalise_name
from gateway.synth import SynthSpec, generate
from gateway.synth.names import NameMaker

KEY = bytes(range(32))  # test-only
OTHER_KEY = bytes(range(1, 33))


def test_sizes_are_fixed_and_documented() -> None:
    assert (NAME_ENCODING_BYTES, BIRTH_ENCODING_BYTES) == (49, 17)
    for name, born in [("张晓明", date(2015, 6, 1)), ("欧阳娜娜·阿依古丽买买提", None), ("", None)]:
        n, b = encode(KEY, name=name, birth_date=born)
        assert (len(n), len(b)) == (NAME_ENCODING_BYTES, BIRTH_ENCODING_BYTES)


def test_deterministic_across_encoders() -> None:
    one = encode(KEY, name="张晓明", birth_date=date(2015, 6, 1))
    two = Encoder(KEY)
    assert one == (two.name("张晓明"), two.birth(date(2015, 6, 1)))


def test_different_keys_give_unrelated_bits() -> None:
    a, b = Encoder(KEY), Encoder(OTHER_KEY)
    names = ["张晓明", "李华", "王子涵", "欧阳娜娜", "次仁卓玛"]
    for name in names:
        ca, pa = split_name(a.name(name)) or (b"", b"")
        cb, pb = split_name(b.name(name)) or (b"", b"")
        # Unrelated filters of ~45 % fill share about as much as two random ones: far from equal.
        assert dice(pa, pb) < 0.75
        assert dice(ca, cb) < 0.75
    born = date(2015, 6, 1)
    assert dice(split_birth(a.birth(born)) or b"", split_birth(b.birth(born)) or b"") < 0.75


def test_unknown_birth_date_is_an_all_zero_filter() -> None:
    assert split_birth(encode(KEY, name="张晓明", birth_date=None)[1]) == bytes(BIRTH.nbytes)


def test_pinyin_typed_name_has_an_empty_character_filter_and_the_same_pinyin_filter() -> None:
    enc = Encoder(KEY)
    chars_latin, pinyin_latin = split_name(enc.name("Zhang Xiaoming")) or (b"", b"")
    chars_han, pinyin_han = split_name(enc.name("张晓明")) or (b"", b"")
    assert chars_latin == bytes(NAME_CHARS.nbytes)
    assert pinyin_latin == pinyin_han
    assert chars_han != bytes(NAME_CHARS.nbytes)


@pytest.mark.parametrize(
    "layout",
    [b"\x03", b"\x01" + bytes(48), b"\x02" + bytes(48), b"\x04" + bytes(48), bytes(50)],
    ids=["short", "version_1", "version_2_syllable_tokens", "version_4", "long"],
)
def test_unknown_layout_is_refused(layout: bytes) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        split_name(layout)


# --- fill ratio: 40-50 % of the bits for typical names and dates ----------------------------------------


def _synth_people(n_households: int) -> list[tuple[str, date]]:
    spec = SynthSpec(
        seed=11,
        period=MonitoringPeriod.parse("2026Q3"),
        residence_divisions=("500157",),
        registration_divisions=("511321", "520524", "500101"),
        households=n_households,
    )
    return [(r.name, r.birth_date) for r in generate(spec, DivisionTable.load_default(), load_rules())]


def test_fill_ratio_of_generated_names_and_dates() -> None:
    enc = Encoder(KEY)
    people = _synth_people(600)
    chars, pinyin, birth = [], [], []
    for name, born in people:
        c, p = split_name(enc.name(name)) or (b"", b"")
        chars.append(fill_ratio(c))
        pinyin.append(fill_ratio(p))
        birth.append(fill_ratio(split_birth(enc.birth(born)) or b""))
    # The generated set includes long Uyghur and Tibetan names, which fill more of the name filters.
    assert 0.20 <= statistics.mean(birth) <= 0.40  # day ~10 %, variants ~40 %, month–day ~17 % of their bits
    for field, values in (("name_chars", chars), ("name_pinyin", pinyin)):
        assert 0.40 <= statistics.mean(values) <= 0.60, field


def test_fill_ratio_of_faker_and_han_style_names() -> None:
    enc = Encoder(KEY)
    fake = Faker("zh_CN")
    fake.seed_instance(5)
    maker = NameMaker.default()
    rng = Random(3)
    names = [fake.name() for _ in range(300)]
    names += [
        maker.surname(rng) + maker.child(rng, maker.family(rng, "511321"), Sex.FEMALE, date(2015, 1, 1)).given
        for _ in range(300)
    ]
    filters = [split_name(enc.name(n)) or (b"", b"") for n in names]
    assert 0.40 <= statistics.mean(fill_ratio(c) for c, _ in filters) <= 0.50
    assert 0.40 <= statistics.mean(fill_ratio(p) for _, p in filters) <= 0.50


# --- birth-date tolerance ---------------------------------------------------------------------------------

BORN = date(2014, 3, 9)  # month and day can be swapped; solar 2014-03-09 is lunar 2014-02-09


def _segments(d: date, enc: Encoder) -> tuple[int, int, int]:
    value = int.from_bytes(split_birth(enc.birth(d)) or b"", "big")
    md = value & ((1 << BIRTH_MD_BITS) - 1)
    near = (value >> BIRTH_MD_BITS) & ((1 << BIRTH_NEAR_BITS) - 1)
    return value >> (BIRTH_MD_BITS + BIRTH_NEAR_BITS), near, md


def _relation(a: date, b: date, enc: Encoder) -> str:
    """What the matcher's birth part sees: the same day, a variant either way, the same month–day."""
    da, na, ma = _segments(a, enc)
    db, nb, mb = _segments(b, enc)
    if da == db:
        return "same_day"
    if da & nb == da and db & na == db:
        return "variant"
    return "month_day" if ma == mb else "other"


# (case, other date, what the segments must show)
TOLERATED = [
    ("same_day", BORN, "same_day"),
    ("one_day_later", BORN + timedelta(days=1), "variant"),
    ("one_day_earlier", BORN - timedelta(days=1), "variant"),
    ("day_and_month_swapped", date(2014, 9, 3), "variant"),
    ("lunar_birthday_written_as_solar", date(2014, 2, 9), "variant"),
    ("typo_in_the_year", date(2015, 3, 9), "month_day"),
    ("unrelated", date(2011, 7, 23), "other"),
]


@pytest.mark.parametrize(("case", "other", "seen"), TOLERATED, ids=[c[0] for c in TOLERATED])
def test_birth_date_errors_show_in_their_segment(case: str, other: date, seen: str) -> None:
    enc = Encoder(KEY)
    assert _relation(BORN, other, enc) == seen, case
    assert _relation(other, BORN, enc) == seen, case  # symmetric, the lunar reading included


def test_unknown_birth_date_is_all_zero() -> None:
    assert split_birth(Encoder(KEY).birth(None)) == bytes(16)


def test_field_specs_have_power_of_two_sizes() -> None:
    for spec in (NAME_CHARS, NAME_PINYIN, BIRTH):
        assert spec.bits & (spec.bits - 1) == 0
        assert 1 <= spec.k <= 16


def _contained(mask: bytes, filter_bytes: bytes) -> bool:
    return all(m & f == m for m, f in zip(mask, filter_bytes, strict=True))


def test_name_edits_keep_the_tokens_one_character_edit_leaves() -> None:
    """The registration side's edit masks (never sent): for each position but the first, the bits of
    the tokens that do not involve that character — set in the names one character away, not in a
    name that shares only the surname."""
    assert name_edit_tokens(normalise_name("王子涵")) == [
        ["u:王", "u:涵", "b:^王", "b:涵$"],
        ["u:王", "u:子", "b:^王", "b:王子"],
    ]
    assert name_edit_tokens(normalise_name("王涵")) == []  # two characters: nothing but the surname would be left
    assert name_edit_tokens(normalise_name("zhang xiaoming")) == []  # no characters
    assert len(name_edit_tokens(normalise_name("阿依古丽·买买提江"))) == EDIT_POSITIONS  # never the first
    enc = Encoder(KEY)
    edits = enc.name_edits("王子涵")
    assert len(edits) == NAME_EDITS_BYTES == 1 + (1 + EDIT_POSITIONS) * NAME_CHARS.nbytes
    cut, masks = split_name_edits(edits) or (b"", [])
    assert [any(m) for m in masks] == [True, True] + [False] * (EDIT_POSITIONS - 2)
    assert split_name_edits(enc.name_edits("王涵")) == (bytes(16), [bytes(16)] * EDIT_POSITIONS)

    def chars(name: str) -> bytes:
        return (split_name(enc.name(name)) or (b"", b""))[0]

    assert cut == chars("王子") != chars("王涵")

    for other, position in [("王子轩", 1), ("王奕涵", 0), ("王子", 1), ("王涵", 0), ("王子涵宇", 1)]:
        assert _contained(masks[position], chars(other)), other
    for stranger in ["王明轩", "李子涵", "王一"]:
        assert not any(_contained(m, chars(stranger)) for m in masks if any(m)), stranger
    assert split_name_edits(b"") is None


@pytest.mark.parametrize("encoding", [b"\x03" * 10, bytes([2]) + bytes(NAME_EDITS_BYTES - 1)], ids=["size", "version"])
def test_name_edits_of_unknown_layout_are_refused(encoding: bytes) -> None:
    with pytest.raises(ValueError, match="unknown layout"):
        split_name_edits(encoding)


# --- known answers ---------------------------------------------------------------------------------

# Encodings under a fixed key, computed before the HMAC of token positions moved to prepared states
# (tokens.HmacSha256, 2026-12-06): any change of a bit here changes what nodes exchange and must come
# with a new version byte.
VECTOR_KEY = hashlib.sha256(b"tongban test vector: bloom").digest()
VECTORS = [
    (
        "王小明",
        date(2015, 6, 1),
        "0395a5965344fd9839294718f427a91c80c496376ee41aa7fa2c540c6d703f5eb7ece02b77fbda68fa0a5b75309c852eba",
        "03040000006a000072c119402bc07c2002",
        "0315c5954244e59921382608a02de9188081800653449d0831204408f027291c801585944244e59821280208a025a9188000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "欧阳子涵",
        date(2012, 12, 31),
        "03e9cca753019efe9fc354b2bbbfc3583f5fd27c467a3b8535689052ec072ee2b97dedb7cfe7deca7c6abcd0d784f46b98",
        "03100a00400800803016e4a00482809800",
        "03e0ce2753018cf68bc21cb2babec3702ee988a05300926a9dc340b2b9af83183ba9cca253018ef282c010b299aec1183fe0cc2751010cf68bc214b2babec3502e000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "Zhang Xiaoming",
        date(2010, 2, 3),
        "0300000000000000000000000000000000c4963f6e643aa7fcec140c6d70bf4eb6fce06b57faca6efe8b9575368c852aba",
        "0300a00111000000dd8bac344251860128",
        "0300000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "阿依古丽·买买提",
        None,
        "03fe5dcffaf35e95edf3ff0aa2e3bf69fbf9f565d46b1d103fab263c5b6c64dee75b4360b747dfd2f666e967cc0da2bda0",
        "0300000000000000000000000000000000",
        "03fe5dcb7ab35d9569f3ff02a2e1a569e3ee59cfd2e34695ed72f70aa2e39f49f9fe5d8ff8f15695edf3af0aa2e39f49f9fe5dcff8d35e95adb3bf0aa2e3bb68fabe5dcffaf35e95edb3fb0aa2e3bf68fbbe5dcf7af35e95edf3fb02a2e1bd69fbfe5dcb7ab35c9569f3ff02a2e1a569e3",
    ),
]


@pytest.mark.parametrize(("name", "born", "name_hex", "birth_hex", "edits_hex"), VECTORS, ids=[v[0] for v in VECTORS])
def test_encodings_match_known_answers(
    name: str, born: date | None, name_hex: str, birth_hex: str, edits_hex: str
) -> None:
    assert encode(VECTOR_KEY, name=name, birth_date=born) == (bytes.fromhex(name_hex), bytes.fromhex(birth_hex))
    assert Encoder(VECTOR_KEY).name_edits(name).hex() == edits_hex
