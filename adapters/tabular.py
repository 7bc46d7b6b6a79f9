"""Reading county ledgers (台账) as tables of text: CSV, XLSX and SQL, with Chinese headers.

This is the shared reader every roster adapter builds on. It knows nothing about children beyond
the names of the columns; turning a row into a record is :mod:`adapters.ledger`'s job.

:func:`read_table` opens a file, finds its header and returns a :class:`Table` whose
:meth:`Table.rows` **streams** the data rows (the file is never loaded whole) as
``(row number, {canonical field: cell text})``. Row numbers count data rows from 1, the header
excluded, so "row 3" is the third row under the header; blank rows are skipped but keep their
number.

Formats
-------
* **CSV** (also TSV: the delimiter is taken from the header line). Encoding: a UTF-8 byte-order
  mark means ``utf-8-sig``; otherwise a sample of the file that decodes as strict UTF-8 means
  ``utf-8``; otherwise ``gb18030`` (a superset of GBK, which Excel writes on Chinese Windows).
  ``encoding=`` (or the mapping's ``encoding``) overrides the guess.
* **XLSX** (``openpyxl`` in read-only mode): the first sheet, or the one the mapping names.
  Formulas are read as their text (``=SUM(A1:A3)``), never evaluated and never replaced by a
  cached result. Cell values become text by :func:`cell_text`: dates ``YYYY-MM-DD``, whole
  numbers without ``.0``, and a number too large to hold 18 digits exactly (an ID number Excel
  stored as a number, shown as ``5.00157E+17``) in scientific notation, so that the ledger reports
  it as unusable instead of guessing the lost digits.

Headers
-------
A header cell is trimmed and folded (NFKC: full-width letters, digits and brackets become ASCII;
spaces and a leading ``*`` "required" mark removed) and looked up in :data:`HEADER_ALIASES` —
the national child-welfare system's export headers (``gateway.synth.export.CSV_HEADER``) and the
common variants — or in the mapping's ``[columns]``, which win. The first column claiming a field
keeps it. Columns that map to nothing are ignored.

A table with no name column, or with neither an ID-number nor a birth-date column, is not a
roster: :class:`~gateway.errors.NotARoster`. So is an empty file, a binary file, or an old
``.xls`` workbook. A file with a header and no rows is a valid, empty roster. Error messages
never quote a cell or a header of the file: a file without a header has a child in its first row.

Mapping files
-------------
Other layouts are described by a TOML file (:func:`load_mapping`)::

    sheet = "花名册"          # XLSX: the sheet to read (default: the first)
    header_row = 2            # the header's row (default 1): title rows above it are skipped
    encoding = "gb18030"      # CSV: override the guess
    table = "children"        # SQL: the table to read when no query is given

    [columns]                 # header text -> canonical field (see FIELDS)
    "学生姓名" = "name"
    "证件号" = "id_number"

    [values.sex]              # per field: cell text -> the text it means
    "1" = "男"
    "2" = "女"

    [defaults]                # per field: the text to use when the cell is empty or the column absent
    guardianship = "父母监护"
"""

from __future__ import annotations

import codecs
import csv
import logging
import re
import tomllib
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.errors import MappingInvalid, NotARoster, UnreadableRoster

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = (
    "name",
    "sex",
    "id_number",
    "birth_date",
    "registration_division",
    "residence_division",
    "living_since",
    "father_situation",
    "mother_situation",
    "guardianship",
    "guardian_name",
    "guardian_relation",
    "guardian_phone",
    "disability_category",
    "disability_level",
    "key_care",
    "kind",
)

#: Fields of a household register (户籍登记, :mod:`adapters.household`) that a child ledger has not.
#: Known to the header look-up and to mapping files like :data:`FIELDS`; a ledger ignores them.
REGISTER_FIELDS: tuple[str, ...] = ("household_number",)

#: Folded header text -> canonical field. The first name of each group is the national system's
#: export header (``gateway.synth.export.CSV_HEADER``); the rest are variants seen in county files.
#: ``household_number`` (户号) is a household register's column (:data:`REGISTER_FIELDS`).
HEADER_ALIASES: dict[str, str] = {
    alias: name
    for name, aliases in {
        "name": ("姓名", "儿童姓名", "学生姓名", "名字"),
        "sex": ("性别",),
        "id_number": (
            "公民身份号码",
            "身份证号",
            "身份证号码",
            "儿童身份证号",
            "儿童身份证号码",
            "公民身份证号码",
            "证件号码",
            "身份证件号码",
        ),
        "birth_date": ("出生日期", "出生年月日", "出生年月", "生日"),
        "registration_division": ("户籍地", "户籍所在地", "户籍地区划代码", "户籍所在地区划代码", "户籍地代码"),
        "residence_division": ("现居住地", "现居住地区划代码", "居住地", "居住地区划代码", "现居住地代码"),
        "living_since": ("居住起始日期", "来本地居住时间", "来本地居住日期", "居住开始日期", "来现居住地时间"),
        "father_situation": ("父亲情况", "父亲状况", "父亲外出务工情况"),
        "mother_situation": ("母亲情况", "母亲状况", "母亲外出务工情况"),
        "guardianship": ("监护情况", "监护类型", "监护状况"),
        "guardian_name": ("监护人姓名", "监护人", "委托监护人姓名", "实际监护人姓名"),
        "guardian_relation": ("监护人关系", "与儿童关系", "监护人与儿童关系", "与监护人关系"),
        "guardian_phone": ("监护人联系电话", "监护人电话", "联系电话", "联系方式"),
        "disability_category": ("残疾类别", "残疾类型"),
        "disability_level": ("残疾等级", "残疾级别"),
        "key_care": ("重点关爱情形", "重点关爱对象", "重点关爱类型"),
        "kind": ("儿童类别", "儿童类型", "类别"),
        "household_number": ("户号", "户编号", "户口编号", "户籍户号"),
    }.items()
    for alias in aliases
}

_SAMPLE_BYTES = 64 * 1024
_XLSX_SUFFIXES = {".xlsx", ".xlsm"}
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls (BIFF) and other OLE2 documents
# Integers up to 2**53 are exact in a double, but Excel shows only 15 significant digits: a number
# with more digits than that was rounded on the way in (ID numbers have 18).
_EXACT_DIGITS = 15


def fold_header(text: str) -> str:
    """A header cell as looked up: NFKC (full-width folded), no spaces, no required-mark ``*``."""
    folded = unicodedata.normalize("NFKC", text)
    folded = "".join(ch for ch in folded if not ch.isspace() and ch not in "\ufeff\u200b")
    return folded.strip("*")


@dataclass(frozen=True)
class Mapping:
    """A declarative description of a ledger's layout (see the module docstring)."""

    columns: dict[str, str] = field(default_factory=dict)  # folded header text -> canonical field
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {cell text: meaning}
    defaults: dict[str, str] = field(default_factory=dict)  # field -> text for an empty cell
    sheet: str | None = None
    header_row: int = 1
    encoding: str | None = None
    table: str | None = None


_MAPPING_KEYS = {"columns", "values", "defaults", "sheet", "header_row", "encoding", "table"}


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping TOML file. Raises :class:`~gateway.errors.MappingInvalid`."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise MappingInvalid(f"{path.name}: cannot be read ({type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise MappingInvalid(f"{path.name}: not valid UTF-8 TOML") from None
    return mapping_from_dict(doc, origin=path.name)


def mapping_from_dict(doc: AbcMapping[str, Any], *, origin: str = "mapping") -> Mapping:
    """Build a :class:`Mapping` from an already-parsed document (same checks as :func:`load_mapping`)."""

    def fail(problem: str) -> MappingInvalid:
        return MappingInvalid(f"{origin}: {problem}")

    unknown = set(doc) - _MAPPING_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}")

    def text_table(key: str, value: object) -> dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise fail(f"[{key}] must map text to text")
        return {str(k): v for k, v in value.items()}

    def known_field(name: str, where: str) -> str:
        if name not in FIELDS and name not in REGISTER_FIELDS:
            raise fail(f"{where}: {name!r} is not a canonical field ({', '.join(FIELDS + REGISTER_FIELDS)})")
        return name

    columns = {
        fold_header(header): known_field(target, "[columns]")
        for header, target in text_table("columns", doc.get("columns", {})).items()
    }
    raw_values = doc.get("values", {})
    if not isinstance(raw_values, dict):
        raise fail("[values] must hold one table per field")
    values = {known_field(name, "[values]"): text_table(f"values.{name}", table) for name, table in raw_values.items()}
    defaults = {
        known_field(name, "[defaults]"): text for name, text in text_table("defaults", doc.get("defaults", {})).items()
    }
    sheet, encoding, table = (doc.get(k) for k in ("sheet", "encoding", "table"))
    for key, value in (("sheet", sheet), ("encoding", encoding), ("table", table)):
        if value is not None and not isinstance(value, str):
            raise fail(f"{key} must be text")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise fail("encoding is not one Python knows") from None
    header_row = doc.get("header_row", 1)
    if not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 1:
        raise fail("header_row must be a positive whole number")
    return Mapping(columns, values, defaults, sheet, header_row, encoding, table)


@dataclass(frozen=True)
class Table:
    """A roster as a table of text, read lazily.

    ``source`` names the input without any path (``csv:roster.csv``, ``xlsx:台账.xlsx``,
    ``sql:children``); ``columns`` maps each recognised canonical field to the header text it came
    from, as written in the file (for messages: "column 出生日期"). :meth:`rows` may be called
    more than once; each call reads the source again from the start.
    """

    source: str
    columns: dict[str, str]
    _reader: Callable[[], Iterator[tuple[int, list[str]]]] = field(repr=False, compare=False)
    _positions: dict[str, int] = field(repr=False, compare=False, default_factory=dict)
    _values: dict[str, dict[str, str]] = field(repr=False, compare=False, default_factory=dict)
    _defaults: dict[str, str] = field(repr=False, compare=False, default_factory=dict)

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """Yield ``(row number, {field: text})`` for each non-blank data row, in file order.

        Every recognised field is present (``""`` when the row is short); text is stripped, then
        the mapping's value map and defaults are applied. Raises
        :class:`~gateway.errors.UnreadableRoster` if the source breaks off mid-way.
        """
        for number, cells in self._reader():
            if not any(c.strip() for c in cells):
                continue
            row: dict[str, str] = {}
            for name, index in self._positions.items():
                text = cells[index].strip() if index < len(cells) else ""
                text = self._values.get(name, {}).get(text, text)
                row[name] = text or self._defaults.get(name, "")
            for name, text in self._defaults.items():
                row.setdefault(name, text)
            yield number, row


def recognise(headers: Iterable[str], mapping: Mapping | None) -> tuple[dict[str, str], dict[str, int]]:
    """Match header cells to canonical fields: ``({field: header text}, {field: column index})``.

    Raises :class:`~gateway.errors.NotARoster` without a name column, or without both an ID-number
    and a birth-date column.
    """
    extra = mapping.columns if mapping else {}
    columns: dict[str, str] = {}
    positions: dict[str, int] = {}
    for index, header in enumerate(headers):
        folded = fold_header(header)
        name = extra.get(folded) or HEADER_ALIASES.get(folded)
        if name is not None and name not in positions:
            columns[name] = header.strip()
            positions[name] = index
    defaults = mapping.defaults if mapping else {}
    if "name" not in positions:
        raise NotARoster("no name column (姓名) was recognised; a mapping file can name it")
    if not ({"id_number", "birth_date"} & (set(positions) | set(defaults))):
        raise NotARoster("neither an ID-number (公民身份号码) nor a birth-date (出生日期) column was recognised")
    log.debug("recognised %d of the header's columns", len(positions))
    return columns, positions


def cell_text(value: object) -> str:
    """A spreadsheet or database value as the text a person would read in the cell.

    Dates become ``YYYY-MM-DD`` (a midnight datetime too), whole numbers lose ``.0``, and a number
    with more significant digits than Excel keeps (15) becomes scientific notation, so that an ID
    number Excel rounded is visibly broken rather than silently wrong.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            return ""
        if number.is_integer():
            whole = int(number)
            if len(str(abs(whole))) <= _EXACT_DIGITS:
                return str(whole)
            return f"{number:.{_EXACT_DIGITS - 1}E}"  # e.g. 5.00157201203040E+17: digits were lost
        return format(number, "G") if isinstance(value, float) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return ""
    return str(value)


_BIRTH_DATE = (
    re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?"),
    re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})日?"),
    re.compile(r"(\d{4})(\d{2})(\d{2})"),
)


def parse_birth_date(text: str) -> date | None:
    """``2015-06-01``, ``2015/6/1``, ``2015.06.01``, ``2015年6月1日``, ``20150601``; ``None`` otherwise."""
    folded = unicodedata.normalize("NFKC", text).strip()
    for pattern in _BIRTH_DATE:
        m = pattern.fullmatch(folded)
        if m:
            try:
                return date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                return None
    return None


# --- CSV ------------------------------------------------------------------------------------------


def detect_encoding(sample: bytes) -> str:
    """BOM → ``utf-8-sig``; a sample that is strict UTF-8 → ``utf-8``; otherwise ``gb18030``."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        decoder.decode(sample, final=False)  # a character cut at the sample's end is not an error
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 0x20 and b not in (0x09, 0x0A, 0x0D))
    return controls > max(4, len(sample) // 100)


def _csv_table(path: Path, mapping: Mapping | None, encoding: str | None) -> Table:
    with path.open("rb") as fh:
        sample = fh.read(_SAMPLE_BYTES)
    if not sample.strip():
        raise NotARoster("the file is empty")
    if _looks_binary(sample):
        raise NotARoster("the file is binary, not a CSV text file")
    chosen = encoding or (mapping.encoding if mapping else None) or detect_encoding(sample)
    try:
        codecs.lookup(chosen)
    except LookupError:
        raise NotARoster("the requested encoding is not one Python knows") from None
    header_row = mapping.header_row if mapping else 1
    lines = sample.split(b"\n", header_row)
    first_line = lines[header_row - 1] if len(lines) >= header_row else b""
    delimiter = "\t" if first_line.count(b"\t") > first_line.count(b",") else ","

    def records() -> Iterator[tuple[int, list[str]]]:
        with path.open(encoding=chosen, errors="strict", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            number = -header_row
            try:
                for cells in reader:
                    number += 1
                    if number >= 1:
                        yield number, cells
            except UnicodeDecodeError:
                raise UnreadableRoster(
                    f"bytes after data row {max(number, 0)} are not valid {chosen}; "
                    "save the file again as UTF-8 or give --encoding"
                ) from None
            except csv.Error:
                raise UnreadableRoster(f"the CSV breaks off after data row {max(number, 0)}") from None

    try:
        with path.open(encoding=chosen, errors="strict", newline="") as text:
            header_reader = csv.reader(text, delimiter=delimiter)
            header: list[str] | None = None
            for _ in range(header_row):
                header = next(header_reader, None)
    except UnicodeDecodeError:
        raise NotARoster(f"the header is not valid {chosen} text") from None
    except csv.Error:
        raise NotARoster("the header is not a CSV line") from None
    if header is None:
        raise NotARoster("the file has no header row")
    columns, positions = recognise(header, mapping)
    return Table(
        f"csv:{path.name}",
        columns,
        records,
        positions,
        dict(mapping.values) if mapping else {},
        dict(mapping.defaults) if mapping else {},
    )


# --- XLSX -----------------------------------------------------------------------------------------


def _open_workbook(path: Path) -> Any:
    from openpyxl import load_workbook  # imported here: CSV-only imports need not load it

    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it does not know: not our concern here.
            warnings.simplefilter("ignore")
            return load_workbook(path, read_only=True, data_only=False)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError):
        raise NotARoster("the workbook cannot be opened as XLSX") from None


def _sheet(workbook: Any, mapping: Mapping | None) -> Any:
    name = mapping.sheet if mapping else None
    if name is None:
        return workbook.worksheets[0]
    if name not in workbook.sheetnames:
        raise NotARoster("the workbook has no sheet with the name the mapping gives")
    return workbook[name]


def _xlsx_table(path: Path, mapping: Mapping | None) -> Table:
    header_row = mapping.header_row if mapping else 1
    workbook = _open_workbook(path)
    try:
        header = next(
            _sheet(workbook, mapping).iter_rows(min_row=header_row, max_row=header_row, values_only=True), None
        )
    finally:
        workbook.close()
    if header is None:
        raise NotARoster("the sheet has no header row")
    columns, positions = recognise([cell_text(v) for v in header], mapping)

    def records() -> Iterator[tuple[int, list[str]]]:
        book = _open_workbook(path)
        try:
            rows = _sheet(book, mapping).iter_rows(min_row=header_row + 1, values_only=True)
            for number, values in enumerate(rows, start=1):
                yield number, [cell_text(v) for v in values]
        except (zipfile.BadZipFile, KeyError, ValueError, OSError):
            raise UnreadableRoster("the workbook is damaged") from None
        finally:
            book.close()

    return Table(
        f"xlsx:{path.name}",
        columns,
        records,
        positions,
        dict(mapping.values) if mapping else {},
        dict(mapping.defaults) if mapping else {},
    )


def read_table(path: Path, *, mapping: Mapping | None = None, encoding: str | None = None) -> Table:
    """Open a CSV or XLSX roster and recognise its header (see the module docstring).

    The format is taken from the content (an XLSX file is a ZIP archive), not from the name alone.
    Raises :class:`~gateway.errors.NotARoster` (empty, binary, old ``.xls``, no name column, no
    ID-number or birth-date column) or :class:`~gateway.errors.UnreadableRoster` (cannot be opened).
    """
    try:
        with path.open("rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise UnreadableRoster(f"{path.name}: {type(exc).__name__}") from None
    if magic.startswith(_OLE_MAGIC):
        raise NotARoster("an old-format .xls workbook: save it as .xlsx or CSV")
    if magic.startswith(_ZIP_MAGIC) or path.suffix.lower() in _XLSX_SUFFIXES:
        if not magic.startswith(_ZIP_MAGIC):
            raise NotARoster("the file is named as a workbook but is not an XLSX file")
        return _xlsx_table(path, mapping)
    return _csv_table(path, mapping, encoding)


def table_from_rows(
    source: str,
    headers: Iterable[str],
    rows: Callable[[], Iterator[tuple[int, list[object]]]],
    *,
    mapping: Mapping | None = None,
) -> Table:
    """A :class:`Table` over any row source (a SQL result, a test's list): headers are recognised
    like a file's, values converted with :func:`cell_text`."""
    columns, positions = recognise(list(headers), mapping)

    def records() -> Iterator[tuple[int, list[str]]]:
        for number, values in rows():
            yield number, [cell_text(v) for v in values]

    return Table(
        source,
        columns,
        records,
        positions,
        dict(mapping.values) if mapping else {},
        dict(mapping.defaults) if mapping else {},
    )


__all__ = [
    "FIELDS",
    "HEADER_ALIASES",
    "REGISTER_FIELDS",
    "Mapping",
    "Table",
    "cell_text",
    "detect_encoding",
    "fold_header",
    "load_mapping",
    "parse_birth_date",
    "read_table",
    "recognise",
    "table_from_rows",
]
