"""County ledger rows → :class:`~gateway.domain.records.ChildRecord`, or row-level issues.

:class:`LedgerSource` reads a :class:`~adapters.tabular.Table` (CSV, XLSX or SQL) and yields one
:class:`~gateway.sources.SourceRow` per data row: the record, checked as the node's store will
check it (:func:`gateway.roster.validate`), or ``None`` with the reasons it was rejected. Every
issue names the row number, the column as written in the file, a stable code and a reason in
Chinese and English — never the cell's value.

Rules, per row, in this order
-----------------------------
1. **Identical rows**: a row whose cells repeat an earlier row is rejected, ``duplicate_row``
   ("duplicate of row N"), and nothing else is checked.
2. **Cells**. Values are read as the national system exports them (``gateway.synth.export``:
   性别 男/女, 父亲情况 外出务工 …, 儿童类别 流动儿童 …) plus common variants. Dates may be written
   ``2015-03-04``, ``2015/3/4``, ``2015.3.4``, ``2015年3月4日``, ``20150304`` or as an Excel serial
   day number. A cell that must be a code or a date and starts with ``=``, ``+``, ``-`` or ``@``
   is a formula (or a formula injection): it is data, never evaluated, and rejected
   (``formula_cell``). Every problem of the row is reported, not only the first.
3. **The ID number** (公民身份号码). Written in scientific notation (Excel stored it as a
   number and dropped digits): rejected, ``id_number_scientific``. Failing GB 11643 (check
   character, length, date, prefix): the row is kept **without** an ID number and gets the warning
   ``invalid_identifier``. Valid, but its embedded birth date or sex contradicts the typed one: the
   ID number's values win and the row gets the warning ``inconsistent_identifier``. A missing birth
   date or sex is taken from a valid ID number. A valid ID number seen on an earlier row of the
   same source: rejected, ``duplicate_id_number``.
4. **Kind** (儿童类别): read from the cell; absent or empty, the child is classified with
   :func:`gateway.domain.classify.classify` for the import's period, and a row the rules cannot
   classify (unknown successor, no rules for the province) is rejected, ``cannot_classify``.
5. **Divisions** are resolved like the store resolves them (retired codes re-routed to their one
   successor); then :func:`gateway.roster.validate`. Its errors become rejections.

Duplicate detection keeps, per source, a keyed 16-byte digest of each row and each ID number
(the key is random per read), never the values.

Household register
------------------
With ``ReadRequest.household_register`` (``tongban roster import --household-register FILE
[--register-mapping FILE]``), the reader reads the register first (:func:`adapters.household.read_register`:
a file that is not a register stops the import before any row is read) and then, for each record it
accepts, asks it what it says of the child (:func:`adapters.household.record_birth_status`): the
record is stored with ``single_birth=True`` for a single birth and ``False`` for everything else
(a sibling born within a day, not found, undecided), and the row reports the status
(``SourceRow.birth``) for the import's counts. Rejected rows are not looked up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from adapters.household import HouseholdRegister, read_register, record_birth_status
from adapters.tabular import FIELDS, Mapping, Table, load_mapping, read_table, table_from_rows
from gateway.domain import idnumber
from gateway.domain.classify import classify
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import (
    ChildKind,
    ChildRecord,
    Disability,
    DisabilityCategory,
    Guardian,
    GuardianshipSituation,
    KeyCareFlag,
    ParentSituation,
    ParentStatus,
    Provenance,
    Sex,
)
from gateway.domain.rules import RuleBook, load_rules
from gateway.errors import (
    AmbiguousSuccessor,
    ConfigError,
    GatewayError,
    InputError,
    InvalidDivisionCode,
    InvalidIdNumber,
    InvalidRecord,
    RetiredDivision,
    SuccessorUnknown,
    UnreadableRoster,
)
from gateway.roster import validate
from gateway.sources import BirthStatus, ReadRequest, RowIssue, Severity, SourceRow
from gateway.synth.export import (
    DISABILITY_CATEGORY_LABELS,
    DISABILITY_LEVEL_LABELS,
    GUARDIANSHIP_LABELS,
    KEY_CARE_LABELS,
)
from gateway.synth.generator import facts_of

log = logging.getLogger(__name__)

#: Canonical field -> (Chinese, English) label, used in reasons when the file's header is unknown.
FIELD_LABELS: dict[str, tuple[str, str]] = {
    "name": ("姓名", "name"),
    "sex": ("性别", "sex"),
    "id_number": ("公民身份号码", "ID number"),
    "birth_date": ("出生日期", "birth date"),
    "registration_division": ("户籍地", "registration division"),
    "residence_division": ("现居住地", "residence division"),
    "living_since": ("居住起始日期", "living-since date"),
    "father_situation": ("父亲情况", "father's situation"),
    "mother_situation": ("母亲情况", "mother's situation"),
    "guardianship": ("监护情况", "guardianship"),
    "guardian_name": ("监护人姓名", "guardian's name"),
    "guardian_relation": ("监护人关系", "guardian's relation"),
    "guardian_phone": ("监护人联系电话", "guardian's phone"),
    "disability_category": ("残疾类别", "disability category"),
    "disability_level": ("残疾等级", "disability level"),
    "key_care": ("重点关爱情形", "key-care situation"),
    "kind": ("儿童类别", "child category"),
}

#: Stable code -> (Chinese, English) reason; ``{zh}``/``{en}`` are the field's labels, ``{n}`` a
#: row number, ``{rule}`` the broken GB 11643 rule. No template takes a cell's value.
REASONS: dict[str, tuple[str, str]] = {
    "missing_value": ("{zh}缺失", "{en} is missing"),
    "invalid_date": ("{zh}格式无效", "{en} is not a valid date"),
    "date_in_future": ("{zh}晚于今天", "{en} is in the future"),
    "formula_cell": ("{zh}是公式而不是数据", "{en} holds a formula, not a value"),
    "invalid_value": ("{zh}的取值无法识别", "{en} is not a recognised value"),
    "invalid_division_code": ("{zh}不是有效的六位行政区划代码", "{en} is not a valid six-digit division code"),
    "retired_division": ("{zh}的区划代码已撤销", "{en} is a retired division code"),
    "division_successor_unknown": (
        "{zh}的区划代码已撤销且新代码未知",
        "{en} was retired and its successor is not known",
    ),
    "division_successor_ambiguous": (
        "{zh}的区划代码已撤销且有多个新代码，请填写现行代码",
        "{en} was retired and has several successors; give the current code",
    ),
    "id_number_scientific": (
        "公民身份号码被存为数字（科学计数法），后几位已丢失；请把该列设为文本后重新填写",
        "the ID number was stored as a number in scientific notation and its last digits are lost; "
        "format the column as text and enter it again",
    ),
    "invalid_identifier": (
        "公民身份号码无效（{rule}），按无身份证号处理",
        "invalid identifier ({rule}); the record is kept without an ID number",
    ),
    "inconsistent_identifier": (
        "{zh}与公民身份号码不一致，已采用身份证号中的{zh}",
        "inconsistent identifier: the {en} contradicts the ID number; the ID number's {en} is kept",
    ),
    "duplicate_row": ("与第{n}行完全相同", "duplicate of row {n}"),
    "duplicate_id_number": ("公民身份号码与第{n}行重复", "duplicate of row {n} (same ID number)"),
    "disability_incomplete": ("残疾类别与残疾等级须同时填写", "disability category and level go together"),
    "living_since_before_birth": ("居住起始日期早于出生日期", "the living-since date is before the birth date"),
    "born_after_period": ("出生日期晚于监测期", "the birth date is after the monitoring period"),
    "cannot_classify": (
        "无法按规则判断儿童类别，请填写儿童类别",
        "the child category cannot be determined by the rules; fill in 儿童类别",
    ),
    "invalid_record": ("记录不符合规则", "the record breaks a domain rule"),
}

_FORMULA_START = ("=", "+", "-", "@")
_SCIENTIFIC = re.compile(r"^[0-9]+(\.[0-9]*)?[Ee][+]?[0-9]+$")
_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]0{1,2}:0{2}(?::0{2})?)?$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_EXCEL_SERIAL = re.compile(r"^(\d{1,5})(?:\.0+)?$")
_EXCEL_EPOCH = date(1899, 12, 30)  # serial 1 = 1900-01-01 after Excel's 1900 leap-year bug (from March 1900)
_LIST_SEPARATORS = re.compile(r"[、,，;；/|\s]+")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def _labels(*pairs: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for pair in pairs:
        merged.update({_fold(k).lower(): v for k, v in pair.items()})
    return merged


_SEX = _labels(
    {"男": Sex.MALE, "男性": Sex.MALE, "1": Sex.MALE, "m": Sex.MALE, "male": Sex.MALE},
    {"女": Sex.FEMALE, "女性": Sex.FEMALE, "2": Sex.FEMALE, "f": Sex.FEMALE, "female": Sex.FEMALE},
)
_PARENT = _labels(
    {s.label_zh: s for s in ParentSituation},
    {s.value: s for s in ParentSituation},
    {
        "失联": ParentSituation.MISSING,
        "被遣送出境": ParentSituation.DEPORTED,
        "外出打工": ParentSituation.WORKING_AWAY,
        "外出": ParentSituation.WORKING_AWAY,
        "服刑": ParentSituation.IMPRISONED,
        "强制戒毒": ParentSituation.COMPULSORY_DETOX,
        "重残": ParentSituation.SEVERE_DISABILITY,
        "撤销监护资格": ParentSituation.GUARDIANSHIP_REVOKED,
        "": ParentSituation.UNKNOWN,
    },
)
_GUARDIANSHIP = _labels(
    {label: g for g, label in GUARDIANSHIP_LABELS.items()},
    {g.value: g for g in GuardianshipSituation},
    {"父母双方监护": GuardianshipSituation.PARENTS, "委托监护": GuardianshipSituation.ENTRUSTED},
)
_KEY_CARE = _labels({label: f for f, label in KEY_CARE_LABELS.items()}, {f.value: f for f in KeyCareFlag})
_CATEGORY = _labels(
    {label: c for c, label in DISABILITY_CATEGORY_LABELS.items()},
    {label.removesuffix("残疾"): c for c, label in DISABILITY_CATEGORY_LABELS.items()},
    {str(int(c)): c for c in DisabilityCategory},
)
_LEVEL = _labels(
    {label: n for n, label in DISABILITY_LEVEL_LABELS.items()},
    {label.removesuffix("级"): n for n, label in DISABILITY_LEVEL_LABELS.items()},
    {str(n): n for n in DISABILITY_LEVEL_LABELS},
    {f"{n}级": n for n in DISABILITY_LEVEL_LABELS},
)
_KIND = _labels(
    {k.label_zh: k for k in ChildKind},
    {k.value: k for k in ChildKind},
    {"流动": ChildKind.MIGRANT, "留守": ChildKind.LEFT_BEHIND, "非流动非留守": ChildKind.NEITHER},
)
_MISSING: Any = object()  # a cell that was present but unusable (its issue is already recorded)


class _Bad(Exception):
    """One cell's problem while converting a row (internal; becomes a RowIssue)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _attempt(convert: Callable[[str], Any], text: str) -> tuple[Any, str | None]:
    """``(value, None)``, ``(None, None)`` for an empty cell, or ``(None, problem code)``."""
    if not text.strip():
        return None, None
    try:
        return convert(text), None
    except _Bad as bad:
        return None, bad.code


def parse_date(text: str) -> date | None:
    """A ledger date, or ``None`` for an empty cell. Raises ``_Bad('invalid_date' | 'formula_cell')``."""
    folded = _fold(text)
    if not folded:
        return None
    if folded.startswith(_FORMULA_START):
        raise _Bad("formula_cell")
    for pattern in _DATE_PATTERNS:
        m = pattern.match(folded)
        if m:
            try:
                day = date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                raise _Bad("invalid_date") from None
            if day.year < 1900:
                raise _Bad("invalid_date")
            return day
    m = _EXCEL_SERIAL.match(folded)
    if m and 61 <= int(m[1]) <= 80000:  # 1900-03-01 … 2119: a serial day number from Excel
        return _EXCEL_EPOCH + timedelta(days=int(m[1]))
    raise _Bad("invalid_date")


def _code(text: str) -> str | None:
    """A six-digit division code cell (``None`` when empty). Raises ``_Bad``."""
    folded = _fold(text)
    if not folded:
        return None
    if folded.startswith(_FORMULA_START):
        raise _Bad("formula_cell")
    if len(folded) != 6 or not folded.isascii() or not folded.isdigit():
        raise _Bad("invalid_division_code")
    return folded


def parse_sex(text: str) -> Sex | None:
    """男/女 (and 男性/女性, M/F, male/female, 1/2, any case or width); ``None`` for anything else."""
    sex: Sex | None = _SEX.get(_fold(text).lower())
    return sex


def _choice(table: dict[str, Any], text: str) -> Any:
    folded = _fold(text).lower()
    if folded.startswith(_FORMULA_START) and folded not in table:
        raise _Bad("formula_cell")
    if folded not in table:
        raise _Bad("invalid_value")
    return table[folded]


@dataclass
class _Row:
    """One row being converted: collects issues against the file's column names."""

    number: int
    cells: dict[str, str]
    columns: dict[str, str]
    issues: list[RowIssue] = dataclasses.field(default_factory=list)

    def issue(self, name: str, code: str, *, warning: bool = False, **extra: object) -> None:
        zh_label, en_label = FIELD_LABELS.get(name, ("", ""))
        zh, en = REASONS.get(code, REASONS["invalid_record"])
        fill: dict[str, object] = {"zh": zh_label, "en": en_label, **extra}
        self.issues.append(
            RowIssue(
                row=self.number,
                column=self.columns.get(name, ""),
                code=code,
                reason_zh=zh.format(**fill),
                reason_en=en.format(**fill),
                severity=Severity.WARNING if warning else Severity.REJECTED,
            )
        )

    @property
    def rejected(self) -> bool:
        return any(i.severity is Severity.REJECTED for i in self.issues)

    def get(self, name: str, convert: Callable[[str], Any], *, required: bool = False) -> Any:
        text = self.cells.get(name, "")
        if not text.strip():
            if required:
                self.issue(name, "missing_value")
            return None if not required else _MISSING
        try:
            return convert(text)
        except _Bad as bad:
            self.issue(name, bad.code)
            return _MISSING


class LedgerSource:
    """The rows of one :class:`~adapters.tabular.Table` as records (implements
    :class:`gateway.sources.RosterSource`)."""

    def __init__(
        self,
        table: Table,
        *,
        node_id: str,
        period: MonitoringPeriod,
        today: date,
        divisions: DivisionTable | None = None,
        rules: RuleBook | None = None,
        register: HouseholdRegister | None = None,
    ) -> None:
        self.table = table
        self.node_id = node_id
        self.period = period
        self.today = today
        self.divisions = divisions or DivisionTable.load_default()
        self.rules = rules or load_rules()
        self.register = register

    @property
    def source(self) -> str:
        return self.table.source

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(self.table.columns[name] for name in FIELDS if name in self.table.columns)

    @property
    def register_summary(self) -> str | None:
        return self.register.summary.describe() if self.register is not None else None

    def rows(self) -> Iterator[SourceRow]:
        key = secrets.token_bytes(32)
        seen_rows: dict[bytes, int] = {}
        seen_ids: dict[bytes, int] = {}
        imported_at = datetime.now(UTC)

        def digest(*parts: str) -> bytes:
            return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), key=key, digest_size=16).digest()

        for number, cells in self.table.rows():
            original = {self.table.columns[n]: cells.get(n, "") for n in FIELDS if n in self.table.columns}
            row = _Row(number, cells, self.table.columns)
            fingerprint = digest(*(cells.get(n, "") for n in FIELDS))
            first = seen_rows.setdefault(fingerprint, number)
            if first != number:
                row.issue("", "duplicate_row", n=first)
                yield SourceRow(number, None, tuple(row.issues), original)
                continue
            record = self._convert(row, imported_at)
            if record is not None and record.id_number is not None:
                first = seen_ids.setdefault(digest(record.id_number), number)
                if first != number:
                    row.issue("id_number", "duplicate_id_number", n=first)
                    record = None
            if row.rejected:
                record = None
            birth = None
            if record is not None and self.register is not None:
                birth = record_birth_status(self.register, record)
                record = dataclasses.replace(record, single_birth=birth is BirthStatus.SINGLE)
            yield SourceRow(number, record, tuple(row.issues), original, birth)

    # --- one row -------------------------------------------------------------------------------

    def _convert(self, row: _Row, imported_at: datetime) -> ChildRecord | None:
        name = row.cells.get("name", "").strip()  # kept as written: matching folds names itself
        if not name:
            row.issue("name", "missing_value")
        rid = self._id_number(row)
        typed_birth, birth_problem = _attempt(parse_date, row.cells.get("birth_date", ""))
        typed_sex, sex_problem = _attempt(lambda t: _choice(_SEX, t), row.cells.get("sex", ""))
        for field_name, problem in (("birth_date", birth_problem), ("sex", sex_problem)):
            # A formula is never data, even where the ID number could stand in for the value.
            if problem == "formula_cell" or (problem and rid is None):
                row.issue(field_name, problem)
        birth: date | None = typed_birth
        sex: Sex | None = typed_sex
        if rid is not None:
            # The ID number's birth date and sex win; a contradiction is reported, not fatal.
            if birth_problem == "invalid_date" or (typed_birth is not None and typed_birth != rid.birth_date):
                row.issue("birth_date", "inconsistent_identifier", warning=True)
            if sex_problem == "invalid_value" or (typed_sex is not None and typed_sex != rid.sex):
                row.issue("sex", "inconsistent_identifier", warning=True)
            birth, sex = rid.birth_date, rid.sex
        else:
            if birth is None and not birth_problem:
                row.issue("birth_date", "missing_value")
            if sex is None and not sex_problem:
                row.issue("sex", "missing_value")
        if isinstance(birth, date) and birth > self.today:
            row.issue("birth_date", "date_in_future")
        registration = row.get("registration_division", _code, required=True)
        residence = row.get("residence_division", _code, required=True)
        living_since = row.get("living_since", parse_date)
        if isinstance(living_since, date) and living_since > self.today:
            row.issue("living_since", "date_in_future")
        father = row.get("father_situation", lambda t: _choice(_PARENT, t)) or ParentSituation.UNKNOWN
        mother = row.get("mother_situation", lambda t: _choice(_PARENT, t)) or ParentSituation.UNKNOWN
        guardianship = row.get("guardianship", lambda t: _choice(_GUARDIANSHIP, t), required=True)
        category = row.get("disability_category", lambda t: _choice(_CATEGORY, t))
        level = row.get("disability_level", lambda t: _choice(_LEVEL, t))
        if (category is None) != (level is None):
            row.issue("disability_category" if category is None else "disability_level", "disability_incomplete")
        key_care = row.get("key_care", self._key_care) or frozenset()
        kind = row.get("kind", lambda t: _choice(_KIND, t))
        guardian_name = row.cells.get("guardian_name", "").strip()
        if row.rejected or birth is None or sex is None:
            return None
        if isinstance(living_since, date) and living_since < birth:
            row.issue("living_since", "living_since_before_birth")
            return None

        record = ChildRecord(
            record_id=str(uuid.uuid4()),
            id_number=rid.number if rid is not None else None,
            name=name,
            sex=sex,
            birth_date=birth,
            registration_division=registration,
            residence_division=residence,
            living_since=living_since,
            guardianship=guardianship,
            father=ParentStatus(father),
            mother=ParentStatus(mother),
            kind=kind or ChildKind.NEITHER,
            provenance=Provenance(self.source, imported_at, self.node_id, row.number),
            guardian=Guardian(
                guardian_name,
                _fold(row.cells.get("guardian_relation", "")),
                _fold(row.cells.get("guardian_phone", "")) or None,
            )
            if guardian_name
            else None,
            disability=Disability(category, level) if category is not None else None,
            key_care=key_care,
        )
        if kind is None:
            classified = self._classified(row, record)
            if classified is None:
                return None
            record = classified
        return self._validated(row, record)

    def _id_number(self, row: _Row) -> idnumber.ResidentId | None:
        text = _fold(row.cells.get("id_number", ""))
        if not text:
            return None
        if _SCIENTIFIC.match(text):
            row.issue("id_number", "id_number_scientific")
            return None
        if text.startswith(_FORMULA_START):
            row.issue("id_number", "formula_cell")
            return None
        try:
            return idnumber.parse(text, today=self.today, division_existed=self.divisions.existed)
        except InvalidIdNumber as exc:
            row.issue("id_number", "invalid_identifier", warning=True, rule=exc.reason.value)
            return None

    @staticmethod
    def _key_care(text: str) -> frozenset[KeyCareFlag]:
        parts = [p for p in _LIST_SEPARATORS.split(_fold(text)) if p]
        flags = set()
        for part in parts:
            if part in ("无", "否"):
                continue
            flags.add(_choice(_KEY_CARE, part))
        return frozenset(flags)

    def _classified(self, row: _Row, record: ChildRecord) -> ChildRecord | None:
        try:
            outcome = classify(facts_of(record), self.period, self.rules, self.divisions)
        except InvalidRecord:
            row.issue("birth_date", "born_after_period")
            return None
        except (InputError, ConfigError):
            row.issue("kind", "cannot_classify")
            return None
        return dataclasses.replace(record, kind=outcome.kind)

    def _validated(self, row: _Row, record: ChildRecord) -> ChildRecord | None:
        for name in ("registration_division", "residence_division"):
            try:
                self.divisions.resolve(getattr(record, name))
            except RetiredDivision:
                row.issue(name, "retired_division")
            except SuccessorUnknown:
                row.issue(name, "division_successor_unknown")
            except AmbiguousSuccessor:
                row.issue(name, "division_successor_ambiguous")
            except InvalidDivisionCode:
                row.issue(name, "invalid_division_code")
        if row.rejected:
            return None
        try:
            good, _ = validate(record, self.divisions, today=self.today)
        except GatewayError as exc:
            log.debug("row %d rejected by validate: %s", row.number, exc.code)
            row.issue("", "invalid_record")
            return None
        return good


# --- readers (entry points ``tongban.readers``) -------------------------------------------------


def _mapping(request: ReadRequest) -> Mapping | None:
    return load_mapping(request.mapping) if request.mapping is not None else None


def _register(request: ReadRequest) -> HouseholdRegister | None:
    """The request's household register, read whole before the ledger (``None`` without one).
    Raises ``NotARoster`` / ``UnreadableRoster`` for the file, ``MappingInvalid`` for its mapping."""
    if request.household_register is None:
        return None
    mapping = load_mapping(request.register_mapping) if request.register_mapping is not None else None
    return read_register(request.household_register, mapping=mapping)


def read_file(request: ReadRequest) -> LedgerSource:
    """The ``csv`` and ``xlsx`` readers: a county file through :func:`adapters.tabular.read_table`."""
    if request.path is None:
        raise UnreadableRoster("no file was given")
    table = read_table(request.path, mapping=_mapping(request), encoding=request.encoding)
    return LedgerSource(
        table, node_id=request.node_id, period=request.period, today=request.today, register=_register(request)
    )


def read_sql(request: ReadRequest) -> LedgerSource:
    """The ``sql`` reader: a query (or the mapping's ``table``) through SQLAlchemy, streamed.

    The URL never appears in a message or in the source name (it may hold a password); database
    errors are reported by their type only (a driver's message can quote row values).
    """
    import sqlalchemy as sa  # imported here: file imports need not load the SQL toolkit

    mapping = _mapping(request)
    if request.sql_url is None:
        raise UnreadableRoster("no SQL URL was given")
    if request.sql_query is not None:
        statement: Any = sa.text(request.sql_query)
        source = "sql:query"
    elif mapping is not None and mapping.table:
        statement = sa.select(sa.text("*")).select_from(sa.table(mapping.table))
        source = f"sql:{mapping.table}"
    else:
        raise UnreadableRoster("give --query, or a mapping file naming a table")
    url = request.sql_url

    def run() -> Iterator[tuple[int, list[object]]]:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(statement)
                for number, values in enumerate(result, start=1):
                    yield number, list(values)
        except sa.exc.SQLAlchemyError as exc:
            raise UnreadableRoster(f"the SQL source failed ({type(exc).__name__})") from None
        finally:
            engine.dispose()

    try:
        engine = sa.create_engine(url)
    except (sa.exc.SQLAlchemyError, ValueError) as exc:
        raise UnreadableRoster(f"the SQL URL is not usable ({type(exc).__name__})") from None
    try:
        with engine.connect() as conn:
            headers = list(conn.execute(statement).keys())
    except sa.exc.SQLAlchemyError as exc:
        raise UnreadableRoster(f"the SQL source failed ({type(exc).__name__})") from None
    finally:
        engine.dispose()
    table = table_from_rows(source, headers, run, mapping=mapping)
    return LedgerSource(
        table, node_id=request.node_id, period=request.period, today=request.today, register=_register(request)
    )


__all__ = ["FIELD_LABELS", "REASONS", "LedgerSource", "parse_date", "read_file", "read_sql"]
