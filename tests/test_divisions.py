"""The dated division table (GB/T 2260) with successor links: rules as tables of named cases."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import pytest

from gateway.domain import divisions_build
from gateway.domain.divisions import (
    Division,
    DivisionLevel,
    DivisionTable,
    LinkBasis,
    SuccessorLink,
    load_links_file,
)
from gateway.errors import (
    AmbiguousSuccessor,
    ConfigError,
    GatewayError,
    InvalidDivisionCode,
    RetiredDivision,
    SuccessorUnknown,
)

SOURCE = divisions_build.DEFAULT_SOURCE
needs_source = pytest.mark.skipif(
    not (SOURCE / "gb2260").is_dir(), reason=f"reference data directory {SOURCE} is absent"
)


@pytest.fixture(scope="module")
def table() -> DivisionTable:
    return DivisionTable.load_default()


def op(old: str, new: str, effective: str = "202012", note: str = "邢台县 split") -> SuccessorLink:
    return SuccessorLink(old, new, effective, LinkBasis.OPERATOR, note)


# --- resolve: where must something addressed to this code go now? ------------------------------

RESOLVE_CASES = [
    pytest.param("110101", None, "110101", id="current_code_is_itself"),
    pytest.param("110101", "500109", "110101", id="current_code_ignores_hint"),
    pytest.param("441900", None, "441900", id="place_without_counties_routes_itself"),
    pytest.param("500105", None, "500157", id="chongqing_jiangbei_one_successor"),
    pytest.param("500112", None, AmbiguousSuccessor, id="chongqing_yubei_two_successors_no_hint"),
    pytest.param("500112", "500109", "500109", id="chongqing_yubei_hint_beibei"),
    pytest.param("500112", "500157", "500157", id="chongqing_yubei_hint_liangjiang"),
    pytest.param("500112", "110101", AmbiguousSuccessor, id="hint_not_a_successor"),
    pytest.param("110228", None, "110118", id="inferred_county_to_district_2015"),
    pytest.param("130124", None, "130111", id="inferred_county_to_district_2014"),
    pytest.param("350427", None, "350405", id="inferred_across_2019_2025_gap"),
    pytest.param("132327", None, "130111", id="chain_through_a_code_swap"),
    pytest.param("342424", None, "340123", id="unit_moved_away_and_back"),
    pytest.param("130521", None, SuccessorUnknown, id="retired_successor_unknown"),
    pytest.param("230702", None, SuccessorUnknown, id="merged_in_gap_not_guessed"),
    pytest.param("320600", None, InvalidDivisionCode, id="prefecture_in_force_not_routing"),
    pytest.param("110000", None, InvalidDivisionCode, id="province_in_force_not_routing"),
    pytest.param("999999", None, InvalidDivisionCode, id="never_existed"),
    pytest.param("12345", None, InvalidDivisionCode, id="five_digits"),
    pytest.param("abcdef", None, InvalidDivisionCode, id="letters"),
]


@pytest.mark.parametrize(("code", "hint", "expected"), RESOLVE_CASES)
def test_resolve(table: DivisionTable, code: str, hint: str | None, expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        assert table.resolve(code, hint=hint) == expected
        assert table.is_current(expected)
    else:
        with pytest.raises(expected):
            table.resolve(code, hint=hint)


RESOLVE_ALL_CASES = [
    pytest.param("110101", ("110101",), id="current"),
    pytest.param("500112", ("500109", "500157"), id="split"),
    pytest.param("500105", ("500157",), id="one_successor"),
    pytest.param("132327", ("130111",), id="chain"),
    pytest.param("130521", (), id="successor_unknown"),
]


@pytest.mark.parametrize(("code", "expected"), RESOLVE_ALL_CASES)
def test_resolve_all(table: DivisionTable, code: str, expected: tuple[str, ...]) -> None:
    assert table.resolve_all(code) == expected


def test_ambiguous_successor_names_candidates(table: DivisionTable) -> None:
    with pytest.raises(AmbiguousSuccessor) as caught:
        table.resolve("500112")
    assert caught.value.candidates == ("500109", "500157")


# --- successor links as shipped ------------------------------------------------------------------

SUCCESSOR_CASES = [
    pytest.param("500105", {("500157", LinkBasis.CURATED, "202511")}, id="jiangbei_curated"),
    pytest.param(
        "500112",
        {("500157", LinkBasis.CURATED, "202511"), ("500109", LinkBasis.CURATED, "202511")},
        id="yubei_curated_split",
    ),
    pytest.param("110228", {("110118", LinkBasis.SAME_NAME, "201511")}, id="miyun_county_to_district"),
    pytest.param("130124", {("130111", LinkBasis.SAME_NAME, "201412")}, id="luancheng_county_to_district"),
    pytest.param("132723", {("130223", LinkBasis.SAME_NAME, "198312")}, id="same_name_recoded_1983"),
    pytest.param("450127", set(), id="one_character_stem_not_linked"),  # 横县 -> 横州市
    pytest.param("130521", set(), id="split_in_gap_not_guessed"),  # 邢台县
    pytest.param("110101", set(), id="current_has_none"),
]


@pytest.mark.parametrize(("code", "expected"), SUCCESSOR_CASES)
def test_successors(table: DivisionTable, code: str, expected: set[tuple[str, LinkBasis, str]]) -> None:
    assert {(s.new, s.basis, s.effective) for s in table.successors(code)} == expected
    assert all(s.old == code and s.note for s in table.successors(code))


def test_gap_links_say_so(table: DivisionTable) -> None:
    (link,) = table.successors("350427")
    assert link.basis is LinkBasis.SAME_NAME
    assert "2019-04..2025-12" in link.note


# --- current(): routing codes only ---------------------------------------------------------------

CURRENT_CASES = [
    pytest.param("110101", "东城区", id="county_level"),
    pytest.param("500157", "两江新区", id="created_2025"),
    pytest.param("653229", "和安县", id="created_2024"),
    pytest.param("441900", "东莞市", id="prefecture_city_without_counties"),
    pytest.param("810000", "香港特别行政区", id="sar"),
    pytest.param("500112", RetiredDivision, id="retired_split"),
    pytest.param("500105", RetiredDivision, id="retired_one_successor"),
    pytest.param("130521", RetiredDivision, id="retired_successor_unknown"),
    pytest.param("320600", InvalidDivisionCode, id="prefecture"),
    pytest.param("999999", InvalidDivisionCode, id="never_existed"),
    pytest.param("12345", InvalidDivisionCode, id="five_digits"),
    pytest.param("abcdef", InvalidDivisionCode, id="letters"),
    pytest.param("", InvalidDivisionCode, id="empty"),
    pytest.param("５００１０９", InvalidDivisionCode, id="full_width_digits"),
]


@pytest.mark.parametrize(("code", "expected"), CURRENT_CASES)
def test_current(table: DivisionTable, code: str, expected: str | type[Exception]) -> None:
    if isinstance(expected, str):
        division = table.current(code)
        assert (division.code, division.name, division.current) == (code, expected, True)
        assert table.is_current(code)
    else:
        with pytest.raises(expected):
            table.current(code)
        assert not table.is_current(code)


RETIRED_CASES = [
    pytest.param("500112", ("500109", "500157"), id="split"),
    pytest.param("500105", ("500157",), id="one_successor"),
    pytest.param("130521", (), id="successor_unknown"),
]


@pytest.mark.parametrize(("code", "successors"), RETIRED_CASES)
def test_current_retired_names_successors(table: DivisionTable, code: str, successors: tuple[str, ...]) -> None:
    with pytest.raises(RetiredDivision) as caught:
        table.current(code)
    assert (caught.value.division, caught.value.successors) == (code, successors)


# --- existed(): for ID-number prefixes (any era, any level) -------------------------------------

EXISTED_CASES = [
    pytest.param("110110", True, id="only_in_1980s"),  # 燕山区 1980-12..1986-12
    pytest.param("342424", True, id="one_edition_1982"),
    pytest.param("133002", True, id="only_in_1990s"),
    pytest.param("500112", True, id="retired_2025"),
    pytest.param("500157", True, id="new_2025"),
    pytest.param("110000", True, id="province"),
    pytest.param("320600", True, id="prefecture"),
    pytest.param("710000", True, id="taiwan"),
    pytest.param("999999", False, id="never_existed"),
    pytest.param("110199", False, id="never_existed_in_real_prefix"),
    pytest.param("12345", False, id="five_digits"),
    pytest.param("abcdef", False, id="letters"),
]


@pytest.mark.parametrize(("code", "expected"), EXISTED_CASES)
def test_existed(table: DivisionTable, code: str, expected: bool) -> None:
    assert table.existed(code) is expected


LOOKUP_CASES = [
    pytest.param("110110", ("燕山区", DivisionLevel.COUNTY, "198012", "198612"), id="1980s_only"),
    pytest.param("133002", ("冀州市", DivisionLevel.COUNTY, "199312", "199612"), id="1990s_only"),
    pytest.param("500157", ("两江新区", DivisionLevel.COUNTY, "202512", None), id="new_2025"),
    pytest.param("500112", ("渝北区", DivisionLevel.COUNTY, "199712", "202512"), id="retired_2025"),
    pytest.param("130123", ("正定县", DivisionLevel.COUNTY, "199312", None), id="reused_latest_interval"),
    pytest.param("110000", ("北京市", DivisionLevel.PROVINCE, "198012", None), id="province"),
    pytest.param("371200", ("莱芜市", DivisionLevel.PREFECTURE, "199212", "202512"), id="prefecture_retired"),
]


@pytest.mark.parametrize(("code", "expected"), LOOKUP_CASES)
def test_lookup(table: DivisionTable, code: str, expected: tuple[str, DivisionLevel, str, str | None]) -> None:
    d = table.lookup(code)
    assert (d.name, d.level, d.valid_from, d.valid_until) == expected
    assert d.province_code == code[:2]


def test_reused_code_keeps_every_interval(table: DivisionTable) -> None:
    assert [(d.name, d.valid_from, d.valid_until) for d in table.history("130123")] == [
        ("栾城县", "198612", "199312"),
        ("正定县", "199312", None),
    ]


# --- provinces -----------------------------------------------------------------------------------

PROVINCE_CASES = [
    pytest.param("500157", "500000", "重庆市", id="new_2025"),
    pytest.param("500112", "500000", "重庆市", id="retired_2025"),
    pytest.param("133002", "130000", "河北省", id="1990s_only"),
    pytest.param("110110", "110000", "北京市", id="1980s_only"),
    pytest.param("441900", "440000", "广东省", id="prefecture_city"),
    pytest.param("810000", "810000", "香港特别行政区", id="province_itself"),
]


@pytest.mark.parametrize(("code", "province", "name"), PROVINCE_CASES)
def test_province_of(table: DivisionTable, code: str, province: str, name: str) -> None:
    p = table.province_of(code)
    assert (p.code, p.name, p.level) == (province, name, DivisionLevel.PROVINCE)


@pytest.mark.parametrize("code", [pytest.param("999999", id="never_existed"), pytest.param("1", id="short")])
def test_province_of_rejects(table: DivisionTable, code: str) -> None:
    with pytest.raises(InvalidDivisionCode):
        table.province_of(code)


# --- counts ----------------------------------------------------------------------------------------

COUNT_CASES = [
    pytest.param(lambda t: len(t.current_counties()), 2851, id="routing_codes"),
    pytest.param(lambda t: sum(d.level is DivisionLevel.COUNTY for d in t.current_counties()), 2845, id="county_level"),
    pytest.param(lambda t: len(t.current_counties("50")), 37, id="chongqing_routing"),
    pytest.param(lambda t: len(t.current_counties("500000")), 37, id="chongqing_by_province_code"),
    pytest.param(lambda t: len(t.provinces()), 34, id="provinces_in_force"),
    pytest.param(lambda t: len(t), 6707, id="intervals"),
]


@pytest.mark.parametrize(("count", "expected"), COUNT_CASES)
def test_counts(table: DivisionTable, count: object, expected: int) -> None:
    assert callable(count)
    assert count(table) == expected


@pytest.mark.parametrize(
    "province",
    [
        pytest.param("99", id="no_such_province"),
        pytest.param("5", id="one_digit"),
        pytest.param("500100", id="prefecture"),
    ],
)
def test_current_counties_rejects(table: DivisionTable, province: str) -> None:
    with pytest.raises(InvalidDivisionCode):
        table.current_counties(province)


def test_current_counties_sorted_and_current(table: DivisionTable) -> None:
    codes = [d.code for d in table.current_counties()]
    assert codes == sorted(codes)
    assert all(table.is_current(c) for c in codes)
    assert {"441900", "442000", "460400", "620200", "810000", "820000"} <= set(codes)


@needs_source
def test_routing_codes_match_2025_table(table: DivisionTable) -> None:
    text = (SOURCE / "county_codes_2025.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    six_digit = {r["code"] for r in rows if len(r["code"]) == 6 and r["code"].isdigit()}
    numeric = {r["code"].ljust(6, "0") for r in rows if r["code"].isdigit()}
    county_types = {"县", "市辖区", "县级市", "自治县", "旗", "自治旗", "特区", "林区"}
    assert len(six_digit) == 2845
    assert len({r["code"] for r in rows if r["type"] in county_types}) == 2845
    assert {d.code for d in table.current_counties() if d.level is DivisionLevel.COUNTY} == six_digit
    assert {d.code for d in table.current_counties()} == numeric


# --- operator overlay ------------------------------------------------------------------------------

OVERLAY_CASES = [
    pytest.param([op("130521", "130503")], "130521", None, "130503", id="settles_unknown_successor"),
    pytest.param([op("500112", "500157", "202511")], "500112", None, "500157", id="replaces_curated_split"),
    pytest.param([op("350427", "350404")], "350427", None, "350404", id="replaces_inferred"),
    pytest.param(
        [op("130521", "130503"), op("130521", "130505")],
        "130521",
        None,
        AmbiguousSuccessor,
        id="operator_split",
    ),
    pytest.param(
        [op("130521", "130503"), op("130521", "130505")],
        "130521",
        "130505",
        "130505",
        id="operator_split_hint",
    ),
    pytest.param([op("130521", "130526")], "130521", None, SuccessorUnknown, id="link_to_another_unknown"),
]


@pytest.mark.parametrize(("links", "code", "hint", "expected"), OVERLAY_CASES)
def test_with_links(
    table: DivisionTable,
    links: list[SuccessorLink],
    code: str,
    hint: str | None,
    expected: str | type[Exception],
) -> None:
    before = table.successors(code)
    amended = table.with_links(links)
    assert amended is not table
    assert table.successors(code) == before  # the original table is unchanged
    if isinstance(expected, str):
        assert amended.resolve(code, hint=hint) == expected
    else:
        with pytest.raises(expected):
            amended.resolve(code, hint=hint)


def test_with_links_unknown_successor_becomes_known(table: DivisionTable) -> None:
    with pytest.raises(SuccessorUnknown):
        table.resolve("130521")
    amended = table.with_links([op("130521", "130503")])
    assert amended.resolve("130521") == "130503"
    assert [s.basis for s in amended.successors("130521")] == [LinkBasis.OPERATOR]
    with pytest.raises(SuccessorUnknown):
        table.resolve("130521")


WITH_LINKS_REJECTS = [
    pytest.param(op("110101", "110102"), id="old_still_current"),
    pytest.param(op("320600", "320100"), id="old_prefecture_in_force"),
    pytest.param(op("130521", "139999"), id="new_never_existed"),
    pytest.param(op("999999", "110101"), id="old_never_existed"),
    pytest.param(op("13052", "110101"), id="old_malformed"),
    pytest.param(op("130521", "13050X"), id="new_malformed"),
    pytest.param(op("130521", "130521"), id="self_link"),
    pytest.param(op("130521", "130503", "2020-12"), id="effective_malformed"),
    pytest.param(op("130521", "130503", "202013"), id="effective_month_13"),
    pytest.param(op("130521", "132327"), id="new_retired_before_effective"),
    pytest.param(op("500157", "110101", "201001"), id="dated_before_old_existed"),
]


@pytest.mark.parametrize("link", WITH_LINKS_REJECTS)
def test_with_links_rejects(table: DivisionTable, link: SuccessorLink) -> None:
    with pytest.raises(InvalidDivisionCode):
        table.with_links([link])


LINKS_HEADER = "old\tnew\teffective\tbasis\tnote\n"

LINKS_FILE_CASES = [
    pytest.param(
        LINKS_HEADER + "# comment\n\n130521\t130503\t202012\toperator\t邢台县 split\n",
        [op("130521", "130503")],
        id="good_with_comment_and_blank",
    ),
    pytest.param("old\tnew\n130521\t130503\n", (ConfigError, "line 1"), id="wrong_header"),
    pytest.param("", (ConfigError, "no header"), id="empty_file"),
    pytest.param(LINKS_HEADER + "13052\t130503\t202012\toperator\tx\n", (InvalidDivisionCode, "line 2"), id="bad_code"),
    pytest.param(LINKS_HEADER + "130521\t130503\t2020-12\toperator\tx\n", (ConfigError, "line 2"), id="bad_effective"),
    pytest.param(LINKS_HEADER + "130521\t130503\t202012\tcurated\tx\n", (ConfigError, "line 2"), id="claims_curated"),
    pytest.param(LINKS_HEADER + "130521\t130503\t202012\toperator\n", (ConfigError, "line 2"), id="missing_column"),
    pytest.param(LINKS_HEADER + "130521\t130521\t202012\toperator\tx\n", (ConfigError, "line 2"), id="self_link"),
]


@pytest.mark.parametrize(("text", "expected"), LINKS_FILE_CASES)
def test_load_links_file(
    tmp_path: Path, text: str, expected: list[SuccessorLink] | tuple[type[GatewayError], str]
) -> None:
    path = tmp_path / "links.tsv"
    path.write_text(text, encoding="utf-8")
    if isinstance(expected, list):
        assert load_links_file(path) == expected
    else:
        error, where = expected
        with pytest.raises(error, match=where):
            load_links_file(path)


def test_load_links_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_links_file(tmp_path / "absent.tsv")


# --- from_tsv fails closed ------------------------------------------------------------------------

GOOD_DIVISIONS = (
    "code\tname\tlevel\tprovince_code\tvalid_from\tvalid_until\trouting\n"
    "500000\t重庆市\tprovince\t50\t199712\t\t0\n"
    "500109\t北碚区\tcounty\t50\t199712\t\t1\n"
    "500112\t渝北区\tcounty\t50\t199712\t202512\t0\n"
)
FROM_TSV_CASES = [
    pytest.param(GOOD_DIVISIONS, LINKS_HEADER + "500112\t500109\t202511\tcurated\tx\n", None, id="good"),
    pytest.param(GOOD_DIVISIONS.replace("routing", "route"), LINKS_HEADER, ConfigError, id="bad_header"),
    pytest.param(GOOD_DIVISIONS.replace("202512\t0", "202512\t1"), LINKS_HEADER, ConfigError, id="retired_routing"),
    pytest.param(
        GOOD_DIVISIONS.replace("county\t50\t199712\t\t1", "prefecture\t50\t199712\t\t1"),
        LINKS_HEADER,
        ConfigError,
        id="level_does_not_fit_code",
    ),
    pytest.param(
        GOOD_DIVISIONS,
        LINKS_HEADER + "500112\t500157\t202511\tcurated\tx\n",
        ConfigError,
        id="link_to_unknown_code",
    ),
    pytest.param(
        GOOD_DIVISIONS,
        LINKS_HEADER + "500109\t500112\t202511\tcurated\tx\n",
        ConfigError,
        id="link_from_current_code",
    ),
    pytest.param(
        GOOD_DIVISIONS, LINKS_HEADER + "500112\t500109\t202511\tguessed\tx\n", ConfigError, id="unknown_basis"
    ),
]


@pytest.mark.parametrize(("divisions", "links", "error"), FROM_TSV_CASES)
def test_from_tsv(divisions: str, links: str, error: type[Exception] | None) -> None:
    if error is None:
        t = DivisionTable.from_tsv(divisions, links)
        assert t.resolve("500112") == "500109"
        assert t.to_tsv() == (divisions, links)
    else:
        with pytest.raises(error):
            DivisionTable.from_tsv(divisions, links)


# --- the successor inference rule, on small synthetic editions ------------------------------------

INFERENCE_CASES = [
    pytest.param({"130123": "甲县"}, {"130999": "甲县"}, {("130123", "130999")}, id="same_name_recoded"),
    pytest.param({"130124": "栾城县"}, {"130111": "栾城区"}, {("130124", "130111")}, id="county_to_district"),
    pytest.param({"220724": "扶余县"}, {"220781": "扶余市"}, {("220724", "220781")}, id="county_to_city"),
    pytest.param({"350427": "沙县"}, {"350405": "沙县区"}, {("350427", "350405")}, id="full_name_as_stem"),
    pytest.param({"152100": "呼伦贝尔盟"}, {"150700": "呼伦贝尔市"}, {("152100", "150700")}, id="league_to_city"),
    pytest.param({"450127": "横县"}, {"450181": "横州市"}, set(), id="one_character_stem_ignored"),
    pytest.param({"130521": "邢台县"}, {"130505": "邢台区", "130506": "邢台市"}, set(), id="two_candidates"),
    pytest.param({"132101": "邯郸市", "132134": "邯郸县"}, {"130499": "邯郸区"}, set(), id="two_claimants"),
    pytest.param(
        {"132101": "邯郸市", "132134": "邯郸县"},
        {"130421": "邯郸县"},
        {("132134", "130421")},
        id="exact_name_first",
    ),
    pytest.param({"510202": "渝中区"}, {"500103": "渝中区"}, set(), id="other_province"),
    pytest.param({"371200": "莱芜市"}, {"370116": "莱芜区"}, set(), id="other_level"),
    pytest.param({"330103": "下城区"}, {"330114": "钱塘区"}, set(), id="unrelated_name"),
]


@pytest.mark.parametrize(("before", "after", "expected"), INFERENCE_CASES)
def test_inference_rule(before: dict[str, str], after: dict[str, str], expected: set[tuple[str, str]]) -> None:
    editions = {"201001": before, "201101": after}
    links = divisions_build.infer_links(editions, divisions_build.build_intervals(editions))
    assert {(k.old, k.new) for k in links} == expected
    assert all(k.basis is LinkBasis.SAME_NAME and k.effective == "201101" for k in links)


INTERVAL_CASES = [
    pytest.param(
        [{"110101": "东城区"}, {}, {"110101": "东城区"}],
        [("110101", "200001", None, "东城区")],
        id="omitted_one_edition_is_one_interval",
    ),
    pytest.param(
        [{"450206": "市郊区"}, {}, {"450206": "柳江区"}],
        [("450206", "200001", "200002", "市郊区"), ("450206", "200003", None, "柳江区")],
        id="reused_with_other_name",
    ),
    pytest.param(
        [{"340122": "肥东县"}, {"342624": "肥东县"}, {"340122": "肥东县"}],
        [
            ("340122", "200001", "200002", "肥东县"),
            ("340122", "200003", None, "肥东县"),
            ("342624", "200002", "200003", "肥东县"),
        ],
        id="moved_away_and_back",
    ),
    pytest.param(
        [{"130123": "栾城县", "130124": "正定县"}, {"130123": "正定县", "130124": "栾城县"}],
        [
            ("130123", "200001", "200002", "栾城县"),
            ("130123", "200002", None, "正定县"),
            ("130124", "200001", "200002", "正定县"),
            ("130124", "200002", None, "栾城县"),
        ],
        id="names_exchanged",
    ),
    pytest.param(
        [{"130430": "丘县"}, {"130430": "邱县"}],
        [("130430", "200001", None, "邱县")],
        id="renamed_in_place",
    ),
    pytest.param(
        [{"230124": "方正县"}, {"230124": "宾县"}, {"230124": "方正县"}],
        [("230124", "200001", None, "方正县")],
        id="one_edition_typo_undone",
    ),
]


@pytest.mark.parametrize(("series", "expected"), INTERVAL_CASES)
def test_intervals(series: list[dict[str, str]], expected: list[tuple[str, str, str | None, str]]) -> None:
    editions = {f"2000{i + 1:02d}": edition for i, edition in enumerate(series)}
    intervals = divisions_build.build_intervals(divisions_build.fix_one_edition_names(editions))
    assert [(i.code, i.valid_from, i.valid_until, i.name) for i in intervals] == expected


# --- the shipped data -----------------------------------------------------------------------------


def _shipped(name: str) -> str:
    return resources.files("gateway").joinpath(f"data/{name}").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def built() -> tuple[str, str]:
    if not (SOURCE / "gb2260").is_dir():
        pytest.skip(f"reference data directory {SOURCE} is absent")
    return divisions_build.build(SOURCE)


def test_shipped_tsvs_equal_a_fresh_build(built: tuple[str, str]) -> None:
    assert (_shipped("divisions.tsv"), _shipped("division_links.tsv")) == built


def test_build_writes_then_checks(tmp_path: Path, built: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(divisions_build, "build", lambda source, **_: built)  # one real build per run
    out = ["--source", str(SOURCE), "--out", str(tmp_path)]
    assert divisions_build.main([*out, "--check"]) == 1  # nothing written yet
    assert divisions_build.main(out) == 0
    assert divisions_build.main([*out, "--check"]) == 0
    (tmp_path / "division_links.tsv").write_text("tampered\n", encoding="utf-8")
    assert divisions_build.main([*out, "--check"]) == 1


def test_build_without_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        divisions_build.build(tmp_path / "absent")


def test_shipped_table_round_trips(table: DivisionTable) -> None:
    assert table.to_tsv() == (_shipped("divisions.tsv"), _shipped("division_links.tsv"))


def test_load_default_is_cached() -> None:
    assert DivisionTable.load_default() is DivisionTable.load_default()


def test_every_curated_link_is_shipped(table: DivisionTable) -> None:
    curated = [
        line.split("\t")
        for line in _shipped("division_links_curated.tsv").splitlines()
        if line and not line.startswith(("#", "old\t"))
    ]
    assert curated
    for old, new, effective, source, _note in curated:
        assert source
        links = {(s.new, s.effective, s.basis) for s in table.successors(old)}
        assert (new, effective, LinkBasis.CURATED) in links


def test_division_is_frozen() -> None:
    d = Division("110101", "东城区", DivisionLevel.COUNTY, "11", "198012", None)
    with pytest.raises(AttributeError):
        d.name = "x"  # type: ignore[misc]
    assert d.current
