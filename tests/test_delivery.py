"""Delivery end to end over real mutual TLS on 127.0.0.1 (SPEC §4): outbox → stream → verified receipt.

Three enrolled nodes, certificates issued at the real current time (BoringSSL checks validity against
the wall clock): cq-liangjiang sends migrant notices to sc-nanbu (and cq-beibei). Receivers are real
:class:`NodeServer` processes-in-a-thread on fixed loopback ports listed in the directory; the sender
is a :class:`DeliveryWorker` on the real :class:`GrpcTransport`, driven round by round
(``run_pending``) where a test needs to see each step, and in the background where it needs the
scheduler (a dead peer not blocking another; the server wiring).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select
from tongban.v1 import envelope_pb2, exchange_pb2, node_pb2_grpc

from gateway import audit, config
from gateway.cli import main
from gateway.config import NodeConfig
from gateway.exchange import outbox
from gateway.exchange.delivery import DeliveryWorker, personal_purposes
from gateway.exchange.envelope import Outgoing, seal, verify_receipt
from gateway.exchange.outbox import Status
from gateway.exchange.purposes import load_profiles
from gateway.exchange.retry import Reason, RetryPolicy, failure
from gateway.exchange.transport import GrpcTransport, Receipt, Result, Transport
from gateway.node import Node, open_node
from gateway.server import NodeServer
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import inbox
from gateway.trust import keyfile
from gateway.trust.documents import NodeStatus
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.tls import TlsIdentity, secure_channel_to
from tests.test_mtls import CHANNEL_OPTIONS, PASSPHRASE, LivePki, enrol_on_disk, publish

pytestmark = pytest.mark.slow

SENDER = "cq-liangjiang"
DIVISIONS = {"cq-liangjiang": "500157", "cq-beibei": "500109", "sc-nanbu": "511321"}
FAST = RetryPolicy(
    base_delay=timedelta(milliseconds=300),
    max_delay=timedelta(seconds=1),
    jitter=0.0,
    quick_attempts=2,
    quick_wait=timedelta(milliseconds=50),
)
PROFILES = load_profiles()
WAIT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(condition: Callable[[], bool], *, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class CountingTransport:
    """The real transport, with a record of every stream it opened (peer, envelopes)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
        self.calls.append((peer_id, len(envelopes)))
        return self.inner.deliver(peer_id, envelopes)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Sender:
    node: Node
    trust: TrustStore
    transport: CountingTransport
    worker: DeliveryWorker

    @property
    def engine(self) -> Engine:
        return self.node.engine

    def rows(self, status: Status | None = None) -> list[outbox.OutboxRow]:
        return outbox.list_messages(self.engine, status=status)

    def close(self) -> None:
        self.worker.stop()
        self.transport.close()
        self.node.engine.dispose()


@dataclass
class Net:
    tmp: Path
    live: LivePki
    ports: dict[str, int]
    cfgs: dict[str, NodeConfig] = field(default_factory=dict)
    servers: dict[str, NodeServer] = field(default_factory=dict)
    senders: list[Sender] = field(default_factory=list)

    def publish(self) -> None:
        bundle = self.live.bundle()
        for cfg in self.cfgs.values():
            publish(cfg, bundle)

    def start(self, node_id: str) -> NodeServer:
        server = NodeServer(open_node(self.cfgs[node_id]), retry_policy=FAST, delivery_poll_interval=0.1)
        server.start()
        self.servers[node_id] = server
        return server

    def stop(self, node_id: str) -> None:
        self.servers.pop(node_id).stop(grace=0)

    def sender(self, *, timeout: float = 10.0, batch_size: int = 100) -> Sender:
        cfg = self.cfgs[SENDER]
        node = open_node(cfg)
        trust = TrustStore.from_config(cfg)
        trust.ensure_usable()  # fetch the published directory, as NodeServer does at start
        identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=SENDER)
        transport = CountingTransport(
            GrpcTransport(
                identity=identity, directory=trust.current, clock=trust.clock, timeout=timeout, options=CHANNEL_OPTIONS
            )
        )
        worker = DeliveryWorker(
            node_id=SENDER,
            engine=node.engine,
            keyring=node.keyring,
            transport=transport,
            directory=trust.current,
            personal=personal_purposes(PROFILES),
            policy=FAST,
            clock=trust.clock,
            batch_size=batch_size,
            poll_interval=0.05,
            rand=lambda: 0.0,
        )
        sender = Sender(node, trust, transport, worker)
        self.senders.append(sender)
        return sender

    def revoke(self, node_id: str) -> None:
        self.live.node(node_id).status = NodeStatus.REVOKED
        self.live.province(DIVISIONS[node_id][:2]).version += 1
        self.live.pki.directory_version += 1
        self.publish()

    def envelope(self, recipient: str, *, notices: int = 2, registration: str | None = None) -> Outgoing:
        """A migrant notice batch from the sender (synthetic values; tokens are random bytes)."""
        batch = exchange_pb2.MigrantNoticeBatch(
            period="2026Q3",
            roster_id="roster-1",
            batch_index=0,
            notices=[
                exchange_pb2.MigrantNotice(
                    notice_ref=f"notice-{i}",
                    id_token=os.urandom(32),
                    birth_year_month="2015-06",
                    sex=1,
                    residence_division=DIVISIONS[SENDER],
                    registration_division=registration or DIVISIONS[recipient],
                    living_since="2024-03-01",
                    key_care=False,
                )
                for i in range(notices)
            ],
        )
        return seal(
            sender=SENDER,
            recipient=recipient,
            profile=PROFILES.get("migrant_notice"),
            payload=batch.SerializeToString(),
            signer=self.live.node(SENDER).signers[0],
            now=utc_now(),
            lifetime=timedelta(days=1),
        )

    def queue(self, sender: Sender, *messages: Outgoing) -> None:
        with sender.engine.begin() as conn:
            for m in messages:
                outbox.enqueue(conn, m, sender.node.keyring)


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Net]:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    live = LivePki.create()
    ports = {node_id: free_port() for node_id in DIVISIONS}
    for node_id, port in ports.items():
        live.node(node_id).endpoint = f"127.0.0.1:{port}"
    net = Net(tmp_path, live, ports)
    for node_id, division in DIVISIONS.items():
        cfg = enrol_on_disk(tmp_path, live, node_id, division)
        text = cfg.path.read_text(encoding="utf-8").replace('"127.0.0.1:0"', f'"127.0.0.1:{ports[node_id]}"')
        cfg.path.write_text(text, encoding="utf-8")
        keyfile.write_private_key(cfg.signing_key, live.node(node_id).signers[0].private_key, PASSPHRASE.encode())
        net.cfgs[node_id] = config.load(cfg.path)
    net.publish()
    try:
        yield net
    finally:
        for sender in net.senders:
            sender.close()
        for node_id in list(net.servers):
            net.stop(node_id)


def inbox_count(server: NodeServer) -> int:
    with server.node.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


def audit_actions(engine: Engine) -> list[tuple[str, str]]:
    return [(e.action, e.reference) for e in audit.entries(engine)]


# --- the happy path ------------------------------------------------------------------------------------


def test_a_batch_is_delivered_once_in_one_stream_with_verified_receipts_stored(net: Net) -> None:
    receiver = net.start("sc-nanbu")
    sender = net.sender()
    messages = [net.envelope("sc-nanbu") for _ in range(3)]
    net.queue(sender, *messages)

    (outcome,) = sender.worker.run_pending()
    assert (outcome.peer, outcome.claimed, outcome.delivered) == ("sc-nanbu", 3, 3)
    assert sender.transport.calls == [("sc-nanbu", 3)]  # one stream for the batch
    directory = sender.trust.current()
    for m in messages:
        row = outbox.get(sender.engine, m.message_id)
        assert row is not None
        assert (row.status, row.attempts, row.has_receipt) == (Status.DELIVERED, 1, True)
        receipt = outbox.receipt_of(sender.engine, m.message_id)
        assert receipt is not None
        body = verify_receipt(  # the stored proof verifies on its own, later
            receipt,
            directory=directory,
            receiver="sc-nanbu",
            message_id=m.message_id,
            envelope_digest=m.digest,
            now=utc_now(),
        )
        assert body.sender == SENDER
    assert inbox_count(receiver) == 3

    assert sender.worker.run_pending() == []  # nothing is sent twice
    assert sender.transport.calls == [("sc-nanbu", 3)]
    assert sender.worker.metrics.snapshot()["delivered"] == 3

    # Audit: the sender recorded three sends, the receiver three receipts; both chains hold.
    assert sorted(audit_actions(sender.engine)) == sorted(("send", m.message_id) for m in messages)
    assert sorted(audit_actions(receiver.node.engine)) == sorted(("receive", m.message_id) for m in messages)
    assert audit.verify(sender.engine) == 3
    assert audit.verify(receiver.node.engine) == 3
    assert all("to=sc-nanbu receipt_sha256=" in e.detail for e in audit.entries(sender.engine))


def test_a_refused_envelope_is_dead_lettered_and_the_rest_of_the_stream_delivered(net: Net) -> None:
    net.start("sc-nanbu")
    sender = net.sender()
    good1, bad, good2 = (
        net.envelope("sc-nanbu"),
        net.envelope("sc-nanbu", registration="500109"),  # names another county as registration place
        net.envelope("sc-nanbu"),
    )
    net.queue(sender, good1, bad, good2)
    (outcome,) = sender.worker.run_pending()
    assert (outcome.delivered, outcome.dead, outcome.retried) == (2, 1, 0)
    assert sender.transport.calls == [("sc-nanbu", 3)]
    (dead,) = sender.rows(Status.DEAD)
    assert dead.message_id == bad.message_id
    assert dead.last_error == "refused: purpose_not_allowed (INVALID_ARGUMENT)"
    assert ("send_failed", bad.message_id) in audit_actions(sender.engine)


# --- a receiver that is down -----------------------------------------------------------------------------


def test_a_receiver_that_is_down_is_retried_with_back_off_then_delivered(net: Net) -> None:
    sender = net.sender()
    m = net.envelope("sc-nanbu")
    net.queue(sender, m)

    before = utc_now()
    (first,) = sender.worker.run_pending()
    assert (first.retried, first.delivered) == (1, 0)
    assert len(sender.transport.calls) == FAST.quick_attempts  # the quick retries inside the round
    (row,) = sender.rows()
    assert (row.status, row.attempts) == (Status.QUEUED, 1)
    assert (row.last_error or "").startswith("peer_unreachable")
    assert row.next_attempt_at >= before + FAST.base_delay  # durable back-off, in the row
    assert sender.worker.run_pending() == []  # not due yet

    net.start("sc-nanbu")
    eventually(lambda: outbox.due_peers(sender.engine) == ["sc-nanbu"], what="the retry to fall due")
    (second,) = sender.worker.run_pending()
    assert second.delivered == 1
    (row,) = sender.rows()
    assert (row.status, row.attempts, row.has_receipt) == (Status.DELIVERED, 2, True)
    assert sender.worker.metrics.snapshot()["failed.peer_unreachable"] == 1  # one failed attempt recorded


def test_the_server_runs_delivery_in_the_background(net: Net) -> None:
    """The wiring: an enrolled NodeServer starts its DeliveryWorker, which retries until the peer
    is back, and stops it with the server."""
    server = net.start(SENDER)
    assert server.delivery is not None
    m = net.envelope("sc-nanbu")
    with server.node.engine.begin() as conn:
        outbox.enqueue(conn, m, server.node.keyring)
    server.delivery.notify()

    def row() -> outbox.OutboxRow:
        r = outbox.get(server.node.engine, m.message_id)
        assert r is not None
        return r

    eventually(lambda: row().attempts >= 1 and row().last_error is not None, what="a failed first attempt")
    assert row().status is Status.QUEUED
    net.start("sc-nanbu")
    eventually(lambda: row().status is Status.DELIVERED, what="delivery once the peer is back")
    assert row().has_receipt


# --- revocation --------------------------------------------------------------------------------------------


def test_a_revoked_receivers_in_flight_messages_become_dead_letters_with_reason(
    net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    net.start("sc-nanbu")
    sender = net.sender()
    messages = [net.envelope("sc-nanbu") for _ in range(2)]
    net.queue(sender, *messages)
    net.revoke("sc-nanbu")
    assert sender.trust.refresh().version == 2

    (outcome,) = sender.worker.run_pending()
    assert (outcome.dead, outcome.delivered) == (2, 0)
    assert sender.transport.calls == [("sc-nanbu", 2)]  # asked, and refused before dialling
    dead = sender.rows(Status.DEAD)
    assert {r.message_id for r in dead} == {m.message_id for m in messages}
    assert all(r.last_error == "peer_revoked: sc-nanbu is revoked in directory v2" for r in dead)
    assert sender.worker.metrics.snapshot()["dead"] == 2
    assert sorted(audit_actions(sender.engine)) == sorted(("send_failed", m.message_id) for m in messages)

    capsys.readouterr()
    assert main(["outbox", "list", "--config", str(net.cfgs[SENDER].path), "--status", "dead"]) == 0
    out = capsys.readouterr().out
    for m in messages:
        (line,) = [line for line in out.splitlines() if m.message_id in line]
        assert "dead" in line
        assert "reason: peer_revoked: sc-nanbu is revoked in directory v2" in line


# --- one dead peer never blocks another --------------------------------------------------------------------


class Hanging:
    """A TCP listener on a peer's port that accepts connections and never answers (a hung peer)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_a_hung_peer_does_not_block_delivery_to_another(net: Net) -> None:
    net.start("sc-nanbu")
    hung = Hanging(net.ports["cq-beibei"])
    try:
        sender = net.sender(timeout=4.0)
        stuck, fine = net.envelope("cq-beibei"), net.envelope("sc-nanbu")
        net.queue(sender, stuck)  # queued first: the hung peer's round starts first
        sender.worker.start()
        eventually(lambda: ("cq-beibei", 1) in sender.transport.calls, what="the round to the hung peer")
        net.queue(sender, fine)
        sender.worker.notify()
        started = time.monotonic()
        eventually(
            lambda: (r := outbox.get(sender.engine, fine.message_id)) is not None and r.status is Status.DELIVERED,
            what="delivery to the live peer",
        )
        assert time.monotonic() - started < 3.5  # well within the hung peer's stream timeout
        hung_row = outbox.get(sender.engine, stuck.message_id)
        assert hung_row is not None
        assert (hung_row.status, hung_row.claimed_by) == (Status.QUEUED, sender.worker.worker_id)  # still in flight
        sender.worker.stop()  # drains: waits for the hung round to time out and records it
        hung_row = outbox.get(sender.engine, stuck.message_id)
        assert hung_row is not None
        assert (hung_row.status, hung_row.claimed_by) == (Status.QUEUED, None)
        assert (hung_row.last_error or "").split(":")[0] in {"peer_timeout", "peer_unreachable"}
    finally:
        hung.close()


# --- the servicer, directly ----------------------------------------------------------------------------------


def test_unary_deliver_answers_a_receipt_or_the_refusal_status(net: Net) -> None:
    server = net.start("sc-nanbu")
    good, bad = net.envelope("sc-nanbu"), net.envelope("sc-nanbu", registration="500109")
    channel = secure_channel_to(
        "sc-nanbu",
        net.live.directory(),
        net.live.identity(SENDER),
        now=utc_now(),
        target=server.address,
        options=CHANNEL_OPTIONS,
    )
    with channel:
        stub = node_pb2_grpc.NodeExchangeStub(channel)
        receipt = stub.Deliver(envelope_pb2.Envelope.FromString(good.data), timeout=10)
        verify_receipt(
            receipt,
            directory=net.live.directory(),
            receiver="sc-nanbu",
            message_id=good.message_id,
            envelope_digest=good.digest,
            now=utc_now(),
        )
        again = stub.Deliver(envelope_pb2.Envelope.FromString(good.data), timeout=10)
        assert again == receipt  # idempotent: the original receipt
        with pytest.raises(grpc.RpcError) as info:
            stub.Deliver(envelope_pb2.Envelope.FromString(bad.data), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("purpose_not_allowed: ")


def test_an_enrolled_node_without_a_signing_key_refuses_envelopes_as_unavailable(net: Net) -> None:
    net.cfgs["sc-nanbu"].signing_key.unlink()
    server = net.start("sc-nanbu")
    assert server.receiver is None
    channel = secure_channel_to(
        "sc-nanbu",
        net.live.directory(),
        net.live.identity(SENDER),
        now=utc_now(),
        target=server.address,
        options=CHANNEL_OPTIONS,
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        node_pb2_grpc.NodeExchangeStub(channel).Deliver(
            envelope_pb2.Envelope.FromString(net.envelope("sc-nanbu").data), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (info.value.details() or "").startswith("exchange_disabled: ")


# --- outcomes decided without the network ------------------------------------------------------------------


class Scripted:
    """A transport that answers from a script (one function per call)."""

    def __init__(self, *answers: Callable[[Sequence[bytes]], list[Result]]) -> None:
        self.answers = list(answers)
        self.calls: list[int] = []

    def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
        self.calls.append(len(envelopes))
        return self.answers.pop(0)(envelopes)

    def close(self) -> None:
        pass


def scripted_worker(net: Net, transport: Transport) -> tuple[DeliveryWorker, Node, TrustStore]:
    node = open_node(net.cfgs[SENDER])
    trust = TrustStore.from_config(net.cfgs[SENDER])
    trust.ensure_usable()
    worker = DeliveryWorker(
        node_id=SENDER,
        engine=node.engine,
        keyring=node.keyring,
        transport=transport,
        directory=trust.current,
        personal=personal_purposes(PROFILES),
        policy=FAST,
        clock=trust.clock,
        rand=lambda: 0.0,
    )
    return worker, node, trust


def test_a_receipt_that_does_not_verify_is_not_proof_and_the_message_is_retried(net: Net) -> None:
    forged = envelope_pb2.Receipt(body=b"\x0a\x04fake").SerializeToString()
    transport = Scripted(lambda envs: [Receipt(forged) for _ in envs])
    worker, node, _ = scripted_worker(net, transport)
    try:
        m = net.envelope("sc-nanbu")
        with node.engine.begin() as conn:
            outbox.enqueue(conn, m, node.keyring)
        (outcome,) = worker.run_pending()
        assert outcome.retried == 1
        row = outbox.get(node.engine, m.message_id)
        assert row is not None
        assert (row.status, row.has_receipt) == (Status.QUEUED, False)
        assert (row.last_error or "").startswith("receipt_invalid")
    finally:
        node.engine.dispose()


def test_an_expired_envelope_is_dead_lettered_without_being_sent(net: Net) -> None:
    transport = Scripted()
    worker, node, _ = scripted_worker(net, transport)
    try:
        m = seal(
            sender=SENDER,
            recipient="sc-nanbu",
            profile=PROFILES.get("roster_manifest"),
            payload=exchange_pb2.RosterManifest(period="2026Q3", roster_id="r", count=1).SerializeToString(),
            signer=net.live.node(SENDER).signers[0],
            now=utc_now() - timedelta(hours=2),
            lifetime=timedelta(hours=1),
        )
        with node.engine.begin() as conn:
            outbox.enqueue(conn, m, node.keyring)
        (outcome,) = worker.run_pending()
        assert outcome.dead == 1
        assert transport.calls == []
        (row,) = outbox.list_messages(node.engine, status=Status.DEAD)
        assert (row.last_error or "").startswith("expired")
        assert audit_actions(node.engine) == []  # roster manifests carry no personal data: not audited
    finally:
        node.engine.dispose()


def test_stop_gives_back_leases_so_another_process_continues_at_once(net: Net) -> None:
    release = threading.Event()

    def slow(envs: Sequence[bytes]) -> list[Result]:
        release.wait(5)
        return [failure(Reason.PEER_UNREACHABLE) for _ in envs]

    transport = Scripted(slow, slow)
    worker, node, _ = scripted_worker(net, transport)
    try:
        m = net.envelope("sc-nanbu")
        with node.engine.begin() as conn:
            outbox.enqueue(conn, m, node.keyring)
        worker.start()
        eventually(lambda: transport.calls != [], what="the round to start")
        row = outbox.get(node.engine, m.message_id)
        assert row is not None
        assert row.claimed_by == worker.worker_id
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        release.set()
        stopper.join(10)
        row = outbox.get(node.engine, m.message_id)
        assert row is not None
        assert (row.status, row.claimed_by) == (Status.QUEUED, None)
        assert len(transport.calls) == 1  # stopping cut the quick retries short
    finally:
        node.engine.dispose()


def test_stopping_the_server_ends_a_stream_stuck_on_a_hung_peer_at_once(net: Net) -> None:
    hung = Hanging(net.ports["cq-beibei"])
    try:
        server = net.start(SENDER)  # its transport waits up to 60 s for a stream
        m = net.envelope("cq-beibei")
        with server.node.engine.begin() as conn:
            outbox.enqueue(conn, m, server.node.keyring)
        assert server.delivery is not None
        server.delivery.notify()
        eventually(lambda: hung.held != [], what="the sender to connect to the hung peer")
        started = time.monotonic()
        net.stop(SENDER)
        assert time.monotonic() - started < 10
        engine = make_engine(net.cfgs[SENDER].database_url)
        row = outbox.get(engine, m.message_id)
        engine.dispose()
        assert row is not None
        assert (row.status, row.claimed_by) == (Status.QUEUED, None)  # nothing lost, nothing held
    finally:
        hung.close()


# --- several processes, one database ---------------------------------------------------------------------


def test_workers_sharing_one_database_never_send_a_message_twice(db_url: str) -> None:
    """Two workers (as two gateway processes would) on one database: every message goes on a
    stream exactly once. On PostgreSQL this is FOR UPDATE SKIP LOCKED at work."""
    engine = make_engine(db_url)
    migrate(engine)
    keyring = DataKeyring.generate()
    sent: list[bytes] = []
    lock = threading.Lock()

    class Refusing:
        def deliver(self, peer_id: str, envelopes: Sequence[bytes]) -> list[Result]:
            with lock:
                sent.extend(envelopes)
            time.sleep(0.01)
            return [failure(Reason.REFUSED, "test") for _ in envelopes]

        def close(self) -> None:
            pass

    signer = Ed25519Signer.generate()
    messages = [
        seal(
            sender=SENDER,
            recipient=f"peer-{i % 4}",
            profile=PROFILES.get("roster_manifest"),
            payload=exchange_pb2.RosterManifest(period="2026Q3", roster_id=f"r-{i}", count=i).SerializeToString(),
            signer=signer,
            now=utc_now(),
            lifetime=timedelta(days=1),
        )
        for i in range(60)
    ]
    with engine.begin() as conn:
        for m in messages:
            outbox.enqueue(conn, m, keyring)

    workers = [
        DeliveryWorker(
            node_id=SENDER,
            engine=engine,
            keyring=keyring,
            transport=Refusing(),
            directory=lambda now: pytest.fail("no receipt to verify"),
            personal=lambda purpose: False,
            batch_size=5,
            poll_interval=0.02,
        )
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    eventually(lambda: len(outbox.list_messages(engine, status=Status.DEAD)) == len(messages), what="all sent")
    for w in workers:
        w.stop()
    assert sorted(sent) == sorted(m.data for m in messages)  # each exactly once
    assert all(w.metrics.snapshot().get("dead", 0) > 0 for w in workers)  # both took part
    engine.dispose()
