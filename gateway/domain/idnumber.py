"""Resident ID numbers (公民身份号码, GB 11643-1999).

Structure of the 18 characters::

    DDDDDD YYYYMMDD SSS C
    |      |        |   check character, ISO 7064 MOD 11-2 over the first 17 digits ('X' = 10)
    |      |        sequence; odd = male, even = female
    |      birth date
    division code where the number was *issued* (not the current registration place:
    never route by it — SPEC §1)

Everything here is pure. :func:`parse` returns a verified :class:`ResidentId` or raises
:class:`~gateway.errors.InvalidIdNumber` whose ``reason`` names the exact rule broken. Error text
never contains the number itself.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from gateway.domain.records import Sex
from gateway.errors import IdProblem, InvalidIdNumber

_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
_CHECK_CHARS = "10X98765432"
_ZERO = ord("0")
# The digits' weighted sum without a per-digit int(): sum(w * (byte - 48)) = sum(w * byte) - 48 * sum(w).
_WEIGHT_OFFSET = _ZERO * sum(_WEIGHTS)
# Already canonical (what the store holds and what most files contain): no folding needed.
_CANONICAL = re.compile(r"[0-9]{17}[0-9X]")

# Characters county spreadsheets put inside ID numbers that carry no meaning.
_DROPPED = {" ", "\u3000", "\t", "\u00a0", "-", "'", "\u200b"}


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise InvalidIdNumber(IdProblem.CHARACTER)
    total = sum(map(operator.mul, first17.encode("ascii"), _WEIGHTS)) - _WEIGHT_OFFSET
    return _CHECK_CHARS[total % 11]


def normalise(raw: str) -> str:
    """Fold what people type into the canonical form, without validating.

    Full-width digits and letters become ASCII (NFKC), a lower-case ``x`` becomes ``X``, and
    spaces (including the ideographic space), tabs, hyphens and a leading apostrophe (which Excel
    users type to keep the number as text) are removed.
    """
    if _CANONICAL.fullmatch(raw):
        return raw
    folded = unicodedata.normalize("NFKC", raw)
    return "".join(ch for ch in folded if ch not in _DROPPED).upper()


@dataclass(frozen=True)
class ResidentId:
    """A verified resident ID number. ``repr`` hides the number."""

    number: str = field(repr=False)

    @property
    def issuing_division(self) -> str:
        """Where the number was issued. Not the registration place: never route by it."""
        return self.number[:6]

    @property
    def birth_date(self) -> date:
        n = self.number
        return date(int(n[6:10]), int(n[10:12]), int(n[12:14]))

    @property
    def sex(self) -> Sex:
        return Sex.MALE if int(self.number[16]) % 2 == 1 else Sex.FEMALE


def parse(
    raw: str,
    *,
    today: date | None = None,
    division_existed: Callable[[str], bool] | None = None,
) -> ResidentId:
    """Normalise and verify an ID number; return it or raise.

    Checks, in this order (the first failure is the one reported):

    1. not empty after normalisation — ``EMPTY``
    2. 18 characters — ``LENGTH``
    3. 17 digits then a digit or ``X`` — ``CHARACTER``
    4. the check character — ``CHECK_CHARACTER``
    5. digits 7-14 form a real calendar date — ``BIRTH_DATE``
    6. that date is not after ``today`` (when given) — ``BIRTH_IN_FUTURE``
    7. the first six digits are a division code that ever existed (when ``division_existed`` is
       given; use the *historical* division table, since numbers keep retired prefixes) —
       ``UNKNOWN_PREFIX``

    Raises :class:`~gateway.errors.InvalidIdNumber`.
    """
    n = normalise(raw)
    if not n:
        raise InvalidIdNumber(IdProblem.EMPTY)
    if len(n) != 18:
        raise InvalidIdNumber(IdProblem.LENGTH)
    body, last = n[:17], n[17]
    if not (body.isascii() and body.isdigit() and (last == "X" or (last.isascii() and last.isdigit()))):
        raise InvalidIdNumber(IdProblem.CHARACTER)
    if check_character(body) != last:
        raise InvalidIdNumber(IdProblem.CHECK_CHARACTER)
    try:
        born = date(int(n[6:10]), int(n[10:12]), int(n[12:14]))
    except ValueError:
        raise InvalidIdNumber(IdProblem.BIRTH_DATE) from None
    if born.year < 1900:
        raise InvalidIdNumber(IdProblem.BIRTH_DATE)
    if today is not None and born > today:
        raise InvalidIdNumber(IdProblem.BIRTH_IN_FUTURE)
    if division_existed is not None and not division_existed(n[:6]):
        raise InvalidIdNumber(IdProblem.UNKNOWN_PREFIX)
    return ResidentId(n)


def make(division: str, born: date, sequence: int) -> str:
    """Build a valid number (for the synthetic generator and tests). ``sequence`` is 0-999;
    its parity fixes the sex (odd = male)."""
    if len(division) != 6 or not division.isdigit() or not 0 <= sequence <= 999:
        raise InvalidIdNumber(IdProblem.CHARACTER)
    body = f"{division}{born:%Y%m%d}{sequence:03d}"
    return body + check_character(body)
