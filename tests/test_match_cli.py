"""``tongban match`` on CSV ledgers written by the synthetic generator, with known truth."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from pathlib import Path

import pytest

from adapters.calibrate_cli import score_links
from adapters.match_cli import entries_of, match_tables, parse_birth_date, parse_sex, summary
from adapters.tabular import read_table
from bench.matching import register_counts
from gateway.cli import main
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord, Sex
from gateway.domain.rules import load_rules
from gateway.synth import SynthSpec, generate
from gateway.synth.export import write_csv
from gateway.synth.ledgers import LedgerFiles, LedgerPair, LedgerSpec, generate_ledgers, write_ledger_files


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


# --- --household-register: single births from the registration county's register ---------------------

SUMMARY_LABELS = ("registration rows:", "residence rows:", "matched:", "review:", "not found:", "time:")


@pytest.fixture(scope="module")
def generated_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[LedgerPair, LedgerFiles]:
    pair = generate_ledgers(LedgerSpec(rows=2000, overlap=0.7, seed=2026))
    return pair, write_ledger_files(pair, tmp_path_factory.mktemp("generated"))


def _labels(printed: str) -> list[str]:
    return [line.split(":")[0] + ":" for line in printed.splitlines()]


def _no_personal_data(printed: str) -> bool:
    """Counts and labels only: no Chinese character (a name) and no run of digits as long as an ID
    number or a date (row numbers and counts are shorter)."""
    return not re.search(r"[\u3400-\u9fff]|\d{8,}|\d{4}-\d{2}-\d{2}", printed)


def test_without_a_register_the_summary_and_entries_are_as_before(
    ledgers: tuple[Path, Path, dict[int, int], int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg, res, _, _ = ledgers
    assert main(["match", str(reg), str(res), "--out", str(tmp_path / "links.csv")]) == 0
    assert tuple(_labels(capsys.readouterr().out)) == SUMMARY_LABELS
    entries, counts = entries_of(read_table(reg), bytes(32))
    assert counts.births is None
    assert not any(e.single_birth or e.name_edits for e in entries)
    run = match_tables(read_table(reg), read_table(res), key=bytes(32))
    assert run.register is None
    assert tuple(_labels(summary(run))) == SUMMARY_LABELS


def test_register_option_links_typos_of_single_births_and_never_a_twin(
    generated_pair: tuple[LedgerPair, LedgerFiles], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pair, files = generated_pair
    assert pair.lone_twins > 0  # the trap is there: a co-twin alone in the residence ledger
    without, with_register = tmp_path / "without.csv", tmp_path / "with.csv"
    argv = ["match", str(files.registration), str(files.residence)]
    assert main([*argv, "--out", str(without)]) == 0
    capsys.readouterr()
    assert main([*argv, "--out", str(with_register), "--household-register", str(files.register)]) == 0
    printed = capsys.readouterr().out
    assert _no_personal_data(printed)
    labels = _labels(printed)
    assert tuple(labels[:2] + labels[4:]) == SUMMARY_LABELS
    assert labels[2:4] == ["register:", "single births:"]
    births = register_counts(printed)  # what bench.matching reads from the summary
    assert births.single + births.sibling + births.not_found + births.undecided == 2000
    assert births.sibling > 0
    assert births.not_found <= 5  # rows without a valid ID number are found by name and date
    before, after = score_links(pair, without), score_links(pair, with_register)
    assert after.sibling_auto_matched.get("twin", 0) == 0
    assert after.sibling_auto_matched.get("sibling", 0) == 0
    assert after.overall.f1 > before.overall.f1
    assert after.overall.precision >= 0.995


def test_register_errors(
    generated_pair: tuple[LedgerPair, LedgerFiles], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, files = generated_pair
    argv = ["match", str(files.registration), str(files.residence), "--out", str(tmp_path / "x.csv")]
    assert main([*argv, "--household-register", str(files.registration)]) == 65  # a ledger, not a register
    assert "户号" in capsys.readouterr().err
    mapping = tmp_path / "register.toml"
    mapping.write_text('[columns]\n"户口簿编号" = "household_number"\n', encoding="utf-8")
    assert main([*argv, "--register-mapping", str(mapping)]) == 2  # a mapping for no register
    mapping.write_text('[columns]\n"户口簿编号" = "no_such_field"\n', encoding="utf-8")
    assert main([*argv, "--household-register", str(files.register), "--register-mapping", str(mapping)]) == 78
