"""Reconciliation end to end over real mutual TLS on 127.0.0.1 (SPEC §5): both sides see every discrepancy.

Three enrolled nodes run as :class:`NodeServer` (with their delivery loops): 两江新区 (500157,
``cq-liangjiang``) and 北碚区 (500109, ``cq-beibei``) are residence places, 南部县 (511321,
``sc-nanbu``) the registration place. The residence nodes send their rosters with the real
``tongban roster send``; 南部县 runs ``tongban reconcile run``, its answers travel back; the
residence nodes run ``tongban reconcile run`` too; both sides' findings and reports are checked.

The synthetic children (tests.factories, Faker zh_CN), by what the two ledgers say:

=====  =================================  =================================  =================================
child  南部县 (registration)              residence nodes                    finding
=====  =================================  =================================  =================================
c1     gone to 两江新区                   两江新区: migrant                  matched
c2     left-behind at home                两江新区: migrant                  living here, recorded left-behind
c3     —                                  两江新区: migrant                  not in ledger
c4     gone to 两江新区                   —                                  gone but absent
c5     gone to 500110 (no node)           —                                  roster missing
c6     left-behind at home                两江新区 and 北碚区: migrant       claimed by two, and left-behind
c7     no ID number, gone to 两江新区     两江新区: migrant, no ID number    matched (fuzzy), invalid ID
=====  =================================  =================================  =================================
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway import audit, config
from gateway.cli import main
from gateway.config import NodeConfig
from gateway.domain.records import ChildKind, ChildRecord
from gateway.node import open_node
from gateway.reconcile import store
from gateway.reconcile.findings import Code, Finding, Role
from gateway.server import NodeServer
from gateway.store.schema import inbox
from gateway.trust import keyfile
from tests.factories import child
from tests.test_delivery import FAST, eventually, free_port
from tests.test_mtls import PASSPHRASE, LivePki, enrol_on_disk, publish

pytestmark = pytest.mark.slow

PERIOD = "2026Q4"
LJ, BB, NB = "cq-liangjiang", "cq-beibei", "sc-nanbu"
DIVISIONS = {LJ: "500157", BB: "500109", NB: "511321"}


def at(record: ChildRecord, *, residence: str, kind: ChildKind, with_id: bool = True) -> ChildRecord:
    """The same child as another county's ledger records it (its own record id)."""
    return dataclasses.replace(
        record,
        record_id=str(uuid.uuid4()),
        residence_division=residence,
        kind=kind,
        id_number=record.id_number if with_id else None,
    )


@dataclasses.dataclass
class World:
    cfgs: dict[str, NodeConfig]
    servers: dict[str, NodeServer]
    children: dict[str, ChildRecord]  # the residence-side record of each child (c1…c7), or the only one
    registration: dict[str, ChildRecord]  # 南部县's record of each child it holds

    def inbox(self, node_id: str, sender: str, purpose: str) -> int:
        with self.servers[node_id].node.engine.connect() as conn:
            query = select(func.count()).where(inbox.c.sender == sender, inbox.c.purpose == purpose)
            return int(conn.execute(query.select_from(inbox)).scalar_one())

    def findings(self, node_id: str) -> list[Finding]:
        node = open_node(self.cfgs[node_id])
        try:
            return list(store.load(node.engine, PERIOD))
        finally:
            node.engine.dispose()


def enrol_nodes(
    tmp_path: Path, divisions: Mapping[str, str], database_urls: Mapping[str, str] | None = None
) -> dict[str, NodeConfig]:
    """Enrol one node per ``node id -> division`` on disk (keys under :data:`PASSPHRASE`, which the
    caller puts in the environment), each on its own loopback port, and publish the directory.
    A node's database is SQLite in its directory unless ``database_urls`` names another."""
    live = LivePki.create()
    ports = {node_id: free_port() for node_id in divisions}
    for node_id, port in ports.items():
        live.node(node_id).endpoint = f"127.0.0.1:{port}"
    cfgs: dict[str, NodeConfig] = {}
    for node_id, division in divisions.items():
        cfg = enrol_on_disk(
            tmp_path, live, node_id, division, database_url=(database_urls or {}).get(node_id, "sqlite:///node.db")
        )
        text = cfg.path.read_text(encoding="utf-8").replace('"127.0.0.1:0"', f'"127.0.0.1:{ports[node_id]}"')
        cfg.path.write_text(text, encoding="utf-8")
        pki_node = live.node(node_id)
        keyfile.write_private_key(cfg.signing_key, pki_node.signers[0].private_key, PASSPHRASE.encode())
        keyfile.write_private_key(cfg.encryption_key, pki_node.encryption_key, PASSPHRASE.encode())
        cfgs[node_id] = config.load(cfg.path)
    bundle = live.bundle()
    for cfg in cfgs.values():
        publish(cfg, bundle)
    return cfgs


@contextlib.contextmanager
def serving(cfgs: Mapping[str, NodeConfig]) -> Iterator[dict[str, NodeServer]]:
    """Every node running as a :class:`NodeServer` with its delivery loop, stopped on leaving."""
    servers: dict[str, NodeServer] = {}
    try:
        for node_id, cfg in cfgs.items():
            server = NodeServer(open_node(cfg), retry_policy=FAST, delivery_poll_interval=0.1)
            server.start()
            servers[node_id] = server
        yield servers
    finally:
        for server in servers.values():
            server.stop(grace=0)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    cfgs = enrol_nodes(tmp_path, DIVISIONS)

    # The ledgers (see the module docstring).
    lj, bb, nb = "500157", "500109", "511321"
    c = {f"c{i}": child(100 + i, registration=nb, residence=lj, with_id=i != 7) for i in range(1, 8)}
    registration = {
        "c1": at(c["c1"], residence=lj, kind=ChildKind.NEITHER),
        "c2": at(c["c2"], residence=nb, kind=ChildKind.LEFT_BEHIND),
        "c4": at(c["c4"], residence=lj, kind=ChildKind.NEITHER),
        "c5": at(c["c5"], residence="500110", kind=ChildKind.NEITHER),
        "c6": at(c["c6"], residence=nb, kind=ChildKind.LEFT_BEHIND),
        "c7": at(c["c7"], residence=lj, kind=ChildKind.NEITHER, with_id=False),
    }
    ledgers = {
        LJ: [c[k] for k in ("c1", "c2", "c3", "c6", "c7")],
        BB: [at(c["c6"], residence=bb, kind=ChildKind.MIGRANT)],
        NB: list(registration.values()),
    }
    for node_id, records in ledgers.items():
        node = open_node(cfgs[node_id])
        try:
            node.children.add_many(records, period=PERIOD)
        finally:
            node.engine.dispose()

    with serving(cfgs) as servers:
        yield World(cfgs, servers, c, registration)


def codes(findings: list[Finding], **match: str) -> Counter[Code]:
    return Counter(f.code for f in findings if all(getattr(f, k) == v for k, v in match.items()))


def cfg_arg(world: World, node_id: str) -> list[str]:
    return ["--config", str(world.cfgs[node_id].path)]


def test_rosters_reconciled_and_answered_both_sides_see_every_discrepancy(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 1. The residence places send their rosters (delivered by their running nodes). 两江新区's goes
    #    as three batches of at most two notices, so `roster send` hands them to its
    #    [exchange] roster_workers pool (2 by default: this process builds while one worker spawns).
    assert main(["roster", "send", *cfg_arg(world, LJ), "--period", PERIOD, "--batch-size", "2"]) == 0
    assert "5 notices in 3 batch(es) + manifest" in capsys.readouterr().out
    assert main(["roster", "send", *cfg_arg(world, BB), "--period", PERIOD]) == 0
    eventually(lambda: world.inbox(NB, LJ, "roster_manifest") == 1, what="两江新区's roster at 南部县")
    eventually(lambda: world.inbox(NB, BB, "roster_manifest") == 1, what="北碚区's roster at 南部县")
    eventually(lambda: world.inbox(NB, LJ, "migrant_notice") == 3, what="两江新区's notices")

    # 2. The registration place reconciles and answers.
    capsys.readouterr()
    assert main(["reconcile", "run", *cfg_arg(world, NB), "--period", PERIOD]) == 0
    out = capsys.readouterr().out
    assert "roster of cq-liangjiang matched (5 notices)" in out
    assert "roster of cq-beibei matched (1 notices)" in out

    reg = {r.record_id: key for key, r in world.registration.items()}
    nb = world.findings(NB)
    by_child = sorted((reg.get(f.record_ref, ""), f.code.value, f.peer) for f in nb)
    assert by_child == [
        ("", "not_in_ledger", LJ),  # c3
        ("", "roster_missing", ""),  # c5
        ("c1", "matched", LJ),
        ("c2", "living_here_recorded_left_behind", LJ),
        ("c4", "gone_but_absent", LJ),
        ("c6", "claimed_by_two", BB),
        ("c6", "claimed_by_two", LJ),
        ("c6", "living_here_recorded_left_behind", BB),  # and recorded as left-behind at home
        ("c6", "living_here_recorded_left_behind", LJ),
        ("c7", "invalid_identifier", ""),
        ("c7", "matched", LJ),  # no ID on either side: the fuzzy stage found it
    ]
    assert codes(nb, code=Code.NOT_IN_LEDGER) == {Code.NOT_IN_LEDGER: 1}  # c3
    (not_in_ledger,) = [f for f in nb if f.code is Code.NOT_IN_LEDGER]
    assert not_in_ledger.peer_ref == world.children["c3"].record_id  # the notice reference 两江新区 chose
    (missing,) = [f for f in nb if f.code is Code.ROSTER_MISSING]
    assert (missing.peer, missing.peer_division, missing.detail.split(";")[0]) == (
        "",
        "500110",
        "1 children recorded as gone there",
    )

    # Running again replaces the period's findings (nothing doubles).
    assert main(["reconcile", "run", *cfg_arg(world, NB), "--period", PERIOD, "--no-send"]) == 0
    assert sorted(map(repr, world.findings(NB))) == sorted(map(repr, nb))

    # 3. The answers reach the residence places, which derive their own findings.
    eventually(lambda: world.inbox(LJ, NB, "match_result") >= 1, what="南部县's answers at 两江新区")
    eventually(lambda: world.inbox(BB, NB, "match_result") >= 1, what="南部县's answers at 北碚区")
    assert main(["reconcile", "run", *cfg_arg(world, LJ), "--period", PERIOD]) == 0
    assert main(["reconcile", "run", *cfg_arg(world, BB), "--period", PERIOD]) == 0
    own = {r.record_id: key for key, r in world.children.items()}
    lj = {(own.get(f.record_ref, ""), f.code) for f in world.findings(LJ) if f.role is Role.RESIDENCE}
    assert lj == {
        ("c1", Code.MATCHED),
        ("c2", Code.LIVING_HERE_RECORDED_LEFT_BEHIND),
        ("c3", Code.NOT_IN_LEDGER),
        ("c6", Code.CLAIMED_BY_TWO),
        ("c6", Code.LIVING_HERE_RECORDED_LEFT_BEHIND),
        ("c7", Code.MATCHED),
    }
    bb = [f for f in world.findings(BB) if f.role is Role.RESIDENCE]
    assert [(f.code, f.peer) for f in bb] == [(Code.CLAIMED_BY_TWO, NB), (Code.LIVING_HERE_RECORDED_LEFT_BEHIND, NB)]
    # The registration reference is opaque: not the registration place's record id.
    assert all(
        f.peer_ref and f.peer_ref not in reg
        for f in world.findings(LJ)
        if f.role is Role.RESIDENCE and f.code is not Code.NOT_IN_LEDGER
    )

    # 4. The registration place's report: counts on the terminal, names only in the file.
    capsys.readouterr()
    report = tmp_path / "report.csv"
    assert (
        main(["reconcile", "report", *cfg_arg(world, NB), "--period", PERIOD, "--format", "csv", "--out", str(report)])
        == 0
    )
    terminal = capsys.readouterr()
    assert "gone_but_absent" in terminal.out
    assert "cq-liangjiang" in terminal.out
    names = {r.name for r in world.registration.values()}
    assert not any(name in terminal.out + terminal.err for name in names)
    assert report.stat().st_mode & 0o777 == 0o600
    node = open_node(world.cfgs[NB])
    try:  # writing names to a file is a read of personal data: audited, references only
        (read,) = [e for e in audit.entries(node.engine) if e.action == "read"]
    finally:
        node.engine.dispose()
    assert (read.reference, read.detail) == (f"reconcile/{PERIOD}", "report format=csv findings=11")
    with report.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 11
    assert next(iter(rows[0])) == "核对结果 (finding)"
    absent = next(r for r in rows if r["结果代码 (code)"] == "gone_but_absent")
    assert absent["核对结果 (finding)"] == "户籍地登记外出至两江新区但两江新区名册中无此儿童"
    assert absent["姓名 (name)"] == world.registration["c4"].name
    assert absent["来源 (source)"] == "test:factories"
    assert absent["本地记录编号 (record id)"] == world.registration["c4"].record_id
    missing_row = next(r for r in rows if r["结果代码 (code)"] == "roster_missing")
    assert missing_row["核对结果 (finding)"].startswith("未收到")
    assert missing_row["姓名 (name)"] == ""

    xlsx = tmp_path / "report.xlsx"
    assert (
        main(["reconcile", "report", *cfg_arg(world, LJ), "--period", PERIOD, "--format", "xlsx", "--out", str(xlsx)])
        == 0
    )
    from openpyxl import load_workbook

    sheet = load_workbook(xlsx, read_only=True).active
    assert sheet is not None
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0][0] == "核对结果 (finding)"
    assert "户籍地台账中无此儿童" in {row[0] for row in values[1:]}


def test_a_csv_report_needs_a_file(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "report", *cfg_arg(world, NB), "--period", PERIOD, "--format", "csv"]) == 65
    assert "--out" in capsys.readouterr().err
