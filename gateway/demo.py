"""``tongban demo``: the project's story on one machine.

The story so far:

1. **Trust.** A national root of trust (2 of 3 root keys) names three provincial operators —
   重庆市, 四川省, 贵州省 — each with its own signing key and TLS certificate authority. Three county
   nodes generate their own keys, send enrolment requests to their province, get certificates
   back, and the provinces' signed parts are assembled into a signed national directory. All of
   it through the real ``tongban keys`` commands, exactly as operators run them.
2. **Rosters.** Each node imports this period's synthetic roster: the migrant children living in
   its county and the left-behind children registered there (流入地为主, 户籍地为主), with personal
   fields sealed at rest.
3. **Mutual TLS.** The nodes run as real ``tongban node serve`` processes on loopback and call
   each other over mutual TLS; a certificate from a CA outside the directory is refused.
4. **Exchange** and 5. **Reconciliation** of the migrant rosters (see README).
6. **Cases.** 两江新区 accepts an orphan-recognition and a living-subsidy application for children
   registered in 南部县 and 织金县 through ``tongban case``; the registration nodes' running servers
   receive them, request material once, then decide; custody follows each step (offer → accept) and
   each chain is verified offline with ``tongban custody verify`` after every step.
7. **Revocation.** 贵州省 revokes its node; after the next directory refresh the other nodes refuse
   its connections (after its case is decided: a revoked node can never act again).
8. **The web inbox.** 两江新区 accepts one more application for a child registered in 南部县; 南部县's
   operator creates a staff account (``tongban web staff add``), the demo checks over HTTP that the
   case is in the inbox, and prints the inbox's address with a one-time sign-in code
   (``tongban demo --serve`` keeps the nodes running to use it).

Each later capability extends this story.
``gateway`` never imports the ``keys`` package: the demo drives it through the command line's
entry points, as an operator would.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, TextIO

import grpc
import opencc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from tongban.v1 import common_pb2, node_pb2_grpc

from gateway import config as config_mod
from gateway.cli.case import read_draft
from gateway.client import CountyClient
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord
from gateway.domain.rules import load_rules
from gateway.errors import GatewayError
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.roster_pages import roster_pool
from gateway.exchange.rosters import received, send_migrant_roster
from gateway.matching.names import normalise_name
from gateway.node import Node, init_node, open_node
from gateway.reconcile import service as reconcile_service
from gateway.reconcile import store as reconcile_store
from gateway.reconcile.findings import Code, Role, label
from gateway.server import await_ready
from gateway.store.schema import child_records
from gateway.synth.export import write_csv
from gateway.synth.generator import Household, SynthSpec, generate_households, owner_of
from gateway.synth.ledgers import REGISTER_HEADER, register_cells
from gateway.trust.keyfile import (
    ENV_PASSPHRASE,
    ENV_PASSPHRASE_FILE,
    passphrase_from_env,
    read_encryption_key,
    read_signing_key,
)
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore
from gateway.trust.tls import TlsIdentity, secure_channel_to
from gateway.wire import node_info_from_wire


@dataclass(frozen=True)
class DemoProvince:
    prefix: str
    operator: str  # the provincial civil-affairs department that enrols the nodes


@dataclass(frozen=True)
class DemoNode:
    node_id: str
    division: str
    role: str  # what this county mostly is in the story


DEMO_PROVINCES = (
    DemoProvince("50", "重庆市民政局"),
    DemoProvince("51", "四川省民政厅"),
    DemoProvince("52", "贵州省民政厅"),
)
DEMO_NODES = (
    DemoNode("cq-liangjiang", "500157", "residence place (居住地) of migrant families"),
    DemoNode("sc-nanbu", "511321", "registration place (户籍地) of migrant and left-behind children"),
    DemoNode("gz-zhijin", "520524", "registration place; revoked at the end of the story"),
)
REGISTER_NODE = "sc-nanbu"  # imports its ledger with its household register (户籍登记)
REVOKED = "gz-zhijin"
RESTARTED = "gz-zhijin"  # killed and restarted in the middle of the exchange
REFRESH_SECONDS = 1.0  # the demo's nodes re-read the directory every second
CASE_SYNC_SECONDS = 0.5  # and apply received case messages twice a second


class DemoFailed(GatewayError):
    code = "demo_failed"
    public_message = "the demo could not complete"


def _keys(*args: str | Path) -> str:
    """Run ``tongban keys …`` in-process (through the CLI's entry points); return its output."""
    from gateway.cli import main  # the CLI imports this module; import it lazily

    argv = ["keys", *(str(a) for a in args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        raise DemoFailed(f"`tongban {' '.join(argv[:3])}` exited {code}: {err.getvalue().strip()[-300:]}")
    return out.getvalue()


def _tongban(*args: str | Path) -> tuple[int, str]:
    """Run a ``tongban`` command in-process; return its exit status and what it printed."""
    from gateway.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@dataclass(frozen=True)
class DemoLedger:
    records: list[ChildRecord]
    notes: list[str]  # what this ledger gets wrong, on purpose (counts only)
    typo: str | None = None  # the ID number (never shown) of the child whose name 两江新区 typed wrong


def _ledgers(population: Sequence[ChildRecord], seed: int) -> dict[str, DemoLedger]:
    """Each county's ledger (台账): the children it owns (SPEC §1) and, at a registration place,
    those it records as gone out (外出) to another county.

    Real ledgers disagree, so 南部县's ledger gets a few planted mistakes for reconciliation to
    find: migrants it never recorded, migrants it records as left-behind at home, records without
    an ID number (one name typed in traditional characters), and a left-behind child it wrongly
    records as gone to 两江新区. Chosen deterministically from ``seed``.
    """
    ledgers: dict[str, DemoLedger] = {}
    for spec_node in DEMO_NODES:
        d = spec_node.division
        owned = [r for r in population if owner_of(r) == d]
        gone = [
            r for r in population
            if r.kind is ChildKind.MIGRANT and r.registration_division == d and r.residence_division != d
        ]  # fmt: skip
        ledgers[spec_node.node_id] = DemoLedger(owned + gone, [])
    nanbu = next(n for n in DEMO_NODES if n.node_id == "sc-nanbu")
    cq = next(n for n in DEMO_NODES if n.node_id == "cq-liangjiang")
    rng = Random(f"tongban-demo-ledgers:{seed}")
    records = ledgers[nanbu.node_id].records
    to_cq = sorted(
        (i for i, r in enumerate(records) if r.kind is ChildKind.MIGRANT and r.residence_division == cq.division),
        key=lambda i: records[i].record_id,
    )
    home = sorted(
        (i for i, r in enumerate(records) if r.kind is ChildKind.LEFT_BEHIND and r.id_number),
        key=lambda i: records[i].record_id,
    )
    if len(to_cq) < 8 or not home:
        return ledgers  # too small a population to plant mistakes in: the ledgers stay clean
    rng.shuffle(to_cq)
    dropped, at_home, no_id, absent = set(to_cq[:2]), to_cq[2:4], to_cq[4:7], rng.choice(home)
    t2s = opencc.OpenCC("s2t")
    for i in at_home:
        records[i] = dataclasses.replace(records[i], kind=ChildKind.LEFT_BEHIND, residence_division=nanbu.division)
    for i in no_id:
        records[i] = dataclasses.replace(records[i], id_number=None)
    records[no_id[0]] = dataclasses.replace(records[no_id[0]], name=t2s.convert(records[no_id[0]].name))
    records[absent] = dataclasses.replace(records[absent], kind=ChildKind.MIGRANT, residence_division=cq.division)
    ledgers[nanbu.node_id] = DemoLedger(
        [r for i, r in enumerate(records) if i not in dropped],
        [
            "2 migrants to 两江新区 never recorded",
            "2 recorded as left-behind at home though living in 两江新区",
            "3 without an ID number (1 name in traditional characters)",
            "1 left-behind child recorded as gone to 两江新区",
        ],
    )
    planted = {records[i].record_id for i in (*dropped, *at_home, *no_id, absent)}
    typo = _typo_target(ledgers[nanbu.node_id].records, population, cq.division, planted, rng)
    if typo is not None:
        cq_records = ledgers[cq.node_id].records
        i = next(i for i, r in enumerate(cq_records) if r.record_id == typo.record_id)
        cq_records[i] = dataclasses.replace(typo, name=_one_wrong_character(typo.name, rng), id_number=None)
        note = "1 name typed with one wrong character, without its ID number"
        ledgers[cq.node_id] = DemoLedger(cq_records, [*ledgers[cq.node_id].notes, note], typo.id_number)
    return ledgers


def _typo_target(
    nanbu: Sequence[ChildRecord], population: Sequence[ChildRecord], cq_division: str, planted: set[str], rng: Random
) -> ChildRecord | None:
    """A migrant of 南部县 living in 两江新区, recorded right by 南部县, with a three-character Han
    name and no sibling born within a day (so that only the household register can tell a typo
    of the name from a twin); ``None`` if the population has none."""
    births = Counter((r.registration_division, r.guardian.name if r.guardian else "", r.birth_date) for r in population)
    chosen = sorted(
        (
            r
            for r in nanbu
            if r.kind is ChildKind.MIGRANT
            and r.residence_division == cq_division
            and r.record_id not in planted
            and r.id_number
            and r.guardian is not None
            and len(r.name) == 3
            and all("\u4e00" <= c <= "\u9fff" for c in r.name)
            and births[(r.registration_division, r.guardian.name, r.birth_date)] == 1
            and not any(
                births[(r.registration_division, r.guardian.name, r.birth_date + timedelta(days=d))] for d in (-1, 1)
            )
        ),
        key=lambda r: r.record_id,
    )
    return rng.choice(chosen) if chosen else None


_TYPO_CHARACTERS = "伟芳敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"


def _one_wrong_character(name: str, rng: Random) -> str:
    """``name`` with its last character replaced by an unrelated one (another initial sound)."""
    last = normalise_name(name[-1]).syllables
    initial = last[0][:1] if last else ""
    options = [c for c in _TYPO_CHARACTERS if c != name[-1] and normalise_name(c).syllables[0][:1] != initial]
    return name[:-1] + rng.choice(options)


def _write_register(households: Sequence[Household], division: str, path: Path) -> int:
    """The household register (户籍登记) of ``division``: every child of every household registered
    there, by household number (户号), as the county's public-security register would list them."""
    rows = 0
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(REGISTER_HEADER)
        for household in households:
            if household.registration_division == division:
                out.writerows(register_cells(household.index, child) for child in household.children)
                rows += len(household.children)
    return rows


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningNode:
    spec: DemoNode
    node: Node
    process: subprocess.Popen[str]
    address: str
    tls: bool
    web: str = ""  # the web inbox's address ("" when off)
    county: str = ""  # the county API's address (tongban.v1.County, loopback)


def _start(cfg_path: Path, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str, bool, str, str]:
    """Start ``tongban node serve`` and wait for its ready line (address, TLS mode, web inbox address,
    county API address)."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "gateway", "node", "serve", "--config", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TONGBAN_TRUST_REFRESH_SECONDS": str(REFRESH_SECONDS),
            # The demo's nodes apply received case messages twice a second (operators: a few seconds).
            "TONGBAN_EXCHANGE_CASE_SYNC_SECONDS": str(CASE_SYNC_SECONDS),
            # Each node serves its web inbox on a free loopback port (printed in the ready line).
            "TONGBAN_WEB_LISTEN": "127.0.0.1:0",
        },
    )
    assert proc.stdout is not None
    event = await_ready(proc.stdout, timeout)
    if event is not None:
        web, county = str(event.get("web", "")), str(event.get("county", ""))
        return proc, str(event["address"]), bool(event.get("tls")), web, county
    proc.kill()
    raise DemoFailed(f"node with config {cfg_path} did not start")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.terminate()  # SIGTERM: graceful shutdown
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Caller:
    """One node's client side: its TLS identity and its own verified copy of the directory."""

    def __init__(self, cfg: config_mod.NodeConfig) -> None:
        self.node_id = cfg.node_id
        self.identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=cfg.node_id)
        self.trust = TrustStore.from_config(cfg)

    def call_info(self, peer_id: str) -> str:
        """GetNodeInfo on ``peer_id`` over mutual TLS; returns "ok …" or the refusal's status."""
        now = datetime.now(UTC)
        directory = self.trust.refresh(now)
        try:
            with secure_channel_to(peer_id, directory, self.identity, now=now) as channel:
                health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                info = node_info_from_wire(
                    node_pb2_grpc.NodeExchangeStub(channel).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=10)
                )
        except grpc.RpcError as exc:
            return f"refused: {exc.code().name} ({exc.details()})"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
        return f"ok: {info.node_id} {info.division_code} {info.division_name}, health {status}"


def _rogue_call(address: str, target_node: str, ca_pem: bytes) -> str:
    """A client with a self-made CA and a certificate claiming to be ``gz-zhijin``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import (
        CertificateBuilder,
        DNSName,
        Name,
        NameAttribute,
        SubjectAlternativeName,
        UniformResourceIdentifier,
        random_serial_number,
    )
    from cryptography.x509.oid import NameOID

    from gateway.trust import x509 as tx509

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = Name([NameAttribute(NameOID.COMMON_NAME, "gz-zhijin")])
    cert = (
        CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(
            SubjectAlternativeName(
                [
                    DNSName(tx509.node_dns_name("gz-zhijin")),
                    UniformResourceIdentifier(tx509.NODE_URI + "gz-zhijin"),
                    UniformResourceIdentifier(tx509.DIVISION_URI + "520524"),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )
    options = [("grpc.ssl_target_name_override", tx509.node_dns_name(target_node))]
    try:
        with grpc.secure_channel(address, creds, options=options) as channel:
            node_pb2_grpc.NodeExchangeStub(channel).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=10)
    except grpc.RpcError as exc:
        return f"refused: {exc.code().name}"
    raise DemoFailed("a certificate from an unknown CA was accepted")


def _exchange(w: Any, running: list[RunningNode], callers: dict[str, Caller], period: str) -> dict[str, Any]:
    """Step 4: migrant notices from the residence counties, one receiver restarted mid-run."""
    w("\n4. Exchange: each residence county sends its migrant notices, as signed batches over mutual\n"
      "   TLS, to the registration counties concerned (only pairwise ID tokens, no names or ID numbers)\n")  # fmt: skip
    by_id = {r.spec.node_id: r for r in running}
    crashed = by_id[RESTARTED]
    crashed.process.kill()  # SIGKILL: a crash, not a graceful stop
    crashed.process.wait()
    w(f"   {RESTARTED} is killed (SIGKILL) before the notices go out: they wait in the senders' outboxes\n")
    profiles = load_profiles()
    passphrase = passphrase_from_env()
    rosters: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for sender in ("cq-liangjiang", "sc-nanbu"):
        node, cfg = by_id[sender].node, by_id[sender].node.config
        # As `tongban roster send` does: [exchange] roster_workers processes build a roster of
        # several batches (a county's demo roster is one batch, so no worker starts here).
        with roster_pool(cfg.roster_workers) as workers:
            sent = send_migrant_roster(
                node_id=sender,
                period=period,
                children=node.children,
                engine=node.engine,
                keyring=node.keyring,
                directory=callers[sender].trust.current(now),
                profiles=profiles,
                signer=Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
                encryption_key=read_encryption_key(cfg.encryption_key, passphrase),
                now=now,
                workers=workers,
            )
        for r in sent.rosters:
            rosters.append({"from": sender, "to": r.peer, "notices": r.notices, "envelopes": r.envelopes})
            w(f"   {sender:<14} → {r.peer:<14} {r.notices:>4} notices in {r.batches} signed batch(es) + manifest, "
              "queued (committed before the call returns)\n")  # fmt: skip
    time.sleep(2)
    proc, address, _tls, web, county = _start(crashed.node.config.path)
    crashed.process, crashed.address, crashed.web, crashed.county = proc, address, web, county
    w(f"   {RESTARTED} restarted; the senders' delivery workers retry with back-off until it answers\n")
    senders = [by_id["cq-liangjiang"].node, by_id["sc-nanbu"].node]
    _wait_delivered(senders)
    delivered: dict[str, int] = {}
    attempts: dict[str, int] = {}
    receipts = 0
    for sender_node in senders:
        for row in outbox.list_messages(sender_node.engine, limit=100_000):
            pair = f"{sender_node.config.node_id}→{row.peer}"
            delivered[pair] = delivered.get(pair, 0) + 1
            attempts[pair] = max(attempts.get(pair, 0), row.attempts)
            receipts += row.has_receipt
    received_total = {r.spec.node_id: sum(received(r.node.engine).values()) for r in running}
    for pair, count in sorted(delivered.items()):
        w(f"   delivered {pair:<26} {count} envelopes in {attempts[pair]} attempt(s), each with the receiver's "
          "signed receipt kept as proof\n")  # fmt: skip
    w(f"   envelopes accepted by each receiver (verified, stored once, sealed at rest): {received_total}\n")
    if receipts != sum(delivered.values()):
        raise DemoFailed("a delivered envelope has no receipt")
    return {"rosters": rosters, "delivered": delivered, "attempts": attempts, "receipts": receipts,
            "received": received_total, "restarted": RESTARTED}  # fmt: skip


def _wait_delivered(nodes: Sequence[Node], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        counts = [outbox.counts(n.engine) for n in nodes]
        pending = sum(k for c in counts for (_peer, status), k in c.items() if status is not outbox.Status.DELIVERED)
        if pending == 0:
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"{pending} envelope(s) still undelivered after {seconds:.0f} s")
        time.sleep(0.3)


def _reconcile(
    w: Any, running: list[RunningNode], callers: dict[str, Caller], period: str, base: Path, typo: str | None
) -> dict[str, Any]:
    """Step 5: each registration county matches the rosters it received and answers; each
    residence county reads the answers; both print what does not add up."""
    w("\n5. Reconciliation: each registration county matches the complete rosters it received against its\n"
      "   ledger — exact on pairwise ID tokens, fuzzy on keyed Bloom encodings of name (characters and\n"
      "   toneless pinyin) and birth date, never on a plain name — and answers each sender\n")  # fmt: skip
    by_id = {r.spec.node_id: r for r in running}
    profiles = load_profiles()
    passphrase = passphrase_from_env()
    found: dict[str, dict[str, int]] = {}

    def run_on(node_id: str, *, send: bool) -> reconcile_service.RunSummary:
        node, cfg = by_id[node_id].node, by_id[node_id].node.config
        now = datetime.now(UTC)
        return reconcile_service.run(
            node=node,
            period=period,
            directory=callers[node_id].trust.current(now),
            encryption_key=read_encryption_key(cfg.encryption_key, passphrase),
            signer=Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
            profiles=profiles,
            thresholds=cfg.thresholds,
            now=now,
            send=send,
        )

    names = {r.spec.node_id: r.node.description.division_name for r in running}
    for node_id in by_id:
        result = run_on(node_id, send=True)
        for sender, n in sorted(result.rosters_matched.items()):
            w(f"   {node_id:<14} matched the roster of {sender} ({n} notices); answers queued for {sender}\n")
    _wait_delivered([r.node for r in running])
    w("   answers delivered; each county reads the answers to its own notices. Findings, both sides:\n")
    for node_id in by_id:
        result = run_on(node_id, send=False)  # answers were queued in the first round
        found[node_id] = {code.value: n for code, n in result.by_code().items()}
        w(f"   {node_id} ({names[node_id]}):\n")
        by_role = Counter((f.code, f.role, f.peer) for f in reconcile_store.load(by_id[node_id].node.engine, period))
        for (code, role, peer), n in sorted(by_role.items(), key=lambda kv: (list(Code).index(kv[0][0]), kv[0][2])):
            zh, _en = label(code, role, names.get(peer, ""))
            where = f"as {role.value} place with {peer}" if peer else "own ledger"
            w(f"     {n:>4}  {zh}  [{code.value}; {where}]\n")
    typo_code = None
    if typo is not None:
        # 两江新区 typed this child's name with one wrong character and no ID number: 南部县's household
        # register says the child has no sibling born within a day, so the edit cannot be a twin.
        registration = by_id[REGISTER_NODE].node
        own = registration.children.find_by_id_number(typo, period=period)  # 南部县's own record of the child
        stored = reconcile_store.load(registration.engine, period)
        codes = {f.code for f in stored if own and f.record_ref == own.record_id and f.role is Role.REGISTRATION}
        typo_code = ",".join(sorted(c.value for c in codes)) or "not_linked"
        # Linked automatically: matched, reported as an inconsistent identifier (the ID number is
        # missing on 两江新区's side), never sent to review.
        if Code.REVIEW in codes or not codes & {Code.MATCHED, Code.INCONSISTENT_IDENTIFIER}:
            raise DemoFailed(f"the name typed with one wrong character was {typo_code}, not linked automatically")
        w("   the name 两江新区 typed with one wrong character, without an ID number, is linked automatically:\n"
          "   南部县's household register shows the child has no twin, so the edit is a typo, not a sibling\n"
          "   (without it a person reviews the pair); it is reported as 身份证号…不一致 [inconsistent_identifier]\n"
          "   so that 两江新区 adds the missing ID number\n")  # fmt: skip
    report = base / "reports" / f"sc-nanbu-{period}-reconciliation.csv"
    report.parent.mkdir(exist_ok=True)
    status, _printed = _tongban(
        "reconcile", "report", "--config", by_id["sc-nanbu"].node.config.path, "--period", period,
        "--format", "csv", "--out", report,
    )  # fmt: skip
    if status != 0:
        raise DemoFailed(f"tongban reconcile report exited {status}")
    w(f"   南部县's staff read every finding, with the child's name from their own ledger, in {report.name}\n"
      "   (`tongban reconcile report --format csv`, mode 0600; the export is in the audit trail)\n")  # fmt: skip
    return {"findings": found, "report": str(report), "register_typo": typo_code}


# --- step 6: cases -------------------------------------------------------------------------------

_ACTION_ZH = {
    "accept": "受理", "push": "推送", "receive": "接收", "request_material": "一次性告知补正",
    "resubmit": "补正材料", "first_review": "乡镇初审", "approve": "批准/认定", "reject": "不予批准",
    "deliver_result": "反馈结果", "notify_applicant": "告知申请人", "return": "退回", "transfer": "转办",
    "withdraw": "撤回", "close": "归档",
}  # fmt: skip
RESIDENCE = "cq-liangjiang"
CASE_STORY = (("sc-nanbu", "orphan"), ("gz-zhijin", "living_subsidy"))


def _pdf(title: str, seed: str) -> bytes:
    """A small, valid-looking synthetic PDF (the content is what the case checks: size and SHA-256)."""
    body = f"BT /F1 12 Tf 72 720 Td (synthetic {title} {seed}) Tj ET".encode("ascii")
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/Contents 4 0 R>>endobj\n"
        + f"4 0 obj<</Length {len(body)}>>stream\n".encode("ascii")
        + body
        + b"\nendstream endobj\n%%EOF\n"
    )


def _applications(
    node: Node, period: str, base: Path, story: Sequence[tuple[str, str]] = CASE_STORY, *, skip: int = 0
) -> dict[str, Path]:
    """Application files (the documented JSON layout of `tongban case accept`) for migrant children
    living in 两江新区: by default one registered in 南部县 (orphan recognition), one in 织金县
    (living subsidy for a disabled child of a 低保 family); ``skip`` passes over that many children
    (another application, another child). Synthetic carers, accounts and PDFs."""
    from gateway.domain.records import Disability, DisabilityCategory

    folder = base / "cases"
    folder.mkdir(exist_ok=True)
    files: dict[str, Path] = {}
    for registration_node, programme in story:
        division = next(n.division for n in DEMO_NODES if n.node_id == registration_node)
        candidates = (
            r for r in node.children.iter_period(period, kind=ChildKind.MIGRANT, registration_division=division)
            if r.id_number and r.residence_division == "500157"
        )  # fmt: skip
        record = next(itertools.islice(candidates, skip, None), None)
        if record is None or record.id_number is None:
            raise DemoFailed(f"no migrant child of {division} living in 两江新区 to apply for")
        application: dict[str, Any]
        if programme == "orphan":
            evidence = [("father-death", "death_certificate"), ("mother-death", "death_certificate")]
            application = {
                "programme": "orphan",
                "father": {"situation": "deceased", "since": f"{today_minus_years(3)}"},
                "mother": {"situation": "deceased", "since": f"{today_minus_years(2)}"},
                "carer": {"name": "张桂芳", "relation": "祖父母", "phone": "13800000000"},
            }
        else:
            evidence = [("disability-card", "disability_certificate")]
            certificate = Disability(DisabilityCategory.HEARING, 2)
            application = {
                "programme": "living_subsidy",
                "certificate_number": certificate.certificate_number(record.id_number),
                "disability": {"category": int(certificate.category), "level": certificate.level},
                "hardship": "dibao",
                "payment_account": {
                    "bank": "贵州农村信用社", "account_number": "6228480000000000", "holder_name": "李秀英"
                },
            }  # fmt: skip
        items = []
        for document_id, kind in evidence:
            pdf = folder / f"{programme}{skip or ''}-{document_id}.pdf"
            pdf.write_bytes(_pdf(kind, record.record_id))
            items.append({"document_id": document_id, "kind": kind, "file": pdf.name})
        application["evidence"] = items
        child = {"id_number": record.id_number, "name": record.name, "registration_division": division,
                 "ref": record.record_id}  # fmt: skip
        path = folder / f"{programme}{skip or ''}.json"
        path.write_text(json.dumps({"child": child, "application": application}, ensure_ascii=False), encoding="utf-8")
        path.chmod(0o600)
        files[registration_node] = path
    return files


def today_minus_years(years: int) -> str:
    today = date.today()
    return today.replace(year=today.year - years, day=1).isoformat()


def _case(node_id: str, config: Path, *args: str | Path) -> str:
    """Run ``tongban case …`` in-process on ``node_id``'s configuration; return what it printed."""
    status, printed = _tongban("case", *args, "--config", config)
    if status != 0:
        raise DemoFailed(f"`tongban case {args[0]}` on {node_id} exited {status}")
    return printed


@dataclass
class DemoCase:
    case_id: str
    programme: str
    registration: str
    shown: int = 0  # history entries printed so far
    verified: bool = False
    holder: str = ""
    closed: bool = False


class CaseStage:
    """Step 6's view of the running nodes: wait until the nodes agree, print history, clocks and
    the holder verified offline by `tongban custody verify` on an exported chain."""

    def __init__(self, w: Any, by_id: dict[str, RunningNode], callers: dict[str, Caller], base: Path) -> None:
        self.w, self.by_id, self.callers, self.base = w, by_id, callers, base
        self.chains = base / "custody"
        self.chains.mkdir(exist_ok=True)

    def view(self, node_id: str, case_id: str) -> tuple[Any, str | None]:
        from gateway.cases.store import CaseStore
        from gateway.custody import store as custody_store

        node = self.by_id[node_id].node
        directory = self.callers[node_id].trust.current(datetime.now(UTC))
        with node.engine.connect() as conn:
            custody = custody_store.view(conn, case_id, directory)
        store = CaseStore(node.engine, node.keyring)
        status = store.load(case_id).state.status.value if store.exists(case_id) else None
        return custody, status

    def wait(self, cases: Sequence[DemoCase], holders: dict[str, str | None], seconds: float = 40) -> None:
        """Until, for each case, both nodes hold the same chain and lifecycle state, with the
        holder expected (``None``: the chain is closed) — moved by the nodes alone."""
        deadline = time.monotonic() + seconds
        while True:
            done = True
            for c in cases:
                (a, sa), (b, sb) = self.view(RESIDENCE, c.case_id), self.view(c.registration, c.case_id)
                expected = holders[c.case_id]
                agreed = a is not None and b is not None and a.head == b.head and sa == sb
                done &= agreed and (a.closed if expected is None else (a.holder == expected and a.pending is None))
            if done:
                return
            if time.monotonic() > deadline:
                raise DemoFailed(f"the nodes did not agree on the cases within {seconds:.0f} s")
            time.sleep(0.2)

    def report(self, cases: Sequence[DemoCase]) -> None:
        from gateway.cases.clock import due_dates
        from gateway.cases.lifecycle import CHINA
        from gateway.cases.store import CaseStore

        node = self.by_id[RESIDENCE].node
        store = CaseStore(node.engine, node.keyring)
        for c in cases:
            stored = store.load(c.case_id)
            state = stored.state
            self.w(f"   {c.programme:<15} {c.case_id[:8]}  {RESIDENCE} ↔ {c.registration}: "
                   f"{state.status.label_zh} ({state.status.value})\n")  # fmt: skip
            for e in state.history[c.shown :]:
                who = e.role.label_zh
                self.w(f"     {e.at.astimezone(CHINA):%m-%d %H:%M:%S}  {who:<8} {_ACTION_ZH[e.action.value]}"
                       f" ({e.action.value}) → {e.target.label_zh}\n")  # fmt: skip
            c.shown = len(state.history)
            clocks = []
            for step, clock in due_dates(stored.file.case, state.history).items():
                mark = "已完成" if clock.completed else (f"期限 {clock.due}" if clock.due else "未开始")
                clocks.append(f"{step.label_zh} ≤{clock.limit}工作日 {mark}")
            self.w(f"     时限: {'; '.join(clocks)}\n")
            self.verify(c)
            holder = f"nobody, closed by {c.holder}" if c.closed else c.holder
            self.w(f"     holder: {holder} (verified offline: {'yes' if c.verified else 'NO'})\n")

    def verify(self, c: DemoCase) -> None:
        """Export the chain from the residence node and check it with `tongban custody verify`."""
        out = self.chains / f"{c.case_id}.json"
        status, _ = _tongban("custody", "export", c.case_id, "--config", self.by_id[RESIDENCE].node.config.path,
                             "--out", out)  # fmt: skip
        if status != 0:
            raise DemoFailed(f"`tongban custody export` exited {status}")
        national = self.base / "national"
        status, printed = _tongban("custody", "verify", out, "--directory", national / "directory.json",
                                   "--root", national / "root" / "root.json")  # fmt: skip
        c.verified = status == 0
        holder = next((line.split(None, 1)[1] for line in printed.splitlines() if line.startswith("holder")), "?")
        c.closed = holder.startswith("closed")
        c.holder = holder.removeprefix("closed (last holder ").removesuffix(")") if c.closed else holder
        if not c.verified:
            raise DemoFailed(f"the custody chain of case {c.case_id[:8]} did not verify")


def _cases(w: Any, running: list[RunningNode], callers: dict[str, Caller], period: str, base: Path) -> dict[str, Any]:
    """Step 6: two cross-province cases, from acceptance to closing, custody following each step."""
    w("\n6. Cases (跨省通办): 两江新区 accepts an orphan-recognition application for a child registered in 南部县\n"
      "   and a living-subsidy application for a disabled child registered in 织金县; the registration\n"
      "   nodes request material once (一次性告知), then decide. Custody follows the turn:\n"
      "   offer → accept\n")  # fmt: skip
    by_id = {r.spec.node_id: r for r in running}
    cfg = {n: by_id[n].node.config.path for n in by_id}
    stage = CaseStage(w, by_id, callers, base)
    files = _applications(by_id[RESIDENCE].node, period, base)
    started = time.monotonic()
    cases: list[DemoCase] = []
    for registration, programme in CASE_STORY:
        printed = _case(RESIDENCE, cfg[RESIDENCE], "accept", files[registration])
        case_id = printed.split()[1]
        cases.append(DemoCase(case_id, programme, registration))
    w(f"   6a {RESIDENCE} `tongban case accept` ×2: 受理 and 推送 (documents in 256 KiB chunks, sealed\n"
      "      to the registration node); the registration nodes' servers receive them (no command run)\n")  # fmt: skip
    stage.wait(cases, {c.case_id: c.registration for c in cases})
    stage.report(cases)
    extra = {"sc-nanbu": "household_register", "gz-zhijin": "dibao_certificate"}
    for c in cases:
        _case(c.registration, cfg[c.registration], "request-material", c.case_id, "--items", extra[c.registration])
    w("   6b 南部县 and 织金县 `tongban case request-material`: everything missing, once (一次性告知)\n")
    stage.wait(cases, {c.case_id: RESIDENCE for c in cases})
    stage.report(cases)
    for c in cases:
        pdf = base / "cases" / f"{c.programme}-{extra[c.registration]}.pdf"
        pdf.write_bytes(_pdf(extra[c.registration], c.case_id))
        _case(RESIDENCE, cfg[RESIDENCE], "resubmit", c.case_id, "--document",
              f"{extra[c.registration]}:{extra[c.registration]}:{pdf}")  # fmt: skip
    w(f"   6c {RESIDENCE} `tongban case resubmit`: the material, as asked (补正)\n")
    stage.wait(cases, {c.case_id: c.registration for c in cases})
    stage.report(cases)
    month = date.today().strftime("%Y-%m")
    for c in cases:
        if c.programme == "orphan":
            _case(c.registration, cfg[c.registration], "first-review", c.case_id)
        _case(c.registration, cfg[c.registration], "decide", c.case_id, "--approve", "--payment-month", month)
    w(f"   6d 南部县 `case first-review` + `case decide --approve`, 织金县 `case decide --approve`\n"
      f"      (payment from {month}); the result goes back to 两江新区 with the case\n")  # fmt: skip
    stage.wait(cases, {c.case_id: RESIDENCE for c in cases})
    stage.report(cases)
    for c in cases:
        _case(RESIDENCE, cfg[RESIDENCE], "notify", c.case_id)
        _case(RESIDENCE, cfg[RESIDENCE], "close", c.case_id)
    w(f"   6e {RESIDENCE} `tongban case notify` and `case close`: the applicant is told; the chain is closed\n")
    stage.wait(cases, {c.case_id: None for c in cases})
    stage.report(cases)
    w(f"   each chain in {stage.chains.name}/ verifies with `tongban custody verify FILE --directory DIR` "
      f"({time.monotonic() - started:.1f} s for the whole step)\n")  # fmt: skip
    summary = []
    for c in cases:
        _custody, status = stage.view(RESIDENCE, c.case_id)
        summary.append({"id": c.case_id, "type": c.programme, "state": status, "holder": c.holder,
                        "chain_verified": c.verified})  # fmt: skip
    return {"cases": summary, "chains": {c.case_id: str(stage.chains / f"{c.case_id}.json") for c in cases}}


INBOX_NODE = "sc-nanbu"
INBOX_USER = "nb.zhang"


def _web(config: Path, *args: str) -> str:
    """Run ``tongban web …`` in-process on a node's configuration, as its operator would."""
    status, printed = _tongban("web", *args, "--config", config)
    if status != 0:
        raise DemoFailed(f"`tongban web {' '.join(args[:2])}` exited {status}")
    return printed


def _code_of(printed: str) -> str:
    match = re.search(r"one-time sign-in code: ([A-Z0-9-]{19})", printed)
    if match is None:
        raise DemoFailed("`tongban web code` printed no code")
    return match.group(1)


def _inbox_check(address: str, user: str, code: str) -> dict[str, str]:
    """Sign in to a web inbox over HTTP with a one-time code, as a browser would (pre-session cookie,
    CSRF token), read the inbox and sign out. Returns each listed case id with its due date."""
    import http.client
    from urllib.parse import urlencode

    host, port = address.rsplit(":", 1)
    cookies: dict[str, str] = {}

    def call(method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Host": address, "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers |= {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://{address}"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        page = response.read().decode("utf-8", "replace")
        for raw in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            cookies[name] = rest.split(";", 1)[0]
        conn.close()
        return response.status, page

    def csrf(page: str) -> str:
        match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        if match is None:
            raise DemoFailed("the web inbox page carries no CSRF token")
        return match.group(1)

    _, page = call("GET", "/signin")
    status, _ = call("POST", "/signin", {"csrf": csrf(page), "username": user, "secret": code})
    if status != 303:
        raise DemoFailed(f"signing in to the web inbox answered {status}")
    status, page = call("GET", "/inbox")
    if status != 200:
        raise DemoFailed(f"the web inbox answered {status}")
    rows = re.findall(r'data-case="([0-9a-f-]{36})">\s*<td>([^<]*)<', page)
    call("POST", "/signout", {"csrf": csrf(page)})
    return dict(rows)


def _inbox_step(
    w: Any, running: list[RunningNode], callers: dict[str, Caller], period: str, base: Path
) -> dict[str, Any]:
    """Step 8: a case waiting in 南部县's web inbox, and a one-time sign-in for its staff."""
    w(f"\n8. County staff: {INBOX_NODE}'s web inbox (跨省通办收件箱). {RESIDENCE} accepts one more\n"
      "   orphan-recognition application; 南部县's staff find it in their inbox, by due date,\n"
      "   and act on it there\n")  # fmt: skip
    by_id = {r.spec.node_id: r for r in running}
    cfg = {n: by_id[n].node.config.path for n in by_id}
    files = _applications(by_id[RESIDENCE].node, period, base, ((INBOX_NODE, "orphan"),), skip=1)
    # 两江新区's accepting window is a county system: it opens the case over the county API with a
    # token of role case_officer, the documents streamed (what `tongban case accept` does by hand).
    status, printed = _tongban(
        "county", "token", "create", "--role", "case_officer", "--label", "两江新区受理窗口", "--config", cfg[RESIDENCE]
    )
    if status != 0:
        raise DemoFailed("`tongban county token create` failed")
    draft, documents = read_draft(files[INBOX_NODE])
    request_id = str(uuid.uuid4())  # kept with the application by the county system
    with CountyClient(by_id[RESIDENCE].county, printed.split()[-1]) as client:
        opened = client.open_case(draft, documents, request_id=request_id)
        again = client.open_case(draft, documents, request_id=request_id)
    if again.case_id != opened.case_id or not again.replayed:
        raise DemoFailed("a retried OpenCase opened a second case")
    case_id = opened.case_id
    CaseStage(w, by_id, callers, base).wait([DemoCase(case_id, "orphan", INBOX_NODE)], {case_id: INBOX_NODE})
    w(f"   8a {RESIDENCE}'s accepting window opens the application over the county API (OpenCase, token of\n"
      f"      role case_officer, documents streamed; the same request again answers the same case):\n"
      f"      case {case_id[:8]} received by {INBOX_NODE}'s server\n")  # fmt: skip
    inbox_cfg = cfg[INBOX_NODE]
    _web(inbox_cfg, "staff", "add", INBOX_USER, "--name", "南部县民政局 张科员", "--role", "registration_staff")
    _web(inbox_cfg, "staff", "add", "demo.check", "--name", "演示检查", "--role", "registration_staff")
    web = by_id[INBOX_NODE].web
    listed = _inbox_check(web, "demo.check", _code_of(_web(inbox_cfg, "code", "demo.check")))
    if case_id not in listed:
        raise DemoFailed("the new case is not in the registration county's web inbox")
    w(f"   8b `tongban web staff add {INBOX_USER} --role registration_staff`; the demo signs in with an account\n"
      f"      of its own over HTTP (one-time code, CSRF token): the inbox lists {len(listed)} open case(s),\n"
      f"      case {case_id[:8]} due {listed[case_id]}\n")  # fmt: skip
    code = _code_of(_web(inbox_cfg, "code", INBOX_USER))
    url = f"http://{web}/"
    w(f"   8c the inbox for 南部县's staff: {url}\n"
      f"      sign in as {INBOX_USER} with the one-time code {code} (valid 24 hours, once);\n"
      "      run `tongban demo --serve` (make demo DEMO_ARGS=--serve) to keep the nodes up and open it\n")  # fmt: skip
    return {"url": url, "user": INBOX_USER, "case": case_id, "listed": sorted(listed)}


def _sealed_check(node: Node, period: str, sample: int = 50) -> dict[str, Any]:
    """Read the raw table and confirm that no stored row holds a name or ID number in clear."""
    values: list[bytes] = []
    for record in node.children.iter_period(period):
        values.append(record.name.encode("utf-8"))
        if record.id_number:
            values.append(record.id_number.encode("ascii"))
        if len(values) >= sample:
            break
    with node.engine.connect() as conn:
        rows = conn.execute(select(child_records)).all()
    raw = b"".join(repr(tuple(row)).encode("utf-8") + bytes(row.pii_sealed) for row in rows)
    leaked = sum(1 for v in values if v in raw)
    if leaked:
        raise DemoFailed(f"{leaked} personal value(s) found in clear in the database")
    return {
        "rows": len(rows),
        "values_checked": len(values),
        "found_in_clear": 0,
        "key_ids": sorted({r.key_id for r in rows}),
    }


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tongban-demo-") as tmp:
        yield Path(tmp)


def _publish_directory(base: Path, parts: Sequence[Path], *, previous: bool) -> str:
    bundle = base / "national" / "directory.json"
    args: list[str | Path] = ["directory", "build", "--root", base / "national" / "root", "--out", bundle]
    for part in parts:
        args += ["--part", part]
    if previous:
        args += ["--previous", bundle]
    _keys(*args, "--expires-days", "7")
    _keys("directory", "sign", bundle, "--key", base / "national" / "root" / "directory-key.pem")
    return _keys("directory", "verify", bundle, "--root", base / "national" / "root" / "root.json").strip()


def run(
    *,
    out: TextIO,
    workdir: Path | None = None,
    seed: int = 2026,
    households: int = 400,
    period_label: str | None = None,
    serve: bool = False,
    json_path: Path | None = None,
) -> dict[str, Any]:
    if not os.environ.get(ENV_PASSPHRASE) and not os.environ.get(ENV_PASSPHRASE_FILE):
        # Key files are always sealed at rest; the demo's operators and nodes share a throwaway
        # passphrase (inherited by the node processes it starts) instead of asking for one.
        os.environ[ENV_PASSPHRASE] = secrets.token_urlsafe(24)
    table = DivisionTable.load_default()
    rules = load_rules()
    today = date.today()
    period = (
        MonitoringPeriod.parse(period_label)
        if period_label
        # The latest *completed* quarter: rosters are reported once a period has ended, so no
        # synthetic birth or move date lies after today.
        else MonitoringPeriod.containing(today, Cadence.QUARTERLY).previous()
    )
    summary: dict[str, Any] = {"period": period.label, "seed": seed, "nodes": [], "rosters": {}}
    w = out.write

    with _workdir(workdir) as base:
        w(f"Tongban demo — monitoring period {period.label} ({period.start} to {period.end})\n")
        w(f"working directory: {base}\n\n")

        # --- 1. trust -------------------------------------------------------------------------
        w("1. Trust: a national root, three provincial operators, three enrolled county nodes\n")
        descriptors: list[str | Path] = []
        for prov in DEMO_PROVINCES:
            pdir = base / "provinces" / prov.prefix
            _keys("province", "init", pdir, "--prefix", prov.prefix, "--name", prov.operator)
            descriptors += ["--province", pdir / "province.json"]
        _keys("root", "init", base / "national" / "root", "--keys", "3", "--threshold", "2", *descriptors)
        w("   national root v1: 3 root keys, any 2 must sign a change; operators 50 重庆, 51 四川, 52 贵州\n")

        nodes: list[tuple[DemoNode, Node]] = []
        for spec_node in DEMO_NODES:
            data_dir = base / "nodes" / spec_node.node_id
            listen = f"127.0.0.1:{_free_port()}"
            init_node(data_dir, node_id=spec_node.node_id, division=spec_node.division, listen=listen, table=table)
            pdir = base / "provinces" / spec_node.division[:2]
            request = data_dir / "enrolment-request.json"
            response = data_dir / "enrolment-response.json"
            _keys("node", "request", "--config", data_dir, "--out", request)  # keys made on the node
            _keys("node", "issue", pdir, request, "--out", response)  # certificate made by the province
            _keys(
                "node", "install", "--config", data_dir, response,
                "--root", base / "national" / "root" / "root.json",
                "--directory", base / "national" / "directory.json",
            )  # fmt: skip
            node = open_node(config_mod.load(data_dir / config_mod.CONFIG_FILE), table=table)
            nodes.append((spec_node, node))
            place = f"{table.province_of(spec_node.division).name}{node.description.division_name}"
            w(f"   {spec_node.node_id:<14} {spec_node.division} {place:<12} enrolled by {pdir.name}: "
              f"TLS key, signing key and encryption key generated on the node\n")  # fmt: skip

        parts = []
        for prov in DEMO_PROVINCES:
            part = base / "provinces" / prov.prefix / "part.json"
            _keys("province", "publish", base / "provinces" / prov.prefix, "--out", part)
            parts.append(part)
        verified = _publish_directory(base, parts, previous=False)
        w(f"   signed national directory published — `tongban keys directory verify`: {verified}\n")

        # --- 2. rosters -----------------------------------------------------------------------
        spec = SynthSpec(
            seed=seed,
            period=period,
            residence_divisions=tuple(n.division for n in DEMO_NODES[:2]),
            registration_divisions=tuple(n.division for n in DEMO_NODES),
            households=households,
            node_id="synth",
        )
        households_made = list(generate_households(spec, table, rules))
        children = [child for household in households_made for child in household.children]
        population = Counter(r.kind for r in children)
        summary["population"] = {"households": households, **{k.value: population[k] for k in ChildKind}}
        w(
            f"\n2. Rosters: a seeded synthetic population (seed {seed}): {households} households, "
            f"{sum(population.values())} children:\n"
            f"   {population[ChildKind.MIGRANT]} 流动 (migrant), {population[ChildKind.LEFT_BEHIND]} 留守 "
            f"(left-behind), {population[ChildKind.NEITHER]} neither — each classified by the real rules\n"
            "   (under 16 on the period's first day, 6 months away, accompanied by a parent or guardian,\n"
            "   Chongqing's central-district exemption). Each county keeps its ledger (台账) — migrants where\n"
            "   they live (流入地为主), left-behind children and those recorded as gone out (外出) where\n"
            "   registered (户籍地为主) — exports it as the national system's CSV and imports it:\n"
        )
        ledgers = _ledgers(children, seed)
        ledger_dir = base / "ledgers"
        ledger_dir.mkdir()
        register = ledger_dir / f"{REGISTER_NODE}-household-register.csv"
        register_rows = _write_register(
            households_made, next(n.division for n in DEMO_NODES if n.node_id == REGISTER_NODE), register
        )
        for spec_node, node in nodes:
            path = ledger_dir / f"{spec_node.node_id}-{period.label}.csv"
            with path.open("wb") as fh:
                write_csv(ledgers[spec_node.node_id].records, fh)
            node.engine.dispose()  # the command opens the node itself
            extra: list[str | Path] = ["--household-register", register] if spec_node.node_id == REGISTER_NODE else []
            status, printed = _tongban(
                "roster", "import", "--config", node.config.path, "--period", period.label, "--quiet", *extra, path
            )
            if status != 0:
                raise DemoFailed(f"tongban roster import failed for {spec_node.node_id} (exit {status})")
            accepted = int(printed.split("accepted ", 1)[1].split(" ", 1)[0])
            counts = node.children.counts_by_kind(period.label)
            w(
                f"   {spec_node.node_id:<14} `tongban roster import {path.name}`: accepted {accepted:>4}, "
                f"rejected 0 — stored: {counts[ChildKind.MIGRANT]} 流动 (migrant), "
                f"{counts[ChildKind.LEFT_BEHIND]} 留守 (left-behind)\n"
            )
            if ledgers[spec_node.node_id].notes:
                w(f"   {'':<14} as county ledgers really are: {', '.join(ledgers[spec_node.node_id].notes)}\n")
            if extra:
                w(f"   {'':<14} with its household register (户籍登记, {register.name}: {register_rows} children\n"
                  f"   {'':<14} by 户号): each record keeps whether a sibling was born within a day\n")  # fmt: skip
            summary["rosters"][spec_node.node_id] = {
                "file": path.name,
                "accepted": accepted,
                "rejected": 0,
                "stored": {k.value: v for k, v in counts.items()},
                "encryption": _sealed_check(node, period.label),
            }
        w("   personal fields sealed at rest (AES-256-GCM, key id beside each row); checked in the raw tables\n")

        # --- 3. mutual TLS --------------------------------------------------------------------
        w("\n3. Mutual TLS: the nodes run as `tongban node serve` processes and call each other\n")
        running: list[RunningNode] = []
        try:
            for spec_node, node in nodes:
                node.engine.dispose()  # the server process opens its own connections
                proc, address, tls, web, county = _start(node.config.path)
                running.append(RunningNode(spec_node, node, proc, address, tls, web, county))
            callers = {r.spec.node_id: Caller(r.node.config) for r in running}
            calls: list[dict[str, str]] = []
            for r in running:
                province = table.province_of(r.spec.division)
                summary["nodes"].append({
                    "id": r.spec.node_id,
                    "division": r.spec.division,
                    "division_name": r.node.description.division_name,
                    "province": province.code[:2],
                    "province_name": province.name,
                    "address": r.address,
                    "tls": r.tls,
                })  # fmt: skip
                w(f"   {r.spec.node_id:<14} serving on {r.address} ({'mutual TLS' if r.tls else 'PLAINTEXT'})\n")
            for a, b in (("cq-liangjiang", "sc-nanbu"), ("sc-nanbu", "gz-zhijin"), ("gz-zhijin", "cq-liangjiang")):
                result_text = callers[a].call_info(b)
                calls.append({"from": a, "to": b, "result": result_text})
                w(f"   {a:<14} → {b:<14} {result_text}\n")
            if any(not c["result"].startswith("ok") for c in calls):
                raise DemoFailed("an enrolled node could not reach another over mutual TLS")
            target = next(r for r in running if r.spec.node_id == "cq-liangjiang")
            ca_pem = (base / "provinces" / "50" / "ca.crt.pem").read_bytes()
            rogue = _rogue_call(target.address, "cq-liangjiang", ca_pem)
            calls.append({"from": "rogue CA claiming gz-zhijin", "to": "cq-liangjiang", "result": rogue})
            w(f"   {'(rogue CA)':<14} → {'cq-liangjiang':<14} {rogue} — a certificate claiming gz-zhijin "
              "from a CA no root names\n")  # fmt: skip

            # --- 4. exchange ------------------------------------------------------------------
            summary["exchange"] = _exchange(w, running, callers, period.label)

            # --- 5. reconciliation ------------------------------------------------------------
            typo = ledgers["cq-liangjiang"].typo
            summary["reconciliation"] = _reconcile(w, running, callers, period.label, base, typo)

            # --- 6. cases ---------------------------------------------------------------------
            # Before the revocation: 织金县 must still decide its case.
            cases = _cases(w, running, callers, period.label, base)
            summary["cases"] = cases["cases"]
            summary["custody_chains"] = cases["chains"]
            if json_path is not None:  # the chains outlive a temporary working directory, with the public material
                kept = json_path.parent / f"{json_path.stem}-custody"
                kept.mkdir(exist_ok=True)
                for name in ("directory.json", "root/root.json"):
                    shutil.copyfile(base / "national" / name, kept / Path(name).name)
                for case_id, chain in cases["chains"].items():
                    summary["custody_chains"][case_id] = str(shutil.copyfile(chain, kept / Path(chain).name))

            # --- 7. revocation ----------------------------------------------------------------
            w(f"\n7. Revocation: 贵州省民政厅 revokes {REVOKED}; the directory is republished (v2)\n")
            _keys("node", "revoke", base / "provinces" / "52", REVOKED)
            _keys("province", "publish", base / "provinces" / "52", "--out", base / "provinces" / "52" / "part.json")
            verified = _publish_directory(base, [base / "provinces" / "52" / "part.json"], previous=True)
            w(f"   `tongban keys directory verify`: {verified}\n")
            time.sleep(REFRESH_SECONDS * 2.5)  # the serving nodes' refreshers pick it up
            after = callers[REVOKED].call_info("cq-liangjiang")
            calls.append({"from": REVOKED, "to": "cq-liangjiang", "result": after, "after": "revocation"})
            w(f"   {REVOKED:<14} → {'cq-liangjiang':<14} {after}\n")
            if "PERMISSION_DENIED" not in after:
                raise DemoFailed("a revoked node was not refused after the directory refresh")
            still = callers["cq-liangjiang"].call_info("sc-nanbu")
            w(f"   {'cq-liangjiang':<14} → {'sc-nanbu':<14} {still}\n")
            # --- 8. the web inbox ---------------------------------------------------------------
            summary["inbox"] = _inbox_step(w, running, callers, period.label, base)

            summary["mtls"] = calls
            summary["trust"] = {
                "root": {"version": 1, "keys": 3, "threshold": 2},
                "provinces": [p.prefix for p in DEMO_PROVINCES],
                "directory_version": callers["cq-liangjiang"].trust.state.directory_version,
                "revoked": [REVOKED],
            }
            # Each node's county API (tongban.v1.County; see docs/county-integration.md), as now serving.
            county_apis = {r.spec.node_id: r.county for r in running}
            for entry in summary["nodes"]:
                entry["county"] = county_apis[entry["id"]]
            if json_path is not None:
                json_path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            if serve:
                w("\nCounty APIs (docs/county-integration.md; a token: tongban county token create --role ROLE\n"
                  f"  --label TEXT --config {base / 'nodes' / 'NODE'}):\n")  # fmt: skip
                for r in running:
                    w(f"   {r.spec.node_id:<14} {r.county}\n")
                w(f"\nNodes are serving; the web inbox is at {summary['inbox']['url']} — press Ctrl-C to stop.\n")
                out.flush()
                try:
                    while all(r.process.poll() is None for r in running):
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
        finally:
            for r in running:
                _stop(r.process)
        w(
            "\nNodes stopped gracefully (SIGTERM). "
            "Next in the story: operations (deployment, metrics, scale-out on PostgreSQL).\n"
        )
    return summary
