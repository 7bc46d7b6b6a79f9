"""``tongban match``: match two county ledger files offline, as the registration node would.

::

    tongban match REGISTRATION_FILE RESIDENCE_FILE --out LINKS.csv [--mapping FILE] [--auto X --review Y]
                  [--household-register FILE [--register-mapping FILE]]

Both files are read with :func:`adapters.tabular.read_table` (CSV or XLSX, Chinese headers, an
optional column mapping). Each row gives name, sex, ID number and birth date:

* an ID number that fails any GB 11643 check counts as **missing** (no token, fuzzy stage only);
* a valid ID's embedded birth date and sex are preferred over the typed ones;
* a birth date that cannot be parsed is left out (the row still matches on what it has).

A fresh random pair key is generated for the run (nothing is kept), both sides are encoded under it
exactly as nodes encode notices (:func:`gateway.matching.encode`, pairwise ID tokens) and
:func:`gateway.matching.match` links them. ``LINKS.csv`` gets a header and one line per linked pair::

    registration_row,residence_row,band,score      # rows numbered from 1, header excluded
    12,3,matched,1.0000                            # band: matched | review; score with 4 decimals

and the terminal a summary of counts and time — never a name, an ID number or a date.

**Single births** (``--household-register FILE``, the registration county's 户籍登记; CSV or XLSX
with 户号, 姓名, 公民身份号码, 出生日期, read by :mod:`adapters.household`, its layout described by
``--register-mapping``, not ``--mapping``). Each registration row is looked up in the register (by
its valid ID number, else by name and birth date when that pair is unique there) and counts as a
**single birth** when no other member of its household was born within a day of it; such an entry
gets ``single_birth=True``, and every registration entry its name's edit masks
(``Encoder.name_edits``), so that a notice whose name is a one-character edit of a single birth's,
born the same day, may be linked automatically (:mod:`gateway.matching.matcher`, "Single births").
A child with a sibling born within a day, one not found, or one the register leaves undecided (a
row of it could not be read) keeps the default: such an edit goes to review. The residence side
never gets either field. The summary adds two lines: the register's rows, households and skipped
rows (row numbers and reasons), and how many registration rows are single births, have a sibling
born within a day, are not found or undecided. Without the option, nothing changes.

In-process use (benchmarks, tests): :func:`match_tables` takes two :class:`adapters.tabular.Table`
values (and optionally a register table from :func:`adapters.household.open_register`) and
returns a :class:`MatchRun` (the links by row number and the counts), with no file output;
:func:`entries_of` turns one table into matcher entries under a given key.

Exit codes: 0 done, 2 usage, 65 a file is not a roster (or not a household register), 74 a file
cannot be read or written, 78 a bad mapping file.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from adapters.household import (
    BirthCounts,
    BirthStatus,
    HouseholdRegister,
    RegisterSummary,
    birth_status,
    build_register,
    open_register,
)
from adapters.ledger import parse_sex
from adapters.tabular import Table, load_mapping, parse_birth_date, read_table
from gateway.domain import idnumber
from gateway.errors import InvalidIdNumber, StorageError
from gateway.exchange.tokens import KEY_BYTES, IdTokens
from gateway.matching import Band, Encoder, Entry, Link, MatchResult, Thresholds, match

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SideCounts:
    rows: int
    valid_ids: int
    dates_unparsed: int
    births: BirthCounts | None = None  # the registration side, with a household register


def entries_of(
    table: Table, key: bytes, encoder: Encoder | None = None, *, register: HouseholdRegister | None = None
) -> tuple[list[Entry], SideCounts]:
    """Matcher entries of a table's rows under ``key`` (``ref`` = the row number), and counts.

    With ``register`` (the registration ledger only), each entry also gets ``single_birth`` from
    :func:`adapters.household.birth_status` and ``name_edits`` of its name, and the counts the
    statuses."""
    enc = encoder or Encoder(key)
    tokens = IdTokens(key)
    entries: list[Entry] = []
    valid = unparsed = 0
    statuses: Counter[BirthStatus] = Counter()
    for number, row in table.rows():
        sex = parse_sex(row.get("sex", ""))
        typed_date = row.get("birth_date", "")
        born = parse_birth_date(typed_date) if typed_date else None
        if typed_date and born is None:
            unparsed += 1
        token = b""
        resident: idnumber.ResidentId | None = None
        raw_id = row.get("id_number", "")
        if raw_id:
            try:
                resident = idnumber.parse(raw_id)
            except InvalidIdNumber:
                pass  # an invalid ID counts as missing (SPEC §5)
            else:
                token = tokens.of_stored(resident.number)  # canonical: parsed just above
                born, sex = resident.birth_date, resident.sex  # the number's own facts win
                valid += 1
        ym = f"{born.year:04d}-{born.month:02d}" if born else None
        name = row.get("name", "")
        single, edits = False, b""
        if register is not None:
            status = birth_status(register, name, resident, born)
            statuses[status] += 1
            single, edits = status is BirthStatus.SINGLE, enc.name_edits(name)
        entries.append(
            Entry(number, token, enc.name(name), enc.birth(born), sex, ym, single_birth=single, name_edits=edits)
        )
    births = BirthCounts.of(statuses) if register is not None else None
    return entries, SideCounts(len(entries), valid, unparsed, births)


@dataclass(frozen=True)
class MatchRun:
    """The result of :func:`match_tables`: links by row number and what the summary reports."""

    result: MatchResult
    registration: SideCounts
    residence: SideCounts
    seconds: float
    register: RegisterSummary | None = None  # with a household register

    @property
    def links(self) -> tuple[Link, ...]:
        return self.result.links


def match_tables(
    registration: Table,
    residence: Table,
    thresholds: Thresholds | None = None,
    *,
    key: bytes | None = None,
    register: Table | None = None,
) -> MatchRun:
    """Encode both tables under one pair key (random unless given) and match them.

    Left = the registration ledger, right = the residence ledger; link refs are row numbers. With
    ``register`` (a household register, :func:`adapters.household.open_register`), the registration
    entries carry single births and edit masks (module docstring); reading it is part of the time.
    """
    started = time.perf_counter()
    pair_key = key if key is not None else os.urandom(KEY_BYTES)
    encoder = Encoder(pair_key)
    index = build_register(register) if register is not None else None
    left, reg_counts = entries_of(registration, pair_key, encoder, register=index)
    right, res_counts = entries_of(residence, pair_key, encoder)
    result = match(left, right, thresholds or Thresholds())
    summary = index.summary if index is not None else None
    return MatchRun(result, reg_counts, res_counts, time.perf_counter() - started, summary)


def write_links(links: tuple[Link, ...], path: Path) -> None:
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["registration_row", "residence_row", "band", "score"])
            for link in sorted(links, key=lambda x: (int(x.left), int(x.right))):
                writer.writerow([link.left, link.right, link.band.value, f"{link.score:.4f}"])
    except OSError as exc:
        raise StorageError(f"cannot write {path.name}: {type(exc).__name__}") from None


def summary(run: MatchRun) -> str:
    r = run.result
    single_births = []
    if run.register is not None and run.registration.births is not None:
        single_births = [
            f"register:          {run.register.describe()}",
            f"single births:     {run.registration.births.describe()}",
        ]
    return "\n".join(
        [
            f"registration rows: {run.registration.rows} ({run.registration.valid_ids} with a valid ID, "
            f"{run.registration.dates_unparsed} dates unreadable)",
            f"residence rows:    {run.residence.rows} ({run.residence.valid_ids} with a valid ID, "
            f"{run.residence.dates_unparsed} dates unreadable)",
            *single_births,
            f"matched:           {r.band_count(Band.MATCHED)} (exact {r.band_count(Band.MATCHED, 'exact')}, "
            f"fuzzy {r.band_count(Band.MATCHED, 'fuzzy')})",
            f"review:            {r.band_count(Band.REVIEW)}",
            f"not found:         {len(r.unmatched_left)} registration rows, {len(r.unmatched_right)} residence rows",
            f"time:              {run.seconds:.1f} s",
        ]
    )


def _run(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping) if args.mapping else None
    defaults = Thresholds()
    try:
        thresholds = Thresholds(
            auto=args.auto if args.auto is not None else defaults.auto,
            review=args.review if args.review is not None else defaults.review,
            margin=defaults.margin,
        )
    except ValueError as exc:
        print(f"tongban match: {exc}", file=sys.stderr)
        return 2
    if args.register_mapping is not None and args.household_register is None:
        print("tongban match: --register-mapping needs --household-register", file=sys.stderr)
        return 2
    registration = read_table(args.registration, mapping=mapping)
    residence = read_table(args.residence, mapping=mapping)
    register = None
    if args.household_register is not None:
        register_mapping = load_mapping(args.register_mapping) if args.register_mapping else None
        register = open_register(args.household_register, mapping=register_mapping)
    run = match_tables(registration, residence, thresholds, register=register)
    write_links(run.links, args.out)
    log.info("match done: %d links in %.1f s", len(run.links), run.seconds)
    print(summary(run))
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = Thresholds()
    p = groups.add_parser(
        "match",
        help="match a registration ledger and a residence ledger offline (CSV/XLSX) and write the links",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("registration", type=Path, metavar="REGISTRATION_FILE", help="the registration-place ledger")
    p.add_argument("residence", type=Path, metavar="RESIDENCE_FILE", help="the residence-place ledger")
    p.add_argument("--out", type=Path, required=True, metavar="LINKS.csv", help="where to write the links")
    p.add_argument("--mapping", type=Path, help="column mapping file for both ledgers (see docs/county-ledgers.md)")
    p.add_argument("--auto", type=float, help=f"score to link automatically (default {defaults.auto})")
    p.add_argument("--review", type=float, help=f"score to propose for review (default {defaults.review})")
    p.add_argument(
        "--household-register",
        type=Path,
        metavar="FILE",
        help="the registration county's household register (户籍登记: 户号, 姓名, 公民身份号码, 出生日期; CSV/XLSX): "
        "its single births may be linked despite a one-character name typo (see docs/county-ledgers.md)",
    )
    p.add_argument(
        "--register-mapping",
        type=Path,
        metavar="FILE",
        help="column mapping file for the household register (the ledgers' --mapping does not apply to it)",
    )
    p.set_defaults(handler=_run)
