"""A pair of county ledgers with known truth, for measuring the matcher (issue 5).

:func:`generate_ledgers` builds what a registration county (户籍地) and a residence county (居住地)
would each hold for one monitoring period, from the seeded household generator
(:mod:`gateway.synth.generator`), and says exactly which rows are the same child:

* **Rows.** Each ledger has ``spec.rows`` rows. ``round(overlap × rows)`` children are in both
  ledgers, once in each; the other rows of each ledger are children only that ledger holds. Every
  child is registered in ``spec.registration_division``; children of households that moved live in
  ``spec.residence_division`` (both ledgers, or the residence ledger only), the others at home
  (registration ledger only). A share of the households in both ledgers is split
  (:attr:`LedgerSpec.split_household_rate`): one child sits in one ledger only — the trap where a
  twin or sibling is the only plausible partner.
* **Twins and siblings** share surname, guardian and (twins) birth date; they come from the
  generator (about 2 % of births are twins, so a 50,000-row pair holds hundreds of twin pairs). Half
  of the Han twin pairs with two-character given names also share the first character of it
  (子涵 / 子轩), as real twins often do. :attr:`LedgerPair.siblings` lists every cross-ledger pair of
  rows that are two *different* children of one household (``twin`` when born the same day,
  ``sibling`` otherwise): a matcher must never auto-link one.
* **Lone twins.** Of the moved households with twins, :attr:`LedgerSpec.lone_twin_rate` are split
  so that one twin is in the registration ledger only and the co-twin in the residence ledger
  only: the co-twin (different given name, same surname, birth date and guardian, sex not
  necessarily the same) is then the *only* plausible partner, and no margin over a competitor can
  keep them apart. :attr:`LedgerPair.lone_twins` counts them; they are ``twin`` sibling links.
* **Corruption** (residence rows; rows in one ledger only are corrupted the same way, so a
  corruption never tells a pair from a non-pair). Two independent draws per row:

  - **Name or date.** With ``clean_rate`` the row keeps name and birth date; with
    ``stacked_rate`` it gets two corruptions, one name kind and one date kind, and is labelled
    ``stacked`` (its own kind: rare in real ledgers, and measured apart so that it neither hides
    nor inflates the single kinds); otherwise it gets exactly **one** kind drawn uniformly from
    :data:`NAME_KINDS` + :data:`DATE_KINDS` (so every kind gets about the same number of pairs and
    each is measured on its own).
  - **ID number**, independently: missing with ``id_missing_rate``, mistyped (fails the check
    character) with ``id_mistyped_rate``, else as issued. A row without a valid ID on either side
    goes to the fuzzy stage; so each name or date kind is measured in both stages, at the same
    rates.

  The default rates (clean 30 %, stacked 5 %, one kind 65 %; ID missing 20 %, mistyped 10 %) are
  an assumption, not a survey: residence counties often enrol a child without the ID number (or
  copy it wrongly), typing slips in a name or date are common, two in one row are not. The
  registration ledger (户籍) is the reference copy: its rows keep name and date and only lose or
  mistype the ID number, with ``registration_corruption_rate``. A kind is only applied where it
  can do what it says (a day–month swap needs both ≤ 12 and different, a truncation a name of
  three characters or more, …); otherwise another kind is drawn.
* **Household register.** :attr:`LedgerPair.register_lines` is the registration county's household
  register (户籍登记) for those children, as :func:`write_register` writes it (:data:`REGISTER_HEADER`:
  户号, 姓名, 性别, 公民身份号码, 出生日期, 与户主关系): every child of every household with a child in
  either ledger — also a co-twin in the residence ledger only, and a sibling in neither ledger —
  under its issued name, ID number and birth date (the register is not corrupted), 户号 a stable
  household number (:func:`household_number`). Guardians are not listed (the generator gives them
  no birth date). It is what ``tongban match --household-register`` reads to know single births.
* **Truth.** :attr:`LedgerPair.truth` lists (registration row, residence row, kinds) for every
  child in both ledgers, rows numbered from 1 with the header excluded, ``kinds`` the union of
  both rows' kinds (``("clean",)`` when neither row was touched).

Rows are shuffled within each ledger (a seeded permutation), so row order says nothing.

Determinism and memory
----------------------
Everything is a function of :class:`LedgerSpec`: the households come from the generator's own
per-household seeds, corruption of household *i* from ``Random("tongban-ledgers:{seed}:{i}")``,
each shuffle from its own seed. Rows are kept as encoded CSV lines (bytes) plus a few integers
each — about the size of the ledger files themselves — because the shuffle needs every row
before the first can be written; the register's lines likewise (one per child of the households
used, in generation order: about one ledger's size again); nothing else grows with ``rows``.

Nothing here is a real person: names, ID numbers and phones are the generator's.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import IO, Any, TypeVar

import opencc
from lunardate import LunarDate
from pypinyin import Style, lazy_pinyin

from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord, Sex
from gateway.domain.rules import RuleBook, load_rules
from gateway.errors import ConfigError, InputError
from gateway.matching.evaluate import KIND_SEPARATOR, SiblingLink, TruthPair
from gateway.synth import pools
from gateway.synth.export import CSV_HEADER, csv_row
from gateway.synth.generator import Household, SynthSpec, generate_households
from gateway.synth.names import MIDDLE_DOT, NameStyle, load_surnames

# --- the kinds of corruption ------------------------------------------------------------------------

CLEAN = "clean"
NAME_KINDS: tuple[str, ...] = ("homophone", "typo", "traditional", "pinyin_name", "truncated")
DATE_KINDS: tuple[str, ...] = ("day_month_swap", "day_off_by_one", "lunar_birthday", "year_typo")
ID_KINDS: tuple[str, ...] = ("id_missing", "id_mistyped")
STACKED = "stacked"  # one name kind and one date kind in one row
CORRUPTIONS: tuple[str, ...] = NAME_KINDS + DATE_KINDS + ID_KINDS
#: Every label a pair can carry, in the order reports list them.
KINDS: tuple[str, ...] = (CLEAN, *NAME_KINDS, *DATE_KINDS, STACKED, *ID_KINDS)
_NAME_OR_DATE = NAME_KINDS + DATE_KINDS
_ORDER = {kind: i for i, kind in enumerate(KINDS)}

_T = TypeVar("_T")

TWIN = "twin"
SIBLING = "sibling"

# Column positions in CSV_HEADER.
COL_NAME = CSV_HEADER.index("姓名")
COL_ID = CSV_HEADER.index("公民身份号码")
COL_BIRTH = CSV_HEADER.index("出生日期")
COL_RESIDENCE = CSV_HEADER.index("现居住地")

#: The household register's columns (户号 household number; 与户主关系 relation to the head of household).
REGISTER_HEADER: tuple[str, ...] = ("户号", "姓名", "性别", "公民身份号码", "出生日期", "与户主关系")

DEFAULT_REGISTRATION = "511324"  # 仪陇县 (Sichuan), a labour-exporting county
DEFAULT_RESIDENCE = "500157"  # 两江新区 (Chongqing), where many of its families live
DEFAULT_PERIOD = "2025Q4"


@dataclass(frozen=True)
class LedgerSpec:
    """What to generate; see the module docstring for what each rate does."""

    rows: int
    overlap: float
    seed: int = 2026
    period: str = DEFAULT_PERIOD
    registration_division: str = DEFAULT_REGISTRATION
    residence_division: str = DEFAULT_RESIDENCE
    clean_rate: float = 0.3
    stacked_rate: float = 0.05
    id_missing_rate: float = 0.2
    id_mistyped_rate: float = 0.1
    registration_corruption_rate: float = 0.05
    split_household_rate: float = 0.1
    twin_shared_character_rate: float = 0.5
    lone_twin_rate: float = 0.3

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise InputError("a ledger needs at least one row")
        if not 0.0 <= self.overlap <= 1.0:
            raise InputError("overlap must be between 0 and 1")
        for rate in (
            self.clean_rate,
            self.stacked_rate,
            self.id_missing_rate,
            self.id_mistyped_rate,
            self.registration_corruption_rate,
            self.split_household_rate,
            self.twin_shared_character_rate,
            self.lone_twin_rate,
        ):
            if not 0.0 <= rate <= 1.0:
                raise InputError("every rate must be between 0 and 1")
        if self.clean_rate + self.stacked_rate > 1.0 or self.id_missing_rate + self.id_mistyped_rate > 1.0:
            raise InputError("clean + stacked and ID missing + mistyped rates must each be at most 1")
        MonitoringPeriod.parse(self.period)

    @property
    def pairs(self) -> int:
        """Children in both ledgers."""
        return round(self.overlap * self.rows)


@dataclass(frozen=True)
class LedgerPair:
    """The two ledgers (encoded CSV lines, UTF-8, CRLF, in row order, header not included) and
    their truth. ``*_kinds[i]`` are the kinds applied to row ``i + 1`` (empty: untouched);
    ``*_valid_id[i]`` whether that row's ID cell holds a valid number."""

    spec: LedgerSpec
    # Not in repr: the lines hold (synthetic) names and ID numbers, which never go to a log or a traceback.
    registration_lines: list[bytes] = field(repr=False)
    residence_lines: list[bytes] = field(repr=False)
    registration_kinds: list[tuple[str, ...]] = field(repr=False)
    residence_kinds: list[tuple[str, ...]] = field(repr=False)
    registration_valid_id: list[bool] = field(repr=False)
    residence_valid_id: list[bool] = field(repr=False)
    truth: list[TruthPair] = field(repr=False)
    siblings: list[SiblingLink] = field(repr=False)
    households: int = 0
    lone_twins: int = 0
    # The registration county's household register (module docstring), encoded like the ledgers.
    register_lines: list[bytes] = field(default_factory=list, repr=False)

    def twin_pairs(self) -> int:
        """Twin pairs with one twin's row in each ledger at least once (counted per pair of children)."""
        return sum(1 for s in self.siblings if s.relation == TWIN)


@dataclass(frozen=True)
class LedgerFiles:
    registration: Path
    residence: Path
    truth: Path
    siblings: Path
    register: Path


# --- public API ------------------------------------------------------------------------------------


def generate_ledgers(spec: LedgerSpec, table: DivisionTable | None = None, rules: RuleBook | None = None) -> LedgerPair:
    """Build the two ledgers and their truth (see the module docstring).

    Raises :class:`~gateway.errors.InputError` for a bad spec and
    :class:`~gateway.errors.ConfigError` if the generator runs out of households.
    """
    builder = _LedgerBuilder(spec, table or DivisionTable.load_default(), rules or load_rules())
    return builder.build()


def write_ledger(lines: Iterable[bytes], stream: IO[bytes]) -> int:
    """Write one ledger as the national export: UTF-8 with BOM, :data:`CSV_HEADER`, CRLF."""
    stream.write(b"\xef\xbb\xbf" + _encode_row(list(CSV_HEADER)))
    count = 0
    for line in lines:
        stream.write(line)
        count += 1
    return count


def write_truth(truth: Iterable[TruthPair], stream: IO[bytes]) -> int:
    """``registration_row,residence_row,kinds`` (kinds joined with ``;``), UTF-8, ``\\n``: what
    :func:`gateway.matching.evaluate.read_truth` reads."""
    stream.write(b"registration_row,residence_row,kinds\n")
    count = 0
    for pair in truth:
        stream.write(f"{pair.registration_row},{pair.residence_row},{KIND_SEPARATOR.join(pair.kinds)}\n".encode())
        count += 1
    return count


def write_siblings(siblings: Iterable[SiblingLink], stream: IO[bytes]) -> int:
    """``registration_row,residence_row,relation``, UTF-8, ``\\n``."""
    stream.write(b"registration_row,residence_row,relation\n")
    count = 0
    for link in siblings:
        stream.write(f"{link.registration_row},{link.residence_row},{link.relation}\n".encode())
        count += 1
    return count


def write_register(lines: Iterable[bytes], stream: IO[bytes]) -> int:
    """Write the household register: UTF-8 with BOM, :data:`REGISTER_HEADER`, CRLF."""
    stream.write(b"\xef\xbb\xbf" + _encode_row(list(REGISTER_HEADER)))
    count = 0
    for line in lines:
        stream.write(line)
        count += 1
    return count


def register_cells(household_index: int, record: ChildRecord) -> list[str]:
    """A child's row of the household register (:data:`REGISTER_HEADER`), as issued: never corrupted."""
    relation = "子" if record.sex is Sex.MALE else "女"  # the head of household is a parent
    number = household_number(household_index)
    return [number, record.name, record.sex.label_zh, record.id_number or "", record.birth_date.isoformat(), relation]


def household_number(household_index: int) -> str:
    """The 户号 of the generator's household ``household_index``: nine digits, stable for a seed."""
    return f"{household_index + 1:09d}"


def write_ledger_files(pair: LedgerPair, directory: Path) -> LedgerFiles:
    """Write ``registration.csv``, ``residence.csv``, ``truth.csv``, ``siblings.csv`` and
    ``register.csv`` (the household register) into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = LedgerFiles(
        directory / "registration.csv",
        directory / "residence.csv",
        directory / "truth.csv",
        directory / "siblings.csv",
        directory / "register.csv",
    )
    with files.registration.open("wb") as out:
        write_ledger(pair.registration_lines, out)
    with files.residence.open("wb") as out:
        write_ledger(pair.residence_lines, out)
    with files.truth.open("wb") as out:
        write_truth(pair.truth, out)
    with files.siblings.open("wb") as out:
        write_siblings(pair.siblings, out)
    with files.register.open("wb") as out:
        write_register(pair.register_lines, out)
    return files


def sort_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """Kinds without repeats, in the order of :data:`KINDS`; ``("clean",)`` when there are none."""
    found = sorted({k for k in kinds if k != CLEAN}, key=_ORDER.__getitem__)
    return tuple(found) if found else (CLEAN,)


# --- the corruptions (pure; each returns None where it cannot do what it says) -----------------------


@functools.cache
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("s2t")


def _pinyin(text: str) -> list[str]:
    return list(lazy_pinyin(text, style=Style.NORMAL, errors="ignore"))


@functools.cache
def character_pool() -> tuple[str, ...]:
    """Every Chinese character the generator's name pools use, sorted (deterministic)."""
    chars: set[str] = set()
    for value in vars(pools).values():
        texts: Iterable[object]
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, tuple):
            texts = value
        elif isinstance(value, dict):
            texts = [t for v in value.values() if isinstance(v, tuple) for t in v]
        else:
            continue
        for text in texts:
            if isinstance(text, str):
                chars.update(ch for ch in text if "\u4e00" <= ch <= "\u9fff")
    return tuple(sorted(chars))


@functools.cache
def homophone_index() -> dict[str, tuple[str, ...]]:
    """Toneless pinyin → the pool's characters read so (only readings with two or more)."""
    index: dict[str, list[str]] = {}
    for ch in character_pool():
        reading = _pinyin(ch)
        if len(reading) == 1:
            index.setdefault(reading[0], []).append(ch)
    return {py: tuple(chars) for py, chars in index.items() if len(chars) > 1}


@functools.cache
def _surname_pinyin() -> dict[str, str]:
    return {s.text: s.pinyin for s in load_surnames()}


def given_positions(name: str, family: str, style: NameStyle) -> list[int]:
    """Indices of the characters of the person's own name (not the surname or the father's name)."""
    if style is NameStyle.UYGHUR and MIDDLE_DOT in name:
        return list(range(name.index(MIDDLE_DOT)))
    if style is NameStyle.HAN and family and name.startswith(family):
        return list(range(len(family), len(name)))
    return [i for i, ch in enumerate(name) if ch != MIDDLE_DOT]


def homophone(name: str, positions: Sequence[int], rng: Random) -> str | None:
    """One character of the given name replaced by another of the pool read the same (toneless)."""
    index = homophone_index()
    order = list(positions)
    rng.shuffle(order)
    before = _pinyin(name)
    for i in order:
        reading = _pinyin(name[i])
        others = [ch for ch in index.get(reading[0] if reading else "", ()) if ch != name[i]]
        rng.shuffle(others)
        for ch in others:
            candidate = name[:i] + ch + name[i + 1 :]
            if _pinyin(candidate) == before:
                return candidate
    return None


def typo(name: str, positions: Sequence[int], rng: Random) -> str | None:
    """One character of the given name replaced by an unrelated one (another initial letter)."""
    if not positions:
        return None
    i = rng.choice(list(positions))
    reading = _pinyin(name[i])
    if not reading:
        return None
    pool = character_pool()
    for _ in range(50):
        ch = rng.choice(pool)
        other = _pinyin(ch)
        if ch != name[i] and other and other[0][0] != reading[0][0]:
            return name[:i] + ch + name[i + 1 :]
    return None


def traditional(name: str) -> str | None:
    """The name in traditional characters (OpenCC ``s2t``), if that changes it."""
    converted = str(_converter().convert(name))
    return converted if converted != name else None


def pinyin_name(name: str, family: str, style: NameStyle, rng: Random) -> str | None:
    """The name typed in pinyin: ``Zhang Xiaoming``, ``ZHANG XIAOMING`` or ``zhangxiaoming``.

    A Han surname takes its reading from the surname table (曾 zeng, 单 shan); the parts of
    Uyghur and Tibetan names are written as two words in their written order."""
    if style is NameStyle.HAN and family and name.startswith(family):
        first = _surname_pinyin().get(family) or "".join(_pinyin(family))
        second = "".join(_pinyin(name[len(family) :]))
    elif MIDDLE_DOT in name:
        own, _, rest = name.partition(MIDDLE_DOT)
        first, second = "".join(_pinyin(own)), "".join(_pinyin(rest))
    else:
        half = len(name) // 2
        first, second = "".join(_pinyin(name[:half])), "".join(_pinyin(name[half:]))
    if not first or not second:
        return None
    form = rng.randrange(3)
    if form == 0:
        return f"{first.capitalize()} {second.capitalize()}"
    if form == 1:
        return f"{first.upper()} {second.upper()}"
    return f"{first}{second}".lower()


def truncated(name: str) -> str | None:
    """The last character dropped (only for names of three characters or more)."""
    if len(name.replace(MIDDLE_DOT, "")) < 3:
        return None
    return name[:-1].rstrip(MIDDLE_DOT)


def day_month_swap(born: date) -> date | None:
    if born.day > 12 or born.day == born.month:
        return None
    return date(born.year, born.day, born.month)


def day_off_by_one(born: date, rng: Random) -> date:
    return born + timedelta(days=rng.choice((-1, 1)))


def lunar_birthday(born: date) -> date | None:
    """The lunar (农历) date of ``born`` written as if it were a solar date; None when that is not
    a calendar date (lunar day 30 of a short solar month), or the birth fell in a leap month."""
    lunar = LunarDate.from_solar_date(born.year, born.month, born.day)
    if lunar.is_leap_month:
        return None
    try:
        written = date(lunar.year, lunar.month, lunar.day)
    except ValueError:
        return None
    return written if written != born else None


def year_typo(born: date, rng: Random) -> date | None:
    """The year one off (±1) or with one of its last two digits changed."""
    if rng.random() < 0.5:
        year = born.year + rng.choice((-1, 1))
    else:
        digits = list(f"{born.year:04d}")
        pos = rng.choice((2, 3))
        digits[pos] = rng.choice([d for d in "0123456789" if d != digits[pos]])
        year = int("".join(digits))
    try:
        return born.replace(year=year)
    except ValueError:  # 29 February
        return None


def id_mistyped(number: str, rng: Random) -> str:
    """One digit changed, or two adjacent different digits swapped: the check character fails.

    (A change of one digit, or a swap of two different adjacent digits, always changes the
    MOD 11-2 sum: the weights of neighbouring positions differ and 11 is prime.)"""
    body = list(number)
    swaps = [i for i in range(16) if body[i] != body[i + 1]]
    if swaps and rng.random() < 0.4:
        i = rng.choice(swaps)
        body[i], body[i + 1] = body[i + 1], body[i]
    else:
        i = rng.randrange(17)
        body[i] = rng.choice([d for d in "0123456789" if d != body[i]])
    return "".join(body)


def id_fails_check(number: str) -> bool:
    return idnumber.check_character(number[:17]) != number[17]


# --- building ---------------------------------------------------------------------------------------


@dataclass
class _Row:
    cells: list[str]
    kinds: tuple[str, ...]
    valid_id: bool


@dataclass
class _Child:
    record: ChildRecord
    index: int  # within its household
    target: str  # "both", "registration", "residence"


_BOTH, _REG, _RES = "both", "registration", "residence"


class _LedgerBuilder:
    def __init__(self, spec: LedgerSpec, table: DivisionTable, rules: RuleBook) -> None:
        self.spec = spec
        self.period = MonitoringPeriod.parse(spec.period)
        self.table = table
        self.rules = rules
        self.need = {_BOTH: spec.pairs, _REG: spec.rows - spec.pairs, _RES: spec.rows - spec.pairs}
        self.reg_lines: list[bytes] = []
        self.res_lines: list[bytes] = []
        self.reg_kinds: list[tuple[str, ...]] = []
        self.res_kinds: list[tuple[str, ...]] = []
        self.reg_valid: list[bool] = []
        self.res_valid: list[bool] = []
        self.register_lines: list[bytes] = []
        self.pairs: list[tuple[int, int, tuple[str, ...]]] = []  # generation-order indices
        self.sibling_links: list[tuple[int, int, str]] = []
        self.lone_twins = 0
        self._kinds_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")

    def build(self) -> LedgerPair:
        spec = self.spec
        synth = SynthSpec(
            seed=spec.seed,
            period=self.period,
            residence_divisions=(spec.residence_division,),
            registration_divisions=(spec.registration_division,),
            households=50 * spec.rows + 1000,  # far more than needed; generated lazily
            missing_id_rate=0.0,  # every missing ID is a labelled corruption
        )
        households = 0
        for household in generate_households(synth, self.table, self.rules):
            if not any(self.need.values()):
                break
            households += 1
            self._household(household)
        if any(self.need.values()):
            raise ConfigError("the synthetic generator ran out of households for these ledgers")
        return self._finish(households)

    # households ------------------------------------------------------------------------------------

    def _household(self, household: Household) -> None:
        rng = Random(f"tongban-ledgers:{self.spec.seed}:{household.index}")
        moved = household.residence_division != household.registration_division
        target = self._target(rng, moved)
        if target is None:
            return
        records, children = self._children(rng, household, target)
        if not children:
            return
        self._register(household, records)
        reg_index: dict[int, int] = {}
        res_index: dict[int, int] = {}
        for child in children:
            record = child.record
            in_reg = child.target in (_BOTH, _REG)
            in_res = child.target in (_BOTH, _RES)
            reg_row = self._row(rng, household, record, _REG) if in_reg else None
            res_row = self._row(rng, household, record, _RES) if in_res else None
            if reg_row is not None:
                reg_index[child.index] = self._append(reg_row, _REG)
            if res_row is not None:
                res_index[child.index] = self._append(res_row, _RES)
            if reg_row is not None and res_row is not None:
                kinds = sort_kinds(reg_row.kinds + res_row.kinds)
                self.pairs.append((reg_index[child.index], res_index[child.index], kinds))
        births = {c.index: c.record.birth_date for c in children}
        at_home = {births[c.index] for c in children if c.target == _REG}
        self.lone_twins += sum(1 for c in children if c.target == _RES and births[c.index] in at_home)
        for a, reg in reg_index.items():
            for b, res in res_index.items():
                if a != b:
                    relation = TWIN if births[a] == births[b] else SIBLING
                    self.sibling_links.append((reg, res, relation))

    def _target(self, rng: Random, moved: bool) -> str | None:
        need = self.need
        if not moved and need[_REG] and rng.random() * (sum(need.values())) >= need[_REG]:
            return None  # spread families at home over the run (room for lone twins to the end)
        if moved and (need[_BOTH] or need[_RES]):
            return _BOTH if rng.random() * (need[_BOTH] + need[_RES]) < need[_BOTH] else _RES
        if need[_REG]:
            return _REG
        return None  # a family at home while only movers are still needed: skip it

    def _children(self, rng: Random, household: Household, target: str) -> tuple[list[ChildRecord], list[_Child]]:
        """The household's children as named here (all of them) and those that go into a ledger."""
        records = self._twin_names(rng, household)
        targets = [target] * len(records)
        twins = [i for i in range(1, len(records)) if records[i].birth_date == records[i - 1].birth_date]
        lone = self.need[_REG] > 0 and self.need[_RES] > 0 and rng.random() < self.spec.lone_twin_rate
        if target == _BOTH and twins and lone:
            # One twin at home (registration ledger only), the co-twin living here (residence only).
            first = twins[0] - 1
            at_home = rng.randrange(2)
            targets[first + at_home], targets[first + 1 - at_home] = _REG, _RES
        elif target == _BOTH and len(records) > 1 and rng.random() < self.spec.split_household_rate:
            targets[rng.randrange(len(records))] = rng.choice((_REG, _RES))
        children = []
        for index, (record, wanted) in enumerate(zip(records, targets, strict=True)):
            if self.need[wanted] <= 0:
                continue
            self.need[wanted] -= 1
            children.append(_Child(record, index, wanted))
        return records, children

    def _register(self, household: Household, records: Sequence[ChildRecord]) -> None:
        """The household's register rows: every child, as issued (never corrupted)."""
        for record in records:
            self.register_lines.append(
                _encode_cells(self._writer, self._buffer, register_cells(household.index, record))
            )

    def _twin_names(self, rng: Random, household: Household) -> list[ChildRecord]:
        """Han twins with two-character given names share its first character, sometimes."""
        records = list(household.children)
        if household.style is not NameStyle.HAN:
            return records
        family = household.family_name
        for i in range(1, len(records)):
            first, second = records[i - 1], records[i]
            if first.birth_date != second.birth_date or rng.random() >= self.spec.twin_shared_character_rate:
                continue
            g1, g2 = first.name[len(family) :], second.name[len(family) :]
            if not (first.name.startswith(family) and second.name.startswith(family)):
                continue
            if len(g1) == 2 and len(g2) == 2 and g2[1] != g1[0] and g1[0] + g2[1] != g1:
                records[i] = dataclasses.replace(second, name=family + g1[0] + g2[1])
        return records

    # rows ------------------------------------------------------------------------------------------

    def _row(self, rng: Random, household: Household, record: ChildRecord, side: str) -> _Row:
        """One row: on the residence side a name-or-date draw and an independent ID draw (module
        docstring); on the registration side an ID draw only."""
        cells = csv_row(record)
        spec = self.spec
        kinds: list[str] = []
        if side == _RES:
            cells[COL_RESIDENCE] = spec.residence_division
            draw = rng.random()
            if draw >= spec.clean_rate + spec.stacked_rate:
                kinds += self._one_of(rng, _NAME_OR_DATE, cells, household, record)
            elif draw >= spec.clean_rate:
                name = self._one_of(rng, NAME_KINDS, cells, household, record)
                born = self._one_of(rng, DATE_KINDS, cells, household, record)
                # Both applied: the row is "stacked"; one only (rare: no date kind fits): that kind.
                kinds += [STACKED] if name and born else name + born
            draw = rng.random()
            if draw < spec.id_missing_rate:
                kinds += self._one_of(rng, ("id_missing",), cells, household, record)
            elif draw < spec.id_missing_rate + spec.id_mistyped_rate:
                kinds += self._one_of(rng, ("id_mistyped",), cells, household, record)
        elif rng.random() < spec.registration_corruption_rate:
            kinds += self._one_of(rng, ID_KINDS, cells, household, record)
        ordered = tuple(sorted(kinds, key=_ORDER.__getitem__))
        valid = bool(cells[COL_ID]) and not ({"id_missing", "id_mistyped"} & set(kinds))
        return _Row(cells, self._kinds_cache.setdefault(ordered, ordered), valid)

    def _one_of(
        self, rng: Random, choices: tuple[str, ...], cells: list[str], household: Household, record: ChildRecord
    ) -> list[str]:
        """Apply one kind drawn from ``choices`` (up to 30 draws until one applies): ``[kind]`` or ``[]``."""
        for _ in range(30):
            kind = rng.choice(choices)
            if self._apply(rng, kind, cells, household, record):
                return [kind]
        return []

    def _apply(self, rng: Random, kind: str, cells: list[str], household: Household, record: ChildRecord) -> bool:
        """Apply ``kind`` to ``cells`` in place; False (cells untouched) where it cannot apply."""
        name = cells[COL_NAME]
        family, style = household.family_name, household.style
        if kind in NAME_KINDS:
            new_name: str | None
            if kind == "homophone":
                new_name = homophone(name, given_positions(name, family, style), rng)
            elif kind == "typo":
                new_name = typo(name, given_positions(name, family, style), rng)
            elif kind == "traditional":
                new_name = traditional(name)
            elif kind == "pinyin_name":
                new_name = pinyin_name(name, family, style, rng)
            else:
                new_name = truncated(name)
            if new_name is None or new_name == name:
                return False
            cells[COL_NAME] = new_name
            return True
        if kind in DATE_KINDS:
            born = record.birth_date
            new_date: date | None
            if kind == "day_month_swap":
                new_date = day_month_swap(born)
            elif kind == "day_off_by_one":
                new_date = day_off_by_one(born, rng)
            elif kind == "lunar_birthday":
                new_date = lunar_birthday(born)
            else:
                new_date = year_typo(born, rng)
            if new_date is None or new_date == born or new_date > self.period.end:
                return False
            cells[COL_BIRTH] = new_date.isoformat()
            return True
        number = record.id_number
        if number is None:
            return False
        cells[COL_ID] = "" if kind == "id_missing" else id_mistyped(number, rng)
        return True

    def _append(self, row: _Row, side: str) -> int:
        line = _encode_cells(self._writer, self._buffer, row.cells)
        if side == _REG:
            self.reg_lines.append(line)
            self.reg_kinds.append(row.kinds)
            self.reg_valid.append(row.valid_id)
            return len(self.reg_lines) - 1
        self.res_lines.append(line)
        self.res_kinds.append(row.kinds)
        self.res_valid.append(row.valid_id)
        return len(self.res_lines) - 1

    # shuffle and number ------------------------------------------------------------------------------

    def _finish(self, households: int) -> LedgerPair:
        seed = self.spec.seed
        reg_pos = _permutation(len(self.reg_lines), Random(f"tongban-ledgers:{seed}:shuffle:registration"))
        res_pos = _permutation(len(self.res_lines), Random(f"tongban-ledgers:{seed}:shuffle:residence"))
        truth = sorted(
            (TruthPair(reg_pos[r] + 1, res_pos[s] + 1, kinds) for r, s, kinds in self.pairs),
            key=lambda p: p.registration_row,
        )
        siblings = sorted(
            (SiblingLink(reg_pos[r] + 1, res_pos[s] + 1, rel) for r, s, rel in self.sibling_links),
            key=lambda s: (s.registration_row, s.residence_row),
        )
        return LedgerPair(
            spec=self.spec,
            registration_lines=_place(self.reg_lines, reg_pos),
            residence_lines=_place(self.res_lines, res_pos),
            registration_kinds=_place(self.reg_kinds, reg_pos),
            residence_kinds=_place(self.res_kinds, res_pos),
            registration_valid_id=_place(self.reg_valid, reg_pos),
            residence_valid_id=_place(self.res_valid, res_pos),
            truth=truth,
            siblings=siblings,
            households=households,
            lone_twins=self.lone_twins,
            register_lines=self.register_lines,
        )


def _permutation(n: int, rng: Random) -> list[int]:
    """``pos[i]``: where generated row ``i`` ends up (0-based)."""
    pos = list(range(n))
    rng.shuffle(pos)
    return pos


def _place(items: list[_T], pos: Sequence[int]) -> list[_T]:
    out: list[_T] = list(items)
    for i, item in enumerate(items):
        out[pos[i]] = item
    items.clear()  # the caller's list was only a staging area: free it as we go
    return out


def _encode_cells(writer: Any, buffer: io.StringIO, cells: list[str]) -> bytes:
    buffer.seek(0)
    buffer.truncate()
    writer.writerow(cells)
    return buffer.getvalue().encode("utf-8")


def _encode_row(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def iter_rows(lines: Iterable[bytes]) -> Iterator[list[str]]:
    """Decode encoded ledger lines back into cells (for tests and tools)."""
    return csv.reader(line.decode("utf-8") for line in lines)
