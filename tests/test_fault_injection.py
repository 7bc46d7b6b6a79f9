"""Fault injection on real processes over mutual TLS (SPEC §4, §7): nothing lost, nothing doubled.

Three nodes enrolled with the real ``tongban keys`` flow — cq-liangjiang (residence, the sender),
sc-nanbu (registration, the receiver) and cq-hub (a relay) — the first two running as
``tongban node serve`` processes. The receiver's directory endpoint is a TCP proxy in this test,
which slows the sender's bytes down (so a stream of a few envelopes takes a while) and can cut every
connection and come back. A roster of a few thousand synthetic migrant children (``gateway.synth``,
imported with ``gateway.roster.intake``) is queued in batches of 50 notices, and while it streams:

1. the receiver is SIGKILLed mid-stream (some envelopes stored, a stream in flight) and restarted;
2. the sender is SIGKILLed mid-stream and restarted (its leases run out; it resends);
3. the connection is cut at the proxy mid-stream, and restored.

Then the sender is restarted in relay mode and a second roster goes through the relay, which runs in
this process behind the real ``tongban.v1.Relay`` service over mutual TLS, but hands every item out
twice, replays items it already delivered, and shuffles their order.

Afterwards: every outbox row is delivered, with a receipt that verifies; the receiver's inbox holds
exactly one row per message id sent — none missing, none extra; each roster's manifest counts what
arrived and its hash matches; both audit logs verify, with one send and one receive entry per
message; no node's log holds a child's name or ID number.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, Select, func, select

from gateway import audit, config
from gateway.cli import main
from gateway.config import NodeConfig
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord
from gateway.domain.rules import load_rules
from gateway.exchange import outbox
from gateway.exchange.envelope import parse_envelope, verify_receipt
from gateway.exchange.purposes import load_profiles
from gateway.exchange.relay import HeldItem, RelayStore, SqlRelayStore
from gateway.exchange.rosters import SendSummary, send_migrant_roster
from gateway.node import init_node, open_node
from gateway.roster import intake
from gateway.server import NodeServer, await_ready
from gateway.store.db import make_engine
from gateway.store.keyring import DataKeyring
from gateway.store.schema import inbox, relay_items
from gateway.store.schema import outbox as outbox_table
from gateway.synth.generator import SynthSpec, generate, roster_for
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.verifier import Directory
from tests.test_relay import Faulty, roster_checks

pytestmark = pytest.mark.slow

SENDER, RECEIVER, HUB = "cq-liangjiang", "sc-nanbu", "cq-hub"
DIVISIONS = {SENDER: "500157", RECEIVER: "511321", HUB: "500103"}
PROVINCES = (("50", "重庆市民政局"), ("51", "四川省民政厅"))
HOUSEHOLDS = 4800  # about 3,000 migrant children living in 500157, registered in 511321
NOTICES_PER_BATCH = 50
SECOND_ROSTER = 800  # children of the second period's roster (through the relay)
RATE = 64_000  # bytes per second the proxy lets through towards the receiver
EXCHANGE = """
[exchange]
poll_seconds = 0.1
timeout_seconds = 3.0
lease_seconds = 3.0
batch_size = 5
retry_base_seconds = 0.2
retry_max_seconds = 1.0
"""
WAIT = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float = WAIT, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- the network: a proxy that throttles, cuts and restores -----------------------------------------


class Proxy:
    """TCP on 127.0.0.1:``port`` to 127.0.0.1:``target``; client-to-server bytes at most ``rate``
    per second per connection. :meth:`cut` closes the listener and every connection (the peers see
    resets); :meth:`restore` listens again on the same port."""

    def __init__(self, port: int, target: int, rate: int) -> None:
        self.port, self.target, self.rate = port, target, rate
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.connections = 0

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = set(self._sockets), set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the receiver is down: the sender sees the connection fail
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, throttled: bool) -> None:
        try:
            while data := src.recv(8192):
                dst.sendall(data)
                if throttled:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._sockets -= {src, dst}


# --- nodes: enrolled with `tongban keys`, run as `tongban node serve` ------------------------------------


def keys(*args: str | Path) -> None:
    argv = ["keys", *(str(a) for a in args)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 0, f"tongban {' '.join(argv[:3])}: {err.getvalue()[-400:]}"


@dataclass
class NodeProcess:
    cfg: NodeConfig
    log: Path
    popen: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    starts: int = 0

    def start(self, **extra: str) -> None:
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TONGBAN_TRUST_REFRESH_SECONDS": "1",
            **extra,
        }
        with self.log.open("a", encoding="utf-8") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "gateway", "node", "serve", "--config", str(self.cfg.path)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        assert self.popen.stdout is not None
        if await_ready(self.popen.stdout, 30) is not None:
            self.starts += 1
            return
        self.popen.kill()
        self._reap()
        raise AssertionError(f"{self.cfg.node_id} did not start; see {self.log}")

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        assert self.popen is not None
        self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self.popen = None

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        self._reap()


def enrol_world(
    base: Path,
    divisions: Mapping[str, str],
    ports: Mapping[str, int],
    *,
    endpoints: Mapping[str, int] | None = None,
    databases: Mapping[str, str] | None = None,
    exchange: str = EXCHANGE,
    extra: Mapping[str, str] | None = None,
) -> dict[str, NodeConfig]:
    """The operators' flow, as the demo runs it: two provinces (重庆, 四川), a national root (2 of 3
    keys), nodes ``divisions`` (node id → division) that make their own keys and send signing
    requests, and a signed national directory. A node listens on ``ports[node]``; the directory
    names ``endpoints[node]`` instead when given (a proxy in front of it); ``databases[node]`` is its
    database URL (default its own SQLite file); its configuration gets ``exchange`` (an
    ``[exchange]`` section, default :data:`EXCHANGE`) and ``extra[node]`` appended."""
    for prefix, name in PROVINCES:
        keys("province", "init", base / "provinces" / prefix, "--prefix", prefix, "--name", name)
    descriptors: list[str | Path] = []
    for prefix, _ in PROVINCES:
        descriptors += ["--province", base / "provinces" / prefix / "province.json"]
    root = base / "national" / "root"
    bundle = base / "national" / "directory.json"
    keys("root", "init", root, "--keys", "3", "--threshold", "2", *descriptors)
    table = DivisionTable.load_default()
    cfgs = {}
    for node_id, division in divisions.items():
        data = base / "nodes" / node_id
        database = (databases or {}).get(node_id, "sqlite:///node.db")
        init_node(
            data,
            node_id=node_id,
            division=division,
            listen=f"127.0.0.1:{ports[node_id]}",
            database_url=database,
            table=table,
        )
        request, response = data / "request.json", data / "response.json"
        endpoint = (endpoints or {}).get(node_id)
        at = ["--endpoint", f"127.0.0.1:{endpoint}"] if endpoint is not None else []
        keys("node", "request", "--config", data, "--out", request, *at)
        keys("node", "issue", base / "provinces" / division[:2], request, "--out", response)
        keys("node", "install", "--config", data, response, "--root", root / "root.json", "--directory", bundle)
        cfg_path = data / config.CONFIG_FILE
        more = (extra or {}).get(node_id, "")
        cfg_path.write_text(cfg_path.read_text(encoding="utf-8") + exchange + more, encoding="utf-8")
        cfgs[node_id] = config.load(cfg_path)
    parts: list[str | Path] = []
    for prefix, _ in PROVINCES:
        part = base / "provinces" / prefix / "part.json"
        keys("province", "publish", base / "provinces" / prefix, "--out", part)
        parts += ["--part", part]
    keys("directory", "build", "--root", root, "--out", bundle, *parts, "--expires-days", "7")
    keys("directory", "sign", bundle, "--key", root / "directory-key.pem")
    return cfgs


def enrol(base: Path, ports: dict[str, int], proxy_port: int) -> dict[str, NodeConfig]:
    """This test's three nodes: the receiver behind the cutting proxy, the hub serving the relay role."""
    return enrol_world(
        base,
        DIVISIONS,
        ports,
        endpoints={RECEIVER: proxy_port},
        extra={HUB: "serve_relay = true\n", RECEIVER: f'relays = ["{HUB}"]\n'},
    )


# --- a relay that duplicates, replays and reorders ------------------------------------------------------


class DuplicateReplayShuffle(Faulty):
    """Every pull: each held item twice, plus up to three items it handed out before (delivered or
    not), all shuffled. ``handed`` counts items handed out, per message id."""

    def __init__(self, inner: RelayStore) -> None:
        super().__init__(inner)
        self.rng = random.Random(20261124)
        self.seen: dict[str, HeldItem] = {}
        self.handed: Counter[str] = Counter()

    def pending(self, recipient: str, limit: int, now: datetime) -> list[HeldItem]:
        fresh = self.inner.pending(recipient, limit, now)
        old = [
            i for mid, i in self.seen.items() if mid not in {f.message_id for f in fresh} and i.recipient == recipient
        ]
        for i in fresh:
            self.seen[i.message_id] = i
        items = fresh + fresh + self.rng.sample(old, k=min(3, len(old)))
        self.rng.shuffle(items)
        self.handed.update(i.message_id for i in items)
        return items


# --- the test ------------------------------------------------------------------------------------------


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, what: str) -> None:
        self.marks.append((what, round(time.monotonic() - self.t0, 1)))


def count(engine: Engine, query: Select[int]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def assert_receipts_verify(
    engine: Engine, keyring: DataKeyring, directory: Directory, receiver: str, message_ids: list[str]
) -> None:
    """Each message has a stored receipt, and it verifies against ``directory`` for ``receiver``,
    this message id and the digest of the envelope actually sent (opened from the sender's outbox)."""
    envelopes = outbox.envelopes(engine, keyring)
    for message_id in message_ids:
        receipt = outbox.receipt_of(engine, message_id)
        assert receipt is not None
        verify_receipt(
            receipt,
            directory=directory,
            receiver=receiver,
            message_id=message_id,
            envelope_digest=parse_envelope(envelopes[message_id]).digest,
            now=utc_now(),
        )


def queue_roster(cfg: NodeConfig, period: str) -> SendSummary:
    node = open_node(cfg)
    trust = TrustStore.from_config(cfg)
    passphrase = passphrase_from_env()
    try:
        return send_migrant_roster(
            node_id=cfg.node_id,
            period=period,
            children=node.children,
            engine=node.engine,
            keyring=node.keyring,
            directory=trust.refresh(utc_now()),
            profiles=load_profiles(),
            signer=Ed25519Signer(read_signing_key(cfg.signing_key, passphrase)),
            encryption_key=read_encryption_key(cfg.encryption_key, passphrase),
            now=utc_now(),
            batch_size=NOTICES_PER_BATCH,
        )
    finally:
        node.engine.dispose()


def import_children(cfg: NodeConfig) -> tuple[list[ChildRecord], list[str]]:
    """The sender's migrant roster for two periods (the second a subset); returns the records and
    the two period labels."""
    table, rules = DivisionTable.load_default(), load_rules()
    first = MonitoringPeriod.parse("2026Q2")
    spec = SynthSpec(
        seed=2026,
        period=first,
        residence_divisions=(DIVISIONS[SENDER],),
        registration_divisions=(DIVISIONS[RECEIVER],),
        households=HOUSEHOLDS,
    )
    records = list(roster_for(generate(spec, table, rules), DIVISIONS[SENDER]))
    node = open_node(cfg)
    try:
        today = date(2026, 11, 24)
        one = intake(node.children, records, period=first.label, table=table, today=today)
        two = intake(node.children, records[:SECOND_ROSTER], period=first.next().label, table=table, today=today)
    finally:
        node.engine.dispose()
    assert one.rejected == 0
    assert two.rejected == 0
    return records, [first.label, first.next().label]


def test_kills_cuts_duplicates_and_reordering_lose_and_double_nothing(tmp_path: Path) -> None:
    timeline = Timeline()
    ports = {node_id: free_port() for node_id in DIVISIONS}
    proxy = Proxy(free_port(), ports[RECEIVER], RATE)
    cfgs = enrol(tmp_path, ports, proxy.port)
    records, (period1, period2) = import_children(cfgs[SENDER])
    timeline.mark("enrolled (tongban keys) and imported")

    sender_db, receiver_db = make_engine(cfgs[SENDER].database_url), make_engine(cfgs[RECEIVER].database_url)
    sender = NodeProcess(cfgs[SENDER], tmp_path / "sender.log")
    receiver = NodeProcess(cfgs[RECEIVER], tmp_path / "receiver.log")
    hub_node = open_node(cfgs[HUB])
    relay = DuplicateReplayShuffle(SqlRelayStore(hub_node.engine))
    hub = NodeServer(hub_node, relay_store=relay)
    injected: dict[str, int] = {}

    def received() -> int:
        return count(receiver_db, select(func.count()).select_from(inbox))

    def in_flight() -> int:  # outbox rows a sender's delivery round holds right now
        now = datetime.now(UTC)
        c = outbox_table.c
        return count(
            sender_db,
            select(func.count()).where(c.status == "queued", c.claimed_until.is_not(None), c.claimed_until > now),
        )

    def mid_stream(at_least: int) -> Callable[[], bool]:
        return lambda: received() >= at_least and in_flight() > 0

    try:
        hub.start()
        proxy.restore()
        receiver.start()
        first = queue_roster(cfgs[SENDER], period1)
        total1 = first.envelopes
        assert first.notices == len(records) > 2500
        sender.start()
        timeline.mark(f"roster 1 queued: {first.notices} notices in {total1} envelopes; streaming")

        # 1. The receiver dies mid-stream.
        wait_until(mid_stream(total1 // 6), what="the first envelopes to arrive")
        receiver.kill()
        injected["receiver_killed_at"] = received()
        assert 0 < injected["receiver_killed_at"] < total1
        receiver.start()
        timeline.mark(f"receiver SIGKILLed with {injected['receiver_killed_at']}/{total1} stored; restarted")

        # 2. The sender dies mid-stream.
        wait_until(mid_stream(injected["receiver_killed_at"] + total1 // 6), what="progress after the restart")
        sender.kill()
        injected["sender_killed_at"] = received()
        assert injected["sender_killed_at"] < total1
        sender.start()
        timeline.mark(f"sender SIGKILLed with {injected['sender_killed_at']}/{total1} stored; restarted")

        # 3. The network is cut mid-stream, then restored.
        wait_until(mid_stream(injected["sender_killed_at"] + total1 // 6), what="progress after the sender restart")
        proxy.cut()
        injected["cut_at"] = received()
        assert injected["cut_at"] < total1
        time.sleep(1.5)
        # Nothing gets through while cut: at most what had already crossed the proxy (an envelope or two).
        assert received() - injected["cut_at"] <= 2
        proxy.restore()
        timeline.mark(f"connection cut with {injected['cut_at']}/{total1} stored; restored after 1.5 s")

        wait_until(
            lambda: outbox.counts(sender_db).get((RECEIVER, outbox.Status.DELIVERED), 0) == total1,
            what="roster 1 to be delivered",
        )
        assert received() == total1
        timeline.mark("roster 1 delivered")

        # 4. The second roster goes through a relay that duplicates, replays and reorders.
        sender.stop()
        sender.start(TONGBAN_EXCHANGE_TRANSPORT="relay", TONGBAN_EXCHANGE_RELAY=HUB)
        second = queue_roster(cfgs[SENDER], period2)
        total = total1 + second.envelopes
        wait_until(
            lambda: outbox.counts(sender_db).get((RECEIVER, outbox.Status.DELIVERED), 0) == total,
            what="roster 2 to be delivered through the relay",
        )
        timeline.mark(f"roster 2 ({second.envelopes} envelopes) delivered through the faulty relay")
    finally:
        for process in (sender, receiver):
            process.stop()
        hub.stop(grace=0)
        proxy.cut()

    # --- nothing lost, nothing doubled, everything proven ---------------------------------------------
    # The relay really misbehaved: every item of roster 2 handed out at least twice, some more.
    assert len(relay.handed) == second.envelopes
    assert min(relay.handed.values()) >= 2
    assert sum(relay.handed.values()) > 2 * second.envelopes
    sender_node, receiver_node = open_node(cfgs[SENDER]), open_node(cfgs[RECEIVER])
    try:
        rows = outbox.list_messages(sender_db, limit=100_000)
        assert len(rows) == total
        assert {r.status for r in rows} == {outbox.Status.DELIVERED}
        assert sum(r.attempts > 1 for r in rows) > 0  # the faults did make the sender send again
        directory = TrustStore.from_config(cfgs[SENDER]).refresh(utc_now())
        assert_receipts_verify(sender_db, sender_node.keyring, directory, RECEIVER, [r.message_id for r in rows])
        with receiver_db.connect() as conn:
            inbox_ids = [r.message_id for r in conn.execute(select(inbox.c.message_id))]
        assert len(inbox_ids) == len(set(inbox_ids)) == total
        assert set(inbox_ids) == {r.message_id for r in rows}  # none missing, none extra

        checks = roster_checks(receiver_db, receiver_node.keyring)
        assert {c.declared for c in checks.values()} == {first.notices, second.notices}
        for check in checks.values():
            assert (check.received, check.batches, check.hash_matches) == (check.declared, check.declared_batches, True)

        # One audit entry per message of a personal purpose on each side (the notices, not the
        # manifests), and both chains intact.
        personal = sorted(r.message_id for r in rows if load_profiles().get(r.purpose).personal)
        assert len(personal) == first.envelopes - 1 + second.envelopes - 1
        assert audit.verify(sender_db) == len(personal)
        assert audit.verify(receiver_db) == len(personal)
        assert sorted((e.action, e.reference) for e in audit.entries(sender_db)) == [("send", m) for m in personal]
        assert sorted((e.action, e.reference) for e in audit.entries(receiver_db)) == [("receive", m) for m in personal]
        with hub_node.engine.connect() as conn:
            states = Counter(r.state for r in conn.execute(select(relay_items.c.state)))
        assert states == {"receipted": second.envelopes}
    finally:
        sender_node.engine.dispose()
        receiver_node.engine.dispose()
        hub_node.engine.dispose()
        sender_db.dispose()
        receiver_db.dispose()

    # No node logged a child's name or ID number.
    logs = "".join(p.read_text(encoding="utf-8", errors="replace") for p in tmp_path.glob("*.log"))
    for record in records[:200]:
        assert record.name not in logs
        if record.id_number:
            assert record.id_number not in logs
    timeline.mark("verified")
    assert sender.starts == 3
    assert receiver.starts == 2
    print(f"fault-injection timeline: {timeline.marks}; injected at: {injected}")
