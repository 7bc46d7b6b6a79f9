"""``tongban synth``: write a seeded synthetic county ledger as CSV or JSON Lines.

The same options and seed always give the same bytes. Output goes to ``--out`` (written to a
temporary file beside it and renamed into place, so a failed run leaves no half-written ledger)
or to standard output. A one-line summary — counts only, never a name or a number — goes to
standard error.

Exit codes are those of the top-level CLI; ``141`` when standard output is closed early (``| head``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import IO

from tqdm import tqdm

from gateway.domain.divisions import DivisionTable
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord
from gateway.domain.rules import load_rules
from gateway.synth import SynthSpec, generate_households, roster_for, write_csv, write_jsonl
from gateway.synth.generator import Household

#: 两江新区 (Chongqing), created November 2025: a large receiving district.
DEFAULT_RESIDENCE = ("500157",)
#: Labour-exporting counties around it: 云阳县, 奉节县 and 北碚区 (Chongqing; 北碚 took part of old
#: 渝北, so some of its children's ID numbers start 500112, and a move from it to 两江新区 is exempt),
#: 仪陇县 and 邻水县 (Sichuan), 织金县 (Guizhou; recoded from 522425 in 2011, which older children's
#: ID numbers still show).
DEFAULT_REGISTRATION = ("500235", "500236", "500109", "511324", "511623", "520524")

_WRITERS = {"csv": write_csv, "jsonl": write_jsonl}


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The latest completed quarter: no synthetic birth or move date then lies in the future.
    current = MonitoringPeriod.containing(date.today(), Cadence.QUARTERLY).previous().label
    p = groups.add_parser(
        "synth",
        help="write a seeded synthetic child ledger (CSV or JSON Lines) for demos and tests",
        description=(
            "Generate synthetic households of migrant, left-behind and other children with valid, "
            "unique ID numbers and classify them with the real rules. Nothing is a real person."
        ),
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    p.add_argument(
        "--households", type=_non_negative, default=100, help="households to generate (default: %(default)s)"
    )
    p.add_argument(
        "--period",
        default=current,
        help="monitoring period: 2026Q4, 2026-11 or 2026H2 (default: latest completed quarter, %(default)s)",
    )
    p.add_argument(
        "--residence",
        action="append",
        metavar="CODE",
        help=f"county where migrant families live; repeatable (default: {' '.join(DEFAULT_RESIDENCE)})",
    )
    p.add_argument(
        "--registration",
        action="append",
        metavar="CODE",
        help=f"county the children are registered in; repeatable (default: {' '.join(DEFAULT_REGISTRATION)})",
    )
    p.add_argument(
        "--owner",
        metavar="CODE",
        help="write only this county's ledger (migrants living there, left-behind children registered there)",
    )
    p.add_argument("--format", choices=sorted(_WRITERS), default="csv", help="output format (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="PATH", help="output file (default: standard output)")
    p.add_argument(
        "--missing-id-rate",
        type=float,
        default=0.01,
        metavar="RATE",
        help="share of children without an ID number, 0-1 (default: %(default)s)",
    )
    p.add_argument("--node-id", default="synth", help="node id written into provenance (default: %(default)s)")
    p.set_defaults(handler=run)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def run(args: argparse.Namespace) -> int:
    table = DivisionTable.load_default()
    rules = load_rules()
    residence = tuple(args.residence or DEFAULT_RESIDENCE)
    registration = tuple(args.registration or DEFAULT_REGISTRATION)
    # Fail before any output: every code must be a current routing code.
    for code in dict.fromkeys((*residence, *registration, *([args.owner] if args.owner else []))):
        table.current(code)
    spec = SynthSpec(
        seed=args.seed,
        period=MonitoringPeriod.parse(args.period),
        residence_divisions=residence,
        registration_divisions=registration,
        households=args.households,
        missing_id_rate=args.missing_id_rate,
        node_id=args.node_id,
    )
    households = tqdm(
        generate_households(spec, table, rules),
        total=spec.households,
        unit="household",
        leave=False,
        disable=None,  # only on a terminal
        file=sys.stderr,
    )
    tally = _Tally()
    records: Iterator[ChildRecord] = (child for h in tally.households(households) for child in h.children)
    if args.owner:
        records = roster_for(records, args.owner)
    writer = _WRITERS[args.format]
    if args.out is None:
        try:
            writer(tally.records(records), sys.stdout.buffer)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep Python from failing on exit
            # while flushing a closed stdout.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141
    else:
        _write_atomically(args.out, lambda stream: writer(tally.records(records), stream))
    print(tally.summary(spec, args.owner), file=sys.stderr)
    return 0


class _Tally:
    """Counts households and records by kind as they stream past (counts only: no personal data)."""

    def __init__(self) -> None:
        self.household_count = 0
        self.kinds: collections.Counter[ChildKind] = collections.Counter()
        self.without_id = 0

    def households(self, items: Iterable[Household]) -> Iterator[Household]:
        for household in items:
            self.household_count += 1
            yield household

    def records(self, items: Iterator[ChildRecord]) -> Iterator[ChildRecord]:
        for record in items:
            self.kinds[record.kind] += 1
            self.without_id += record.id_number is None
            yield record

    def summary(self, spec: SynthSpec, owner: str | None) -> str:
        total = sum(self.kinds.values())
        scope = f"roster of {owner}" if owner else "all records"
        kinds = ", ".join(f"{kind.value} {self.kinds[kind]}" for kind in ChildKind)
        return (
            f"synth: {total} records ({scope}) from {self.household_count} households, "
            f"seed {spec.seed}, period {spec.period.label}: {kinds}; {self.without_id} without ID number"
        )


def _write_atomically(path: Path, write: Callable[[IO[bytes]], int]) -> None:
    """Write through a temporary file in the same directory and rename it into place."""
    directory = path.parent if str(path.parent) else Path()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
