"""Store-and-forward through a relay that may misbehave (SPEC §7), over real mutual TLS on 127.0.0.1.

Four enrolled nodes: cq-liangjiang sends migrant notices to sc-nanbu through the relay cq-hub;
cq-beibei is a bystander (a node the recipient does not accept as a relay, a node that tries to pull
or push what is not its own). The relay is a real :class:`NodeServer` serving ``tongban.v1.Relay``;
a misbehaving relay is the same server over a :class:`Faulty` wrapper of the real store — it tampers,
drops, duplicates, replays, reorders, forges — reached over the same mutual TLS as an honest one. The
sender is a :class:`DeliveryWorker` on :class:`RelayTransport`, and the recipient a
:class:`RelayPuller`, both driven round by round; the last tests run the server wiring in the
background. What is proved:

* tampering (a flipped byte of the item, of the ciphertext, a rewritten routing field, an envelope
  forged by the relay) is refused and stores nothing, and the sender is never told "delivered";
* a dropped item is retried until the relay behaves, then delivered once;
* duplicates and replays are stored once, each answered with the same receipt;
* reordered batches are all stored once, and the roster manifest still counts them right;
* what the relay stores and logs never holds the payload or a notice field;
* a relay can neither hand an item to another node nor push in another node's name, and a
  recipient accepts relayed envelopes only from the relays it names (none by default).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, func, select
from tongban.v1 import envelope_pb2, exchange_pb2, relay_pb2, relay_pb2_grpc

from gateway import audit, config
from gateway.config import NodeConfig
from gateway.domain.divisions import DivisionTable
from gateway.errors import (
    ConfigError,
    EnvelopeTooLarge,
    ExchangeError,
    RelayItemInvalid,
    RelayNotAllowed,
    SealedPayloadRefused,
    SealProblem,
)
from gateway.exchange import e2e, outbox
from gateway.exchange.delivery import DeliveryWorker, personal_purposes
from gateway.exchange.envelope import Outgoing, make_receipt, seal, verify_receipt
from gateway.exchange.outbox import Status
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.exchange.relay import (
    INNER_TYPE,
    MAX_ITEM_BYTES,
    Held,
    HeldItem,
    ItemRefused,
    PushOutcome,
    Receipted,
    RelayPuller,
    RelayStore,
    RelayTransport,
    Settlement,
    SqlRelayStore,
    item_from_wire,
    item_to_wire,
    open_item,
    push_outcome_from_wire,
    push_outcome_to_wire,
    relay_context,
    seal_item,
    settlement_from_wire,
    settlement_to_wire,
)
from gateway.exchange.retry import RetryPolicy
from gateway.exchange.rosters import send_migrant_roster
from gateway.node import Node, open_node
from gateway.roster import intake
from gateway.server import NodeServer, audit_receipts
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import inbox, relay_items
from gateway.trust import keyfile
from gateway.trust.documents import NodeStatus
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.tls import TlsIdentity, secure_channel_to
from gateway.trust.verifier import Directory
from tests import factories
from tests.test_delivery import eventually, free_port
from tests.test_mtls import CHANNEL_OPTIONS, PASSPHRASE, LivePki, enrol_on_disk, publish

pytestmark = pytest.mark.slow

SENDER, RECIPIENT, HUB, OTHER = "cq-liangjiang", "sc-nanbu", "cq-hub", "cq-beibei"
NODES = (("50", SENDER, "500157"), ("51", RECIPIENT, "511321"), ("50", HUB, "500103"), ("50", OTHER, "500109"))
DIVISION = {node_id: division for _, node_id, division in NODES}
PROFILES = load_profiles()
# Back-off of a millisecond: a round-by-round test never waits for a retry to fall due.
QUICK = RetryPolicy(
    base_delay=timedelta(milliseconds=1),
    max_delay=timedelta(milliseconds=2),
    jitter=0.0,
    quick_attempts=1,
    quick_wait=timedelta(0),
)
SERVER_POLICY = RetryPolicy(
    base_delay=timedelta(milliseconds=100),
    max_delay=timedelta(milliseconds=300),
    jitter=0.0,
    quick_attempts=2,
    quick_wait=timedelta(milliseconds=50),
)


# --- misbehaving relays: wrappers over the real store -------------------------------------------------


def flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= 0x01
    return bytes(b)


class Faulty:
    """A :class:`RelayStore` that passes everything to the real store; subclasses misbehave while
    ``on``. ``settled`` records every settlement the recipient sent (receipts per message id)."""

    def __init__(self, inner: RelayStore) -> None:
        self.inner = inner
        self.on = True
        self.settled: dict[str, list[bytes]] = defaultdict(list)

    def push(self, item: HeldItem, now: datetime) -> PushOutcome:
        return self.inner.push(item, now)

    def pending(self, recipient: str, limit: int, now: datetime) -> list[HeldItem]:
        items = self.inner.pending(recipient, limit, now)
        return self.mangle(items) if self.on else items

    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        return items

    def settle(self, recipient: str, settlements: Sequence[Settlement], now: datetime) -> int:
        for s in settlements:
            if s.receipt is not None:
                self.settled[s.message_id].append(s.receipt)
        return self.inner.settle(recipient, settlements, now)

    def prune(self, now: datetime) -> int:
        return self.inner.prune(now)


class FlipBlobByte(Faulty):
    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        return [replace(i, sealed=flip(i.sealed, len(i.sealed) // 2)) for i in items]


class FlipCiphertextByte(Faulty):
    """Flips a bit of the AEAD ciphertext inside an otherwise well-formed SealedPayload."""

    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        out = []
        for i in items:
            sealed = exchange_pb2.SealedPayload.FromString(i.sealed)
            sealed.ciphertext = flip(sealed.ciphertext, 40)  # past the 32-byte encapsulated key
            out.append(replace(i, sealed=sealed.SerializeToString()))
        return out


class RewriteSender(Faulty):
    """Claims the item came from another node (the bystander): HPKE's context no longer matches."""

    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        return [replace(i, sender=OTHER) for i in items]


class ForgeEnvelope(Faulty):
    """Seals, to the recipient's public key (anyone can), an envelope of its own making in the
    sender's name and under the real message id — signed with the relay's own key."""

    world: World

    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        recipient = self.world.live.directory().entry(RECIPIENT)
        return [
            seal_item(
                self.world.envelope(signer_of=HUB, message_id=i.message_id).data, sender=SENDER, recipient=recipient
            )
            for i in items
        ]


class Drop(Faulty):
    """Answers "held" but never stores the item (a relay that loses what it was given)."""

    dropped = 0

    def push(self, item: HeldItem, now: datetime) -> PushOutcome:
        if self.on:
            self.dropped += 1
            return Held()
        return self.inner.push(item, now)


class DuplicateAndReplay(Faulty):
    """Hands every item out twice per pull, and keeps replaying every item it ever handed out,
    even after the recipient settled it."""

    def __init__(self, inner: RelayStore) -> None:
        super().__init__(inner)
        self.seen: dict[str, HeldItem] = {}

    def pending(self, recipient: str, limit: int, now: datetime) -> list[HeldItem]:
        fresh = self.inner.pending(recipient, limit, now)
        for i in fresh:
            self.seen[i.message_id] = i
        if not self.on:
            return fresh
        doubled = [i for i in fresh for _ in range(2)]
        return doubled + [i for mid, i in self.seen.items() if mid not in {f.message_id for f in fresh}]


class Reverse(Faulty):
    """Hands items out in the reverse of the order the relay holds them. (It cannot pick the
    manifest out: every item is ciphertext to it.) ``handed`` records each pull's message ids."""

    def __init__(self, inner: RelayStore) -> None:
        super().__init__(inner)
        self.held: list[list[str]] = []
        self.handed: list[list[str]] = []

    def mangle(self, items: list[HeldItem]) -> list[HeldItem]:
        self.held.append([i.message_id for i in items])
        out = items[::-1]
        self.handed.append([i.message_id for i in out])
        return out


class ForgeReceipt(Faulty):
    """Answers a push with a "receipt" it signed itself in the recipient's name."""

    world: World

    def push(self, item: HeldItem, now: datetime) -> PushOutcome:
        if not self.on:
            return self.inner.push(item, now)
        receipt = make_receipt(
            message_id=item.message_id,
            sender=item.sender,
            receiver=item.recipient,
            envelope_digest=b"\0" * 32,
            signer=self.world.live.node(HUB).signers[0],
            now=now,
        )
        return Receipted(receipt.SerializeToString())


# --- the world -----------------------------------------------------------------------------------------


@dataclass
class Sender:
    node: Node
    trust: TrustStore
    transport: RelayTransport
    worker: DeliveryWorker

    @property
    def engine(self) -> Engine:
        return self.node.engine

    def rows(self) -> list[outbox.OutboxRow]:
        return outbox.list_messages(self.engine, limit=100_000)

    def undelivered(self) -> int:
        return sum(r.status is not Status.DELIVERED for r in self.rows())

    def close(self) -> None:
        self.worker.stop()
        self.transport.close()
        self.node.engine.dispose()


@dataclass
class Recipient:
    node: Node
    trust: TrustStore
    receiver: Receiver
    puller: RelayPuller

    @property
    def engine(self) -> Engine:
        return self.node.engine

    def close(self) -> None:
        self.puller.stop()
        self.node.engine.dispose()


@dataclass
class World:
    tmp: Path
    live: LivePki
    cfgs: dict[str, NodeConfig] = field(default_factory=dict)
    servers: dict[str, NodeServer] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    store: RelayStore | None = None

    def publish(self) -> None:
        bundle = self.live.bundle()
        for cfg in self.cfgs.values():
            publish(cfg, bundle)

    def start(self, node_id: str, *, relay_store: RelayStore | None = None) -> NodeServer:
        server = NodeServer(
            open_node(self.cfgs[node_id]),
            retry_policy=SERVER_POLICY,
            delivery_poll_interval=0.05,
            relay_store=relay_store,
        )
        server.start()
        self.servers[node_id] = server
        return server

    def start_hub(self, wrap: Callable[[RelayStore], RelayStore] | None = None) -> RelayStore:
        node = open_node(self.cfgs[HUB])
        self.closers.append(node.engine.dispose)
        real = SqlRelayStore(node.engine)
        store = wrap(real) if wrap is not None else real
        self.start(HUB, relay_store=store)
        self.store = store
        return store

    def sender(self) -> Sender:
        cfg = self.cfgs[SENDER]
        node = open_node(cfg)
        trust = TrustStore.from_config(cfg)
        trust.ensure_usable()
        transport = RelayTransport(
            node_id=SENDER,
            relay_id=HUB,
            identity=TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=SENDER),
            directory=trust.current,
            clock=trust.clock,
            timeout=10.0,
            options=CHANNEL_OPTIONS,
        )
        worker = DeliveryWorker(
            node_id=SENDER,
            engine=node.engine,
            keyring=node.keyring,
            transport=transport,
            directory=trust.current,
            personal=personal_purposes(PROFILES),
            policy=QUICK,
            clock=trust.clock,
            rand=lambda: 0.0,
        )
        sender = Sender(node, trust, transport, worker)
        self.closers.append(sender.close)
        return sender

    def recipient(self, node_id: str = RECIPIENT, *, relays: tuple[str, ...] = (HUB,)) -> Recipient:
        cfg = self.cfgs[node_id]
        node = open_node(cfg)
        trust = TrustStore.from_config(cfg)
        trust.ensure_usable()
        receiver = Receiver(
            node_id=node_id,
            engine=node.engine,
            keyring=node.keyring,
            directory=lambda: trust.current(),
            profiles=PROFILES,
            signer=self.live.node(node_id).signers[0],
            clock=trust.clock,
            on_accept=audit_receipts(node_id),
            relays=relays,
        )
        puller = RelayPuller(
            node_id=node_id,
            relay_id=HUB,
            receiver=receiver,
            identity=TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=node_id),
            directory=trust.current,
            encryption_key=self.live.node(node_id).encryption_key,
            clock=trust.clock,
            timeout=10.0,
            options=CHANNEL_OPTIONS,
        )
        recipient = Recipient(node, trust, receiver, puller)
        self.closers.append(recipient.close)
        return recipient

    def envelope(
        self, *, notices: int = 3, signer_of: str = SENDER, message_id: str | None = None, tag: str = ""
    ) -> Outgoing:
        """A migrant-notice batch from the sender to the recipient. Every notice_ref carries a
        recognisable marker and every id token is random, so a test can look for them anywhere."""
        batch = exchange_pb2.MigrantNoticeBatch(
            period="2026Q3",
            roster_id="roster-relay",
            batch_index=0,
            notices=[
                exchange_pb2.MigrantNotice(
                    notice_ref=f"PLAINTEXT-{tag}{uuid.uuid4().hex}",
                    id_token=os.urandom(32),
                    birth_year_month="2015-06",
                    sex=1,
                    residence_division=DIVISION[SENDER],
                    registration_division=DIVISION[RECIPIENT],
                    living_since="2024-03-01",
                    key_care=True,
                )
                for _ in range(notices)
            ],
        )
        return seal(
            sender=SENDER,
            recipient=RECIPIENT,
            profile=PROFILES.get("migrant_notice"),
            payload=batch.SerializeToString(),
            signer=self.live.node(signer_of).signers[0],
            now=utc_now(),
            lifetime=timedelta(days=1),
            message_id=message_id,
        )

    def queue(self, sender: Sender, *messages: Outgoing) -> None:
        with sender.engine.begin() as conn:
            for m in messages:
                outbox.enqueue(conn, m, sender.node.keyring)


def _configure(cfg: NodeConfig, port: int, exchange: str) -> NodeConfig:
    text = cfg.path.read_text(encoding="utf-8").replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
    cfg.path.write_text(text + exchange, encoding="utf-8")
    return config.load(cfg.path)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    live = LivePki.create(nodes=NODES)
    ports = {node_id: free_port() for _, node_id, _ in NODES}
    for node_id, port in ports.items():
        live.node(node_id).endpoint = f"127.0.0.1:{port}"
    w = World(tmp_path, live)
    exchange = {
        SENDER: f'\n[exchange]\ntransport = "relay"\nrelay = "{HUB}"\n',
        RECIPIENT: f'\n[exchange]\nrelays = ["{HUB}"]\n',
        HUB: "\n[exchange]\nserve_relay = true\n",
        OTHER: "",
    }
    for _, node_id, division in NODES:
        cfg = enrol_on_disk(tmp_path, live, node_id, division)
        cfg = _configure(cfg, ports[node_id], exchange[node_id])
        keyfile.write_private_key(cfg.signing_key, live.node(node_id).signers[0].private_key, PASSPHRASE.encode())
        keyfile.write_private_key(cfg.encryption_key, live.node(node_id).encryption_key, PASSPHRASE.encode())
        w.cfgs[node_id] = cfg
    w.publish()
    try:
        yield w
    finally:
        for close in w.closers:
            close()
        for server in w.servers.values():
            server.stop(grace=0)


# --- helpers -------------------------------------------------------------------------------------------


def exchange(sender: Sender, recipient: Recipient, *, rounds: int = 20) -> int:
    """Sender round, recipient pull, until the sender's outbox is delivered; the rounds it took."""
    for n in range(1, rounds + 1):
        sender.worker.run_pending()
        if sender.undelivered() == 0:
            return n
        recipient.puller.pull_once()
        time.sleep(0.005)  # the millisecond back-off falls due
    raise AssertionError(f"{sender.undelivered()} message(s) undelivered after {rounds} rounds")


def inbox_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r.message_id for r in conn.execute(select(inbox.c.message_id))]


def inbox_receipts(engine: Engine) -> dict[str, bytes]:
    with engine.connect() as conn:
        return {r.message_id: bytes(r.receipt) for r in conn.execute(select(inbox.c.message_id, inbox.c.receipt))}


def relay_rows(store_engine: Engine) -> dict[str, tuple[str, str | None]]:
    c = relay_items.c
    with store_engine.connect() as conn:
        return {
            r.message_id: (r.state, r.refusal_code) for r in conn.execute(select(c.message_id, c.state, c.refusal_code))
        }


def assert_delivered_with_verified_receipts(sender: Sender, messages: Sequence[Outgoing]) -> None:
    directory = sender.trust.current()
    for m in messages:
        row = outbox.get(sender.engine, m.message_id)
        assert row is not None
        assert row.status is Status.DELIVERED, m.message_id
        receipt = outbox.receipt_of(sender.engine, m.message_id)
        assert receipt is not None
        verify_receipt(
            receipt,
            directory=directory,
            receiver=RECIPIENT,
            message_id=m.message_id,
            envelope_digest=m.digest,
            now=utc_now(),
        )


def received_envelopes(engine: Engine, keyring: DataKeyring) -> list[envelope_pb2.Envelope]:
    """Every envelope in the inbox, opened with the node's data key."""
    with engine.connect() as conn:
        rows = conn.execute(select(inbox.c.message_id, inbox.c.key_id, inbox.c.envelope_sealed)).all()
    return [
        envelope_pb2.Envelope.FromString(
            keyring.open(Sealed(r.key_id, bytes(r.envelope_sealed)), context=b"inbox\0" + r.message_id.encode())
        )
        for r in rows
    ]


@dataclass(frozen=True)
class RosterCheck:
    declared: int  # the manifest's count
    received: int  # notices in the batches received
    batches: int  # distinct batch indexes received (the manifest's batches must equal it)
    declared_batches: int
    hash_matches: bool


def roster_checks(engine: Engine, keyring: DataKeyring) -> dict[str, RosterCheck]:
    """For every roster with a manifest in the inbox: what the manifest declares against what
    arrived, with the entries' hash recomputed over the batches in index order."""
    batches: dict[str, dict[int, exchange_pb2.MigrantNoticeBatch]] = defaultdict(dict)
    manifests: dict[str, exchange_pb2.RosterManifest] = {}
    for env in received_envelopes(engine, keyring):
        header = envelope_pb2.EnvelopeHeader.FromString(env.header)
        if header.purpose == "migrant_notice":
            batch = exchange_pb2.MigrantNoticeBatch.FromString(env.payload)
            assert batch.batch_index not in batches[batch.roster_id], "a batch stored twice"
            batches[batch.roster_id][batch.batch_index] = batch
        elif header.purpose == "roster_manifest":
            manifest = exchange_pb2.RosterManifest.FromString(env.payload)
            manifests[manifest.roster_id] = manifest
    checks = {}
    for roster_id, manifest in manifests.items():
        got = batches.get(roster_id, {})
        digest = hashlib.sha256()
        for index in sorted(got):
            for notice in got[index].notices:
                entry = notice.SerializeToString(deterministic=True)
                digest.update(struct.pack(">I", len(entry)) + entry)
        checks[roster_id] = RosterCheck(
            declared=manifest.count,
            received=sum(len(b.notices) for b in got.values()),
            batches=len(got),
            declared_batches=manifest.batches,
            hash_matches=digest.digest() == manifest.entries_sha256,
        )
    return checks


# --- the happy path ------------------------------------------------------------------------------------


def test_a_relayed_batch_is_delivered_once_with_receipts_the_sender_verifies(world: World) -> None:
    world.start_hub()
    sender, recipient = world.sender(), world.recipient()
    messages = [world.envelope() for _ in range(4)]
    world.queue(sender, *messages)

    (first,) = sender.worker.run_pending()  # pushed: the relay holds them, no receipt yet
    assert (first.claimed, first.delivered, first.retried) == (4, 0, 4)
    assert {r.last_error for r in sender.rows()} == {f"awaiting_receipt: held by relay {HUB}"}

    pulled = recipient.puller.pull_once()
    assert (pulled.pulled, pulled.accepted, pulled.refused, pulled.acked) == (4, 4, 0, True)
    assert recipient.puller.pull_once().pulled == 0  # acknowledged items are not handed out again

    time.sleep(0.005)
    (second,) = sender.worker.run_pending()
    assert second.delivered == 4
    assert_delivered_with_verified_receipts(sender, messages)
    assert sorted(inbox_ids(recipient.engine)) == sorted(m.message_id for m in messages)
    # The receipt the sender keeps is the one the recipient stored, byte for byte.
    stored = inbox_receipts(recipient.engine)
    assert all(outbox.receipt_of(sender.engine, m.message_id) == stored[m.message_id] for m in messages)
    assert audit.verify(sender.engine) == 4
    assert audit.verify(recipient.engine) == 4


# --- a relay that tampers or forges ------------------------------------------------------------------

TAMPERING: list[tuple[str, type[Faulty], str | None]] = [
    # (case, the misbehaving relay, the refusal the recipient reports through the relay — None when
    #  the relay rewrote the item's key so the report names no item it holds)
    ("flipped_byte_of_the_item", FlipBlobByte, "sealed_payload_refused"),
    ("flipped_byte_of_the_sealed_envelope", FlipCiphertextByte, "sealed_payload_refused"),
    ("rewritten_sender", RewriteSender, None),
    ("envelope_forged_by_the_relay", ForgeEnvelope, "envelope_signature_invalid"),
]


@pytest.mark.parametrize(("case", "relay", "reported"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampering_relay_is_refused_nothing_is_stored_and_the_sender_is_not_told_delivered(
    world: World, case: str, relay: type[Faulty], reported: str | None
) -> None:
    def wrap(inner: RelayStore) -> RelayStore:
        faulty = relay(inner)
        faulty.world = world  # type: ignore[attr-defined]
        return faulty

    faulty = world.start_hub(wrap)
    assert isinstance(faulty, Faulty)
    sender, recipient = world.sender(), world.recipient()
    messages = [world.envelope() for _ in range(3)]
    world.queue(sender, *messages)
    hub_engine = world.servers[HUB].node.engine

    sender.worker.run_pending()
    outcome = recipient.puller.pull_once()
    assert (outcome.pulled, outcome.refused, outcome.accepted) == (3, 3, 0), case
    assert inbox_ids(recipient.engine) == []  # nothing stored
    assert audit.verify(recipient.engine) == 0
    if reported is not None:
        assert {state for state, _ in relay_rows(hub_engine).values()} == {"refused"}
        assert {code for _, code in relay_rows(hub_engine).values()} == {reported}

    time.sleep(0.005)
    sender.worker.run_pending()  # collects the refusal (or still waits); never "delivered"
    rows = sender.rows()
    assert {r.status for r in rows} == {Status.QUEUED}
    expected = (
        f"relay_refused: recipient {reported} (" if reported is not None else f"awaiting_receipt: held by relay {HUB}"
    )
    assert all((r.last_error or "").startswith(expected) for r in rows), [r.last_error for r in rows]

    faulty.on = False  # the relay behaves again: the sender's retries go through, once
    exchange(sender, recipient)
    assert_delivered_with_verified_receipts(sender, messages)
    assert sorted(inbox_ids(recipient.engine)) == sorted(m.message_id for m in messages)
    assert audit.verify(recipient.engine) == 3


def test_a_receipt_forged_by_the_relay_is_not_proof_of_delivery(world: World) -> None:
    def wrap(inner: RelayStore) -> RelayStore:
        faulty = ForgeReceipt(inner)
        faulty.world = world
        return faulty

    faulty = world.start_hub(wrap)
    assert isinstance(faulty, Faulty)
    sender, recipient = world.sender(), world.recipient()
    m = world.envelope()
    world.queue(sender, m)
    (outcome,) = sender.worker.run_pending()
    assert (outcome.delivered, outcome.retried) == (0, 1)
    (row,) = sender.rows()
    assert row.status is Status.QUEUED
    assert (row.last_error or "").startswith("receipt_invalid")
    faulty.on = False
    exchange(sender, recipient)
    assert_delivered_with_verified_receipts(sender, [m])


# --- a relay that drops, duplicates, replays, reorders -------------------------------------------------


def test_a_dropping_relay_makes_the_sender_retry_until_it_is_delivered_once(world: World) -> None:
    faulty = world.start_hub(Drop)
    assert isinstance(faulty, Drop)
    sender, recipient = world.sender(), world.recipient()
    messages = [world.envelope() for _ in range(3)]
    world.queue(sender, *messages)
    for _ in range(3):
        sender.worker.run_pending()
        assert recipient.puller.pull_once().pulled == 0  # the relay lost everything it was given
        time.sleep(0.005)
    assert faulty.dropped == 9
    assert {r.status for r in sender.rows()} == {Status.QUEUED}

    faulty.on = False
    exchange(sender, recipient)
    assert_delivered_with_verified_receipts(sender, messages)
    assert sorted(inbox_ids(recipient.engine)) == sorted(m.message_id for m in messages)
    assert all(r.attempts >= 4 for r in sender.rows())


def test_duplicated_and_replayed_items_are_stored_once_and_answered_with_the_same_receipt(world: World) -> None:
    faulty = world.start_hub(DuplicateAndReplay)
    assert isinstance(faulty, DuplicateAndReplay)
    sender, recipient = world.sender(), world.recipient()
    messages = [world.envelope() for _ in range(5)]
    world.queue(sender, *messages)
    sender.worker.run_pending()
    first = recipient.puller.pull_once()
    assert (first.pulled, first.accepted) == (10, 10)  # each item twice
    replayed = recipient.puller.pull_once()
    assert (replayed.pulled, replayed.accepted) == (5, 5)  # settled items, replayed
    exchange(sender, recipient)

    assert sorted(inbox_ids(recipient.engine)) == sorted(m.message_id for m in messages)  # stored once
    stored = inbox_receipts(recipient.engine)
    for m in messages:
        answers = faulty.settled[m.message_id]
        assert len(answers) >= 3
        assert set(answers) == {stored[m.message_id]}  # the same receipt, every time
        assert outbox.receipt_of(sender.engine, m.message_id) == stored[m.message_id]
    assert audit.verify(recipient.engine) == 5  # one "receive" entry per message, not per copy


def _import_children(node: Node, period: str, n: int) -> None:
    records = [factories.child(i, registration=DIVISION[RECIPIENT], residence=DIVISION[SENDER]) for i in range(n)]
    result = intake(node.children, records, period=period, table=DivisionTable.load_default(), today=date(2026, 11, 1))
    assert result.accepted == n, [r.code for r in result.rejections]


def test_reordered_batches_are_all_stored_once_and_the_manifest_still_counts_them(world: World) -> None:
    faulty = world.start_hub(Reverse)
    assert isinstance(faulty, Reverse)
    sender, recipient = world.sender(), world.recipient()
    _import_children(sender.node, "2026Q3", 60)
    summary = send_migrant_roster(
        node_id=SENDER,
        period="2026Q3",
        children=sender.node.children,
        engine=sender.engine,
        keyring=sender.node.keyring,
        directory=sender.trust.current(),
        profiles=PROFILES,
        signer=world.live.node(SENDER).signers[0],
        encryption_key=world.live.node(SENDER).encryption_key,
        now=utc_now(),
        batch_size=7,
    )
    (roster,) = summary.rosters
    assert (roster.notices, roster.batches, roster.envelopes) == (60, 9, 10)
    exchange(sender, recipient)

    sent = [r.message_id for r in sender.rows()]
    assert sorted(inbox_ids(recipient.engine)) == sorted(sent)
    assert faulty.handed[0] == faulty.held[0][::-1]
    assert len(faulty.handed[0]) == 10
    checks = roster_checks(recipient.engine, recipient.node.keyring)
    assert checks == {roster.roster_id: RosterCheck(60, 60, 9, 9, True)}


# --- a relay that tries to read ------------------------------------------------------------------------


def test_the_relay_never_holds_or_logs_the_payload_or_a_notice_field(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.start_hub()
    sender, recipient = world.sender(), world.recipient()
    messages = [world.envelope(notices=5, tag="SECRET") for _ in range(4)]
    world.queue(sender, *messages)
    sender.worker.run_pending()
    hub_engine = world.servers[HUB].node.engine
    with hub_engine.connect() as conn:
        held = [bytes(r.item) for r in conn.execute(select(relay_items.c.item))]
    assert len(held) == 4
    exchange(sender, recipient)

    secrets: list[bytes] = []
    for m in messages:
        env = envelope_pb2.Envelope.FromString(m.data)
        secrets.append(env.payload)
        for notice in exchange_pb2.MigrantNoticeBatch.FromString(env.payload).notices:
            secrets += [notice.notice_ref.encode(), notice.id_token]
    assert secrets
    db = Path(world.cfgs[HUB].database_url.removeprefix("sqlite:///"))
    on_disk = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the file, its WAL, its journal
    for secret in secrets:
        assert secret not in on_disk
        assert all(secret not in item for item in held)
    assert b"PLAINTEXT-" not in on_disk
    assert b"PLAINTEXT-" not in b"".join(held)
    assert "PLAINTEXT-" not in caplog.text  # no node logged a notice field either
    # What the relay does see: routing fields, an expiry, ciphertext.
    c = relay_items.c
    with hub_engine.connect() as conn:
        rows = conn.execute(select(c.sender, c.recipient, c.state)).all()
    assert {(r.sender, r.recipient, r.state) for r in rows} == {(SENDER, RECIPIENT, "receipted")}


# --- who may take what from the relay ------------------------------------------------------------------


def _raw_channel(world: World, as_node: str) -> grpc.Channel:
    return secure_channel_to(
        HUB, world.live.directory(), world.live.identity(as_node), now=utc_now(), options=CHANNEL_OPTIONS
    )


def test_the_relay_hands_items_only_to_their_recipient(world: World) -> None:
    world.start_hub()
    sender = world.sender()
    messages = [world.envelope() for _ in range(2)]
    world.queue(sender, *messages)
    sender.worker.run_pending()

    with _raw_channel(world, OTHER) as channel:
        stub = relay_pb2_grpc.RelayStub(channel)
        assert list(stub.Pull(relay_pb2.PullRequest(max_items=100), timeout=10)) == []
        forged = relay_pb2.AckRequest(
            outcomes=[
                relay_pb2.RelayOutcome(
                    sender=SENDER,
                    message_id=m.message_id,
                    refusal=relay_pb2.RelayRefusal(status_code=3, error_code="forbidden_field"),
                )
                for m in messages
            ]
        )
        assert stub.Ack(forged, timeout=10).settled == 0  # another node cannot settle them
    bystander = world.recipient(OTHER)
    assert bystander.puller.pull_once().pulled == 0

    recipient = world.recipient()
    assert recipient.puller.pull_once().accepted == 2
    exchange(sender, recipient)
    assert_delivered_with_verified_receipts(sender, messages)


def test_the_relay_refuses_an_item_pushed_in_another_nodes_name(world: World) -> None:
    world.start_hub()
    m = world.envelope()
    recipient_entry = world.live.directory().entry(RECIPIENT)
    item = item_to_wire(seal_item(m.data, sender=SENDER, recipient=recipient_entry))
    with _raw_channel(world, OTHER) as channel:  # the bystander pushes the sender's item
        (ack,) = list(relay_pb2_grpc.RelayStub(channel).Push(iter([item]), timeout=10))
    assert ack.WhichOneof("outcome") == "refusal"
    assert (ack.refusal.error_code, ack.refusal.by_recipient) == ("sender_mismatch", False)
    assert relay_rows(world.servers[HUB].node.engine) == {}


def _receiver_with(world: World, relays: tuple[str, ...], directory: Directory) -> tuple[Receiver, Engine]:
    node = open_node(world.cfgs[RECIPIENT])
    world.closers.append(node.engine.dispose)
    receiver = Receiver(
        node_id=RECIPIENT,
        engine=node.engine,
        keyring=node.keyring,
        directory=lambda: directory,
        profiles=PROFILES,
        signer=world.live.node(RECIPIENT).signers[0],
        clock=utc_now,
        relays=relays,
    )
    return receiver, node.engine


RELAY_PATH: list[tuple[str, tuple[str, ...], str, NodeStatus, type[Exception] | None]] = [
    # (case, the recipient's [exchange] relays, the relay it came through, that relay's status, refusal)
    ("no_relays_configured_accepts_none", (), HUB, NodeStatus.ACTIVE, RelayNotAllowed),
    ("a_relay_not_named", (HUB,), OTHER, NodeStatus.ACTIVE, RelayNotAllowed),
    ("a_named_relay_that_is_suspended", (HUB,), HUB, NodeStatus.SUSPENDED, RelayNotAllowed),
    ("a_named_relay_that_is_revoked", (HUB,), HUB, NodeStatus.REVOKED, RelayNotAllowed),
    ("a_named_active_relay", (HUB,), HUB, NodeStatus.ACTIVE, None),
]


@pytest.mark.parametrize(("case", "relays", "via", "status", "refusal"), RELAY_PATH, ids=[c[0] for c in RELAY_PATH])
def test_the_receiver_accepts_relayed_envelopes_only_from_relays_it_names(
    world: World, case: str, relays: tuple[str, ...], via: str, status: NodeStatus, refusal: type[Exception] | None
) -> None:
    entry = world.live.directory().entry(via)
    world.live.node(via).status = status
    receiver, engine = _receiver_with(world, relays, world.live.directory())
    m = world.envelope()
    if refusal is None:
        receipt = receiver.receive(m.data, relayed_by=entry)
        assert receipt.body
        assert receiver.receive(m.data, relayed_by=entry) == receipt  # idempotent on this path too
        return
    with pytest.raises(refusal) as caught:
        receiver.receive(m.data, relayed_by=entry)
    assert isinstance(caught.value, ExchangeError)
    with engine.connect() as conn:  # nothing stored
        assert conn.execute(select(func.count()).select_from(inbox)).scalar_one() == 0


def test_the_receiver_needs_exactly_one_of_a_tls_peer_and_a_relay(world: World) -> None:
    directory = world.live.directory()
    receiver, _ = _receiver_with(world, (HUB,), directory)
    m = world.envelope()
    with pytest.raises(ValueError, match="exactly one"):
        receiver.receive(m.data)
    with pytest.raises(ValueError, match="exactly one"):
        receiver.receive(m.data, directory.entry(SENDER), relayed_by=directory.entry(HUB))


# --- the server wiring -----------------------------------------------------------------------------------


def test_nodes_configured_for_the_relay_exchange_through_it_in_the_background(world: World) -> None:
    """`transport = "relay"` on the sender, `relays = [hub]` on the recipient, `serve_relay` on the
    hub: three NodeServers, nothing driven by hand."""
    world.start_hub()
    recipient_server = world.start(RECIPIENT)
    sender_server = world.start(SENDER)
    assert isinstance(sender_server.delivery, DeliveryWorker)
    assert [p.relay_id for p in recipient_server.pullers] == [HUB]
    assert world.servers[HUB].relay is not None
    assert recipient_server.relay is None
    messages = [world.envelope() for _ in range(6)]
    with sender_server.node.engine.begin() as conn:
        for m in messages:
            outbox.enqueue(conn, m, sender_server.node.keyring)
    sender_server.delivery.notify()
    eventually(
        lambda: all(r.status is Status.DELIVERED for r in outbox.list_messages(sender_server.node.engine)),
        what="relayed delivery",
    )
    assert sorted(inbox_ids(recipient_server.node.engine)) == sorted(m.message_id for m in messages)


# --- opening a relayed item: the rules as a table (pure: no sockets, no database) --------------------------


@pytest.fixture(scope="module")
def pki() -> LivePki:
    return LivePki.create(nodes=NODES)


def _sealed(pki: LivePki, envelope: bytes, *, to: str, message_id: str, inner_type: str = INNER_TYPE) -> bytes:
    key = pki.directory().entry(to).encryption_key
    context = relay_context(sender=SENDER, recipient=RECIPIENT, message_id=message_id)
    return e2e.seal_to(key, envelope, inner_type=inner_type, context=context).SerializeToString()


def _flip_ciphertext(sealed: bytes) -> bytes:
    payload = exchange_pb2.SealedPayload.FromString(sealed)
    payload.ciphertext = flip(payload.ciphertext, 40)
    return payload.SerializeToString()


ItemCase = Callable[[LivePki, HeldItem, Outgoing], HeldItem]
OPENING: list[tuple[str, ItemCase, type[ExchangeError] | None, SealProblem | None]] = [
    ("as_sealed_by_the_sender", lambda pki, item, m: item, None, None),
    ("addressed_to_another_node", lambda pki, item, m: replace(item, recipient=OTHER), RelayItemInvalid, None),
    ("too_large", lambda pki, item, m: replace(item, sealed=b"\0" * (MAX_ITEM_BYTES + 1)), EnvelopeTooLarge, None),
    (
        "not_a_sealed_payload",
        lambda pki, item, m: replace(item, sealed=b"\xff\xff"),
        SealedPayloadRefused,
        SealProblem.MALFORMED,
    ),
    (
        "not_an_envelope_inside",
        lambda pki, item, m: replace(
            item, sealed=_sealed(pki, m.data, to=RECIPIENT, message_id=m.message_id, inner_type="x")
        ),
        SealedPayloadRefused,
        SealProblem.MALFORMED,
    ),
    (
        "sealed_to_another_node",
        lambda pki, item, m: replace(item, sealed=_sealed(pki, m.data, to=OTHER, message_id=m.message_id)),
        SealedPayloadRefused,
        SealProblem.OTHER_RECIPIENT_KEY,
    ),
    (
        "flipped_ciphertext",
        lambda pki, item, m: replace(item, sealed=_flip_ciphertext(item.sealed)),
        SealedPayloadRefused,
        SealProblem.DECRYPTION_FAILED,
    ),
    (
        "rewritten_message_id",
        lambda pki, item, m: replace(item, message_id=str(uuid.uuid4())),
        SealedPayloadRefused,
        SealProblem.DECRYPTION_FAILED,
    ),
    (
        "rewritten_sender",
        lambda pki, item, m: replace(item, sender=OTHER),
        SealedPayloadRefused,
        SealProblem.DECRYPTION_FAILED,
    ),
    (
        # Routing and context agree, the envelope inside names another message: sealed by someone
        # who does not hold the envelope's signature for that id (or a confused sender).
        "envelope_of_another_message_id",
        lambda pki, item, m: replace(
            item, message_id=(mid := str(uuid.uuid4())), sealed=_sealed(pki, m.data, to=RECIPIENT, message_id=mid)
        ),
        RelayItemInvalid,
        None,
    ),
]


@pytest.mark.parametrize(("case", "make", "error", "problem"), OPENING, ids=[c[0] for c in OPENING])
def test_opening_a_relayed_item(
    pki: LivePki, case: str, make: ItemCase, error: type[ExchangeError] | None, problem: SealProblem | None
) -> None:
    outgoing = seal(
        sender=SENDER,
        recipient=RECIPIENT,
        profile=PROFILES.get("roster_manifest"),
        payload=exchange_pb2.RosterManifest(
            period="2026Q3", roster_id="r", count=1, batches=1, entries_sha256=b"\1" * 32, purpose="migrant_notice"
        ).SerializeToString(),
        signer=pki.node(SENDER).signers[0],
        now=utc_now(),
        lifetime=timedelta(days=1),
    )
    item = make(pki, seal_item(outgoing.data, sender=SENDER, recipient=pki.directory().entry(RECIPIENT)), outgoing)
    own = pki.directory().entry(RECIPIENT).encryption_key
    private = pki.node(RECIPIENT).encryption_key
    if error is None:
        assert open_item(item, node_id=RECIPIENT, private=private, own_key=own) == outgoing.data
        return
    with pytest.raises(error) as caught:
        open_item(item, node_id=RECIPIENT, private=private, own_key=own)
    if problem is not None:
        assert isinstance(caught.value, SealedPayloadRefused)
        assert caught.value.reason is problem, case


def test_sealing_refuses_an_envelope_that_does_not_go_to_the_peer(pki: LivePki) -> None:
    outgoing = seal(
        sender=SENDER,
        recipient=RECIPIENT,
        profile=PROFILES.get("roster_manifest"),
        payload=exchange_pb2.RosterManifest(
            period="2026Q3", roster_id="r", count=1, batches=1, entries_sha256=b"\1" * 32, purpose="migrant_notice"
        ).SerializeToString(),
        signer=pki.node(SENDER).signers[0],
        now=utc_now(),
        lifetime=timedelta(days=1),
    )
    with pytest.raises(RelayItemInvalid):
        seal_item(outgoing.data, sender=SENDER, recipient=pki.directory().entry(OTHER))
    with pytest.raises(RelayItemInvalid):
        seal_item(outgoing.data, sender=OTHER, recipient=pki.directory().entry(RECIPIENT))


# --- the relay's store, on SQLite and PostgreSQL ----------------------------------------------------------


def _item(n: int, *, recipient: str = RECIPIENT, expires: datetime | None = None) -> HeldItem:
    return HeldItem(
        SENDER, recipient, str(uuid.UUID(int=n)), expires or datetime(2030, 1, 1, tzinfo=UTC), f"blob-{n}".encode()
    )


def test_the_relay_store_contract(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    store = SqlRelayStore(engine)
    t0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    a, b = _item(1), _item(2)
    assert store.push(a, t0) == Held()
    assert store.push(replace(a, sealed=b"another"), t0) == Held()  # the first item is kept
    assert store.push(b, t0 + timedelta(seconds=1)) == Held()
    assert store.pending(RECIPIENT, 10, t0) == [a, b]  # oldest first
    assert store.pending(OTHER, 10, t0) == []

    receipt, refusal = b"receipt-1", ItemRefused(3, "forbidden_field", True)
    assert store.settle(OTHER, [Settlement(SENDER, a.message_id, receipt=receipt)], t0) == 0  # not its item
    assert store.settle(RECIPIENT, [Settlement(SENDER, a.message_id, receipt=receipt)], t0) == 1
    assert store.settle(RECIPIENT, [Settlement(SENDER, a.message_id, receipt=b"later")], t0) == 0  # first kept
    assert store.settle(RECIPIENT, [Settlement(SENDER, b.message_id, refusal=refusal)], t0) == 1
    assert store.pending(RECIPIENT, 10, t0) == []
    assert store.push(a, t0) == Receipted(receipt)
    assert store.push(replace(b, sealed=b"fresh"), t0) == refusal  # told once, and re-queued
    assert store.pending(RECIPIENT, 10, t0) == [replace(b, sealed=b"fresh")]
    assert store.push(b, t0) == Held()

    expiring = _item(3, expires=t0 + timedelta(minutes=1))
    store.push(expiring, t0)
    later = t0 + timedelta(minutes=2)
    assert expiring not in store.pending(RECIPIENT, 10, later)  # never handed out once expired
    assert store.prune(later) == 1
    assert store.prune(t0 + timedelta(days=8)) == 1  # the receipted item, past retention
    assert store.pending(RECIPIENT, 10, t0) == [replace(b, sealed=b"fresh")]
    engine.dispose()


# --- wire round trips ------------------------------------------------------------------------------------


def test_relay_wire_conversions_round_trip() -> None:
    item = _item(7)
    expires = datetime(2030, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    item = replace(item, expires_at=expires)
    assert item_from_wire(relay_pb2.RelayItem.FromString(item_to_wire(item).SerializeToString())) == item
    receipt = envelope_pb2.Receipt(body=b"\x0a\x01x").SerializeToString()
    for outcome in (Held(), Receipted(receipt), ItemRefused(9, "outside_time_window", True)):
        assert push_outcome_from_wire(push_outcome_to_wire("m", outcome)) == outcome
    for settlement in (
        Settlement(SENDER, "m", receipt=receipt),
        Settlement(SENDER, "m", refusal=ItemRefused(3, "envelope_signature_invalid", True)),
    ):
        assert settlement_from_wire(settlement_to_wire(settlement)) == settlement
    # A recipient's refusal is the recipient's, whatever the wire claims.
    wire = relay_pb2.RelayOutcome(sender=SENDER, message_id="m", refusal=relay_pb2.RelayRefusal(status_code=3))
    settled = settlement_from_wire(wire)
    assert settled is not None
    assert settled.refusal is not None
    assert settled.refusal.by_recipient
    assert settlement_from_wire(relay_pb2.RelayOutcome(sender=SENDER, message_id="m")) is None


# --- configuration ---------------------------------------------------------------------------------------

CONFIGS: list[tuple[str, str, dict[str, str], str | None]] = [
    # (case, [exchange] text, environment, the ConfigError it must raise — None: valid)
    ("defaults_are_direct_and_accept_no_relay", "", {}, None),
    ("relay_transport", 'transport = "relay"\nrelay = "cq-hub"\nrelays = ["cq-hub"]\n', {}, None),
    ("relay_transport_without_a_relay", 'transport = "relay"\n', {}, "needs exchange.relay"),
    ("unknown_transport", 'transport = "pigeon"\n', {}, "exchange.transport must be one of"),
    ("relays_not_node_ids", 'relays = ["Not A Node"]\n', {}, "node id must be"),
    ("relays_twice", 'relays = ["cq-hub", "cq-hub"]\n', {}, "names a node twice"),
    ("relays_from_the_environment", "", {"TONGBAN_EXCHANGE_RELAYS": "cq-hub, sc-hub"}, None),
    ("serve_relay_from_the_environment", "", {"TONGBAN_EXCHANGE_SERVE_RELAY": "yes"}, None),
    ("serve_relay_not_a_boolean", "", {"TONGBAN_EXCHANGE_SERVE_RELAY": "maybe"}, "must be true or false"),
    ("negative_poll", "poll_seconds = -1\n", {}, "must be positive"),
    ("zero_batch", "batch_size = 0\n", {}, "positive integer"),
    ("max_below_base", "retry_base_seconds = 10\nretry_max_seconds = 5\n", {}, "at least retry_base_seconds"),
]


@pytest.mark.parametrize(("case", "text", "env", "error"), CONFIGS, ids=[c[0] for c in CONFIGS])
def test_exchange_configuration(tmp_path: Path, case: str, text: str, env: dict[str, str], error: str | None) -> None:
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nid = "sc-nanbu"\ndivision = "511321"\n\n[exchange]\n{text}', encoding="utf-8")
    if error is not None:
        with pytest.raises(ConfigError, match=error):
            config.load(path, env)
        return
    cfg = config.load(path, env)
    if case == "defaults_are_direct_and_accept_no_relay":
        assert (cfg.exchange_transport, cfg.exchange_relay, cfg.exchange_relays, cfg.serve_relay) == (
            "direct",
            "",
            (),
            False,
        )
        assert (cfg.exchange_batch_size, cfg.exchange_lease_seconds, cfg.retry_base_seconds) == (100, 300.0, 5.0)
    elif case == "relay_transport":
        assert (cfg.exchange_transport, cfg.exchange_relay, cfg.exchange_relays) == ("relay", HUB, (HUB,))
    elif case == "relays_from_the_environment":
        assert cfg.exchange_relays == (HUB, "sc-hub")
    elif case == "serve_relay_from_the_environment":
        assert cfg.serve_relay is True
