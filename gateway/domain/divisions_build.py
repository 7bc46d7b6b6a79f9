"""Build the shipped division table from the public reference data.

Reads, from the reference data directory (``../shared/data`` beside the repository by default):

* ``gb2260/revisions.json`` and ``gb2260/mca/YYYYMM.tsv`` — the Ministry of Civil Affairs'
  editions 1980-12 … 2019-04 (columns Source, Revision, Code, Name), collected by the public
  GB2260 data project;
* ``county_codes_2025.tsv`` — the county-level units in force at the end of 2025, used as edition
  ``202512``. Its six-digit rows are the county-level routing codes; its shorter numeric rows are
  places without counties (``4419`` 东莞市, ``81`` 香港特别行政区 …), padded to six digits and
  routing too; its ``province_code``/``city_code`` columns keep the province and prefecture
  codes in force. The 台湾省 row has no code ("资料暂缺"): it keeps 710000 in force (not routing).

and ``gateway/data/division_links_curated.tsv`` (hand-written links, each with a source), and
writes ``gateway/data/divisions.tsv`` and ``gateway/data/division_links.tsv``. The successor rule
is described in :mod:`gateway.domain.divisions`. Output is sorted and byte-for-byte stable, so
``--check`` can compare the shipped files with a rebuild.

Source quirks handled here: a few editions list one code twice with two names (e.g. 370902 in
1985-12); the first line wins, as the later ones are the source's typos.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.domain.divisions import (
    CURRENT_EDITION,
    Division,
    DivisionLevel,
    DivisionTable,
    LinkBasis,
    SuccessorLink,
    is_code_syntax,
    is_edition,
    level_of,
)
from gateway.errors import ConfigError, GatewayError, InvalidDivisionCode

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CURATED_FILE = PACKAGE_DATA / "division_links_curated.tsv"
DIVISIONS_FILE = "divisions.tsv"
LINKS_FILE = "division_links.tsv"

CURATED_COLUMNS = ("old", "new", "effective", "source", "note")

#: Apply the same-name rule across the 2019-04 → 2025-12 publication gap too (see the notes).
INFER_ACROSS_GAP = True

# Type suffixes removed to get a name's stem, longest first so 自治县 wins over 县.
_SUFFIXES = tuple(
    sorted(
        (
            "特别行政区", "自治区", "自治州", "自治县", "自治旗", "地区", "林区", "特区", "矿区",
            "省", "市", "县", "区", "旗", "盟",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip

Edition = dict[str, str]  # code -> name


@dataclass
class _Interval:
    code: str
    valid_from: str
    valid_until: str | None
    name: str


def name_keys(name: str) -> frozenset[str]:
    """The full name and, if it has at least two characters, its stem (final type suffix removed)."""
    keys = {name}
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            if len(stem) >= 2:
                keys.add(stem)
            break
    return frozenset(keys)


# --- reading the sources --------------------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {type(exc).__name__}") from None


def load_mca(source_dir: Path) -> dict[str, Edition]:
    """The MCA editions, oldest first. A code listed twice in one edition keeps its first name."""
    try:
        revisions = json.loads(_read(source_dir / "gb2260" / "revisions.json"))["mca"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError("gb2260/revisions.json has no list of mca editions") from None
    editions: dict[str, Edition] = {}
    for revision in sorted(str(r) for r in revisions):
        path = source_dir / "gb2260" / "mca" / f"{revision}.tsv"
        if not is_edition(revision):
            raise ConfigError(f"{path}: the edition name is not YYYYMM")
        rows = list(csv.reader(io.StringIO(_read(path)), delimiter="\t"))
        if not rows or rows[0] != ["Source", "Revision", "Code", "Name"]:
            raise ConfigError(f"{path} line 1: unexpected header")
        edition: Edition = {}
        for lineno, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) != 4 or row[1] != revision or not is_code_syntax(row[2]) or not row[3].strip():
                raise ConfigError(f"{path} line {lineno}: malformed row")
            edition.setdefault(row[2], row[3].strip())
        editions[revision] = edition
    return editions


def load_2025(source_dir: Path, latest_mca: Edition) -> tuple[Edition, set[str]]:
    """Edition 202512 (every level) and its routing codes."""
    path = source_dir / "county_codes_2025.tsv"
    reader = csv.DictReader(io.StringIO(_read(path)), delimiter="\t")
    expected = ["code", "name", "type", "province_code", "province_name", "city_code", "city_name"]
    if reader.fieldnames != expected:
        raise ConfigError(f"{path} line 1: unexpected header")
    edition: Edition = {}
    routing: set[str] = set()
    parents: Edition = {}
    for row in reader:
        lineno = reader.line_num
        code, name = row["code"].strip(), row["name"].strip()
        if code.isascii() and code.isdigit() and len(code) in (2, 4, 6):
            code = code.ljust(6, "0")
            if code in edition or not name:
                raise ConfigError(f"{path} line {lineno}: duplicate code or empty name")
            edition[code] = name
            routing.add(code)
        elif row["type"] == "省" and (listed := _province_code_named(latest_mca, name)):
            # 台湾省 is listed without a code; GB/T 2260 keeps 710000. In force, not routing.
            parents[listed] = name
            continue
        else:
            raise ConfigError(f"{path} line {lineno}: the code is not 2, 4 or 6 digits")
        for column, width in (("province", 2), ("city", 4)):
            parent, parent_name = row[f"{column}_code"].strip(), row[f"{column}_name"].strip()
            if not parent:
                continue
            if len(parent) != width or not parent.isdigit() or not code.startswith(parent):
                raise ConfigError(f"{path} line {lineno}: {column}_code does not fit the code")
            parents.setdefault(parent.ljust(6, "0"), parent_name)
    for code, name in parents.items():
        edition.setdefault(code, name)
    return edition, routing


def _province_code_named(edition: Edition, name: str) -> str:
    for code, known in sorted(edition.items()):
        if code.endswith("0000") and known == name:
            return code
    return ""


def load_curated(path: Path) -> list[tuple[int, SuccessorLink]]:
    """The hand-written links, with line numbers. Columns: old new effective source note."""
    out: list[tuple[int, SuccessorLink]] = []
    header_seen = False
    for lineno, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if not header_seen:
            if tuple(fields) != CURATED_COLUMNS:
                raise ConfigError(f"{path} line {lineno}: the header must be {' '.join(CURATED_COLUMNS)}")
            header_seen = True
            continue
        if len(fields) != len(CURATED_COLUMNS):
            raise ConfigError(f"{path} line {lineno}: expected {len(CURATED_COLUMNS)} columns")
        old, new, effective, source, note = fields
        if not (is_code_syntax(old) and is_code_syntax(new) and old != new and is_edition(effective)):
            raise ConfigError(f"{path} line {lineno}: bad code or effective date")
        if not source:
            raise ConfigError(f"{path} line {lineno}: every curated link needs a source")
        text = f"{note}; source: {source}" if note else f"source: {source}"
        out.append((lineno, SuccessorLink(old, new, effective, LinkBasis.CURATED, text)))
    return out


# --- history ---------------------------------------------------------------------------------------


def fix_one_edition_names(editions: dict[str, Edition]) -> dict[str, Edition]:
    """Undo the source's one-edition name typos.

    A code whose name in one edition differs from the name it has in the editions just before and
    just after it is listed (which agree) takes that name: units are not renamed for one edition
    and back, but the source sometimes shifts names by a line (哈尔滨's counties in 2004-12,
    肥东县/肥西县 in 1983-12, 蛟河市/桦甸市 in 2003-12).
    """
    seen: dict[str, list[str]] = {}
    for revision, edition in editions.items():
        for code in edition:
            seen.setdefault(code, []).append(revision)
    fixed = {revision: dict(edition) for revision, edition in editions.items()}
    for code, revisions in seen.items():
        for before, here, after in zip(revisions, revisions[1:], revisions[2:], strict=False):
            name_before, name_after = editions[before][code], editions[after][code]
            if editions[here][code] != name_before and name_before == name_after:
                fixed[here][code] = name_before
    return fixed


def build_intervals(editions: dict[str, Edition]) -> list[_Interval]:
    """Intervals of every code over the editions (oldest first).

    A code absent from some editions and back with the same name continues its interval (the
    source omitted it: 安徽省 340000 in 1987-12), unless meanwhile that name was listed under
    another code of the province (the unit moved away and back: 肥东县 340122 → 342624 → 340122
    in 1982-83); back with another name it starts a new one (the code was reused). Two
    codes that exchange their names between two editions (天河区/芳村区 in 1988, 正定县/栾城县
    in 1993) both start new intervals, so that links follow the units rather than the codes.
    """
    open_: dict[str, _Interval] = {}
    closed: dict[str, list[_Interval]] = {}
    order = list(editions)
    holders: dict[str, dict[tuple[str, str], set[str]]] = {}
    for revision, edition in editions.items():
        by_name = holders.setdefault(revision, {})
        for code, name in edition.items():
            by_name.setdefault((code[:2], name), set()).add(code)

    def moved_meanwhile(code: str, name: str, gone: str, back: str) -> bool:
        """Was ``name`` newly listed under another code of the province while ``code`` was absent?"""
        key = (code[:2], name)
        before = holders[order[order.index(gone) - 1]].get(key, set())
        return any(holders[r].get(key, set()) - before - {code} for r in order[order.index(gone) : order.index(back)])

    def close(code: str, revision: str) -> None:
        interval = open_.pop(code)
        interval.valid_until = revision
        closed.setdefault(code, []).append(interval)

    for revision, edition in editions.items():
        renamed = {c: edition[c] for c, i in open_.items() if c in edition and edition[c] != i.name}
        swapped = [
            code
            for code, name in renamed.items()
            if any(other != code and open_[other].name == name and renamed.get(other) == open_[code].name
                   for other in renamed)
        ]  # fmt: skip
        for code in [c for c in open_ if c not in edition] + swapped:
            close(code, revision)
        for code, name in edition.items():
            if code in open_:
                open_[code].name = name
                continue
            previous = closed.get(code)
            last = previous[-1] if previous else None
            if (
                last is not None
                and last.name == name
                and last.valid_until is not None
                and last.valid_until != revision
                and not moved_meanwhile(code, name, last.valid_until, revision)
            ):
                interval = closed[code].pop()
                interval.valid_until = None
                open_[code] = interval
            else:
                open_[code] = _Interval(code, revision, None, name)
    result = [i for intervals in closed.values() for i in intervals] + list(open_.values())
    return sorted(result, key=lambda i: (i.code, i.valid_from))


def infer_links(editions: dict[str, Edition], intervals: list[_Interval]) -> list[SuccessorLink]:
    """Same-name successor links (the rule is in :mod:`gateway.domain.divisions`)."""
    ending: dict[str, list[_Interval]] = {}
    starting: dict[str, list[_Interval]] = {}
    for interval in intervals:
        starting.setdefault(interval.valid_from, []).append(interval)
        if interval.valid_until is not None:
            ending.setdefault(interval.valid_until, []).append(interval)
    links: list[SuccessorLink] = []
    for before, after in itertools.pairwise(editions):
        if after == CURRENT_EDITION and not INFER_ACROSS_GAP:
            continue
        span = f"{before}->{after}"
        if after == CURRENT_EDITION:
            span += " (across the 2019-04..2025-12 gap)"
        gone: dict[tuple[str, DivisionLevel], Edition] = {}
        for i in ending.get(after, []):
            gone.setdefault((i.code[:2], level_of(i.code)), {})[i.code] = editions[before][i.code]
        new: dict[tuple[str, DivisionLevel], Edition] = {}
        for i in starting.get(after, []):
            new.setdefault((i.code[:2], level_of(i.code)), {})[i.code] = editions[after][i.code]
        for group in sorted(gone.keys() & new.keys()):
            for old_code, new_code, by_stem in _match(gone[group], new[group]):
                old_name, new_name = gone[group][old_code], new[group][new_code]
                if by_stem:
                    note = f"same stem: {old_name} -> {new_name}, {span}"
                elif old_code[:4] == new_code[:4]:
                    note = f"same name {old_name}, {span}"
                else:
                    note = f"same name {old_name}, moved to {new_code[:4]}00, {span}"
                links.append(SuccessorLink(old_code, new_code, after, LinkBasis.SAME_NAME, note))
    return links


def _match(gone: Edition, new: Edition) -> list[tuple[str, str, bool]]:
    """(old, new, by_stem) pairs between the codes of one province and level: exact names first,
    then stems; each pair unique in both directions."""
    pairs: list[tuple[str, str, bool]] = []
    for by_stem in (False, True):
        paired_old = {old for old, _, _ in pairs}
        paired_new = {new_code for _, new_code, _ in pairs}
        old_keys = {c: _keys(n, by_stem) for c, n in sorted(gone.items()) if c not in paired_old}
        new_keys = {c: _keys(n, by_stem) for c, n in sorted(new.items()) if c not in paired_new}
        for old_code, keys in old_keys.items():
            candidates = [c for c, k in new_keys.items() if keys & k]
            if len(candidates) != 1:
                continue
            claimants = [c for c, k in old_keys.items() if k & new_keys[candidates[0]]]
            if claimants == [old_code]:
                pairs.append((old_code, candidates[0], by_stem))
    return pairs


def _keys(name: str, by_stem: bool) -> frozenset[str]:
    return name_keys(name) if by_stem else frozenset({name})


# --- the build -------------------------------------------------------------------------------------


def build(source_dir: Path, *, curated_path: Path | None = None) -> tuple[str, str]:
    """Return the texts of (``divisions.tsv``, ``division_links.tsv``) built from ``source_dir``."""
    if not (source_dir / "gb2260").is_dir():
        raise ConfigError(f"reference data directory not found: {source_dir}")
    editions = load_mca(source_dir)
    if not editions or max(editions) >= CURRENT_EDITION:
        raise ConfigError("the mca editions must end before the 2025 table")
    latest = editions[max(editions)]
    editions[CURRENT_EDITION], routing = load_2025(source_dir, latest)
    editions = fix_one_edition_names(editions)

    intervals = build_intervals(editions)
    divisions = [Division(i.code, i.name, level_of(i.code), i.code[:2], i.valid_from, i.valid_until) for i in intervals]
    known = {d.code for d in divisions}
    for d in divisions:
        if d.province_code + "0000" not in known:
            raise ConfigError(f"code {d.code} belongs to no known province")

    table = DivisionTable(divisions, routing, infer_links(editions, intervals))
    # Curated links go on top exactly like an operator's overlay: checked the same way, and they
    # replace the inferred links of the interval they name.
    curated_file = CURATED_FILE if curated_path is None else curated_path
    curated = load_curated(curated_file)
    for lineno, link in curated:
        try:
            table.with_links([link])
        except InvalidDivisionCode as exc:
            raise ConfigError(f"{curated_file} line {lineno}: {exc.detail}") from None
    return table.with_links(link for _, link in curated).to_tsv()


def main(argv: Sequence[str] | None = None) -> int:
    """Build the division table; with ``--check`` exit 1 if the shipped files differ from a rebuild."""
    parser = argparse.ArgumentParser(
        prog="divisions-build",
        description="Build gateway/data/divisions.tsv and division_links.tsv from the reference data.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args.source, args.out, check=args.check)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        metavar="DIR",
        help="reference data directory (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PACKAGE_DATA,
        metavar="DIR",
        help="where to write the two TSV files (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the files in --out differ from a rebuild",
    )


def run(source: Path, out: Path, *, check: bool) -> int:
    texts = dict(zip((DIVISIONS_FILE, LINKS_FILE), build(source), strict=True))
    if check:
        stale = []
        for name, text in texts.items():
            path = out / name
            if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
                stale.append(name)
        for name in stale:
            print(f"{out / name} differs from a rebuild; run `tongban divisions build`", file=sys.stderr)
        return 1 if stale else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_bytes(text.encode("utf-8"))
    print(f"wrote {', '.join(str(out / n) for n in texts)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except GatewayError as exc:
        print(f"divisions-build: error [{exc.code}]: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
