"""Scale-out with real processes (SPEC §8, issue 8): two gateway processes of one node on one
PostgreSQL share the outbox and the inbound work — nothing sent twice, nothing applied twice.

Two nodes enrolled with the real ``tongban keys`` flow. sc-nanbu (A, 511321) runs as **two**
``tongban node serve`` processes on one PostgreSQL database — as two Kubernetes replicas would: the
same ``node.toml``, keys and data keyring, each with its own listener, trust state and metrics port.
cq-liangjiang (B, 500157, SQLite) runs as one. A's directory endpoint is a TCP balancer in this
test that hands each new connection to the next of A's processes (as a Service spreads connections
over pods) and cuts every connection once it has carried a few tens of kB, so B redials mid-stream
and lands on the other process, resending what got no receipt.

* **Outbox, A → B**: a migrant roster of a few hundred children is queued at A, two notices per
  envelope. Both of A's delivery workers take part (their own ``/metrics`` counters), their
  ``delivered`` counts add up to A's outbox exactly, every row was claimed once (``attempts`` 1),
  holds a receipt that verifies, and B's inbox holds each message exactly once, the roster whole.
* **Inbound work at A**: B accepts a couple of dozen orphan-recognition cases for children
  registered at A and pushes them (application, documents, custody). Each arrives at whichever of
  A's processes the balancer picked — both receive some — and is stored once; both processes' case
  loops race over the shared inbox (``FOR UPDATE SKIP LOCKED``), and the messages they report
  applied add up to A's case messages exactly: each was applied once. Every case then has the same
  history at A and at B, and the same custody holder; A's audit chain, appended to by both
  processes, verifies with one entry per personal message sent or received.

PostgreSQL only: on SQLite (one file on one host) a node runs as one process.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from gateway import audit
from gateway.cases import handoff
from gateway.cases.store import CaseStore
from gateway.cases.wiring import CaseParts
from gateway.config import NodeConfig
from gateway.custody import store as custody_store
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.rosters import send_migrant_roster
from gateway.node import open_node
from gateway.store.schema import cases as cases_table
from gateway.store.schema import inbox
from gateway.store.schema import outbox as outbox_table
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from tests.factories import child
from tests.test_cases_service import orphan_draft
from tests.test_fault_injection import NodeProcess, assert_receipts_verify, enrol_world, free_port, wait_until
from tests.test_relay import roster_checks

pytestmark = pytest.mark.slow

A, B = "sc-nanbu", "cq-liangjiang"
DIVISIONS = {A: "511321", B: "500157"}
PROVINCES = (("50", "重庆市民政局"), ("51", "四川省民政厅"))
PERIOD = "2026Q4"
CHILDREN = 300
NOTICES_PER_BATCH = 2  # 150 batches and a manifest: many small envelopes, many delivery rounds
CASES = 24
FILES = {"father-death": b"%PDF synthetic father " * 150, "mother-death": b"%PDF synthetic mother " * 250}
CUT_AFTER = 48 * 1024  # bytes from B after which the balancer cuts a connection
EXCHANGE = """
[exchange]
poll_seconds = 0.05
timeout_seconds = 20.0
lease_seconds = 120.0
batch_size = 8
retry_base_seconds = 0.1
retry_max_seconds = 0.5
case_sync_seconds = 0.2
"""
APPLIED = re.compile(r"case sync: (\d+) message\(s\) applied")
CASE_PURPOSES = (handoff.HANDOFF, handoff.DECISION)


class Balancer:
    """TCP on 127.0.0.1:``port``: each new connection goes to the next backend port in turn, and is
    cut (reset, both ways) once the client has sent ``cut_after`` bytes on it. Counts connections
    and client bytes per backend."""

    def __init__(self, backends: list[int], cut_after: int) -> None:
        self.port = free_port()
        self.backends, self.cut_after = backends, cut_after
        self.connections: Counter[int] = Counter()
        self.client_bytes: Counter[int] = Counter()
        self.cuts = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        turn = 0
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            backend = self.backends[turn % len(self.backends)]
            turn += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", backend), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
                self.connections[backend] += 1
            threading.Thread(target=self._pump, args=(client, upstream, backend), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, backend: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                if backend is not None:
                    sent += len(data)
                    with self._lock:
                        self.client_bytes[backend] += len(data)
                    if sent >= self.cut_after:
                        with self._lock:
                            self.cuts += 1
                        break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                s.close()
            with self._lock:
                self._sockets -= {src, dst}

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for s in sockets:
            s.close()


def enrol(base: Path, ports: dict[str, int], a_endpoint: int, a_database: str) -> dict[str, NodeConfig]:
    """Two nodes; A's database is the shared PostgreSQL and its directory endpoint is the balancer."""
    return enrol_world(base, DIVISIONS, ports, endpoints={A: a_endpoint}, databases={A: a_database}, exchange=EXCHANGE)


def count(engine: Engine, query: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())  # type: ignore[call-overload]


def queued(engine: Engine) -> int:
    return count(engine, select(func.count()).select_from(outbox_table).where(outbox_table.c.status != "delivered"))


def unprocessed(engine: Engine) -> int:
    c = inbox.c
    return count(
        engine,
        select(func.count()).where(c.purpose.in_(CASE_PURPOSES), c.processed_at.is_(None)),
    )


def scrape(port: int) -> dict[str, float]:
    """This process's delivery outcomes, from its own ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    outcomes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tongban_delivery_outcomes_total":
                outcomes[sample.labels["outcome"]] = sample.value
    return outcomes


def acting(cfg: NodeConfig) -> tuple[Ed25519Signer, x25519.X25519PrivateKey, TrustStore]:
    passphrase = passphrase_from_env()
    trust = TrustStore.from_config(cfg)
    trust.ensure_usable()
    return (
        Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
        read_encryption_key(cfg.encryption_key, passphrase),
        trust,
    )


def test_two_processes_of_one_node_share_outbox_and_inbound_work(tmp_path: Path, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several gateway processes of one node share PostgreSQL only (SPEC §8); SQLite is one process")
    started = time.monotonic()
    ports = {A: free_port(), B: free_port()}
    a2_port, metrics = free_port(), (free_port(), free_port())
    balancer = Balancer([ports[A], a2_port], CUT_AFTER)
    cfgs = enrol(tmp_path, ports, balancer.port, db_url)
    a_cfg, b_cfg = cfgs[A], cfgs[B]

    a_node, b_node = open_node(a_cfg), open_node(b_cfg)
    a_db, b_db = a_node.engine, b_node.engine
    roster = [child(1000 + i, registration=DIVISIONS[B], residence=DIVISIONS[A]) for i in range(CHILDREN)]
    a_node.children.add_many(roster, period=PERIOD)

    b = NodeProcess(b_cfg, tmp_path / "b.log")
    a1 = NodeProcess(a_cfg, tmp_path / "a1.log")
    a2 = NodeProcess(a_cfg, tmp_path / "a2.log")
    processes = (b, a1, a2)
    try:
        b.start()
        a1.start(TONGBAN_METRICS_LISTEN=f"127.0.0.1:{metrics[0]}")
        # The second replica: the same node.toml, its own listener, trust state and metrics port.
        a2.start(
            TONGBAN_SERVER_LISTEN=f"127.0.0.1:{a2_port}",
            TONGBAN_TRUST_STATE=str(tmp_path / "a2-trust-state.json"),
            TONGBAN_TRUST_LAST_GOOD=str(tmp_path / "a2-directory.json"),
            TONGBAN_METRICS_LISTEN=f"127.0.0.1:{metrics[1]}",
        )

        # A queues its roster for B; B accepts cases for children registered at A.
        signer, encryption_key, trust = acting(a_cfg)
        sent = send_migrant_roster(
            node_id=A,
            period=PERIOD,
            children=a_node.children,
            engine=a_db,
            keyring=a_node.keyring,
            directory=trust.current(),
            profiles=load_profiles(),
            signer=signer,
            encryption_key=encryption_key,
            now=utc_now(),
            batch_size=NOTICES_PER_BATCH,
        )
        assert sent.notices == CHILDREN
        b_signer, b_encryption, b_trust = acting(b_cfg)
        cases = CaseParts.build(
            b_node,
            signer=b_signer,
            encryption_key=b_encryption,
            directory=b_trust.current,
            profiles=load_profiles(),
            clock=utc_now,
        ).service()
        accepted_at = utc_now() - timedelta(minutes=5)
        case_ids = [cases.accept(orphan_draft(n, FILES), FILES, accepted_at) for n in range(CASES)]

        def quiet() -> bool:
            return not (queued(a_db) or unprocessed(a_db) or queued(b_db) or unprocessed(b_db))

        def settled() -> bool:  # quiet, and still quiet after a few case-loop rounds
            if not quiet():
                return False
            time.sleep(1.0)
            return quiet()

        wait_until(settled, timeout=45, what="both nodes to deliver and apply everything")
        outcomes = [scrape(port) for port in metrics]
    finally:
        for process in processes:
            process.stop()
        balancer.close()

    try:
        # --- the outbox, A -> B: each message claimed once, sent once, receipted -------------------
        a_rows = outbox.list_messages(a_db, limit=100_000)
        assert {r.status for r in a_rows} == {outbox.Status.DELIVERED}
        assert [r.message_id for r in a_rows if r.attempts != 1] == []
        delivered = [o.get("delivered", 0) for o in outcomes]
        assert sum(delivered) == len(a_rows), f"delivered per process {delivered}, {len(a_rows)} rows"
        assert min(delivered) > 0, f"one process delivered nothing: {delivered}"
        assert sum(o.get("retried", 0) + o.get("dead", 0) for o in outcomes) == 0
        directory = trust.current()
        assert_receipts_verify(a_db, a_node.keyring, directory, B, [r.message_id for r in a_rows])
        with b_db.connect() as conn:
            b_inbox = [r.message_id for r in conn.execute(select(inbox.c.message_id))]
        assert sorted(b_inbox) == sorted(r.message_id for r in a_rows)  # each exactly once, none extra
        (check,) = roster_checks(b_db, b_node.keyring).values()
        assert (check.declared, check.received, check.batches) == (CHILDREN, CHILDREN, check.declared_batches)
        assert check.hash_matches

        # --- inbound work at A: received by either process, stored once, applied once --------------
        assert min(balancer.client_bytes[p] for p in (ports[A], a2_port)) > 16 * 1024, balancer.client_bytes
        assert balancer.cuts > 0
        b_rows = outbox.list_messages(b_db, limit=100_000)
        assert {r.status for r in b_rows} == {outbox.Status.DELIVERED}
        with a_db.connect() as conn:
            a_inbox = conn.execute(select(inbox.c.message_id, inbox.c.purpose, inbox.c.processed_at)).all()
        assert sorted(r.message_id for r in a_inbox) == sorted(r.message_id for r in b_rows)
        case_messages = [r for r in a_inbox if r.purpose in CASE_PURPOSES]
        assert all(r.processed_at is not None for r in case_messages)
        applied = [sum(int(n) for n in APPLIED.findall(p.log.read_text(encoding="utf-8"))) for p in (a1, a2)]
        assert sum(applied) == len(case_messages), f"applied per process {applied}, {len(case_messages)} messages"
        assert min(applied) > 0, f"one process applied nothing: {applied}"
        logs = "".join(p.log.read_text(encoding="utf-8") for p in processes)
        assert " refused (" not in logs
        assert "round failed" not in logs

        a_cases, b_cases = CaseStore(a_db, a_node.keyring), CaseStore(b_db, b_node.keyring)
        assert count(a_db, select(func.count()).select_from(cases_table)) == CASES
        b_directory = b_trust.current()
        for case_id in case_ids:
            here, there = a_cases.load(case_id), b_cases.load(case_id)
            assert [(e.action, e.at) for e in here.state.history] == [(e.action, e.at) for e in there.state.history]
            assert here.state.status == there.state.status
            with a_db.connect() as conn:
                a_custody = custody_store.view(conn, case_id, directory)
            with b_db.connect() as conn:
                b_custody = custody_store.view(conn, case_id, b_directory)
            assert a_custody is not None
            assert b_custody is not None
            assert (a_custody.head, a_custody.holder, a_custody.pending) == (
                b_custody.head,
                b_custody.holder,
                b_custody.pending,
            )

        # A's audit chain, appended to by both processes: intact, one entry per personal message.
        personal = load_profiles()
        sends = sum(1 for r in a_rows if personal.get(r.purpose).personal)
        receives = sum(1 for r in a_inbox if personal.get(r.purpose).personal)
        assert audit.verify(a_db) == sends + receives
        actions = Counter(e.action for e in audit.entries(a_db))
        assert (actions["send"], actions["receive"]) == (sends, receives)
    finally:
        a_db.dispose()
        b_db.dispose()
    print(
        f"scale-out: {len(a_rows)} sent by A ({delivered} per process), {len(case_messages)} case messages "
        f"applied at A ({applied} per process), {balancer.cuts} connections cut, "
        f"{dict(balancer.connections)} connections per process, {time.monotonic() - started:.1f} s"
    )
