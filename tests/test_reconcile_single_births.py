"""Single births in reconciliation, end to end: the household register given at import decides.

Two enrolled nodes run as :class:`NodeServer` over mutual TLS on 127.0.0.1 (the setup of
``tests/test_reconcile_e2e.py``): 南部县 (511321, ``sc-nanbu``, its database on SQLite and then on
PostgreSQL: the ``db_url`` fixture), the registration place, imports
the same ledger CSV for two periods with the real ``tongban roster import`` — for 2026Q3 without
its household register, for 2026Q4 with it (``--household-register``); 两江新区 (500157,
``cq-liangjiang``) sends the same roster for both periods with ``tongban roster send``. 南部县
runs ``tongban reconcile run`` for each period, its answers travel back, and 两江新区 runs it too.

The synthetic children (tests.factories, Faker zh_CN), all registered at 南部县 and gone to 两江新区;
every notice is without an ID number (so only the fuzzy stage can link it) and born the same day as
the child it is about:

=====  ==========================================  ==============================  ==================
child  南部县: ledger row / household register       两江新区's notice               with the register
=====  ==========================================  ==============================  ==================
s1     with ID / alone in its household (+ parent)  a one-character typo of s1      matched
s2     ID lost in the ledger / alone (found by      a one-character typo of s2      matched
       name and birth date)
a      with ID / with its twin b                    b (not in 南部县's ledger),      review
                                                    a one-character edit of a
c, d   with ID each / twins                         a one-character typo of c       review
=====  ==========================================  ==============================  ==================

Without the register every one of these notices goes to review, as before. Assertions compare
labels (``s1``, ``a`` …) and codes, never names, ID numbers or dates.
"""

from __future__ import annotations

import csv
import dataclasses
import uuid
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.cli import main
from gateway.config import NodeConfig
from gateway.domain.records import ChildKind, ChildRecord
from gateway.node import open_node
from gateway.reconcile import service as reconcile_service
from gateway.reconcile import store
from gateway.reconcile.findings import Code, Finding, Role
from gateway.server import NodeServer
from gateway.store.schema import inbox
from gateway.synth.export import CSV_HEADER, csv_row
from gateway.trust import keyfile
from tests.factories import child, one_character_edit, three_character_name
from tests.test_delivery import eventually
from tests.test_mtls import PASSPHRASE
from tests.test_reconcile_e2e import enrol_nodes, serving

pytestmark = pytest.mark.slow

WITHOUT, WITH = "2026Q3", "2026Q4"  # the periods imported without and with the household register
LJ, NB = "cq-liangjiang", "sc-nanbu"
DIVISIONS = {LJ: "500157", NB: "511321"}
REGISTER_HEADER = ("户号", "姓名", "公民身份号码", "出生日期", "与户主关系")


@dataclasses.dataclass(frozen=True)
class Children:
    ledger: dict[str, ChildRecord]  # 南部县's ledger rows, by label, in file order
    register: list[list[str]]  # 南部县's household register rows
    notices: dict[str, ChildRecord]  # 两江新区's records (its notices), by the label of the child meant


def _person(n: int, born: date, name: str) -> ChildRecord:
    """A child registered at 南部县 and gone to 两江新区 (its own record of it)."""
    record = child(n, registration=DIVISIONS[NB], residence=DIVISIONS[LJ], kind=ChildKind.NEITHER, born=born)
    return dataclasses.replace(record, name=name)


def _notice(record: ChildRecord, name: str) -> ChildRecord:
    """两江新区's record of the child: migrant, its own record id, the ID number lost, ``name``."""
    return dataclasses.replace(record, record_id=str(uuid.uuid4()), kind=ChildKind.MIGRANT, id_number=None, name=name)


def children() -> Children:
    # Twins share a sex (n of one parity), so that only the name can tell them apart.
    s1 = _person(21, date(2014, 3, 9), three_character_name())
    s2 = _person(24, date(2015, 6, 1), three_character_name())
    a = _person(31, date(2016, 8, 20), three_character_name())
    b = _person(33, a.birth_date, one_character_edit(a.name))
    c = _person(41, date(2013, 11, 5), three_character_name())
    d = _person(43, c.birth_date, one_character_edit(c.name))
    ledger = {"s1": s1, "s2": dataclasses.replace(s2, id_number=None), "a": a, "c": c, "d": d}

    def row(household: str, person: ChildRecord, relation: str = "子") -> list[str]:
        return [household, person.name, person.id_number or "", person.birth_date.isoformat(), relation]

    register = [
        ["0001", "某某", "", "1986-04-02", "户主"],  # s1's parent: an adult without an ID number
        row("0001", s1),
        row("0002", s2),  # with its ID number: the ledger row lost it
        row("0003", a),
        row("0003", b),
        row("0004", c),
        row("0004", d),
    ]
    notices = {
        "s1": _notice(s1, one_character_edit(s1.name)),
        "s2": _notice(s2, one_character_edit(s2.name)),
        "a": _notice(b, b.name),  # the co-twin's notice: an edit of a's name, born the same day
        "c": _notice(c, one_character_edit(c.name, unlike=[d.name])),
    }
    return Children(ledger, register, notices)


def _write(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _cfg(cfgs: dict[str, NodeConfig], node_id: str) -> list[str]:
    return ["--config", str(cfgs[node_id].path)]


def _inbox(servers: dict[str, NodeServer], node_id: str, sender: str, purpose: str) -> int:
    with servers[node_id].node.engine.connect() as conn:
        query = select(func.count()).where(inbox.c.sender == sender, inbox.c.purpose == purpose)
        return int(conn.execute(query.select_from(inbox)).scalar_one())


def _findings(cfg: NodeConfig, period: str) -> list[Finding]:
    node = open_node(cfg)
    try:
        return list(store.load(node.engine, period))
    finally:
        node.engine.dispose()


def _by_label(findings: list[Finding], role: Role, labels: dict[str, str]) -> dict[str, set[Code]]:
    out: dict[str, set[Code]] = defaultdict(set)
    for f in findings:
        if f.role is role and f.record_ref in labels:
            out[labels[f.record_ref]].add(f.code)
    return dict(out)


def test_a_typo_of_a_single_birth_is_matched_with_the_register_and_twins_never_are(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    cfgs = enrol_nodes(tmp_path, DIVISIONS, {NB: db_url})  # 南部县 on SQLite, then on PostgreSQL
    kids = children()
    ledger = _write(tmp_path / "户籍地台账.csv", CSV_HEADER, [csv_row(r) for r in kids.ledger.values()])
    register = _write(tmp_path / "户籍登记.csv", REGISTER_HEADER, kids.register)
    labels_by_row = dict(enumerate(kids.ledger, start=1))  # source row -> label

    # 1. 南部县 imports its ledger: without the register, then (next period) with it.
    capsys.readouterr()
    assert main(["roster", "import", *_cfg(cfgs, NB), "--period", WITHOUT, "--quiet", str(ledger)]) == 0
    without = capsys.readouterr().out
    assert "single births" not in without
    args = ["--period", WITH, "--quiet", str(ledger), "--household-register", str(register)]
    assert main(["roster", "import", *_cfg(cfgs, NB), *args]) == 0
    out, err = capsys.readouterr()
    assert "household register: 7 rows, 4 households (0 skipped)" in out
    assert "single births: 2 records (3 with a sibling born within a day, 0 not found, 0 undecided)" in out
    secrets = [v for r in [*kids.ledger.values(), *kids.notices.values()] for v in (r.name, r.id_number) if v]
    assert not any(secret in out + err for secret in secrets)

    node = open_node(cfgs[NB])
    try:
        stored = {
            period: {labels_by_row[r.provenance.source_row or 0]: r for r in node.children.iter_period(period)}
            for period in (WITHOUT, WITH)
        }
        # Matched as `tongban match --household-register` matches: with single births in the ledger,
        # every entry (twins too) gives its edit masks, whose frequency over the whole ledger guards
        # against strangers; without them, none does.
        key = bytes(range(32))
        assert all(e.name_edits for e in reconcile_service._ledger_entries(node, WITH, key))
        assert not any(e.name_edits or e.single_birth for e in reconcile_service._ledger_entries(node, WITHOUT, key))
    finally:
        node.engine.dispose()
    assert {k: r.single_birth for k, r in stored[WITHOUT].items()} == dict.fromkeys(kids.ledger)
    assert {k: r.single_birth for k, r in stored[WITH].items()} == {
        "s1": True,
        "s2": True,  # found by name and birth date: its ledger row has no ID number
        "a": False,  # its co-twin b is in no ledger of 南部县's, but in the register
        "c": False,
        "d": False,
    }

    # 2. 两江新区's ledger, the same for both periods.
    node = open_node(cfgs[LJ])
    try:
        for period in (WITHOUT, WITH):
            node.children.add_many(kids.notices.values(), period=period)
    finally:
        node.engine.dispose()

    with serving(cfgs) as servers:
        # 3. 两江新区 sends its rosters; 南部县 reconciles both periods and answers.
        for period in (WITHOUT, WITH):
            assert main(["roster", "send", *_cfg(cfgs, LJ), "--period", period]) == 0
        eventually(lambda: _inbox(servers, NB, LJ, "roster_manifest") == 2, what="两江新区's rosters at 南部县")
        eventually(lambda: _inbox(servers, NB, LJ, "migrant_notice") == 2, what="两江新区's notices")
        for period in (WITHOUT, WITH):
            assert main(["reconcile", "run", *_cfg(cfgs, NB), "--period", period]) == 0
        eventually(lambda: _inbox(servers, LJ, NB, "match_result") >= 2, what="南部县's answers at 两江新区")
        for period in (WITHOUT, WITH):
            assert main(["reconcile", "run", *_cfg(cfgs, LJ), "--period", period]) == 0

    # 4. 南部县's findings as registration place, by child.
    for period in (WITHOUT, WITH):
        labels = {r.record_id: k for k, r in stored[period].items()}
        registration = _by_label(_findings(cfgs[NB], period), Role.REGISTRATION, labels)
        assert Code.MATCHED not in registration["a"] | registration["c"] | registration.get("d", set())
        assert Code.REVIEW in registration["a"]  # b's notice: a look-alike of a, for a person to decide
        assert Code.REVIEW in registration["c"] | registration.get("d", set())
        if period == WITHOUT:
            assert Code.REVIEW in registration["s1"]
            assert registration["s2"] == {Code.REVIEW}
        else:
            # s1 has a valid ID and its notice none: linked automatically, and that is reported.
            assert registration["s1"] == {Code.INCONSISTENT_IDENTIFIER}
            assert registration["s2"] == {Code.MATCHED}

    # 5. 两江新区's findings as residence place, from 南部县's answers, by the child meant.
    own = {r.record_id: k for k, r in kids.notices.items()}
    residence = {period: _by_label(_findings(cfgs[LJ], period), Role.RESIDENCE, own) for period in (WITHOUT, WITH)}
    assert residence[WITHOUT] == {k: {Code.REVIEW} for k in kids.notices}
    assert residence[WITH] == {"s1": {Code.MATCHED}, "s2": {Code.MATCHED}, "a": {Code.REVIEW}, "c": {Code.REVIEW}}
