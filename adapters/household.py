"""Household registers (户籍登记): which children of a registration ledger are single births.

The matcher may link a notice whose name is a one-character edit of a registration-ledger child's
name automatically — but only when the registration node knows that the child has **no sibling
born within a day** (``Entry.single_birth``; :mod:`gateway.matching.matcher`, "Single births").
The ledger cannot say so: a co-twin may live in another county and be in no ledger of this one.
The household register can, since it lists every member of every household registered here.

Reading
-------
:func:`open_register` opens a CSV (UTF-8 with or without BOM, GB18030) or XLSX file with
:func:`adapters.tabular.read_table`, so headers are folded and looked up like a ledger's, and a
mapping file may name other ones. A register has the columns::

    户号 (household number)   姓名   公民身份号码 / 身份证号   出生日期   [与户主关系 … ignored]

A file without a 户号 column is not a register: :class:`~gateway.errors.NotARoster` (exit 65), as
for a file without a name column or without both an ID-number and a birth-date column.

:func:`build_register` streams the rows and keeps only what the answer needs: per household, the
birth dates of its members (day numbers); an index from each valid ID number (its 17 digits as an
integer) to its household; and an index from (folded name, birth date) of every member — with a
valid ID number or not, since the ledger row may have lost its own — to its household, marked
*ambiguous* when two rows share it. That is about 300 bytes per register row (measured on a
75,000-row generated register: 291), so a register of a million people needs about 300 MB.

A member's birth date is its valid ID number's, else the typed 出生日期. A row is **skipped**,
counted, and its row number kept (never a value) when it has

* no household number (``no_household_number``), or
* no birth date — none typed or not a date, and no valid ID number (``no_birth_date``), or
* the ID number of an earlier row of the same household (``duplicate_id_number``: listed twice).

A skipped row could be the co-twin that makes a child *not* a single birth, so the answer stays
on the safe side (**fails closed**): a household with a row skipped for its date is *incomplete*,
and a child born within a day of a row skipped for its household number is *undecided*; neither
counts as a single birth.

Deciding
--------
:func:`birth_status` (pure) answers for one registration-ledger row (name, valid ID number or
``None``, birth date), in this order:

1. **Find the child**: by a valid ID number when the row has one (an ID number the register does
   not hold, or holds in two households, is *not found*: no guess by name); otherwise — the ledger
   lost or mistyped it — by the folded name (:func:`name_key`: full-width, separators, traditional
   characters folded) and the birth date, only when exactly one register row has that pair.
   Otherwise ``NOT_FOUND``.
2. ``SIBLING`` when **another** member of that household is born within one day of the child
   (twins, or one row listed twice without an ID number).
3. ``UNDECIDED`` when the household is incomplete, or a row without a household number was born
   within a day of the child.
4. ``SINGLE`` otherwise. :func:`is_single_birth` is ``True`` for this one only: not found is the
   conservative answer.

Two commands ask: ``tongban match --household-register`` (:mod:`adapters.match_cli`, per ledger
row) and ``tongban roster import --household-register`` (:mod:`adapters.ledger`, per validated
record, :func:`record_birth_status`), which stores the answer in the record
(``ChildRecord.single_birth``) for ``tongban reconcile run`` to use. :class:`BirthStatus` and
:class:`BirthCounts` are defined in :mod:`gateway.sources` (the import reports them without
importing this package) and re-exported here.

Nothing here logs or raises with a name, an ID number or a date in the message.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path

from adapters.tabular import Mapping, Table, parse_birth_date, read_table
from gateway.domain import idnumber
from gateway.domain.records import ChildRecord
from gateway.errors import InvalidIdNumber, NotARoster
from gateway.matching import normalise_name
from gateway.matching.names import han_characters
from gateway.sources import BirthCounts, BirthStatus  # defined beside the readers' protocol; re-exported here

log = logging.getLogger(__name__)

#: Row numbers kept per skip reason, for the summary (the counts are always complete).
ROWS_SHOWN = 10
_AMBIGUOUS = -1  # an index value: the key belongs to more than one household
_WITHIN = 1  # days: "born within one day"


class SkipReason(StrEnum):
    """Why a register row was left out (module docstring). Values are stable codes."""

    NO_HOUSEHOLD = "no_household_number"
    NO_BIRTH_DATE = "no_birth_date"
    DUPLICATE = "duplicate_id_number"


_SKIP_TEXT: dict[SkipReason, str] = {
    SkipReason.NO_HOUSEHOLD: "without a household number",
    SkipReason.NO_BIRTH_DATE: "without a readable birth date",
    SkipReason.DUPLICATE: "repeating an ID number of their household",
}


@dataclass(frozen=True)
class RegisterSummary:
    """Counts of a register read: data rows, rows kept as members, households, and the rows
    skipped per reason (``skipped``: all of them; ``skipped_rows``: the first :data:`ROWS_SHOWN`
    row numbers of each, rows counted from 1 under the header)."""

    rows: int
    members: int
    households: int
    skipped: dict[SkipReason, int] = field(default_factory=dict)
    skipped_rows: dict[SkipReason, tuple[int, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line of counts and row numbers — never a value."""
        total = sum(self.skipped.values())
        head = f"{self.rows} rows, {self.households} households"
        if not total:
            return f"{head} (0 skipped)"
        parts = []
        for reason in SkipReason:
            count = self.skipped.get(reason, 0)
            if not count:
                continue
            shown = self.skipped_rows.get(reason, ())
            rows = ", ".join(str(n) for n in shown) + (", …" if count > len(shown) else "")
            parts.append(f"{count} {_SKIP_TEXT[reason]} [row{'s' if count > 1 else ''} {rows}]")
        return f"{head} ({total} skipped: {'; '.join(parts)})"


@dataclass(frozen=True)
class HouseholdRegister:
    """A register as :func:`birth_status` needs it (module docstring, "Reading"). Built by
    :func:`build_register`; the fields are its index, not to be changed after."""

    summary: RegisterSummary
    # Not in repr: the keys are ID numbers and names.
    births: list[list[int]] = field(repr=False)  # household -> its members' birth days (date.toordinal)
    by_id: dict[int, int] = field(repr=False)  # the 17 digits of a valid ID number -> household
    by_name: dict[str, int] = field(repr=False)  # birth day and folded name (_name_day) -> household
    incomplete: frozenset[int] = field(repr=False)  # households with a row skipped for its date
    loose_days: frozenset[int] = field(repr=False)  # birth days of rows without a household number


# --- reading ------------------------------------------------------------------------------------------


def open_register(path: Path, *, mapping: Mapping | None = None) -> Table:
    """Open a register file and check its header (rows are read later, by :func:`build_register`).

    Raises :class:`~gateway.errors.NotARoster` for a file that is not a register (no 户号 column,
    and every reason :func:`~adapters.tabular.read_table` has), or
    :class:`~gateway.errors.UnreadableRoster`."""
    table = read_table(path, mapping=mapping)
    if "household_number" not in table.columns:
        raise NotARoster(
            "no household-number column (户号) was recognised: not a household register; a mapping file can name it"
        )
    return table


def name_key(name: str) -> str:
    """A name as register and ledger are compared: its folded characters
    (:func:`gateway.matching.names.han_characters`), or for a name typed in Latin letters its
    pinyin letters, marked apart (张伟 never equals ``zhangwei``); ``""`` for an empty name."""
    chars = han_characters(name)
    if chars:
        return chars
    letters = normalise_name(name).letters if name else ""
    return f"latin:{letters}" if letters else ""


def _name_day(folded: str, day: int) -> str:
    return f"{day}:{folded}"  # one string, not a tuple: about 50 bytes less per register row (of ~340)


def _household_text(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def build_register(table: Table) -> HouseholdRegister:
    """Stream a register table's rows into a :class:`HouseholdRegister` (module docstring).

    Raises :class:`~gateway.errors.NotARoster` without a household-number column and
    :class:`~gateway.errors.UnreadableRoster` if the source breaks off."""
    if "household_number" not in table.columns:
        raise NotARoster("no household-number column (户号) was recognised: not a household register")
    households: dict[str, int] = {}
    births: list[list[int]] = []
    by_id: dict[int, int] = {}
    by_name: dict[str, int] = {}
    incomplete: set[int] = set()
    loose_days: set[int] = set()
    skipped: Counter[SkipReason] = Counter()
    skipped_rows: dict[SkipReason, list[int]] = {}
    rows = members = 0

    def skip(reason: SkipReason, number: int) -> None:
        skipped[reason] += 1
        shown = skipped_rows.setdefault(reason, [])
        if len(shown) < ROWS_SHOWN:
            shown.append(number)

    for number, row in table.rows():
        rows += 1
        resident: idnumber.ResidentId | None = None
        if row.get("id_number"):
            try:
                resident = idnumber.parse(row["id_number"])
            except InvalidIdNumber:
                resident = None  # counts as missing, as in a ledger
        typed = row.get("birth_date", "")
        born = resident.birth_date if resident else (parse_birth_date(typed) if typed else None)
        household_text = _household_text(row.get("household_number", ""))
        if not household_text:
            skip(SkipReason.NO_HOUSEHOLD, number)
            if born is not None:
                loose_days.add(born.toordinal())
            continue
        household = households.setdefault(household_text, len(households))
        if household == len(births):
            births.append([])
        if born is None:
            skip(SkipReason.NO_BIRTH_DATE, number)
            incomplete.add(household)
            continue
        if resident is not None:
            id_key = int(resident.number[:17])  # the check character follows from these digits
            known = by_id.get(id_key)
            if known == household:
                skip(SkipReason.DUPLICATE, number)
                continue
            by_id[id_key] = household if known is None else _AMBIGUOUS
        day = born.toordinal()
        births[household].append(day)
        members += 1
        folded = name_key(row.get("name", ""))
        if folded:
            key = _name_day(folded, day)
            by_name[key] = household if key not in by_name else _AMBIGUOUS
    summary = RegisterSummary(
        rows=rows,
        members=members,
        households=len(households),
        skipped=dict(skipped),
        skipped_rows={reason: tuple(shown) for reason, shown in skipped_rows.items()},
    )
    log.info("household register read: %d rows, %d households, %d skipped", rows, len(households), skipped.total())
    return HouseholdRegister(summary, births, by_id, by_name, frozenset(incomplete), frozenset(loose_days))


def read_register(path: Path, *, mapping: Mapping | None = None) -> HouseholdRegister:
    """:func:`open_register` then :func:`build_register`."""
    return build_register(open_register(path, mapping=mapping))


# --- deciding -----------------------------------------------------------------------------------------


def birth_status(
    register: HouseholdRegister, name: str, resident: idnumber.ResidentId | None, born: date | None
) -> BirthStatus:
    """What the register says of one registration-ledger row (module docstring, "Deciding").

    ``resident`` is the row's ID number when it is valid (:func:`gateway.domain.idnumber.parse`),
    else ``None``; ``born`` the row's birth date (ignored with a valid ID number: the number's own
    date is used, as the register does). Pure: reads ``register``, changes nothing."""
    if resident is not None:
        household = register.by_id.get(int(resident.number[:17]))
        day = resident.birth_date.toordinal()
    else:
        folded = name_key(name) if born is not None else ""
        day = born.toordinal() if born is not None else 0
        household = register.by_name.get(_name_day(folded, day)) if folded else None
    if household is None or household == _AMBIGUOUS:
        return BirthStatus.NOT_FOUND
    others = list(register.births[household])
    if day in others:
        others.remove(day)  # the child's own row
    if any(abs(other - day) <= _WITHIN for other in others):
        return BirthStatus.SIBLING
    if household in register.incomplete or any(day + d in register.loose_days for d in range(-_WITHIN, _WITHIN + 1)):
        return BirthStatus.UNDECIDED
    return BirthStatus.SINGLE


def record_birth_status(register: HouseholdRegister, record: ChildRecord) -> BirthStatus:
    """:func:`birth_status` of a validated ledger record (``tongban roster import
    --household-register``): its ID number — canonical and valid, or ``None``, after intake's
    checks; one that no longer parses counts as missing — its name and its birth date (the ID
    number's own when it is valid, as :mod:`adapters.ledger` already made it)."""
    resident: idnumber.ResidentId | None = None
    if record.id_number:
        try:
            resident = idnumber.parse(record.id_number)
        except InvalidIdNumber:
            resident = None
    return birth_status(register, record.name, resident, record.birth_date)


def is_single_birth(
    register: HouseholdRegister, name: str, resident: idnumber.ResidentId | None, born: date | None
) -> bool:
    """``True`` only when the child is found in the register and no other member of its household
    was born within one day of it (:func:`birth_status` is ``SINGLE``); twins, a child not found or
    an undecided one: ``False``."""
    return birth_status(register, name, resident, born) is BirthStatus.SINGLE


__all__ = [
    "ROWS_SHOWN",
    "BirthCounts",
    "BirthStatus",
    "HouseholdRegister",
    "RegisterSummary",
    "SkipReason",
    "birth_status",
    "build_register",
    "is_single_birth",
    "name_key",
    "open_register",
    "read_register",
    "record_birth_status",
]
