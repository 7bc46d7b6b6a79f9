"""Statutory clocks: working-day time limits of a case, computed from its history (SPEC §6).

Limits, in working days (:data:`LIMITS`):

=====================  ====  ============  ==========  ======
family                 push  first review  decision    notify
=====================  ====  ============  ==========  ======
recognition (认定)      3     15 (乡镇)      15 (县级)    3
disability subsidies   3     —             10          3
=====================  ====  ============  ==========  ======

When each clock runs (the policy: 受理地 pushes "within 3 working days of the day the application
material is complete", 户籍地 township gives its first opinion "within 15 working days of receiving
the pushed material", the county decides "within 15 working days of receiving the township's
material", 受理地 tells the applicant "within 3 working days of receiving the result"):

* **push** starts on entering ``accepted`` (the acceptance date 受理日期: material is complete when
  a case is accepted) and stops on entering ``pushed`` (or ``withdrawn``);
* **first review** (recognition) starts on entering ``received`` and stops on entering
  ``first_reviewed`` (or ``returned``, ``transferred``, ``withdrawn``);
* **decision** starts on entering ``first_reviewed`` (recognition) or ``received`` (subsidies) and
  stops on entering ``decided`` (or ``returned``, ``transferred``, ``withdrawn``);
* **notify** starts on entering ``result_delivered`` or ``returned`` and stops on entering
  ``applicant_notified``.

A clock that starts again (a transferred case received by its new registration node) reports its
latest run only: the new node's review clock starts afresh on the day it receives the case.

**Counting** follows the civil code's rule for periods (民法典 第二百零一条: the start day is not
counted): the working days after the start day are counted and the step is **due on the day the
count reaches the limit**; it is **overdue** from the next calendar day on while it has not
stopped. A step stopped on or before its due day is on time; one stopped later is ``late``.

**Material requests pause the clock** (补正时间不计入办理时限): on a request the running clock stops
counting after the request day (which counts, if a working day) and resumes after the day the
material is resubmitted (which does not count, like a start day), with the days already used. While
the request is outstanding the step has no due date and cannot become overdue — unless it was
already due before the request was made, in which case it stays overdue. This reading favours the
applicant less than restarting the full limit after resubmission would and the authority less than
ignoring the pause; it is the one county staff use (补正期间不计时) and both ends compute it alike.

**The calendar** is :class:`WorkCalendar`, loaded from ``gateway/data/holidays.toml`` (the State
Council General Office's yearly notices, with make-up working days 调休). Any date in a year the
calendar has no table for raises :class:`~gateway.errors.CalendarNotCovered` — a clock is never
computed on a guessed calendar. Dates are China Standard Time dates of the events.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from importlib import resources

from gateway.cases.lifecycle import Event, Status
from gateway.cases.types import Case, ProgrammeFamily
from gateway.errors import CalendarNotCovered, ConfigError

CALENDAR_FORMAT = 1


class Step(StrEnum):
    PUSH = "push"  # 受理地推送
    FIRST_REVIEW = "first_review"  # 户籍地乡镇(街道)初审
    DECISION = "decision"  # 户籍地县级民政部门审批
    NOTIFY = "notify"  # 受理地告知申请人

    @property
    def label_zh(self) -> str:
        return {"push": "推送", "first_review": "乡镇初审", "decision": "审批", "notify": "告知申请人"}[self.value]

    def starts(self, family: ProgrammeFamily) -> frozenset[Status]:
        """Entering any of these states starts (or restarts) the step's clock."""
        if self is Step.DECISION and family is ProgrammeFamily.RECOGNITION:
            return frozenset({Status.FIRST_REVIEWED})
        return _STARTS[self]

    def completes(self, family: ProgrammeFamily) -> frozenset[Status]:
        """Entering any of these states completes the step."""
        return _COMPLETES[self]

    def stops(self, family: ProgrammeFamily) -> frozenset[Status]:
        """Entering any of these states stops the clock: completed, or ended without completing."""
        return _COMPLETES[self] | _ENDS[self]


_STARTS: dict[Step, frozenset[Status]] = {
    Step.PUSH: frozenset({Status.ACCEPTED}),
    Step.FIRST_REVIEW: frozenset({Status.RECEIVED}),
    Step.DECISION: frozenset({Status.RECEIVED}),
    Step.NOTIFY: frozenset({Status.RESULT_DELIVERED, Status.RETURNED}),
}
_COMPLETES: dict[Step, frozenset[Status]] = {
    Step.PUSH: frozenset({Status.PUSHED}),
    Step.FIRST_REVIEW: frozenset({Status.FIRST_REVIEWED}),
    Step.DECISION: frozenset({Status.DECIDED}),
    Step.NOTIFY: frozenset({Status.APPLICANT_NOTIFIED}),
}
_REVIEW_ENDS = frozenset({Status.RETURNED, Status.TRANSFERRED, Status.WITHDRAWN})
_ENDS: dict[Step, frozenset[Status]] = {
    Step.PUSH: frozenset({Status.WITHDRAWN}),
    Step.FIRST_REVIEW: _REVIEW_ENDS,
    Step.DECISION: _REVIEW_ENDS,
    Step.NOTIFY: frozenset(),
}

#: Time limits in working days, per programme family, in the order the steps happen.
LIMITS: Mapping[ProgrammeFamily, Mapping[Step, int]] = {
    ProgrammeFamily.RECOGNITION: {Step.PUSH: 3, Step.FIRST_REVIEW: 15, Step.DECISION: 15, Step.NOTIFY: 3},
    ProgrammeFamily.SUBSIDY: {Step.PUSH: 3, Step.DECISION: 10, Step.NOTIFY: 3},
}


# --- the calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holiday:
    name: str
    first: date
    last: date  # inclusive


@dataclass(frozen=True)
class CalendarYear:
    year: int
    source: str
    holidays: tuple[Holiday, ...]
    makeup_workdays: frozenset[date]


@dataclass(frozen=True)
class WorkCalendar:
    """Working days of the years it has a table for; any other year raises ``CalendarNotCovered``."""

    years: Mapping[int, CalendarYear]

    @functools.cached_property
    def _days_off(self) -> frozenset[date]:
        off: set[date] = set()
        for year in self.years.values():
            for h in year.holidays:
                off.update(h.first + timedelta(days=i) for i in range((h.last - h.first).days + 1))
        return frozenset(off)

    @functools.cached_property
    def _makeup(self) -> frozenset[date]:
        return frozenset(d for y in self.years.values() for d in y.makeup_workdays)

    def covers(self, day: date) -> bool:
        return day.year in self.years

    def is_working_day(self, day: date) -> bool:
        """Monday-Friday outside the holidays, or a make-up working day (调休上班)."""
        if day.year not in self.years:
            raise CalendarNotCovered(f"no holiday table for {day.year} (covered: {self._covered()})")
        if day in self._makeup:
            return True
        return day.weekday() < 5 and day not in self._days_off

    def _covered(self) -> str:
        return ", ".join(str(y) for y in sorted(self.years)) or "none"

    def add_working_days(self, start: date, count: int, pauses: Sequence[tuple[date, date | None]] = ()) -> date | None:
        """The day the ``count``-th working day after ``start`` falls on, skipping paused days.

        A pause ``(r, q)`` excludes the days after ``r`` up to and including ``q``; ``q = None`` is
        a pause still open, and reaching it before the count is complete gives ``None``.
        """
        if count < 1:
            raise ValueError("count must be positive")
        day, counted = start, 0
        while True:
            day += timedelta(days=1)
            pause = next((p for p in pauses if p[0] < day and (p[1] is None or day <= p[1])), None)
            if pause is not None:
                if pause[1] is None:
                    return None
                continue
            if self.is_working_day(day):
                counted += 1
                if counted == count:
                    return day


def load_calendar(text: str | None = None) -> WorkCalendar:
    """Parse a holiday file; ``None`` reads the packaged ``gateway/data/holidays.toml``.

    Checked, failing closed with :class:`~gateway.errors.ConfigError` naming the key path: the
    layout (``format`` 1, ``years.YYYY`` tables with exactly ``source``, ``holidays`` and
    ``makeup_workdays``); each holiday has a name, TOML dates inside its year, ``first <= last`` and
    a ``days`` count equal to its length (the notice's 共N天); holidays do not overlap; every make-up
    day is a Saturday or Sunday of the year, outside every holiday, listed once.
    """
    origin = "holiday calendar"
    if text is None:
        origin = "packaged holidays.toml"
        text = resources.files("gateway").joinpath("data/holidays.toml").read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc

    def fail(path: str, problem: str) -> ConfigError:
        return ConfigError(f"{origin}: {path}: {problem}")

    if set(document) != {"format", "years"}:
        raise fail("(top level)", "must hold exactly 'format' and 'years'")
    if document["format"] != CALENDAR_FORMAT or isinstance(document["format"], bool):
        raise fail("format", f"this software reads format {CALENDAR_FORMAT}")
    years_table = document["years"]
    if not isinstance(years_table, dict) or not years_table:
        raise fail("years", "must be a non-empty table")
    years: dict[int, CalendarYear] = {}
    for key, body in years_table.items():
        path = f"years.{key}"
        if not (key.isascii() and key.isdigit() and len(key) == 4):
            raise fail(path, "a year key is four digits")
        year = int(key)
        if not isinstance(body, dict) or set(body) != {"source", "holidays", "makeup_workdays"}:
            raise fail(path, "must have exactly source, holidays, makeup_workdays")
        source = body["source"]
        if not isinstance(source, str) or not source.strip():
            raise fail(f"{path}.source", "must name the notice the dates come from")
        holidays = _holidays(body["holidays"], year, f"{path}.holidays", fail)
        off = {h.first + timedelta(days=i) for h in holidays for i in range((h.last - h.first).days + 1)}
        makeup_raw = body["makeup_workdays"]
        if not isinstance(makeup_raw, list):
            raise fail(f"{path}.makeup_workdays", "must be an array of dates")
        makeup: set[date] = set()
        for index, day in enumerate(makeup_raw):
            item = f"{path}.makeup_workdays[{index}]"
            if not _is_plain_date(day) or day.year != year:
                raise fail(item, f"must be a date in {year}")
            if day.weekday() < 5:
                raise fail(item, "a make-up working day is a Saturday or Sunday")
            if day in off or day in makeup:
                raise fail(item, "falls in a holiday or is listed twice")
            makeup.add(day)
        years[year] = CalendarYear(year, source, holidays, frozenset(makeup))
    return WorkCalendar(years)


def _is_plain_date(value: object) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _holidays(value: object, year: int, path: str, fail: Callable[[str, str], ConfigError]) -> tuple[Holiday, ...]:
    if not isinstance(value, list) or not value:
        raise fail(path, "must be a non-empty array")
    out: list[Holiday] = []
    for index, entry in enumerate(value):
        item = f"{path}[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "first", "last", "days"}:
            raise fail(item, "must have exactly name, first, last, days")
        name, first, last, days = entry["name"], entry["first"], entry["last"], entry["days"]
        if not isinstance(name, str) or not name.strip():
            raise fail(f"{item}.name", "must be a non-empty string")
        if not (_is_plain_date(first) and _is_plain_date(last)) or first.year != year or last.year != year:
            raise fail(item, f"first and last must be dates in {year}")
        if last < first:
            raise fail(item, "last is before first")
        if isinstance(days, bool) or not isinstance(days, int) or days != (last - first).days + 1:
            raise fail(f"{item}.days", "does not match the dates (the notice's 共N天)")
        for other in out:
            if first <= other.last and other.first <= last:
                raise fail(item, f"overlaps {other.name}")
        out.append(Holiday(name, first, last))
    return tuple(out)


@functools.cache
def default_calendar() -> WorkCalendar:
    """The packaged calendar, loaded once."""
    return load_calendar()


# --- the clocks of a case -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepClock:
    """One step's clock for its latest run.

    ``due`` is ``None`` when the step has not started or is paused (material outstanding) before
    reaching its limit. ``stopped_on`` is set once the step stopped; ``completed`` says whether it
    stopped by completing (rather than a return, transfer or withdrawal).
    """

    step: Step
    limit: int
    started_on: date | None = None
    due: date | None = None
    stopped_on: date | None = None
    completed: bool = False
    paused: bool = False

    @property
    def running(self) -> bool:
        return self.started_on is not None and self.stopped_on is None

    @property
    def late(self) -> bool:
        """Completed after its due day."""
        return self.completed and self.due is not None and self.stopped_on is not None and self.stopped_on > self.due

    def overdue_on(self, today: date) -> bool:
        """Still running on ``today`` after its due day."""
        return self.running and self.due is not None and today > self.due


def _clock(
    step: Step, limit: int, family: ProgrammeFamily, history: Iterable[Event], calendar: WorkCalendar
) -> StepClock:
    starts, completes, stops = step.starts(family), step.completes(family), step.stops(family)
    started: date | None = None
    stopped: date | None = None
    completed = False
    pauses: list[tuple[date, date | None]] = []
    for event in history:
        entered, day = event.target, event.on
        if entered in starts:
            started, stopped, completed, pauses = day, None, False, []
        elif started is not None and stopped is None:
            if entered in stops:
                stopped, completed = day, entered in completes
            if entered is Status.MATERIAL_REQUESTED:
                pauses.append((day, None))
            elif entered is Status.RESUBMITTED and pauses and pauses[-1][1] is None:
                pauses[-1] = (pauses[-1][0], day)
    if started is None:
        return StepClock(step, limit)
    due = calendar.add_working_days(started, limit, pauses)
    paused = due is None
    return StepClock(step, limit, started, due, stopped, completed, paused and stopped is None)


def due_dates(case: Case, history: Sequence[Event], calendar: WorkCalendar | None = None) -> dict[Step, StepClock]:
    """Every step's clock for ``case`` from its event ``history`` (pure; both ends agree).

    Steps are those of the case's programme family (:data:`LIMITS`), in order; a step that has not
    started has ``started_on = due = None``. Raises :class:`~gateway.errors.CalendarNotCovered` when
    a due date would need a year the calendar lacks. ``calendar`` defaults to the packaged one.
    """
    cal = calendar or default_calendar()
    family = case.programme.family
    return {step: _clock(step, limit, family, history, cal) for step, limit in LIMITS[family].items()}


def overdue(case: Case, history: Sequence[Event], today: date, calendar: WorkCalendar | None = None) -> list[StepClock]:
    """The steps still running after their due day on ``today`` — what raises a 督办 alert."""
    return [clock for clock in due_dates(case, history, calendar).values() if clock.overdue_on(today)]
