"""Synthetic Chinese personal names with realistic frequencies.

Three naming styles occur in the ledgers Tongban handles:

* **Han-style** (the vast majority): a surname (姓) from ``gateway/data/names_surnames.tsv`` —
  about 200 single-character surnames weighted by their national share, the compound ones (欧阳,
  司马, 诸葛, 上官 …) at their low real rates, and the surnames with special readings (曾 zēng,
  单 shàn, 解 xiè, 仇 qiú, 区 ōu, 查 zhā …) marked so that matching tests can find them — plus a
  given name of one character (about one child in six) or two. Given names come from the gendered,
  popularity-ordered pools of :mod:`gateway.synth.pools`, weighted by a Zipf law, with the whole
  names that topped the newborn-name lists of the child's birth cohort (子涵, 梓轩, 欣怡, 浩然, 一诺 …)
  mixed in. Same full name, different children, is therefore common — as in real ledgers.
* **Uyghur-style** (Xinjiang, 65): ``本人名·父名`` — the person's own name, a middle dot (U+00B7),
  and the father's name, so siblings share the part after the dot. Names are composed from
  syllable and element lists, never copied from a real person.
* **Tibetan-style** (Tibet, 54): two two-syllable elements and no family name; about half are
  written with a middle dot (``次仁·卓玛``), half joined (``次仁卓玛``) — both spellings occur in
  county files, and matching must fold them.

Everything here takes an explicit :class:`random.Random`, so the caller controls determinism.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from importlib import resources
from random import Random

from gateway.domain.records import Sex
from gateway.errors import ConfigError
from gateway.synth import pools
from gateway.synth.weighted import Weighted

MIDDLE_DOT = "\u00b7"  # · as written between the parts of a transliterated minority name

# Rates (documented in the module docstring and the report of what the generator produces).
SINGLE_CHAR_GIVEN_RATE = 1 / 6  # children born after 2005 with a one-character given name
POPULAR_NAME_RATE = 0.12  # two-character names taken whole from the cohort's top list
CHAR_EXPONENT = 0.8  # Zipf exponent of the given-name character pools
SINGLE_EXPONENT = 0.7  # … of the one-character given names
POPULAR_EXPONENT = 0.7  # … of the cohort's top whole names
MOTHERS_SURNAME_RATE = 0.07  # households whose children take the mother's surname
TIBETAN_DOTTED_RATE = 0.5  # Tibetan names written 次仁·卓玛 rather than 次仁卓玛
TIBETAN_WEEKDAY_RATE = 0.2  # Tibetan children named after their weekday of birth
UYGHUR_COMPOSED_RATE = 0.45  # Uyghur names composed from prefix + root instead of a whole name
UYGHUR_JAN_SUFFIX_RATE = 0.1  # male names with the suffix 江 (艾力江)


class NameStyle(StrEnum):
    HAN = "han"
    UYGHUR = "uyghur"
    TIBETAN = "tibetan"


# Share of people registered in a division with a minority-style name, by the longest matching
# code prefix. Southern Xinjiang (阿克苏 6529, 克孜勒苏 6530, 喀什 6531, 和田 6532) is mostly Uyghur;
# the north has large Han and Hui populations (Hui names are Han-style).
_MINORITY_SHARE: dict[str, tuple[NameStyle, float]] = {
    "6529": (NameStyle.UYGHUR, 0.9),
    "6530": (NameStyle.UYGHUR, 0.9),
    "6531": (NameStyle.UYGHUR, 0.9),
    "6532": (NameStyle.UYGHUR, 0.9),
    "65": (NameStyle.UYGHUR, 0.45),
    "54": (NameStyle.TIBETAN, 0.9),
}

# Surnames far more common in some provinces than nationally (multipliers on the national share):
# 冉/向/谭 in Chongqing, 龙/杨 in Guizhou, 韦/覃/蒙 in Guangxi, 区/梁 in Guangdong, 朴 in the
# Korean areas of Jilin and Liaoning, 欧阳 in Hunan.
_REGIONAL_BOOST: dict[str, dict[str, float]] = {
    "50": {"冉": 10.0, "向": 4.0, "谭": 2.5, "秦": 1.5, "彭": 1.5, "牟": 3.0},
    "51": {"罗": 1.5, "何": 1.3, "邓": 1.5, "蒲": 1.0, "苟": 4.0, "雍": 3.0},
    "52": {"龙": 4.0, "杨": 1.5, "吴": 1.5, "罗": 1.5, "王": 1.1},
    "45": {"韦": 12.0, "覃": 20.0, "蒙": 6.0, "黄": 1.5, "莫": 3.0},
    "44": {"区": 20.0, "梁": 2.0, "黄": 1.5, "陈": 1.5, "冼": 1.0},
    "43": {"欧阳": 4.0, "谭": 2.0, "曾": 1.5},
    "22": {"朴": 15.0},
    "21": {"朴": 5.0},
}


@dataclass(frozen=True)
class Surname:
    """One surname row of ``names_surnames.tsv``: ``note`` is non-empty for a special reading."""

    text: str
    pinyin: str
    per_100k: int
    note: str = ""

    @property
    def compound(self) -> bool:
        return len(self.text) > 1

    @property
    def special_reading(self) -> bool:
        return bool(self.note)


@dataclass(frozen=True)
class PersonName:
    """A synthetic name: ``full`` as written; ``family`` the part a family shares (Han surname,
    Uyghur father's name, ``""`` for Tibetan names); ``given`` the person's own name."""

    full: str
    family: str
    given: str
    style: NameStyle


def load_surnames() -> tuple[Surname, ...]:
    """The packaged surname table, in file order (most common first)."""
    return _load_surnames()


@functools.cache
def _load_surnames() -> tuple[Surname, ...]:
    text = resources.files("gateway").joinpath("data/names_surnames.tsv").read_text(encoding="utf-8")
    rows: list[Surname] = []
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line.startswith("#"):
            continue
        cells = line.split("\t")
        if not header_seen:
            if cells[:3] != ["surname", "pinyin", "per_100k"]:
                raise ConfigError("names_surnames.tsv: the header must start surname, pinyin, per_100k")
            header_seen = True
            continue
        if len(cells) < 3 or not cells[2].isdigit() or not cells[0] or not cells[1].isascii():
            raise ConfigError(f"names_surnames.tsv: line {number} is not surname, pinyin, per_100k[, note]")
        rows.append(Surname(cells[0], cells[1], int(cells[2]), cells[3] if len(cells) > 3 else ""))
    if not rows or len({s.text for s in rows}) != len(rows):
        raise ConfigError("names_surnames.tsv: empty, or a surname is listed twice")
    return tuple(rows)


@dataclass(frozen=True)
class Family:
    """The names a household starts from: the parents', and the part the children share."""

    style: NameStyle
    father: PersonName
    mother: PersonName
    children_family: str


class NameMaker:
    """Draws names. Stateless apart from its (immutable) pools; every draw takes the ``rng``."""

    def __init__(self, surnames: Sequence[Surname]) -> None:
        self._surnames = tuple(surnames)
        self._national = self._surname_pool(None)
        self._by_province: dict[str, Weighted[str]] = {}
        # Exponents below 1 flatten the Zipf law: the top character of a position is then about
        # one in eight, the top whole name about one boy or girl in a hundred.
        self._boy_first = Weighted.zipf(pools.BOY_FIRST, CHAR_EXPONENT)
        self._boy_second = Weighted.zipf(pools.BOY_SECOND, CHAR_EXPONENT)
        self._girl_first = Weighted.zipf(pools.GIRL_FIRST, CHAR_EXPONENT)
        self._girl_second = Weighted.zipf(pools.GIRL_SECOND, CHAR_EXPONENT)
        self._boy_single = Weighted.zipf(pools.BOY_SINGLE, SINGLE_EXPONENT)
        self._girl_single = Weighted.zipf(pools.GIRL_SINGLE, SINGLE_EXPONENT)
        self._popular = {
            (Sex.MALE, era): Weighted.zipf(names, POPULAR_EXPONENT) for era, names in pools.POPULAR_BOYS.items()
        } | {(Sex.FEMALE, era): Weighted.zipf(names, POPULAR_EXPONENT) for era, names in pools.POPULAR_GIRLS.items()}
        self._parent = {
            Sex.MALE: Weighted.zipf(pools.PARENT_MEN, 0.9),
            Sex.FEMALE: Weighted.zipf(pools.PARENT_WOMEN, 0.9),
        }
        self._grandparent = {
            Sex.MALE: Weighted.zipf(pools.GRANDPARENT_MEN, 0.9),
            Sex.FEMALE: Weighted.zipf(pools.GRANDPARENT_WOMEN, 0.9),
        }
        self._uyghur_male = Weighted.zipf(pools.UYGHUR_MALE, 0.8)
        self._uyghur_male_prefix = Weighted.zipf(pools.UYGHUR_MALE_PREFIX)
        self._uyghur_male_root = Weighted.zipf(pools.UYGHUR_MALE_ROOT, 0.7)
        self._uyghur_female = Weighted.zipf(pools.UYGHUR_FEMALE, 0.8)
        self._uyghur_female_prefix = Weighted.zipf(pools.UYGHUR_FEMALE_PREFIX, 0.7)
        self._uyghur_female_suffix = Weighted.zipf(pools.UYGHUR_FEMALE_SUFFIX)
        self._tibetan_first = {
            Sex.MALE: Weighted.zipf(pools.TIBETAN_FIRST, 0.8),
            Sex.FEMALE: Weighted.zipf(pools.TIBETAN_FIRST[:12] + pools.TIBETAN_FEMALE_FIRST, 0.8),
        }
        self._tibetan_second = {
            Sex.MALE: Weighted.zipf(pools.TIBETAN_MALE_SECOND, 0.8),
            Sex.FEMALE: Weighted.zipf(pools.TIBETAN_FEMALE_SECOND, 0.8),
        }

    @classmethod
    def default(cls) -> NameMaker:
        """The maker over the packaged surname table (built once per process)."""
        return _default_maker()

    @property
    def surnames(self) -> tuple[Surname, ...]:
        return self._surnames

    # --- surnames and styles -------------------------------------------------------------------

    def _surname_pool(self, province: str | None) -> Weighted[str]:
        boost = _REGIONAL_BOOST.get(province or "", {})
        return Weighted([(s.text, s.per_100k * boost.get(s.text, 1.0)) for s in self._surnames])

    def surname(self, rng: Random, province: str | None = None) -> str:
        """A surname drawn by national share, adjusted for the province's own common surnames."""
        if province is None or province not in _REGIONAL_BOOST:
            return self._national.pick(rng)
        pool = self._by_province.get(province)
        if pool is None:
            pool = self._by_province[province] = self._surname_pool(province)
        return pool.pick(rng)

    def style_for(self, rng: Random, registration_division: str) -> NameStyle:
        """The naming style of a household registered in ``registration_division``."""
        for length in (4, 2):
            entry = _MINORITY_SHARE.get(registration_division[:length])
            if entry is not None:
                style, share = entry
                return style if rng.random() < share else NameStyle.HAN
        return NameStyle.HAN

    # --- households ----------------------------------------------------------------------------

    def family(self, rng: Random, registration_division: str) -> Family:
        """Parents' names and the shared part of the children's names for one household."""
        style = self.style_for(rng, registration_division)
        province = registration_division[:2]
        if style is NameStyle.UYGHUR:
            father = self._uyghur(rng, Sex.MALE, self._uyghur_given(rng, Sex.MALE))
            mother = self._uyghur(rng, Sex.FEMALE, self._uyghur_given(rng, Sex.MALE))
            return Family(style, father, mother, children_family=father.given)
        if style is NameStyle.TIBETAN:
            father = self._tibetan(rng, Sex.MALE, None)
            mother = self._tibetan(rng, Sex.FEMALE, None)
            return Family(style, father, mother, children_family="")
        father_surname = self.surname(rng, province)
        mother_surname = self.surname(rng, province)
        father = self._han(father_surname, self._parent[Sex.MALE].pick(rng))
        mother = self._han(mother_surname, self._parent[Sex.FEMALE].pick(rng))
        children = mother_surname if rng.random() < MOTHERS_SURNAME_RATE else father_surname
        return Family(style, father, mother, children_family=children)

    def child(self, rng: Random, family: Family, sex: Sex, born: date) -> PersonName:
        """A child of ``family``: Han children take ``children_family`` as surname, Uyghur children
        the father's name after the dot; Tibetan children get a name of their own."""
        if family.style is NameStyle.UYGHUR:
            return self._uyghur(rng, sex, family.children_family)
        if family.style is NameStyle.TIBETAN:
            return self._tibetan(rng, sex, born)
        return self._han(family.children_family, self._child_given(rng, sex, born))

    def grandparent(self, rng: Random, family: Family, *, maternal: bool, sex: Sex) -> PersonName:
        """A grandparent: the grandfather carries the father's (or, maternal, the mother's)
        family name; a grandmother has her own."""
        parent = family.mother if maternal else family.father
        if family.style is NameStyle.TIBETAN:
            return self._tibetan(rng, sex, None)
        if family.style is NameStyle.UYGHUR:
            if sex is Sex.MALE:
                # The parent's name is 本人名·父名, so the grandfather's own name is the part after the dot.
                return self._uyghur(rng, sex, self._uyghur_given(rng, Sex.MALE), own=parent.family)
            return self._uyghur(rng, sex, self._uyghur_given(rng, Sex.MALE))
        surname = parent.family if sex is Sex.MALE else self.surname(rng, None)
        return self._han(surname, self._grandparent[sex].pick(rng))

    def relative(self, rng: Random, family: Family, sex: Sex) -> PersonName:
        """Another relative of the father's generation (an uncle or aunt, 其他亲属)."""
        if family.style is NameStyle.TIBETAN:
            return self._tibetan(rng, sex, None)
        if family.style is NameStyle.UYGHUR:
            # A sibling of the father: the same father's name after the dot.
            return self._uyghur(rng, sex, family.father.family)
        surname = family.father.family if sex is Sex.MALE else self.surname(rng, None)
        return self._han(surname, self._parent[sex].pick(rng))

    # --- the three styles ----------------------------------------------------------------------

    @staticmethod
    def _han(surname: str, given: str) -> PersonName:
        return PersonName(surname + given, surname, given, NameStyle.HAN)

    def _child_given(self, rng: Random, sex: Sex, born: date) -> str:
        male = sex is Sex.MALE
        if rng.random() < SINGLE_CHAR_GIVEN_RATE:
            return (self._boy_single if male else self._girl_single).pick(rng)
        if rng.random() < POPULAR_NAME_RATE:
            era = "to2014" if born.year <= 2014 else "2015to2019" if born.year <= 2019 else "from2020"
            return self._popular[(sex, era)].pick(rng)
        first = (self._boy_first if male else self._girl_first).pick(rng)
        second = (self._boy_second if male else self._girl_second).pick(rng)
        while second == first:  # reduplicated names (萱萱) are nicknames, not registered names
            second = (self._boy_second if male else self._girl_second).pick(rng)
        return first + second

    def _uyghur_given(self, rng: Random, sex: Sex) -> str:
        if sex is Sex.MALE:
            if rng.random() < UYGHUR_COMPOSED_RATE:
                name = self._uyghur_male_prefix.pick(rng) + self._uyghur_male_root.pick(rng)
            else:
                name = self._uyghur_male.pick(rng)
            if rng.random() < UYGHUR_JAN_SUFFIX_RATE and not name.endswith("江"):
                name += "江"
            return name
        if rng.random() < UYGHUR_COMPOSED_RATE:
            return self._uyghur_female_prefix.pick(rng) + self._uyghur_female_suffix.pick(rng)
        return self._uyghur_female.pick(rng)

    def _uyghur(self, rng: Random, sex: Sex, fathers_name: str, own: str | None = None) -> PersonName:
        given = own if own is not None else self._uyghur_given(rng, sex)
        return PersonName(f"{given}{MIDDLE_DOT}{fathers_name}", fathers_name, given, NameStyle.UYGHUR)

    def _tibetan(self, rng: Random, sex: Sex, born: date | None) -> PersonName:
        if born is not None and rng.random() < TIBETAN_WEEKDAY_RATE:
            first = pools.TIBETAN_WEEKDAY[born.weekday()]
        else:
            first = self._tibetan_first[sex].pick(rng)
        second = self._tibetan_second[sex].pick(rng)
        while second == first:
            second = self._tibetan_second[sex].pick(rng)
        separator = MIDDLE_DOT if rng.random() < TIBETAN_DOTTED_RATE else ""
        return PersonName(f"{first}{separator}{second}", "", first + second, NameStyle.TIBETAN)


@functools.cache
def _default_maker() -> NameMaker:
    return NameMaker(load_surnames())
