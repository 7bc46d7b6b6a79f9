"""``tongban match`` on CSV ledgers written by the synthetic generator, with known truth."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.match_cli import match_tables, parse_birth_date, parse_sex
from adapters.tabular import read_table
from gateway.cli import main
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord, Sex
from gateway.domain.rules import load_rules
from gateway.synth import SynthSpec, generate
from gateway.synth.export import write_csv


def _records() -> list[ChildRecord]:
    spec = SynthSpec(
        seed=21,
        period=MonitoringPeriod.parse("2026Q3"),
        residence_divisions=("500157",),
        registration_divisions=("511321",),
        households=120,
    )
    return list(generate(spec, DivisionTable.load_default(), load_rules()))


def _write(path: Path, records: list[ChildRecord]) -> None:
    with path.open("wb") as fh:
        write_csv(records, fh)


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[int, int], int]:
    """Registration ledger = all children; residence ledger = every other child, reversed, with
    the ID number removed from every third (fuzzy stage) and a broken check character in one."""
    records = _records()
    kept = records[::2][::-1]
    residence: list[ChildRecord] = []
    for k, r in enumerate(kept):
        if k % 3 == 0:
            r = replace(r, id_number=None)
        residence.append(r)
    truth = {records.index(r) + 1: k + 1 for k, r in enumerate(kept)}
    base = tmp_path_factory.mktemp("match")
    reg, res = base / "registration.csv", base / "residence.csv"
    _write(reg, records)
    _write(res, residence)
    return reg, res, truth, len(records)


def test_match_command_writes_links_that_agree_with_the_truth(
    ledgers: tuple[Path, Path, dict[int, int], int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg, res, truth, n = ledgers
    out = tmp_path / "links.csv"
    assert main(["match", str(reg), str(res), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows, "no links written"
    assert set(rows[0]) == {"registration_row", "residence_row", "band", "score"}
    matched = {int(r["registration_row"]): int(r["residence_row"]) for r in rows if r["band"] == "matched"}
    wrong = [k for k, v in matched.items() if truth.get(k) != v]
    assert not wrong, f"{len(wrong)} wrong automatic links"
    found = {int(r["registration_row"]) for r in rows}
    assert len(found & set(truth)) >= 0.97 * len(truth)
    for r in rows:
        assert r["band"] in {"matched", "review"}
        assert len(r["score"].split(".")[1]) == 4
    printed = capsys.readouterr().out
    assert f"registration rows: {n}" in printed
    assert "matched:" in printed
    assert "not found:" in printed


def test_match_tables_in_process(ledgers: tuple[Path, Path, dict[int, int], int]) -> None:
    reg, res, truth, n = ledgers
    run = match_tables(read_table(reg), read_table(res), key=bytes(32))
    assert run.registration.rows == n
    assert run.residence.rows == len(truth)
    assert run.result.band_count(run.links[0].band) >= 1
    assert len(run.result.unmatched_right) <= 0.03 * len(truth)


def test_bad_thresholds_are_a_usage_error(ledgers: tuple[Path, Path, dict[int, int], int], tmp_path: Path) -> None:
    reg, res, _, _ = ledgers
    assert (
        main(["match", str(reg), str(res), "--out", str(tmp_path / "x.csv"), "--auto", "0.5", "--review", "0.9"]) == 2
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2015-06-01", (2015, 6, 1)), ("2015/6/1", (2015, 6, 1)), ("2015年6月1日", (2015, 6, 1)),
     ("20150601", (2015, 6, 1)), ("２０１５-０６-０１", (2015, 6, 1)), ("2015-02-30", None), ("unknown", None)],
)  # fmt: skip
def test_parse_birth_date(text: str, expected: tuple[int, int, int] | None) -> None:
    got = parse_birth_date(text)
    assert (None if got is None else (got.year, got.month, got.day)) == expected


def test_parse_sex() -> None:
    assert (parse_sex("男"), parse_sex("女"), parse_sex("F"), parse_sex("?")) == (
        Sex.MALE,
        Sex.FEMALE,
        Sex.FEMALE,
        None,
    )
