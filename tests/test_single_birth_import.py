"""``tongban roster import --household-register``: each record is stored with what the register says.

On SQLite and PostgreSQL (the ``db_url`` fixture): the answer (``ChildRecord.single_birth``) is
stored sealed with the record — never in a plain column, and not in clear in the database file —
and read back through both the whole record and the view reconciliation uses; a record sealed
before the field existed reads back as ``None``; the summary gives counts only; the node decides
exactly as ``tongban match --household-register`` does on the same files. The rules themselves
are tested in ``tests/test_household_register.py``, reconciliation with them in
``tests/test_reconcile_single_births.py``. Synthetic data only (tests.factories, Faker zh_CN;
``gateway.synth.ledgers``); failures name labels, codes and counts, never a value.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.household import read_register
from adapters.match_cli import entries_of
from adapters.tabular import read_table
from gateway import config
from gateway.cli import main
from gateway.domain.codec import record_from_json, record_to_json, view_from_json
from gateway.domain.records import ChildKind, ChildRecord
from gateway.errors import InvalidRecord
from gateway.node import Node, open_node
from gateway.store import repository
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.repository import SqlChildRepository
from gateway.store.schema import child_records
from gateway.synth.export import CSV_HEADER, csv_row
from gateway.synth.ledgers import LedgerSpec, generate_ledgers, write_ledger_files
from gateway.wire import record_from_wire, record_to_wire
from tests.factories import child

PERIOD = "2026Q3"
REGISTRATION, RESIDENCE = "511321", "500157"
REGISTER_HEADER = ("户号", "姓名", "公民身份号码", "出生日期", "与户主关系")

# The keys of a record's sealed JSON before ``single_birth`` existed, in their order.
PRE_CHANGE_KEYS = (
    "record_id", "id_number", "name", "sex", "birth_date", "registration_division", "residence_division",
    "living_since", "guardianship", "father", "mother", "kind", "guardian", "disability", "key_care", "provenance",
)  # fmt: skip


def _kid(n: int, born: date) -> ChildRecord:
    return child(n, registration=REGISTRATION, residence=RESIDENCE, kind=ChildKind.LEFT_BEHIND, born=born)


# The ledger, by label, in file order (row 1 first), and what the register says of each child.
LEDGER: dict[str, ChildRecord] = {
    "only_child": _kid(1, date(2014, 3, 9)),
    "twin_a": _kid(3, date(2016, 8, 20)),
    "twin_b": _kid(5, date(2016, 8, 20)),
    "not_in_register": _kid(7, date(2013, 1, 17)),
    "incomplete_household": _kid(9, date(2015, 6, 1)),
}
EXPECTED = {
    "only_child": True,
    "twin_a": False,
    "twin_b": False,
    "not_in_register": False,
    "incomplete_household": False,  # a member's birth date is unreadable: it could be a co-twin
}


def _register_row(household: str, label: str) -> list[str]:
    kid = LEDGER[label]
    return [household, kid.name, kid.id_number or "", kid.birth_date.isoformat(), "子"]


REGISTER = [
    ["0001", "某某", "", "1984-10-02", "户主"],
    _register_row("0001", "only_child"),
    _register_row("0002", "twin_a"),
    _register_row("0002", "twin_b"),
    _register_row("0003", "incomplete_household"),
    ["0003", "某甲", "", "不详", "子"],  # row 6: a member without a readable birth date
]
COUNTS_LINE = "single births: 1 records (2 with a sibling born within a day, 1 not found, 1 undecided)"


def _write(path: Path, header: Iterable[str], rows: Iterable[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def node_dir(tmp_path: Path, db_url: str) -> Path:
    d = tmp_path / "node"
    assert main(["node", "init", str(d), "--id", "sc-nanbu", "--division", REGISTRATION, "--database-url", db_url]) == 0
    return d


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    ledger = _write(tmp_path / "台账.csv", CSV_HEADER, [csv_row(r) for r in LEDGER.values()])
    return ledger, _write(tmp_path / "户籍登记.csv", REGISTER_HEADER, REGISTER)


@pytest.fixture
def node(node_dir: Path) -> Iterator[Node]:
    opened = open_node(config.load(node_dir / "node.toml"))
    yield opened
    opened.engine.dispose()


def _import(node_dir: Path, *args: str) -> int:
    return main(["roster", "import", "--config", str(node_dir), "--period", PERIOD, "--quiet", *args])


def _secrets() -> list[str]:
    return [v for r in LEDGER.values() for v in (r.name, r.id_number, r.birth_date.isoformat()) if v]


def _flags(node: Node, period: str = PERIOD) -> tuple[dict[str, bool | None], dict[str, bool | None]]:
    """``single_birth`` by label, read as whole records and as views (what reconciliation reads)."""
    labels = dict(enumerate(LEDGER, start=1))
    records = list(node.children.iter_period(period))
    label_of = {r.record_id: labels[r.provenance.source_row or 0] for r in records}
    views = {label_of[v.record_id]: v.single_birth for v in node.children.iter_views(period)}
    return {label_of[r.record_id]: r.single_birth for r in records}, views


def test_import_with_a_register_stores_the_answer_sealed(
    node_dir: Path, node: Node, files: tuple[Path, Path], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, register = files
    capsys.readouterr()
    assert _import(node_dir, str(ledger), "--household-register", str(register)) == 0
    out, err = capsys.readouterr()
    assert "accepted 5" in out
    assert "household register: 6 rows, 3 households (1 skipped: 1 without a readable birth date [row 6])" in out
    assert COUNTS_LINE in out
    assert not any(secret in out + err for secret in _secrets())

    records, views = _flags(node)
    assert records == views == EXPECTED

    # Sealed: no plain column holds it, and nothing of it (nor a name) is in clear underneath.
    assert not any("single" in column.name for column in child_records.columns)
    with node.engine.connect() as conn:
        rows = conn.execute(select(child_records)).all()
    raw = b"".join(repr(tuple(row)).encode("utf-8") + bytes(row.pii_sealed) for row in rows)
    if db_url.startswith("sqlite:///"):
        node.engine.dispose()  # checkpoint: everything is in the database file
        database = Path(db_url.removeprefix("sqlite:///"))
        raw += b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"single_birth" not in raw
    assert not any(secret.encode("utf-8") in raw for secret in _secrets())


def test_without_a_register_nothing_is_decided(
    node_dir: Path, node: Node, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, _ = files
    capsys.readouterr()
    assert _import(node_dir, str(ledger)) == 0
    out = capsys.readouterr().out
    assert "household register" not in out
    assert "single births" not in out
    assert _flags(node) == (dict.fromkeys(LEDGER), dict.fromkeys(LEDGER))


def test_a_mapping_describes_another_register_layout(
    node_dir: Path, node: Node, tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, _ = files
    register = _write(tmp_path / "户口簿.csv", ["户口簿编号", *REGISTER_HEADER[1:]], REGISTER)
    mapping = tmp_path / "户口簿.toml"
    mapping.write_text('[columns]\n"户口簿编号" = "household_number"\n', encoding="utf-8")
    args = ["--household-register", str(register), "--register-mapping", str(mapping)]
    assert _import(node_dir, str(ledger), *args) == 0
    assert COUNTS_LINE in capsys.readouterr().out
    assert _flags(node)[0] == EXPECTED


def test_what_is_refused_stores_nothing(
    node_dir: Path, node: Node, tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ledger, register = files
    # A register mapping without a register, and a register for JSON Lines: usage errors.
    assert _import(node_dir, str(ledger), "--register-mapping", str(tmp_path / "x.toml")) == 2
    assert "--register-mapping needs --household-register" in capsys.readouterr().err
    jsonl = tmp_path / "ledger.jsonl"
    jsonl.write_text(json.dumps(record_to_json(LEDGER["only_child"]), ensure_ascii=False) + "\n", encoding="utf-8")
    assert _import(node_dir, str(jsonl), "--household-register", str(register)) == 2
    assert "not JSON Lines" in capsys.readouterr().err
    # A file that is not a register (the ledger itself): refused before a row is read.
    assert _import(node_dir, str(ledger), "--household-register", str(ledger)) == 65
    assert "[not_a_roster]" in capsys.readouterr().err
    assert node.children.count(PERIOD) == 0


def test_the_node_decides_as_tongban_match_does(
    node_dir: Path, node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a generated ledger and its register (typos, lost and mistyped ID numbers, twins whose
    co-twin lives elsewhere), every stored record has the single-birth answer ``tongban match
    --household-register`` gives its row."""
    pair = generate_ledgers(
        LedgerSpec(rows=400, overlap=0.7, seed=5, period=PERIOD, registration_division=REGISTRATION)
    )
    generated = write_ledger_files(pair, tmp_path / "generated")
    capsys.readouterr()
    assert _import(node_dir, str(generated.registration), "--household-register", str(generated.register)) == 0
    out = capsys.readouterr().out
    entries, counts = entries_of(
        read_table(generated.registration), os.urandom(32), register=read_register(generated.register)
    )
    assert counts.births is not None
    assert f"single births: {counts.births.describe('records')}" in out
    expected = {int(e.ref): e.single_birth for e in entries}
    stored = {r.provenance.source_row or 0: r.single_birth for r in node.children.iter_period(PERIOD)}
    assert len(stored) == len(expected) == 400
    differ = sorted(row for row, single in stored.items() if single is not expected[row])
    assert differ == [], f"rows {differ[:20]} differ from tongban match"
    assert 0 < sum(1 for single in stored.values() if not single) < len(stored)


# --- the sealed JSON --------------------------------------------------------------------------------


@pytest.fixture
def repo(db_url: str) -> Iterator[SqlChildRepository]:
    engine = make_engine(db_url)
    migrate(engine)
    yield SqlChildRepository(engine, DataKeyring.generate())
    engine.dispose()


def test_a_record_sealed_before_the_field_existed_reads_as_none(
    repo: SqlChildRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unknown, the key is left out: the JSON is exactly the pre-change shape.
    plain = LEDGER["only_child"]
    assert tuple(record_to_json(plain)) == PRE_CHANGE_KEYS
    decided = [dataclasses.replace(LEDGER[k], single_birth=v) for k, v in EXPECTED.items()]
    assert [tuple(record_to_json(r))[-1] for r in decided] == ["single_birth"] * len(decided)

    # Records sealed by the code of before (its JSON has no such key), whatever they would say now.
    def before(record: ChildRecord) -> dict[str, object]:
        return {k: v for k, v in record_to_json(record).items() if k in PRE_CHANGE_KEYS}

    with monkeypatch.context() as patch:
        patch.setattr(repository, "record_to_json", before)
        repo.add_many(decided, period="2026Q2")
    repo.add_many(decided, period=PERIOD)  # and by today's code
    old = {r.record_id: r for r in repo.iter_period("2026Q2")}
    assert {r.single_birth for r in old.values()} == {None}
    assert {v.single_birth for v in repo.iter_views("2026Q2")} == {None}
    assert all(old[r.record_id] == dataclasses.replace(r, single_birth=None) for r in decided)
    assert [repo.get(r.record_id, period=PERIOD) for r in decided] == decided
    assert {v.record_id: v.single_birth for v in repo.iter_views(PERIOD)} == {
        r.record_id: r.single_birth for r in decided
    }


@pytest.mark.parametrize("value", ["yes", 1, 0, [], {}])
def test_single_birth_in_json_is_a_boolean_or_nothing(value: object) -> None:
    data = {**record_to_json(LEDGER["only_child"]), "single_birth": value}
    for read in (record_from_json, view_from_json):
        with pytest.raises(InvalidRecord, match="wrong type"):
            read(data)
    data["single_birth"] = None
    assert record_from_json(data).single_birth is None
    assert view_from_json(data).single_birth is None


def test_the_answer_never_travels() -> None:
    """The wire's ChildRecord (the county API's ``SubmitRoster``) has no such field: a record
    submitted there is stored undecided, and a decided record loses the answer on the wire."""
    decided = dataclasses.replace(LEDGER["only_child"], single_birth=True)
    back = record_from_wire(record_to_wire(decided))
    assert back.single_birth is None
    assert back == dataclasses.replace(decided, single_birth=None)
    assert "single" not in str(record_to_wire(decided).DESCRIPTOR.fields_by_name.keys())
