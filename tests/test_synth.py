"""The synthetic ledger generator (``gateway.synth``) and ``tongban synth``.

These tests never print personal data, even synthetic: assertions compare counts and booleans,
and failure messages name record *positions*, never a name or an ID number.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random

import pytest

from gateway.cli import main
from gateway.domain import idnumber
from gateway.domain.classify import Reason, classify
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord, Sex
from gateway.domain.rules import RuleBook, load_rules
from gateway.errors import ConfigError, InputError, InvalidDivisionCode, InvalidIdNumber, RetiredDivision
from gateway.synth import (
    CSV_HEADER,
    Household,
    SynthSpec,
    facts_of,
    generate,
    generate_households,
    record_from_json,
    record_to_json,
    roster_for,
    write_csv,
    write_jsonl,
)
from gateway.synth.generator import MIN_SIBLING_GAP_DAYS, _Serials, owner_of
from gateway.synth.names import MIDDLE_DOT, NameMaker, NameStyle
from gateway.synth.weighted import Weighted

PERIOD = MonitoringPeriod.parse("2026Q4")
CHONGQING_CHANGE = date(2025, 11, 1)
RESIDENCES = ("500157", "440306")  # 两江新区 (Chongqing), 宝安区 (Shenzhen)
REGISTRATIONS = (
    "500235",  # 云阳县
    "500236",  # 奉节县
    "500109",  # 北碚区: took part of old 渝北 500112; moves to 两江新区 are exempt
    "500157",  # 两江新区: children born before Nov 2025 carry 500112 / 500105
    "500106",  # 沙坪坝区: central district, exempt moves to 两江新区
    "511324",  # 仪陇县
    "511623",  # 邻水县
    "520524",  # 织金县: recoded from 522425 in Dec 2011
    "653121",  # 疏附县 (Kashgar): Uyghur-style names
    "540102",  # 城关区 (Lhasa): Tibetan-style names
)
BOM = b"\xef\xbb\xbf"


@pytest.fixture(scope="module")
def table() -> DivisionTable:
    return DivisionTable.load_default()


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def _spec(households: int, seed: int = 7, **changes: object) -> SynthSpec:
    spec = SynthSpec(
        seed=seed,
        period=PERIOD,
        residence_divisions=RESIDENCES,
        registration_divisions=REGISTRATIONS,
        households=households,
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def households(table: DivisionTable, rules: RuleBook) -> list[Household]:
    """3,000 households (about 5,000 children): the big set most tests look at."""
    return list(generate_households(_spec(3000), table, rules))


@pytest.fixture(scope="module")
def records(households: list[Household]) -> list[ChildRecord]:
    return [child for household in households for child in household.children]


def _positions(records: Sequence[ChildRecord], bad: Callable[[ChildRecord], bool]) -> list[int]:
    """Indexes of records for which ``bad`` holds: safe to show in a failure message."""
    return [i for i, record in enumerate(records) if bad(record)]


def _csv_bytes(records: Iterator[ChildRecord] | list[ChildRecord]) -> bytes:
    buffer = io.BytesIO()
    write_csv(records, buffer)
    return buffer.getvalue()


# --- ID numbers --------------------------------------------------------------------------------------


def test_every_id_number_is_valid_with_a_real_prefix(records: list[ChildRecord], table: DivisionTable) -> None:
    def invalid(record: ChildRecord) -> bool:
        if record.id_number is None:
            return False
        try:
            idnumber.parse(record.id_number, division_existed=table.existed)
        except InvalidIdNumber:
            return True
        return False

    assert len(records) > 4000
    assert _positions(records, invalid) == []


def test_id_numbers_are_unique_over_the_whole_set(records: list[ChildRecord]) -> None:
    numbers = [r.id_number for r in records if r.id_number is not None]
    duplicates = sum(count - 1 for count in collections.Counter(numbers).values() if count > 1)
    assert duplicates == 0


def test_sex_and_birth_date_agree_with_the_id_number(records: list[ChildRecord]) -> None:
    def disagrees(record: ChildRecord) -> bool:
        if record.id_number is None:
            return False
        parsed = idnumber.parse(record.id_number)
        return parsed.sex is not record.sex or parsed.birth_date != record.birth_date

    assert _positions(records, disagrees) == []


def test_id_prefix_is_where_the_number_was_issued(records: list[ChildRecord]) -> None:
    """Retired codes for children born before their county's change; never a code that did not
    exist yet; and some prefixes differ from the registration county (never route by them)."""
    before = [r for r in records if r.registration_division == "500157" and r.birth_date < CHONGQING_CHANGE]
    before_prefixes = collections.Counter(r.id_number[:6] for r in before if r.id_number)
    assert before_prefixes["500112"] > before_prefixes["500105"] > 0
    assert before_prefixes["500157"] == 0  # 两江新区 did not exist before Nov 2025

    after = [r for r in records if r.registration_division == "500157" and r.birth_date >= date(2025, 12, 1)]
    assert any(r.id_number and r.id_number.startswith("500157") for r in after)

    beibei = collections.Counter(
        r.id_number[:6] for r in records if r.registration_division == "500109" and r.id_number
    )
    assert beibei["500112"] > 0
    assert beibei["500109"] > beibei["500112"]  # only the part taken from old 渝北

    zhijin_old = [r for r in records if r.registration_division == "520524" and r.birth_date < date(2011, 12, 1)]
    assert _positions(zhijin_old, lambda r: r.id_number is not None and r.id_number.startswith("520524")) == []

    elsewhere = sum(1 for r in records if r.id_number and r.id_number[:6] != r.registration_division)
    assert elsewhere > len(records) * 0.05


def test_missing_id_numbers_at_about_the_configured_rate(records: list[ChildRecord]) -> None:
    missing = sum(r.id_number is None for r in records)
    assert 0.003 < missing / len(records) < 0.025  # spec default 0.01


@pytest.mark.parametrize(("rate", "expect_missing"), [(0.0, "none"), (1.0, "all")])
def test_missing_id_rate_extremes(table: DivisionTable, rules: RuleBook, rate: float, expect_missing: str) -> None:
    out = list(generate(_spec(100, missing_id_rate=rate), table, rules))
    missing = sum(r.id_number is None for r in out)
    assert missing == (0 if expect_missing == "none" else len(out))


# --- families --------------------------------------------------------------------------------------


def _twin_pairs(household: Household) -> list[tuple[ChildRecord, ChildRecord]]:
    kids = household.children
    return [(a, b) for a, b in itertools.pairwise(kids) if a.birth_date == b.birth_date]


def test_twins_share_a_birth_date_and_consecutive_sequence_numbers(households: list[Household]) -> None:
    pairs = [pair for h in households for pair in _twin_pairs(h)]
    births = sum(len({c.birth_date for c in h.children}) for h in households)
    assert 0.005 < len(pairs) / births < 0.04  # TWIN_RATE 2% of births (fewer in 3-birth households)
    numbered = [(a, b) for a, b in pairs if a.id_number and b.id_number]
    assert numbered

    def not_consecutive(pair: tuple[ChildRecord, ChildRecord]) -> bool:
        a, b = (p.id_number or "" for p in pair)
        step = int(b[14:17]) - int(a[14:17])
        return a[:14] != b[:14] or step not in (1, 2) or (step == 2) != (pair[0].sex is pair[1].sex)

    assert [i for i, pair in enumerate(numbered) if not_consecutive(pair)] == []


def test_siblings_share_family_name_registration_and_parents(households: list[Household]) -> None:
    def inconsistent(h: Household) -> bool:
        first = h.children[0]
        for child in h.children:
            if (
                child.registration_division != h.registration_division
                or child.residence_division != h.residence_division
                or child.father.situation is not first.father.situation
                or child.mother.situation is not first.mother.situation
                or child.guardian != first.guardian
            ):
                return True
            if h.style is NameStyle.HAN and not child.name.startswith(h.family_name):
                return True
            if h.style is NameStyle.UYGHUR and not child.name.endswith(MIDDLE_DOT + h.family_name):
                return True
        return False

    assert [h.index for h in households if inconsistent(h)] == []
    sizes = collections.Counter(len(h.children) for h in households)
    assert set(sizes) <= {1, 2, 3}
    assert all(sizes[n] > 0 for n in (1, 2, 3))


def test_siblings_are_born_at_least_ten_months_apart(households: list[Household]) -> None:
    def too_close(h: Household) -> bool:
        dates = sorted({c.birth_date for c in h.children})
        return any((b - a).days < MIN_SIBLING_GAP_DAYS for a, b in itertools.pairwise(dates))

    assert [h.index for h in households if too_close(h)] == []


# --- names -----------------------------------------------------------------------------------------


def test_same_full_name_recurs_for_different_children(records: list[ChildRecord]) -> None:
    by_name = collections.defaultdict(set)
    for record in records:
        by_name[record.name].add(record.record_id)
    shared = sum(1 for ids in by_name.values() if len(ids) > 1)
    assert shared >= 10


def test_minority_names_use_the_middle_dot_where_registered(records: list[ChildRecord]) -> None:
    dotted = [r for r in records if MIDDLE_DOT in r.name]
    assert any(r.registration_province == "65" for r in dotted)
    assert any(r.registration_province == "54" for r in dotted)
    assert _positions(dotted, lambda r: r.registration_province not in ("65", "54")) == []
    # Tibetan names are written both ways: 次仁·卓玛 and 次仁卓玛.
    tibet = [r for r in records if r.registration_province == "54"]
    undotted_four = sum(1 for r in tibet if MIDDLE_DOT not in r.name and len(r.name) >= 4)
    assert undotted_four > 0


def test_about_one_child_in_six_has_a_one_character_given_name(households: list[Household]) -> None:
    given = [len(c.name) - len(h.family_name) for h in households if h.style is NameStyle.HAN for c in h.children]
    share = sum(1 for n in given if n == 1) / len(given)
    assert 0.11 < share < 0.23
    assert set(given) <= {1, 2}


def test_surname_table_is_ordered_by_share_and_marks_special_readings() -> None:
    maker = NameMaker.default()
    surnames = maker.surnames
    assert [s.text for s in surnames[:10]] == list("王李张刘陈杨赵黄周吴")
    assert len([s for s in surnames if not s.compound]) >= 100
    compounds = {s.text for s in surnames if s.compound}
    assert {"欧阳", "司马", "诸葛", "上官"} <= compounds
    special = {s.text: s.pinyin for s in surnames if s.special_reading}
    assert {
        "曾": "zeng",
        "单": "shan",
        "解": "xie",
        "仇": "qiu",
        "区": "ou",
        "查": "zha",
    }.items() <= special.items()


def test_surnames_follow_their_shares_and_rare_ones_occur() -> None:
    maker = NameMaker.default()
    rng = Random(5)
    draws = collections.Counter(maker.surname(rng) for _ in range(300_000))
    assert draws["王"] > draws["周"] > draws["曾"] > draws["单"] > 0
    assert all(draws[s] > 0 for s in ("解", "仇", "区", "查", "欧阳"))
    assert 0.055 < draws["王"] / 300_000 < 0.085
    # Regional: 冉 is a Chongqing surname.
    chongqing = collections.Counter(maker.surname(rng, "50") for _ in range(100_000))
    assert chongqing["冉"] / 100_000 > 3 * draws["冉"] / 300_000


# --- classification ---------------------------------------------------------------------------------


def test_every_kind_is_what_classify_says(records: list[ChildRecord], table: DivisionTable, rules: RuleBook) -> None:
    assert _positions(records, lambda r: classify(facts_of(r), PERIOD, rules, table).kind is not r.kind) == []


def test_kinds_in_plausible_proportions(records: list[ChildRecord]) -> None:
    share = {kind: n / len(records) for kind, n in collections.Counter(r.kind for r in records).items()}
    assert 0.25 < share[ChildKind.MIGRANT] < 0.6
    assert 0.1 < share[ChildKind.LEFT_BEHIND] < 0.35
    assert 0.15 < share[ChildKind.NEITHER] < 0.55


@pytest.mark.parametrize(
    "reason",
    [
        Reason.AWAY_LESS_THAN_6_MONTHS,  # moved recently: not yet migrant
        Reason.EXEMPT_MOVE,  # 沙坪坝/北碚 → 两江新区
        Reason.ONE_AWAY_OTHER_INCAPABLE,
        Reason.PARENT_SITUATION_UNKNOWN,
        Reason.WITH_GUARDIAN,  # moved with grandparents
        Reason.AGED_16_OR_OVER,  # stale ledger entries
    ],
)
def test_the_edge_cases_occur(
    records: list[ChildRecord], table: DivisionTable, rules: RuleBook, reason: Reason
) -> None:
    assert any(reason in classify(facts_of(r), PERIOD, rules, table).reasons for r in records)


def test_key_care_and_disabilities_at_low_rates(records: list[ChildRecord]) -> None:
    disabled = [r for r in records if r.disability is not None]
    flagged = [r for r in records if r.key_care]
    assert 0 < len(disabled) < 0.03 * len(records)
    assert 0 < len(flagged) < 0.2 * len(records)
    assert {1, 2, 3, 4} >= {r.disability.level for r in disabled if r.disability}


def test_guardians_and_phones_look_right(records: list[ChildRecord]) -> None:
    phone = re.compile(r"1[3-9][0-9]{9}")
    with_guardian = [r for r in records if r.guardian is not None]
    assert (
        _positions(
            with_guardian,
            lambda r: bool(r.guardian and r.guardian.phone and not phone.fullmatch(r.guardian.phone)),
        )
        == []
    )
    relations = collections.Counter(r.guardian.relation for r in with_guardian if r.guardian)
    assert {"父亲", "母亲", "祖父母", "外祖父母", "其他亲属"} <= set(relations)
    left_behind = [r for r in records if r.kind is ChildKind.LEFT_BEHIND]
    assert _positions(left_behind, lambda r: r.guardian is not None and r.guardian.relation in ("父亲", "母亲")) == []


# --- ownership -------------------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["500157", "440306", "500236", "653121", "500109"])
def test_roster_for_keeps_exactly_the_owned_records(records: list[ChildRecord], owner: str) -> None:
    roster = list(roster_for(records, owner))
    expected = [
        r
        for r in records
        if (r.kind is ChildKind.MIGRANT and r.residence_division == owner)
        or (r.kind is ChildKind.LEFT_BEHIND and r.registration_division == owner)
    ]
    assert [r.record_id for r in roster] == [r.record_id for r in expected]
    assert _positions(roster, lambda r: owner_of(r) != owner) == []


def test_roster_of_a_residence_county_is_migrants_and_of_a_home_county_left_behind(
    records: list[ChildRecord],
) -> None:
    residence = list(roster_for(records, "440306"))
    home = list(roster_for(records, "500236"))
    assert residence
    assert {r.kind for r in residence} == {ChildKind.MIGRANT}
    assert ChildKind.LEFT_BEHIND in {r.kind for r in home}


# --- determinism and streaming ------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(table: DivisionTable, rules: RuleBook) -> None:
    first = _csv_bytes(generate(_spec(300, seed=11), table, rules))
    again = _csv_bytes(generate(_spec(300, seed=11), table, rules))
    other = _csv_bytes(generate(_spec(300, seed=12), table, rules))
    assert first == again
    assert first != other


def test_output_does_not_depend_on_the_process_hash_seed(table: DivisionTable, rules: RuleBook) -> None:
    here = hashlib.sha256(_csv_bytes(generate(_spec(150, seed=3), table, rules))).hexdigest()
    script = (
        "import hashlib, io, sys\n"
        "from gateway.domain.divisions import DivisionTable\n"
        "from gateway.domain.period import MonitoringPeriod\n"
        "from gateway.domain.rules import load_rules\n"
        "from gateway.synth import SynthSpec, generate, write_csv\n"
        f"spec = SynthSpec(3, MonitoringPeriod.parse('2026Q4'), {RESIDENCES!r}, {REGISTRATIONS!r}, 150)\n"
        "buf = io.BytesIO()\n"
        "write_csv(generate(spec, DivisionTable.load_default(), load_rules()), buf)\n"
        "print(hashlib.sha256(buf.getvalue()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    there = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, timeout=120
    ).stdout.strip()
    assert here == there


def test_a_smaller_run_is_a_prefix_of_a_larger_one(table: DivisionTable, rules: RuleBook) -> None:
    small = [r.record_id for r in generate(_spec(120), table, rules)]
    large = [r.record_id for r in generate(_spec(400), table, rules)]
    assert large[: len(small)] == small


def test_record_ids_are_unique_uuids_and_provenance_is_fixed(records: list[ChildRecord]) -> None:
    assert len({r.record_id for r in records}) == len(records)
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r.record_id)
        for r in records
    )
    provenance = {r.provenance for r in records}
    assert len(provenance) == 1
    (only,) = provenance
    assert only.source == "synth:seed=7"
    assert only.node_id == "synth"
    assert only.imported_at == datetime(2026, 10, 1, tzinfo=UTC)
    assert only.imported_at.tzinfo is not None


def test_generate_streams(table: DivisionTable, rules: RuleBook) -> None:
    started = time.perf_counter()
    first = next(generate(_spec(10**9), table, rules))
    assert time.perf_counter() - started < 5.0
    assert first.record_id


# --- spec checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"households": -1}, InputError),
        ({"missing_id_rate": 1.5}, InputError),
        ({"missing_id_rate": -0.1}, InputError),
        ({"residence_divisions": ()}, InputError),
        ({"registration_divisions": ()}, InputError),
        ({"registration_divisions": ("5001",)}, InvalidDivisionCode),
        ({"residence_divisions": ("５００１５７",)}, InvalidDivisionCode),  # full-width digits
        ({"node_id": ""}, InputError),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], error: type[Exception]) -> None:
    valid = _spec(1)
    with pytest.raises(error):
        replace(valid, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "code", "error"),
    [
        ("residence_divisions", "500112", RetiredDivision),  # 渝北区, retired Nov 2025
        ("registration_divisions", "500105", RetiredDivision),  # 江北区
        ("registration_divisions", "999999", InvalidDivisionCode),  # never existed
        ("residence_divisions", "500000", InvalidDivisionCode),  # a province, not a county
    ],
)
def test_codes_are_checked_against_the_table_before_any_record(
    table: DivisionTable, rules: RuleBook, field: str, code: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        generate(replace(_spec(5), **{field: (code,)}), table, rules)  # type: ignore[arg-type]


# --- writers ---------------------------------------------------------------------------------------


def test_csv_has_bom_exact_header_and_one_row_per_record(records: list[ChildRecord]) -> None:
    sample = records[:500]
    buffer = io.BytesIO()
    assert write_csv(sample, buffer) == len(sample)
    data = buffer.getvalue()
    assert data.startswith(BOM)
    assert data[len(BOM) :].split(b"\r\n", 1)[0].decode("utf-8") == ",".join(CSV_HEADER)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == len(sample) + 1
    column = {name: i for i, name in enumerate(CSV_HEADER)}
    body = rows[1:]
    ids_match = [row[column["公民身份号码"]] for row in body] == [r.id_number or "" for r in sample]
    assert ids_match  # compared as a bool so that a failure never prints ID numbers
    assert {row[column["儿童类别"]] for row in body} <= {"流动儿童", "留守儿童", "其他"}
    assert {row[column["性别"]] for row in body} <= {"男", "女"}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[column["出生日期"]]) for row in body)
    assert all(re.fullmatch(r"\d{6}", row[column["现居住地"]]) for row in body)
    assert not buffer.closed  # the caller's stream is left open


def test_jsonl_round_trips(records: list[ChildRecord]) -> None:
    sample = records[:300]
    buffer = io.BytesIO()
    assert write_jsonl(sample, buffer) == len(sample)
    lines = buffer.getvalue().decode("utf-8").splitlines()
    assert len(lines) == len(sample)
    back = [record_from_json(json.loads(line)) for line in lines]
    assert back == sample
    assert [record_to_json(r) for r in back] == [json.loads(line) for line in lines]


# --- the command line ----------------------------------------------------------------------------------


_ID_LIKE = re.compile(r"\d{17}[\dX]")


def test_cli_writes_csv_and_a_summary_without_personal_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ledger.csv"
    rc = main(["synth", "--households", "50", "--period", "2026Q4", "--seed", "9", "--out", str(out)])
    assert rc == 0
    data = out.read_bytes()
    assert data.startswith(BOM)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("synth:")]
    assert len(summary) == 1
    assert f"{len(rows) - 1} records" in summary[0]
    names = {row[0] for row in rows[1:]}
    assert not _ID_LIKE.search(err)
    assert not any(name in err for name in names)
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.csv"]  # no temporary file left


def test_cli_is_deterministic_and_owner_filters(tmp_path: Path) -> None:
    paths = [tmp_path / f"{n}.jsonl" for n in ("a", "b", "owned")]
    common = ["synth", "--households", "80", "--period", "2026Q4", "--format", "jsonl", "--seed", "4"]
    assert main([*common, "--out", str(paths[0])]) == 0
    assert main([*common, "--out", str(paths[1])]) == 0
    assert main([*common, "--owner", "500157", "--out", str(paths[2])]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    everything = [record_from_json(json.loads(line)) for line in paths[0].read_text("utf-8").splitlines()]
    owned = [record_from_json(json.loads(line)) for line in paths[2].read_text("utf-8").splitlines()]
    assert owned == list(roster_for(everything, "500157"))
    assert owned


def test_cli_writes_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["synth", "--households", "3", "--period", "2026Q4"]) == 0
    assert capsysbinary.readouterr().out.startswith(BOM + "姓名".encode())


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--residence", "500112"], 65),  # retired
        (["--registration", "123456"], 65),  # never existed
        (["--owner", "500105"], 65),  # retired
        (["--period", "2026Q5"], 65),
    ],
)
def test_cli_refuses_bad_input_before_writing(tmp_path: Path, args: list[str], exit_code: int) -> None:
    out = tmp_path / "ledger.csv"
    assert main(["synth", "--households", "5", "--out", str(out), *args]) == exit_code
    assert list(tmp_path.iterdir()) == []


def test_sex_is_only_male_or_female(records: list[ChildRecord]) -> None:
    assert {r.sex for r in records} == {Sex.MALE, Sex.FEMALE}


# --- building blocks -----------------------------------------------------------------------------------


def test_sequence_numbers_fill_a_crowded_day_then_refuse() -> None:
    serials = _Serials()
    rng = Random(1)
    born = date(2015, 3, 1)
    boys = [serials.take(rng, "500112", born, [Sex.MALE])[0] for _ in range(500)]
    assert sorted(boys) == list(range(1, 1000, 2))  # every odd number once
    with pytest.raises(ConfigError):
        serials.take(rng, "500112", born, [Sex.MALE])
    twins = serials.take(rng, "500112", born, [Sex.FEMALE, Sex.FEMALE])
    assert twins[1] - twins[0] == 2
    assert twins[0] % 2 == 0
    mixed = serials.take(rng, "500105", born, [Sex.MALE, Sex.FEMALE])
    assert mixed[1] - mixed[0] == 1
    assert mixed[0] % 2 == 1


@pytest.mark.parametrize(
    ("pairs", "ok"),
    [([("a", 1.0)], True), ([], False), ([("a", -1.0), ("b", 2.0)], False), ([("a", 0.0)], False)],
)
def test_weighted_choice_refuses_bad_weights(pairs: list[tuple[str, float]], ok: bool) -> None:
    if ok:
        assert Weighted(pairs).pick(Random(0)) == "a"
    else:
        with pytest.raises(ConfigError):
            Weighted(pairs)


def test_zipf_pools_drop_duplicates_and_favour_the_first() -> None:
    pool = Weighted.zipf(["甲", "乙", "甲", "丙"])
    assert pool.items == ("甲", "乙", "丙")
    rng = Random(3)
    draws = collections.Counter(pool.pick(rng) for _ in range(5000))
    assert draws["甲"] > draws["乙"] > draws["丙"]
