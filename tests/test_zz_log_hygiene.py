"""Logs never contain personal data (SPEC §7; issue 4, item 7).

The session collects every log record — this process's at DEBUG from every logger, and every
``tongban`` process a test starts, through ``TONGBAN_LOG_FILE`` — in one file, and remembers every
personal value put in a :class:`~gateway.domain.records.ChildRecord` (see ``tests/conftest.py``).
The last test of the session (this module's name sorts last) scans that file for

* any **valid** resident ID number (18 characters, ASCII or full-width, passing
  :func:`gateway.domain.idnumber.parse`) — whoever made it;
* ``[redacted-id]``, the mark :class:`gateway.logs.RedactIds` leaves when it had to step in (in any
  process), and that filter's count in this process: the last line of defence must never fire;
* every name and guardian phone the session put in a record, plus those of the synthetic
  populations processes started by tests generate (the demo's seed 2026, ``tongban synth`` seeds
  0-20), regenerated here. Names of three or more characters count anywhere; two-character names
  only as a whole run of Chinese characters (``王伟`` alone, not inside ``王伟东路``).

It does the same for the message of every :class:`~gateway.errors.GatewayError` the session made.
Failures name only counts and line numbers, never a value. The tests before the scan prove it
catches what it looks for, so it cannot pass vacuously.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway import logs
from gateway.cli.synth import DEFAULT_REGISTRATION, DEFAULT_RESIDENCE
from gateway.demo import DEMO_NODES
from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.domain.records import ChildRecord
from gateway.domain.rules import load_rules
from gateway.errors import InvalidIdNumber
from gateway.synth.generator import SynthSpec, generate
from tests import factories

if TYPE_CHECKING:
    from tests.conftest import SessionLog

ID_CANDIDATE = re.compile(r"(?<![0-9０-９])[0-9０-９]{17}[0-9０-９XxＸｘ](?![0-9０-９])")
PHONE_CANDIDATE = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")
# Runs of Chinese characters; the middle dot joins the parts of Uyghur and Tibetan names.
HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u00b7]+")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# `2026-11-23 12:00:00,123 [4711] INFO …` (text) or a JSON object with "pid".
TEXT_PID = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] ")

DEMO_SEED = 2026
SYNTH_SEEDS = (*range(21), DEMO_SEED)


class PersonalValues:
    """What to look for: names (with a Chinese character) and phones; ID numbers need no list."""

    def __init__(self, values: Iterable[str]) -> None:
        self.whole: set[str] = set()  # two-character names: only a whole run counts
        self.anywhere: set[str] = set()  # three or more characters
        self.phones: set[str] = set()
        for value in values:
            if len(value) == 11 and value.isascii() and value.isdigit():
                self.phones.add(value)
            elif HAN.search(value) and len(value) >= 2:
                (self.whole if len(value) == 2 else self.anywhere).add(value)
        self.lengths = sorted({len(v) for v in self.anywhere})

    def __len__(self) -> int:
        return len(self.whole) + len(self.anywhere) + len(self.phones)

    def names_in(self, line: str) -> int:
        hits = 0
        for run in HAN_RUN.findall(line):
            if run in self.whole:
                hits += 1
                continue
            for n in self.lengths:
                if n > len(run):
                    break
                hits += sum(run[i : i + n] in self.anywhere for i in range(len(run) - n + 1))
        return hits

    def phones_in(self, line: str) -> int:
        return sum(m in self.phones for m in PHONE_CANDIDATE.findall(line))


def valid_ids_in(line: str) -> int:
    count = 0
    for candidate in ID_CANDIDATE.findall(line):
        try:
            idnumber.parse(candidate)
        except InvalidIdNumber:
            continue
        count += 1
    return count


@dataclass
class Findings:
    """Where personal data was found: 1-based line numbers, never the values."""

    lines: int = 0
    pids: set[int] = field(default_factory=set)
    id_numbers: list[int] = field(default_factory=list)
    redactions: list[int] = field(default_factory=list)
    names: list[int] = field(default_factory=list)
    phones: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.id_numbers or self.redactions or self.names or self.phones)

    def report(self, what: str) -> str:
        parts = [
            f"{len(found)} line(s) with {label} (line numbers {found[:20]})"
            for label, found in (
                ("a valid ID number", self.id_numbers),
                (f"the filter's {logs.REDACTED_ID} mark", self.redactions),
                ("a generated name", self.names),
                ("a generated phone", self.phones),
            )
            if found
        ]
        return f"personal data in {what}: " + "; ".join(parts)


def scan(lines: Iterable[str], values: PersonalValues) -> Findings:
    found = Findings()
    for number, line in enumerate(lines, start=1):
        found.lines += 1
        pid = TEXT_PID.match(line)
        if pid:
            found.pids.add(int(pid.group(1)))
        elif line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
                found.pids.add(entry["pid"])
        if valid_ids_in(line):
            found.id_numbers.append(number)
        if logs.REDACTED_ID in line:
            found.redactions.append(number)
        if values.names_in(line):
            found.names.append(number)
        if values.phones_in(line):
            found.phones.append(number)
    return found


def _values_of(records: Iterable[ChildRecord]) -> Iterable[str]:
    for r in records:
        yield r.name
        if r.guardian is not None:
            yield r.guardian.name
            if r.guardian.phone:
                yield r.guardian.phone


def regenerated() -> set[str]:
    """Names and phones of the populations processes started by tests generate: the demo's
    (seed 2026, its three counties, its default 400 households) and ``tongban synth``'s defaults
    for seeds 0-20 and 2026 (100 households each), in the latest completed quarter as both use."""
    table, rules = DivisionTable.load_default(), load_rules()
    period = MonitoringPeriod.containing(date.today(), Cadence.QUARTERLY).previous()
    demo = SynthSpec(
        DEMO_SEED, period, tuple(n.division for n in DEMO_NODES[:2]), tuple(n.division for n in DEMO_NODES), 400
    )
    specs = [demo, *(SynthSpec(s, period, DEFAULT_RESIDENCE, DEFAULT_REGISTRATION, 100) for s in SYNTH_SEEDS)]
    return {v for spec in specs for v in _values_of(generate(spec, table, rules))}


# --- the scanner catches what it looks for ---------------------------------------------------------


def _planted(tmp_path: Path, *lines: str) -> list[str]:
    path = tmp_path / "planted.log"
    path.write_text("".join(f"2026-11-23 12:00:00,000 [4711] INFO tongban.test {x}\n" for x in lines), "utf-8")
    return path.read_text("utf-8").splitlines()


def test_the_scanner_finds_a_planted_id_number(tmp_path: Path) -> None:
    number = idnumber.make("511321", date(2014, 6, 1), 37)
    full_width = number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    broken = number[:17] + ("0" if number[17] != "0" else "1")  # ID-shaped, wrong check character
    lines = _planted(
        tmp_path,
        "message m-1 delivered",
        f"refused record id_number={number}",
        f"row 3: {full_width}",
        f"row 4: {broken}",
        f"digest ab{number}cd",
        f"a longer run 9{number}",
        f"refused {logs.REDACTED_ID}",
    )
    found = scan(lines, PersonalValues(()))
    assert found.id_numbers == [2, 3, 5]
    assert found.redactions == [7]
    assert (found.lines, found.pids) == (7, {4711})
    assert not found.clean
    assert number not in found.report("the planted log")


def test_the_scanner_finds_a_planted_name_and_phone(tmp_path: Path) -> None:
    record = factories.child(3)  # a guardian with a phone
    assert record.guardian is not None
    assert record.guardian.phone
    values = PersonalValues([record.name, record.guardian.phone, "王伟", "热依拉·艾力"])
    lines = _planted(
        tmp_path,
        "node cq-liangjiang accepted 3 records",
        f"row 2: name {record.name} refused",
        f"guardian phone {record.guardian.phone}",
        "child 王伟 refused",
        "division 王伟东路 is not a name",
        "热依拉·艾力 refused",
        f"{record.guardian.phone}1 is a longer number",
    )
    found = scan(lines, values)
    assert found.names == [2, 4, 6]
    assert found.phones == [3]
    assert found.id_numbers == found.redactions == []
    assert record.name not in found.report("the planted log")


def test_regenerated_populations_hold_names_and_phones() -> None:
    values = PersonalValues(regenerated())
    assert len(values.anywhere) > 1000
    assert len(values.whole) > 100
    assert len(values.phones) > 1000


# --- the scan of the whole session (keep last) -----------------------------------------------------


def test_nothing_the_session_logged_holds_personal_data(
    session_log: SessionLog, request: pytest.FixtureRequest, log_summary: Callable[[str], None]
) -> None:
    if all(item.path == request.path for item in request.session.items):
        pytest.skip("no other test ran in this session: nothing to scan")
    for handler in logging.getLogger().handlers:
        handler.flush()
    values = PersonalValues(factories.PERSONAL_VALUES | regenerated())
    # Streamed, never held in a local: a failure (even with --showlocals) must not print a line.
    with session_log.path.open(encoding="utf-8", errors="replace") as lines:
        in_logs = scan((line.rstrip("\n") for line in lines), values)
    in_errors = scan(sorted(session_log.exception_messages), values)
    problems = []
    if logs.REDACTOR.count:
        problems.append(f"the last line of defence (gateway.logs.RedactIds) fired {logs.REDACTOR.count} time(s)")
    if not in_logs.clean:
        problems.append(in_logs.report(f"the session's log {session_log.path}"))
    if not in_errors.clean:
        problems.append(in_errors.report("GatewayError messages (sorted, distinct)"))
    log_summary(
        f"log hygiene: scanned {in_logs.lines} log lines from {len(in_logs.pids)} process(es) and "
        f"{in_errors.lines} distinct GatewayError messages for {len(values)} personal values and any valid "
        f"ID number: {'FOUND PERSONAL DATA' if problems else 'clean'}"
    )
    assert not problems, "\n".join(problems)
