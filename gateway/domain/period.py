"""Monitoring periods and the calendar arithmetic the monitoring rules need (SPEC §1).

Counties take stock of their children once per **monitoring period** (摸底排查): every quarter
nationally, monthly or half-yearly where a province says so (the cadence is rule data, see
``gateway/data/province_rules.toml``). A period is named by a label:

=============  ==========  =========================
cadence        label       covers (both ends inclusive)
=============  ==========  =========================
monthly        ``2026-11``  2026-11-01 … 2026-11-30
quarterly      ``2026Q4``   2026-10-01 … 2026-12-31
half-yearly    ``2026H2``   2026-07-01 … 2026-12-31
=============  ==========  =========================

Labels are parsed strictly (ASCII digits, upper-case ``Q``/``H``, zero-padded month, no spaces):
a label is an identifier that travels in roster manifests and pairwise-token derivation, so two
spellings of one period must never exist.

Two date helpers follow Chinese civil-law counting:

* :func:`add_months` — a period of months ends on the corresponding day of the last month, or on
  that month's last day when it has no such day (民法典 第二百零二条). So Aug 31 + 6 months is
  Feb 28 (Feb 29 in a leap year).
* :func:`age_on` — completed years (周岁). A child born on Feb 29 reaches each birthday on Mar 1
  in common years. The age is reached *on* the birthday (the civil-affairs reading; criminal law
  counts from the day after, which does not apply here).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from gateway.errors import InputError, InvalidRecord


class Cadence(StrEnum):
    """How often a province takes stock (监测周期)."""

    MONTHLY = "monthly"  # 每月
    QUARTERLY = "quarterly"  # 每季度 (the national default)
    HALF_YEARLY = "half_yearly"  # 每半年

    @property
    def label_zh(self) -> str:
        return {"monthly": "月度", "quarterly": "季度", "half_yearly": "半年度"}[self.value]

    @property
    def months(self) -> int:
        """Length of one period in calendar months."""
        return {"monthly": 1, "quarterly": 3, "half_yearly": 6}[self.value]


# `[0-9]`, not `\d`: `\d` also matches full-width and other Unicode digits, and a label must have
# exactly one spelling.
_LABEL = re.compile(
    r"(?P<year>[0-9]{4})(?:-(?P<month>0[1-9]|1[0-2])|Q(?P<quarter>[1-4])|H(?P<half>[12]))",
    re.ASCII,
)


def _bounds(label: str) -> tuple[date, date, Cadence]:
    """Start, end and cadence of the period a label names; :class:`InputError` if it names none."""
    match = _LABEL.fullmatch(label)
    if match is None:
        raise InputError(f"monitoring period label {label!r} is not of the form 2026-11, 2026Q4 or 2026H2")
    year = int(match["year"])
    if year == 0:
        raise InputError(f"monitoring period label {label!r}: there is no year 0000")
    if match["month"] is not None:
        cadence, first_month = Cadence.MONTHLY, int(match["month"])
    elif match["quarter"] is not None:
        cadence, first_month = Cadence.QUARTERLY, 3 * int(match["quarter"]) - 2
    else:
        cadence, first_month = Cadence.HALF_YEARLY, 6 * int(match["half"]) - 5
    last_month = first_month + cadence.months - 1
    end = date(year, last_month, calendar.monthrange(year, last_month)[1])
    return date(year, first_month, 1), end, cadence


def _label(day: date, cadence: Cadence) -> str:
    if cadence is Cadence.MONTHLY:
        return f"{day.year:04d}-{day.month:02d}"
    if cadence is Cadence.QUARTERLY:
        return f"{day.year:04d}Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}H{(day.month - 1) // 6 + 1}"


@dataclass(frozen=True)
class MonitoringPeriod:
    """One monitoring period: ``start`` and ``end`` are both inclusive; ``label`` names it.

    Build periods with :meth:`parse` or :meth:`containing`. Direct construction is allowed but
    checked: the three fields must agree (``MonitoringPeriod(date(2026, 10, 1), date(2026, 12,
    31), "2026Q4")``), otherwise :class:`~gateway.errors.InputError` is raised.
    """

    start: date
    end: date
    label: str

    def __post_init__(self) -> None:
        start, end, _ = _bounds(self.label)
        if (self.start, self.end) != (start, end):
            raise InputError(
                f"monitoring period {self.label} runs from {start.isoformat()} to {end.isoformat()}, "
                f"not {self.start.isoformat()} to {self.end.isoformat()}"
            )

    @classmethod
    def parse(cls, label: str) -> MonitoringPeriod:
        """The period a label names.

        Accepts exactly ``YYYY-MM`` (monthly), ``YYYYQn`` (quarterly, n = 1-4) and ``YYYYHn``
        (half-yearly, n = 1-2), ASCII only, nothing around it. Anything else — ``2026q4``,
        ``2026-1``, ``2026Q5``, ``2026H3``, `` 2026Q4`` — raises
        :class:`~gateway.errors.InputError` naming the expected forms.
        """
        start, end, _ = _bounds(label)
        return cls(start, end, label)

    @classmethod
    def containing(cls, day: date, cadence: Cadence) -> MonitoringPeriod:
        """The period of the given cadence that ``day`` falls in."""
        return cls.parse(_label(_plain_date(day), cadence))

    @property
    def cadence(self) -> Cadence:
        return _bounds(self.label)[2]

    def next(self) -> MonitoringPeriod:
        """The period of the same cadence that starts the day after this one ends.

        Raises :class:`~gateway.errors.InputError` after the last period of year 9999.
        """
        if self.end == date.max:
            raise InputError(f"there is no monitoring period after {self.label}")
        return self.containing(self.end + timedelta(days=1), self.cadence)

    def previous(self) -> MonitoringPeriod:
        """The period of the same cadence that ends the day before this one starts.

        Raises :class:`~gateway.errors.InputError` before the first period of year 0001.
        """
        if self.start == date.min:
            raise InputError(f"there is no monitoring period before {self.label}")
        return self.containing(self.start - timedelta(days=1), self.cadence)

    def __contains__(self, day: date) -> bool:
        """``start <= day <= end``. A ``datetime`` is refused (``TypeError``): which calendar day
        an instant falls on depends on a time zone, so the caller must choose it."""
        return self.start <= _plain_date(day) <= self.end

    def __str__(self) -> str:
        return self.label


def _plain_date(day: date) -> date:
    # datetime is a subclass of date; comparing it with a date raises an unhelpful TypeError
    # deep inside a comparison, so refuse it here with a message that says what to do.
    if isinstance(day, datetime):
        raise TypeError("pass a calendar date (datetime.date), not a datetime: choose the time zone first")
    return day


def add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` calendar months (negative goes back).

    The day of the month is kept; when the target month is shorter it is clamped to that month's
    last day (民法典 第二百零二条): Aug 31 + 6 months = Feb 28, or Feb 29 in a leap year;
    Mar 31 + 6 months = Sep 30. Results outside year 1-9999 raise ``OverflowError``, as date
    arithmetic does.
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise OverflowError(f"{months} months from the given date leave the calendar (years 1-9999)")
    month = month0 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def nth_birthday(birth: date, years: int) -> date:
    """The day a person born on ``birth`` reaches ``years`` completed years (满 N 周岁).

    A Feb 29 birthday falls on Mar 1 in common years (not Feb 28: the person has not lived the
    full years until Feb has ended). Consistent with :func:`age_on`:
    ``age_on(birth, nth_birthday(birth, n)) == n`` and the day before gives ``n - 1``.
    """
    if years < 0:
        raise ValueError("years must not be negative")
    year = birth.year + years
    if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
        return date(year, 3, 1)
    return birth.replace(year=year)


def age_on(birth: date, day: date) -> int:
    """Completed years (周岁) on ``day`` of a person born on ``birth``.

    The age goes up on the birthday itself; a Feb 29 birthday is reached on Mar 1 in common years
    (compare month and day as a pair: (2, 28) is before (2, 29), (3, 1) after). A ``day`` before
    ``birth`` raises :class:`~gateway.errors.InvalidRecord`: nobody has an age before being born,
    and a negative age would pass an "under 16" test.
    """
    if day < birth:
        raise InvalidRecord("asked for an age on a date before the birth date")
    before_birthday = (day.month, day.day) < (birth.month, birth.day)
    return day.year - birth.year - int(before_birthday)
