"""Roster sources: the small protocol between ``tongban roster import`` and the readers of county
files, and the quarantine file that hands rejected rows back to the county.

Readers live beside the gateway (``adapters/``: CSV, XLSX, SQL) and plug in through the entry
point group ``tongban.readers``, so the gateway never imports them (STYLE habit 10). A reader is a
callable taking a :class:`ReadRequest` and returning a :class:`RosterSource`, whose rows are
:class:`SourceRow` values: the record built from the row (already checked with
:func:`gateway.roster.validate`), or ``None`` when the row is rejected, plus its
:class:`RowIssue` list — rejections and warnings, each naming the row number, the column as
written in the file, a stable code, and a reason in Chinese and English. Issues never carry a
cell's value; the cells travel separately (``SourceRow.cells``, hidden from ``repr``) and are
written only to the quarantine file, which goes back to the county's own staff.

**Household registers.** A request may name the registration county's household register
(户籍登记, :attr:`ReadRequest.household_register`). A reader that honours it decides, for each
record it builds, what the register says of the child (:class:`BirthStatus`), stores the answer
in the record (``ChildRecord.single_birth``: ``True`` for :attr:`BirthStatus.SINGLE` only) and
reports it in :attr:`SourceRow.birth`; its :attr:`RosterSource.register_summary` then describes
the register read (counts and skipped row numbers). The adapters' readers do
(``adapters/household.py``); a reader that does not leaves ``register_summary`` ``None``, and the
import refuses to run rather than store records without the answer it was asked for.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Protocol

from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord
from gateway.errors import ReaderUnavailable, StorageError

READER_GROUP = "tongban.readers"


class Severity(StrEnum):
    REJECTED = "rejected"  # the row is not stored
    WARNING = "warning"  # the row is stored; the county should look at it


@dataclass(frozen=True)
class RowIssue:
    """One problem with one row. Never holds a cell's value."""

    row: int  # data row number from 1, the header excluded
    column: str  # the header text as written in the file; "" for the row as a whole
    code: str  # stable, machine-readable
    reason_zh: str
    reason_en: str
    severity: Severity = Severity.REJECTED

    def line(self) -> str:
        """``row 3, column 出生日期: rejected [invalid_date] 出生日期格式无效 / birth date is not a valid date``."""
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.severity.value} [{self.code}] {self.reason_zh} / {self.reason_en}"


class BirthStatus(StrEnum):
    """What a household register says of one ledger child (``adapters.household.birth_status``).
    Values are stable codes; only ``SINGLE`` makes ``ChildRecord.single_birth`` ``True``."""

    SINGLE = "single"  # found; no other member of its household born within a day
    SIBLING = "sibling"  # another member of its household born within a day (twins)
    NOT_FOUND = "not_found"  # not in the register, or not found unambiguously
    UNDECIDED = "undecided"  # a register row that could be its co-twin was unreadable


@dataclass(frozen=True)
class BirthCounts:
    """How many ledger rows got each :class:`BirthStatus`."""

    single: int = 0
    sibling: int = 0
    not_found: int = 0
    undecided: int = 0

    @classmethod
    def of(cls, statuses: Mapping[BirthStatus, int]) -> BirthCounts:
        return cls(
            single=statuses.get(BirthStatus.SINGLE, 0),
            sibling=statuses.get(BirthStatus.SIBLING, 0),
            not_found=statuses.get(BirthStatus.NOT_FOUND, 0),
            undecided=statuses.get(BirthStatus.UNDECIDED, 0),
        )

    def describe(self, rows: str = "registration rows") -> str:
        """One line of counts — never a value."""
        return (
            f"{self.single} {rows} ({self.sibling} with a sibling born within a day, "
            f"{self.not_found} not found, {self.undecided} undecided)"
        )


@dataclass(frozen=True)
class SourceRow:
    row: int
    record: ChildRecord | None  # None: rejected
    issues: tuple[RowIssue, ...] = ()
    cells: Mapping[str, str] = field(default_factory=dict, repr=False)  # header text -> cell text
    # With a household register: what it says of the record's child (personal data: not in repr).
    birth: BirthStatus | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReadRequest:
    """What a reader is asked to read. ``path`` for files; ``sql_url`` (with ``sql_query`` or a
    mapping naming a table) for SQL sources. ``today`` bounds dates (no birth in the future)."""

    node_id: str
    period: MonitoringPeriod
    today: date
    path: Path | None = None
    mapping: Path | None = None
    encoding: str | None = None
    sql_url: str | None = field(default=None, repr=False)  # may hold a password
    sql_query: str | None = None
    household_register: Path | None = None  # the registration county's 户籍登记 (module docstring)
    register_mapping: Path | None = None  # its column mapping (the ledger's ``mapping`` does not apply)


class RosterSource(Protocol):
    @property
    def source(self) -> str:
        """The input's name without any directory (``csv:roster.csv``, ``sql:query``)."""
        ...

    @property
    def headers(self) -> tuple[str, ...]:
        """The header texts of the recognised columns, in file order (the quarantine's columns)."""
        ...

    @property
    def register_summary(self) -> str | None:
        """With a household register: one line of its counts (rows, households, skipped rows by
        reason and row number — never a value); ``None`` when none was read."""
        ...

    def rows(self) -> Iterator[SourceRow]: ...


class Reader(Protocol):
    def __call__(self, request: ReadRequest) -> RosterSource: ...


def find_reader(name: str) -> Reader:
    """The reader registered as ``name`` in ``tongban.readers``; :class:`ReaderUnavailable` if none."""
    for entry in entry_points(group=READER_GROUP):
        if entry.name == name:
            reader: Reader = entry.load()
            return reader
    raise ReaderUnavailable(f"{name!r} (install the adapters package)")


class Quarantine:
    """The county's rejected rows and warnings, as CSV (UTF-8 with BOM for Excel, mode 0600).

    One line per issue: row number, severity, column, code, reason (zh), reason (en), then the
    row's original cells under their original headers. The file is created only when there is
    something to write; an existing file is replaced.
    """

    FIXED = ("行号 row", "类型 kind", "列 column", "代码 code", "原因 reason (zh)", "reason (en)")

    def __init__(self, path: Path, headers: tuple[str, ...]) -> None:
        self.path = path
        self.headers = headers
        self.lines = 0
        self._fh: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None

    def write(self, row: SourceRow) -> None:
        for issue in row.issues:
            writer = self._writer or self._open()
            cells = {h: row.cells.get(h, "") for h in self.headers}
            fixed = (issue.row, issue.severity.value, issue.column, issue.code, issue.reason_zh, issue.reason_en)
            writer.writerow({**cells, **dict(zip(self.FIXED, fixed, strict=True))})
            self.lines += 1

    def _open(self) -> csv.DictWriter[str]:
        try:
            self.path.unlink(missing_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(f"the quarantine file cannot be written ({type(exc).__name__})") from None
        self._fh = os.fdopen(fd, "w", encoding="utf-8-sig", newline="")
        headers = [h for h in self.headers if h not in self.FIXED]
        self._writer = csv.DictWriter(self._fh, fieldnames=[*self.FIXED, *headers], lineterminator="\r\n")
        self._writer.writeheader()
        return self._writer

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
