"""County ledger import (issue 5, item 1): CSV in every encoding Excel writes, XLSX, mappings, SQL;
row-level rejections and warnings, the quarantine file, and ``tongban roster import`` end to end.

All data is synthetic (``gateway.synth`` and Faker zh_CN); assertions check that no name or ID
number reaches the command's output.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import stat
import zipfile
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest

from adapters.ledger import LedgerSource, parse_date, read_file
from adapters.tabular import FIELDS, Table, load_mapping, read_table
from gateway.cli import main
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord, Sex
from gateway.domain.rules import load_rules
from gateway.errors import MappingInvalid, NotARoster, UnreadableRoster
from gateway.sources import ReadRequest, Severity, SourceRow
from gateway.synth import CSV_HEADER, SynthSpec, generate
from gateway.synth.export import csv_row
from tests import factories

PERIOD = MonitoringPeriod.parse("2026Q3")
TODAY = date(2026, 11, 20)
COL = {name: i for i, name in enumerate(CSV_HEADER)}


@pytest.fixture(scope="module")
def records() -> list[ChildRecord]:
    """A synthetic population with migrant, left-behind and other children, all with ID numbers."""
    spec = SynthSpec(11, PERIOD, ("500157",), ("511321", "500157"), 30, missing_id_rate=0.0)
    return list(generate(spec, DivisionTable.load_default(), load_rules()))


def rows_of(records: Iterable[ChildRecord]) -> list[list[str]]:
    return [csv_row(r) for r in records]


def write_csv(
    path: Path, rows: Iterable[list[str]], *, encoding: str = "utf-8-sig", header: Iterable[str] = CSV_HEADER
) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def source(path: Path, **kwargs: object) -> LedgerSource:
    return read_file(ReadRequest(node_id="cq-test", period=PERIOD, today=TODAY, path=path, **kwargs))  # type: ignore[arg-type]


def read_all(path: Path, **kwargs: object) -> list[SourceRow]:
    return list(source(path, **kwargs).rows())


def codes(rows: Iterable[SourceRow]) -> list[tuple[int, str, str, Severity]]:
    return [(i.row, i.column, i.code, i.severity) for r in rows for i in r.issues]


# --- reading: encodings, XLSX, headers ---------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "gbk"])
def test_csv_in_every_encoding_reads_back_the_same_children(
    tmp_path: Path, records: list[ChildRecord], encoding: str
) -> None:
    usable = [r for r in records if _encodes(csv_row(r), encoding)]
    assert len(usable) > 20
    path = write_csv(tmp_path / "ledger.csv", rows_of(usable), encoding=encoding)
    got = read_all(path)
    assert codes(got) == []
    assert [(r.record.id_number, r.record.kind, r.record.birth_date) for r in got if r.record] == [
        (r.id_number, r.kind, r.birth_date) for r in usable
    ]
    assert {r.kind for r in usable} == set(ChildKind)


def _encodes(cells: list[str], encoding: str) -> bool:
    try:
        "".join(cells).encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def test_encoding_argument_overrides_the_guess(tmp_path: Path, records: list[ChildRecord]) -> None:
    path = write_csv(tmp_path / "ledger.csv", rows_of(records[:3]), encoding="gb18030")
    assert len(read_all(path, encoding="gb18030")) == 3
    with pytest.raises(NotARoster):
        read_table(path, encoding="utf-16")


def test_xlsx_with_dates_and_numbers_as_excel_stores_them(tmp_path: Path, records: list[ChildRecord]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(CSV_HEADER))
    for r in records:
        cells: list[object] = list(csv_row(r))
        cells[COL["出生日期"]] = datetime.combine(r.birth_date, datetime.min.time())
        cells[COL["户籍地"]] = int(r.registration_division)
        cells[COL["现居住地"]] = float(r.residence_division)
        sheet.append(cells)
    book.save(tmp_path / "ledger.xlsx")
    got = read_all(tmp_path / "ledger.xlsx")
    assert codes(got) == []
    assert [r.record.id_number for r in got if r.record] == [r.id_number for r in records]
    assert source(tmp_path / "ledger.xlsx").source == "xlsx:ledger.xlsx"


def test_header_only_file_is_an_empty_roster(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "empty.csv", [])
    table = read_table(path)
    assert list(table.rows()) == []
    assert table.columns["id_number"] == "公民身份号码"


def test_headers_are_folded_and_aliases_recognised(tmp_path: Path) -> None:
    header = ["＊姓名 ", "身份证号码", "出生年月日", "户籍地区划代码", "现居住地区划代码", "来本地居住时间", "监护人"]
    path = write_csv(tmp_path / "aliases.csv", [], header=header)
    table = read_table(path)
    assert table.columns == {
        "name": "＊姓名",
        "id_number": "身份证号码",
        "birth_date": "出生年月日",
        "registration_division": "户籍地区划代码",
        "residence_division": "现居住地区划代码",
        "living_since": "来本地居住时间",
        "guardian_name": "监护人",
    }
    assert set(table.columns) <= set(FIELDS)


@pytest.mark.parametrize(
    ("content", "name"),
    [
        pytest.param(b"", "empty.csv", id="empty"),
        pytest.param(b"   \r\n", "blank.csv", id="blank"),
        pytest.param(bytes(range(256)) * 40, "garbage.csv", id="binary"),
        pytest.param("产品,单价,数量\r\n苹果,3,5\r\n".encode(), "goods.csv", id="csv_of_something_else"),
        pytest.param("姓名,备注\r\n张,无\r\n".encode(), "names_only.csv", id="no_id_or_birth_column"),
        pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "old.xls", id="old_xls"),
        pytest.param(b"not a zip at all", "fake.xlsx", id="fake_xlsx"),
        pytest.param(b"PK\x03\x04 broken zip", "broken.xlsx", id="broken_xlsx"),
    ],
)
def test_files_that_are_not_rosters_are_refused(tmp_path: Path, content: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NotARoster) as caught:
        read_table(path)
    assert caught.value.exit_code == 65


def test_bad_bytes_after_the_sample_stop_the_read(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records) * 200  # well past the 64 KiB sample
    path = write_csv(tmp_path / "mixed.csv", rows, encoding="utf-8")
    path.write_bytes(path.read_bytes() + "张三,男\r\n".encode("gbk"))
    with pytest.raises(UnreadableRoster):
        list(read_table(path).rows())


# --- rows: rules, warnings, rejections -----------------------------------------------------------------


def _ledger(tmp_path: Path, rows: list[list[str]], **kwargs: object) -> list[SourceRow]:
    return read_all(write_csv(tmp_path / "ledger.csv", rows), **kwargs)


def test_a_bad_row_in_the_middle_is_rejected_alone(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:5])
    rows[2][COL["户籍地"]] = "12345"
    got = _ledger(tmp_path, rows)
    assert [r.record is not None for r in got] == [True, True, False, True, True]
    assert codes(got) == [(3, "户籍地", "invalid_division_code", Severity.REJECTED)]
    issue = got[2].issues[0]
    assert issue.reason_zh == "户籍地不是有效的六位行政区划代码"
    assert issue.reason_en == "registration division is not a valid six-digit division code"


def test_duplicated_rows_name_the_first_row(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:3])
    same_id = list(rows[0])
    same_id[COL["姓名"]] = factories.fake.name()
    got = _ledger(tmp_path, [*rows, list(rows[1]), same_id])
    assert codes(got) == [
        (4, "", "duplicate_row", Severity.REJECTED),
        (5, "公民身份号码", "duplicate_id_number", Severity.REJECTED),
    ]
    assert got[3].issues[0].reason_en == "duplicate of row 2"
    assert got[4].issues[0].reason_zh == "公民身份号码与第1行重复"


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("户籍地", "=500157", "formula_cell"),
        ("现居住地", "+500157", "formula_cell"),
        ("居住起始日期", "=DATE(2020,1,1)", "formula_cell"),
        ("出生日期", "@SUM(A1)", "formula_cell"),
        ("公民身份号码", '=HYPERLINK("x")', "formula_cell"),
        ("性别", "-1", "formula_cell"),
    ],
)
def test_formula_cells_are_data_and_rejected_where_a_code_or_date_is_needed(
    tmp_path: Path, records: list[ChildRecord], column: str, value: str, code: str
) -> None:
    rows = rows_of(records[:2])
    rows[1][COL[column]] = value
    got = _ledger(tmp_path, rows)
    assert got[1].record is None
    assert (2, column, code, Severity.REJECTED) in codes(got)


def test_a_formula_looking_name_is_kept_as_text(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:1])
    rows[0][COL["姓名"]] = "=" + rows[0][COL["姓名"]]
    (got,) = _ledger(tmp_path, rows)
    assert got.record is not None
    assert got.record.name.startswith("=")


def test_an_invalid_id_number_is_a_warning_and_counts_as_missing(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:2])
    number = rows[1][COL["公民身份号码"]]
    rows[1][COL["公民身份号码"]] = number[:17] + ("0" if number[17] != "0" else "1")
    got = _ledger(tmp_path, rows)
    assert got[1].record is not None
    assert got[1].record.id_number is None
    assert got[1].record.birth_date == records[1].birth_date
    assert codes(got) == [(2, "公民身份号码", "invalid_identifier", Severity.WARNING)]
    assert "bad_check_character" in got[1].issues[0].reason_en


def test_an_inconsistent_id_number_wins_with_a_warning(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:1])
    truth = records[0]
    rows[0][COL["出生日期"]] = "2001/2/3"
    rows[0][COL["性别"]] = "女" if truth.sex is Sex.MALE else "男"
    (got,) = _ledger(tmp_path, rows)
    assert got.record is not None
    assert (got.record.birth_date, got.record.sex, got.record.id_number) == (
        truth.birth_date,
        truth.sex,
        truth.id_number,
    )
    assert codes([got]) == [
        (1, "出生日期", "inconsistent_identifier", Severity.WARNING),
        (1, "性别", "inconsistent_identifier", Severity.WARNING),
    ]
    assert got.issues[0].reason_en.startswith("inconsistent identifier")


def test_birth_date_and_sex_come_from_the_id_number_when_missing(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:1])
    rows[0][COL["出生日期"]] = rows[0][COL["性别"]] = ""
    (got,) = _ledger(tmp_path, rows)
    assert got.record is not None
    assert (got.record.birth_date, got.record.sex) == (records[0].birth_date, records[0].sex)
    assert got.issues == ()


def test_without_an_id_number_birth_date_and_sex_are_required(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:1])
    rows[0][COL["公民身份号码"]] = rows[0][COL["出生日期"]] = ""
    rows[0][COL["性别"]] = "未知"
    (got,) = _ledger(tmp_path, rows)
    assert got.record is None
    assert sorted(codes([got])) == [
        (1, "出生日期", "missing_value", Severity.REJECTED),
        (1, "性别", "invalid_value", Severity.REJECTED),
    ]


def test_without_the_kind_column_children_are_classified_by_the_rules(
    tmp_path: Path, records: list[ChildRecord]
) -> None:
    header = [h for h in CSV_HEADER if h != "儿童类别"]
    rows = [cells[:-1] for cells in rows_of(records)]
    got = read_all(write_csv(tmp_path / "nokind.csv", rows, header=header))
    assert codes(got) == []
    assert [r.record.kind for r in got if r.record] == [r.kind for r in records]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-03-04", date(2015, 3, 4)),
        ("2015/3/4", date(2015, 3, 4)),
        ("2015.03.04", date(2015, 3, 4)),
        ("2015年3月4日", date(2015, 3, 4)),
        ("２０１５年３月４日", date(2015, 3, 4)),
        ("20150304", date(2015, 3, 4)),
        ("42067", date(2015, 3, 4)),  # Excel serial day number
        ("2015-03-04 00:00:00", date(2015, 3, 4)),
        ("", None),
    ],
)
def test_dates_in_the_ways_ledgers_write_them(text: str, expected: date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["2015-02-30", "2015/13/1", "3/4/2015", "昨天", "=TODAY()", "1899-12-31"])
def test_dates_that_are_not_dates(text: str) -> None:
    with pytest.raises(Exception, match=r"invalid_date|formula_cell"):
        parse_date(text)


# --- XLSX: ID numbers stored as numbers -----------------------------------------------------------------


def _xlsx(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def _numeric_id_child() -> ChildRecord:
    """A child whose ID number has no X (so it can be stored as a number)."""
    n = 1
    while True:
        record = factories.child(n)
        if record.id_number and record.id_number.isdigit():
            return record
        n += 2


def test_an_id_number_excel_stored_as_a_number_is_unusable(tmp_path: Path) -> None:
    child = _numeric_id_child()
    assert child.id_number is not None
    cells: list[object] = list(csv_row(child))
    cells[COL["公民身份号码"]] = int(child.id_number)  # openpyxl, like Excel, keeps 15-17 digits
    path = _xlsx(tmp_path / "number.xlsx", CSV_HEADER, [cells])
    (got,) = read_all(path)
    assert got.record is None
    assert codes([got]) == [(1, "公民身份号码", "id_number_scientific", Severity.REJECTED)]


def test_scientific_notation_in_a_csv_is_unusable(tmp_path: Path, records: list[ChildRecord]) -> None:
    rows = rows_of(records[:1])
    rows[0][COL["公民身份号码"]] = "5.00157E+17"
    (got,) = _ledger(tmp_path, rows)
    assert codes([got]) == [(1, "公民身份号码", "id_number_scientific", Severity.REJECTED)]


def test_an_exact_whole_number_id_is_read_as_text(tmp_path: Path) -> None:
    """Some tools (WPS, database exports) store the 18 digits exactly as a number: that is usable."""
    child = _numeric_id_child()
    assert child.id_number is not None
    cells: list[object] = list(csv_row(child))
    cells[COL["公民身份号码"]] = 1.0  # placeholder number, replaced by the exact digits below
    path = _xlsx(tmp_path / "exact.xlsx", CSV_HEADER, [cells])
    patched = tmp_path / "patched.xlsx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(patched, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<v>1</v>", f"<v>{child.id_number}</v>".encode())
            dst.writestr(item, data)
    (got,) = read_all(patched)
    assert got.record is not None
    assert got.record.id_number == child.id_number


# --- mapping files ------------------------------------------------------------------------------------


MAPPING = """
sheet = "花名册"
header_row = 2

[columns]
"学生" = "name"
"证件号" = "id_number"
"XB" = "sex"
"户口所在" = "registration_division"
"住址代码" = "residence_division"
"来此时间" = "living_since"
"父" = "father_situation"
"母" = "mother_situation"

[values.sex]
"1" = "男"
"2" = "女"

[defaults]
guardianship = "父母监护"
"""


def test_a_mapping_describes_another_layout(tmp_path: Path, records: list[ChildRecord]) -> None:
    mapping = tmp_path / "layout.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "说明"
    sheet = book.create_sheet("花名册")
    sheet.append(["某县流动儿童花名册"])
    sheet.append(["学生", "证件号", "XB", "户口所在", "住址代码", "来此时间", "父", "母", "备注"])
    chosen = [r for r in records if r.living_since is not None][:5]
    for r in chosen:
        sheet.append(
            [
                r.name,
                r.id_number,
                "1" if r.sex is Sex.MALE else "2",
                r.registration_division,
                r.residence_division,
                r.living_since.strftime("%Y年%m月%d日") if r.living_since else "",
                r.father.situation.label_zh,
                r.mother.situation.label_zh,
                "",
            ]
        )
    book.save(tmp_path / "custom.xlsx")
    got = read_all(tmp_path / "custom.xlsx", mapping=mapping)
    assert [i for i in codes(got) if i[3] is Severity.REJECTED] == []
    assert [(r.record.sex, r.record.living_since) for r in got if r.record] == [(r.sex, r.living_since) for r in chosen]


@pytest.mark.parametrize(
    "text",
    [
        "this is = not toml [",
        'unknown = "key"',
        '[columns]\n"姓名" = "nickname"',
        "header_row = 0",
        'encoding = "no-such-codec"',
        '[values.sex]\n"1" = 1',
    ],
)
def test_bad_mapping_files_are_configuration_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingInvalid) as caught:
        load_mapping(path)
    assert caught.value.exit_code == 78


# --- the command ------------------------------------------------------------------------------------


@pytest.fixture
def node_dir(tmp_path: Path, db_url: str) -> Path:
    d = tmp_path / "node"
    assert main(["node", "init", str(d), "--id", "cq-test", "--division", "500157", "--database-url", db_url]) == 0
    return d


def _import(node_dir: Path, *args: str) -> int:
    return main(["roster", "import", "--config", str(node_dir), "--period", PERIOD.label, "--quiet", *args])


def _count(node_dir: Path, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    assert main(["roster", "summary", "--config", str(node_dir), "--period", PERIOD.label]) == 0
    out = capsys.readouterr().out
    return sum(int(line.split()[-1]) for line in out.splitlines()[1:])


def _secrets(records: Iterable[ChildRecord]) -> list[str]:
    return [v for r in records for v in (r.name, r.id_number) if v]


def test_import_stores_good_rows_quarantines_the_bad_one_and_exits_65(
    node_dir: Path, tmp_path: Path, records: list[ChildRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = rows_of(records[:6])
    rows[3][COL["出生日期"]] = "2015-13-45"
    rows[3][COL["公民身份号码"]] = ""
    path = write_csv(tmp_path / "ledger.csv", rows)
    assert _import(node_dir, str(path)) == 65
    out, err = capsys.readouterr()
    assert "csv:ledger.csv: period 2026Q3: accepted 5" in out
    assert "rejected 1" in out
    assert "rejections by code: invalid_date 1" in out
    assert "row 4, column 出生日期: rejected [invalid_date] 出生日期格式无效 / birth date is not a valid date" in err
    quarantine = tmp_path / "ledger.csv.quarantine.csv"
    assert f"quarantine: {quarantine}" in out
    for secret in _secrets(records[:6]):
        assert secret not in out + err
    assert stat.S_IMODE(os.stat(quarantine).st_mode) == 0o600
    raw = quarantine.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    (line,) = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert (line["行号 row"], line["列 column"], line["代码 code"]) == ("4", "出生日期", "invalid_date")
    assert line["姓名"] == records[3].name  # the county's own cells, handed back to fix
    assert _count(node_dir, capsys) == 5


def test_all_or_nothing_stores_nothing(
    node_dir: Path, tmp_path: Path, records: list[ChildRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = rows_of(records[:4])
    rows[1][COL["现居住地"]] = "abc"
    path = write_csv(tmp_path / "ledger.csv", rows)
    quarantine = tmp_path / "q" / "rejected.csv"
    quarantine.parent.mkdir()
    assert _import(node_dir, str(path), "--all-or-nothing", "--quarantine", str(quarantine)) == 65
    assert "stored nothing" in capsys.readouterr().out
    assert quarantine.exists()
    assert _count(node_dir, capsys) == 0


def test_import_of_an_xlsx_with_warnings_only_exits_0(
    node_dir: Path, tmp_path: Path, records: list[ChildRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    rows: list[list[object]] = [list(r) for r in rows_of(records)]
    number = str(rows[0][COL["公民身份号码"]])
    rows[0][COL["公民身份号码"]] = number[:17] + ("0" if number[17] != "0" else "1")
    path = _xlsx(tmp_path / "台账.xlsx", CSV_HEADER, rows)
    assert _import(node_dir, str(path)) == 0
    out = capsys.readouterr().out
    assert f"accepted {len(records)}" in out
    assert "warnings by code: invalid_identifier 1" in out
    assert _count(node_dir, capsys) == len(records)


def test_import_of_something_that_is_not_a_roster(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 8)
    assert _import(node_dir, str(path)) == 65
    assert "[not_a_roster]" in capsys.readouterr().err


def test_jsonl_still_imports_and_honours_all_or_nothing(
    node_dir: Path, tmp_path: Path, records: list[ChildRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = tmp_path / "r.jsonl"
    assert main(["synth", "--households", "5", "--seed", "3", "--period", "2026Q3", "--format", "jsonl",
                 "--residence", "500157", "--registration", "511321", "--out", str(jsonl)]) == 0  # fmt: skip
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines, "not json"]) + "\n", encoding="utf-8")
    assert _import(node_dir, str(broken), "--all-or-nothing") == 65
    assert _count(node_dir, capsys) == 0
    assert _import(node_dir, str(jsonl)) == 0
    assert _count(node_dir, capsys) == len(lines)


def test_sql_source_through_a_query_and_through_a_mapped_table(
    node_dir: Path, tmp_path: Path, records: list[ChildRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "county.db"
    with sqlite3.connect(db) as conn:
        columns = ", ".join(f'"{h}" TEXT' for h in CSV_HEADER)
        conn.execute(f"CREATE TABLE ledger ({columns})")
        placeholders = ", ".join("?" * len(CSV_HEADER))
        conn.executemany(f"INSERT INTO ledger VALUES ({placeholders})", rows_of(records))  # noqa: S608 - constant
    conn.close()
    url = f"sqlite:///{db}"
    half = len(records) // 2
    query = f"SELECT * FROM ledger LIMIT {half}"  # noqa: S608 - a constant test query
    assert _import(node_dir, "--sql", url, "--query", query) == 0
    out = capsys.readouterr().out
    assert f"sql:query: period 2026Q3: accepted {half}" in out
    assert str(db) not in out
    mapping = tmp_path / "table.toml"
    mapping.write_text('table = "ledger"\n', encoding="utf-8")
    # The first half is already stored: the second import is refused whole, and stores nothing.
    assert _import(node_dir, "--sql", url, "--mapping", str(mapping)) == 74
    assert _count(node_dir, capsys) == half
    assert _import(node_dir, "--sql", url, "--query", "SELECT * FROM no_such_table") == 65
    assert "[unreadable_roster]" in capsys.readouterr().err


def test_reading_a_table_twice_gives_the_same_rows(tmp_path: Path, records: list[ChildRecord]) -> None:
    table: Table = read_table(write_csv(tmp_path / "ledger.csv", rows_of(records[:4])))
    assert list(table.rows()) == list(table.rows())
