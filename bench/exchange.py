"""Bulk roster exchange end to end, beside the raw cost of its parts, and its memory (issue 4).

    python -m bench.exchange [--quick] [--records N] [--million] [--results-dir DIR]

Measured in one run (see ``bench/README.md``):

1. **End to end**, per database (SQLite files; PostgreSQL in two throwaway databases when a server
   answers): two enrolled nodes — cq-liangjiang (500157, residence county) and sc-nanbu (511321,
   registration county) — real nodes with mutual TLS on 127.0.0.1: the sender a
   :class:`~gateway.server.NodeServer` in the benchmark's process (so its delivery worker can be
   watched), the receiver ``tongban node serve`` in a process of its own, as another county's node
   is (in one process the two would share one interpreter lock, which no deployment does). N
   migrant records are stored at the sender beforehand (untimed), and the sender's
   pool of roster workers (``[exchange] roster_workers``, default 2: the sending process and one
   worker process) is started and waited for (untimed, reported as ``workers_start_s``), as a
   running node holds it. Timed: from
   calling :func:`~gateway.exchange.rosters.send_migrant_roster` (read and open the records,
   tokens, minimise, batches of 1,000 — in the workers —, sign, seal at rest, queue in one
   transaction) until the sender's own delivery worker has streamed every envelope over mTLS and
   stored every verified receipt. Afterwards (untimed) every outbox row's receipt is verified again
   and the receiver's inbox is counted.
2. **Parts**, in the same run: Ed25519 sign and verify of a 1,000-notice envelope, protobuf
   serialise + parse of the batch, ``minimise`` + ``check_payload``, AES-GCM sealing of an
   envelope at rest, HMAC-SHA256 of one ID number (the pairwise token), gRPC streaming over mTLS
   of 1,000-record messages to a trivial servicer, and per database the batched insert of
   outbox- and inbox-sized rows and the read of the sealed records (SELECT + AES-GCM open +
   ``json.loads``). Every part is expressed in records/s; the slowest bounds the exchange, and
   end to end / slowest is the ratio (goal: at least 0.5).
3. **Memory**: the peak Python memory (``tracemalloc``) of ``send_migrant_roster`` queueing rosters
   of 20,000 and 200,000 records (``--million``: and 1,000,000) from a SQLite store, with the same
   roster workers (a fresh pool per size), and the peak RSS each worker process reports.

Records are synthetic (``gateway.synth``): a pool of generated migrant children is cloned with fresh
record ids and fresh valid ID numbers to any roster size. Nothing personal is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from random import Random
from typing import Any

import grpc
import psycopg
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.exc import SQLAlchemyError
from tongban.v1 import envelope_pb2, exchange_pb2

from bench import store as store_bench
from bench.common import (
    Case,
    Timing,
    empty,
    find_postgres,
    format_table,
    freeze_heap,
    machine_info,
    max_rss_bytes,
    measure,
    measure_interleaved,
    mib,
    postgres_server_version,
    scratch_copy,
    si,
    throwaway_database,
    traced_peak,
    write_result,
)
from gateway import config
from gateway.config import NodeConfig
from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildKind, ChildRecord, Sex
from gateway.domain.rules import load_rules
from gateway.errors import StorageError
from gateway.exchange import outbox
from gateway.exchange.envelope import Outgoing, parse_envelope, seal, verify_receipt
from gateway.exchange.purposes import Profiles, check_payload, load_profiles, minimise
from gateway.exchange.roster_pages import NoticeWorkers, notice_workers
from gateway.exchange.rosters import MANIFEST_PURPOSE, NOTICE_PURPOSE, SendSummary, received, send_migrant_roster
from gateway.exchange.tokens import id_token, pair_key
from gateway.matching import Encoder
from gateway.node import Node, init_node, open_node
from gateway.server import NodeServer, await_ready
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.repository import PageRange, SealedPage, SqlChildRepository
from gateway.store.schema import child_records, inbox, outbox_envelopes
from gateway.store.schema import outbox as outbox_table
from gateway.synth.generator import SynthSpec, generate
from gateway.trust import keyfile
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import utc_now
from gateway.trust.tls import TlsIdentity, secure_channel_to, server_credentials
from gateway.trust.verifier import Directory, TrustState
from gateway.wire import NoticeBatch, notice_batch_to_wire, notice_from_record
from tests.trustkit import Node as PkiNode
from tests.trustkit import Pki, new_pki

NAME = "exchange"
DEFAULT_RECORDS = 20_000
QUICK_RECORDS = 2_000
MIN_RECORDS = 10
BATCH = 1_000  # records per envelope (send_migrant_roster's batch_size)
REPEATS = 3
MEMORY_SIZES = (20_000, 200_000)
QUICK_MEMORY_SIZES = (2_000, 10_000)
MILLION = 1_000_000
POOL = 5_000  # distinct generated migrant children; larger rosters are clones with fresh ids
SEED = 2026
PERIOD = "2025Q4"  # fixed, so the generated set does not depend on today's date
GOAL = 0.5  # end to end / slowest necessary part
CHECKPOINTS = 10  # the memory figure notes the peak so far after every tenth of the roster
FLAT = 1.5  # a peak within this factor across roster sizes counts as flat
INSERT_ROWS = 100  # outbox/inbox rows per raw-insert run (each holds one 1,000-notice envelope)
GRPC_MESSAGES = 200  # 1,000-record messages per gRPC run
GRPC_SMALL_MESSAGES = 2_000  # one-record messages per run of the reference
WAIT_S = 300.0  # give up on an exchange that has not completed by then
ENV_KEEP = {"TONGBAN_TEST_POSTGRES_URL"}


@dataclass(frozen=True)
class Side:
    node_id: str
    division: str
    province: str
    province_name: str


SENDER = Side("cq-liangjiang", "500157", "50", "重庆市")
RECEIVER = Side("sc-nanbu", "511321", "51", "四川省")

#: The project's 2-core reference machine (medians, ±30 %): a sanity check of the host only.
EXPECTED = {
    "ed25519_sign_small": 20_000,  # ops/s
    "grpc_mtls_1000_records_per_message": 1_000_000,  # records/s
    "grpc_mtls_1_record_per_message": 10_000,  # messages/s
}

#: Part name -> what the table calls it. Parts that work per envelope count 1,000 records per op.
PART_LABELS = {
    "ed25519_sign_envelope": "Ed25519 sign, 1,000-notice envelope",
    "ed25519_verify_envelope": "Ed25519 verify, 1,000-notice envelope",
    "protobuf_batch": "protobuf serialise + parse, 1,000-notice batch",
    "minimise_check_payload": "minimise + check_payload, 1,000-notice batch",
    "aes_gcm_seal_envelope": "AES-GCM seal of an envelope (at rest)",
    "hmac_id_token": "HMAC-SHA256 of an ID number (pairwise token)",
    "bloom_encode_name_birth": "keyed Bloom encodings of name and birth date (the roster's children)",
    "grpc_mtls_stream": "gRPC stream over mTLS, 1,000 records/message",
    "outbox_insert": "outbox-sized rows, batched insert",
    "inbox_insert": "inbox-sized rows, batched insert",
    "sealed_record_read": "sealed record read: SELECT + AES-GCM open + json.loads",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- records ------------------------------------------------------------------------------------------


class RosterSource:
    """Migrant children living in the sender's county and registered in the receiver's.

    ``records(n)`` streams ``n`` distinct records: the generated pool, repeated with fresh record
    ids and fresh valid ID numbers (same birth date and sex, prefixes of real Sichuan counties),
    the same ones on every call. Nothing beyond the pool is held in memory.
    """

    def __init__(self, pool: Sequence[ChildRecord], prefixes: Sequence[str]) -> None:
        if not pool:
            raise ValueError("the pool is empty")
        self.pool = list(pool)
        self.prefixes = tuple(prefixes)

    @classmethod
    def generate(cls, size: int) -> RosterSource:
        table, rules = DivisionTable.load_default(), load_rules()
        spec = SynthSpec(
            seed=SEED,
            period=MonitoringPeriod.parse(PERIOD),
            residence_divisions=(SENDER.division,),
            registration_divisions=(RECEIVER.division,),
            households=10 * size + 100,  # generated lazily: only as many as the pool needs
        )
        migrants = (r for r in generate(spec, table, rules) if r.kind is ChildKind.MIGRANT)
        pool = list(islice(migrants, size))
        counties = sorted(d.code for d in table.current_counties() if d.province_code == RECEIVER.province)
        prefixes = [RECEIVER.division, *(c for c in counties if c != RECEIVER.division)]
        return cls(pool, prefixes)

    def records(self, n: int) -> Iterator[ChildRecord]:
        rng = Random(f"tongban-bench-exchange:{SEED}")
        used: dict[tuple[date, Sex], int] = {}
        capacity = 499  # sequence numbers of one parity in 1-998
        for i in range(n):
            base = self.pool[i % len(self.pool)]
            number = None
            if base.id_number is not None:
                key = (base.birth_date, base.sex)
                k = used.get(key, 0)
                used[key] = k + 1
                prefix_index, slot = divmod(k, capacity)
                if prefix_index < len(self.prefixes):
                    sequence = 2 * slot + (1 if base.sex is Sex.MALE else 2)
                    number = idnumber.make(self.prefixes[prefix_index], base.birth_date, sequence)
            record_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            yield dataclasses.replace(base, record_id=record_id, id_number=number)


def store_roster(repo: SqlChildRepository, source: RosterSource, n: int) -> None:
    stored = repo.add_many(source.records(n), period=PERIOD)
    if stored != n:
        raise RuntimeError(f"stored {stored} records, expected {n}")


# --- a PKI and two enrolled nodes ---------------------------------------------------------------------


@dataclass
class BenchPki:
    """Sender and receiver enrolled in a national PKI, certificates issued at the real current time
    (BoringSSL checks validity against the wall clock), as ``tests/test_mtls.py`` does."""

    pki: Pki
    now: datetime

    @classmethod
    def create(cls) -> BenchPki:
        now = utc_now()
        pki = new_pki(provinces=((SENDER.province, SENDER.province_name), (RECEIVER.province, RECEIVER.province_name)))
        pki.roots = [pki.signed_root(expires=now + timedelta(days=365))]
        for side in (SENDER, RECEIVER):
            pki.provinces[side.province].enrol(side.node_id, side.division, now=now)
        return cls(pki, now)

    def node(self, side: Side) -> PkiNode:
        return self.pki.provinces[side.province].nodes[side.node_id]

    def bundle(self) -> bytes:
        parts = {p: prov.signed_part(expires=self.now + timedelta(days=30)) for p, prov in self.pki.provinces.items()}
        return self.pki.bundle(parts=parts, expires=self.now + timedelta(days=7))

    def directory(self) -> Directory:
        now = utc_now()
        return TrustState.from_pinned_root(self.pki.roots[0].to_bytes(), now).accept(self.bundle(), now)[1]

    def identity(self, side: Side) -> TlsIdentity:
        n = self.node(side)
        return TlsIdentity.from_key(n.tls_key, n.tls_cert_pem, node_id=n.node_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def enrol(
    base: Path, live: BenchPki, side: Side, database_url: str, port: int, roster_workers: int | None = None
) -> NodeConfig:
    """What ``tongban node init`` and the operators' enrolment leave in a node's directory
    (as ``tests.test_mtls.enrol_on_disk``), listening on ``port``, with its signing key, and
    ``[exchange] roster_workers`` when given (else the node's default)."""
    d = base / side.node_id
    init_node(d, node_id=side.node_id, division=side.division, listen=f"127.0.0.1:{port}", database_url=database_url)
    with (d / config.CONFIG_FILE).open("a", encoding="utf-8") as fh:
        fh.write('\n[trust]\ndirectory = "published/bundle.json"\nrefresh_seconds = 3600\n')
        if roster_workers is not None:
            fh.write(f"\n[exchange]\nroster_workers = {roster_workers}\n")
    cfg = config.load(d / config.CONFIG_FILE)
    node = live.node(side)
    passphrase = keyfile.passphrase_from_env()
    keyfile.write_private_key(cfg.tls_key, node.tls_key, passphrase)
    keyfile.write_public(cfg.tls_certificate, node.tls_cert_pem.encode())
    keyfile.write_public(cfg.trust_root, live.pki.roots[0].to_bytes())
    keyfile.write_private_key(cfg.signing_key, node.signers[0].private_key, passphrase)
    if not cfg.enrolled:
        raise RuntimeError(f"{side.node_id} is not enrolled")
    return cfg


def publish(cfg: NodeConfig, bundle: bytes) -> None:
    path = Path(cfg.directory_source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bundle)


@dataclass
class ReceiverProcess:
    """The receiving node: ``tongban node serve`` in its own process; ``node`` is this process's
    handle on the same database (for the untimed checks and the database parts)."""

    node: Node
    process: subprocess.Popen[str]


@dataclass
class Pair:
    """The sender's NodeServer and the receiver's process; :meth:`exchange` is one timed roster exchange."""

    sender: NodeServer
    receiver: ReceiverProcess
    signer: Ed25519Signer
    encryption_key: x25519.X25519PrivateKey
    profiles: Profiles
    records: int
    roster_workers: int  # the sender's [exchange] roster_workers
    workers: NoticeWorkers | None  # its pool (roster_workers - 1 processes), started before any timing
    workers_start_s: float
    envelopes_sent: int = 0
    runs: list[dict[str, float]] = field(default_factory=list)
    summaries: list[SendSummary] = field(default_factory=list)

    def exchange(self) -> int:
        node, trust, delivery = self.sender.node, self.sender.trust, self.sender.delivery
        if trust is None or delivery is None:
            raise RuntimeError("the sender is not enrolled")
        start = time.perf_counter()
        summary = send_migrant_roster(
            node_id=SENDER.node_id,
            period=PERIOD,
            children=node.children,
            engine=node.engine,
            keyring=node.keyring,
            directory=trust.current(),
            profiles=self.profiles,
            signer=self.signer,
            encryption_key=self.encryption_key,
            now=utc_now(),
            batch_size=BATCH,
            workers=self.workers,
        )
        queued = time.perf_counter()
        delivery.notify()
        if summary.unroutable or [r.peer for r in summary.rosters] != [RECEIVER.node_id]:
            raise RuntimeError("the roster did not go to the receiver alone")
        self.envelopes_sent += summary.envelopes
        wait_delivered(delivery.metrics.snapshot, self.envelopes_sent)
        end = time.perf_counter()
        self.runs.append({"queue_s": queued - start, "deliver_s": end - queued})
        self.summaries.append(summary)
        return summary.notices


def wait_delivered(snapshot: Callable[[], dict[str, int]], target: int) -> None:
    """Until the delivery worker has recorded ``target`` deliveries in all (its in-memory metrics:
    polling them costs no database query). Any failed attempt aborts the benchmark."""
    deadline = time.monotonic() + WAIT_S
    while True:
        counts = snapshot()
        if counts.get("delivered", 0) >= target:
            return
        failed = {k: v for k, v in counts.items() if k.startswith("failed.") or k == "dead"}
        if failed:
            raise RuntimeError(f"delivery failed during the benchmark: {failed}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{counts.get('delivered', 0)} of {target} envelopes delivered after {WAIT_S:.0f} s")
        time.sleep(0.002)


def verify_exchange(pair: Pair, directory: Directory) -> dict[str, int]:
    """Untimed: every outbox row delivered, its stored receipt verified against the directory for
    the envelope actually sent; the receiver's inbox holds every envelope."""
    engine, keyring = pair.sender.node.engine, pair.sender.node.keyring
    verified = 0
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_table.c.message_id, outbox_table.c.status, outbox_table.c.receipt)).all()
    sent = outbox.envelopes(engine, keyring)
    for row in rows:
        if row.status != outbox.Status.DELIVERED.value or row.receipt is None:
            raise RuntimeError(f"outbox row {row.message_id} is {row.status} without a receipt")
        data = sent[row.message_id]
        verify_receipt(
            bytes(row.receipt),
            directory=directory,
            receiver=RECEIVER.node_id,
            message_id=row.message_id,
            envelope_digest=parse_envelope(data).digest,
            now=utc_now(),
        )
        verified += 1
    if verified != pair.envelopes_sent:
        raise RuntimeError(f"{verified} outbox rows, {pair.envelopes_sent} envelopes sent")
    got = received(pair.receiver.node.engine)
    batches = sum(r.batches for s in pair.summaries for r in s.rosters)
    want = {(SENDER.node_id, NOTICE_PURPOSE): batches, (SENDER.node_id, MANIFEST_PURPOSE): len(pair.summaries)}
    if got != want:
        raise RuntimeError(f"the receiver's inbox holds {got}, expected {want}")
    return {"outbox_rows_with_verified_receipt": verified, "inbox_rows": sum(got.values())}


@contextmanager
def running_pair(
    base: Path,
    live: BenchPki,
    urls: tuple[str, str],
    source: RosterSource,
    records: int,
    roster_workers: int | None = None,
) -> Iterator[Pair]:
    """Two enrolled nodes on ``urls`` (sender, receiver), ``records`` stored at the sender,
    both servers started; stopped on exit."""
    ports = {SENDER.node_id: free_port(), RECEIVER.node_id: free_port()}
    for side in (SENDER, RECEIVER):
        live.node(side).endpoint = f"127.0.0.1:{ports[side.node_id]}"
    cfgs = {
        side: enrol(base, live, side, url, ports[side.node_id], roster_workers)
        for side, url in zip((SENDER, RECEIVER), urls, strict=True)
    }
    bundle = live.bundle()
    for cfg in cfgs.values():
        publish(cfg, bundle)
    sender_node = open_node(cfgs[SENDER])
    try:
        store_roster(sender_node.children, source, records)
    finally:
        sender_node.engine.dispose()
    with ExitStack() as stack:
        workers, workers_start_s = started_workers(cfgs[SENDER].roster_workers)
        if workers is not None:
            stack.callback(workers.close)
        receiver = stack.enter_context(serving_process(cfgs[RECEIVER]))
        sender = NodeServer(open_node(cfgs[SENDER]), delivery_poll_interval=0.5)
        sender.start()
        stack.callback(sender.stop, 0)
        pki_sender = live.node(SENDER)
        yield Pair(
            sender,
            receiver,
            pki_sender.signers[0],
            pki_sender.encryption_key,
            load_profiles(),
            records,
            cfgs[SENDER].roster_workers,
            workers,
            workers_start_s,
        )


@contextmanager
def serving_process(cfg: NodeConfig) -> Iterator[ReceiverProcess]:
    """``tongban node serve`` for ``cfg`` in a process of its own, ready (its ready line read);
    stopped (SIGTERM, then SIGKILL) on exit. Its output is drained, never shown."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "gateway", "node", "serve", "--config", str(cfg.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    node: Node | None = None
    try:
        assert proc.stdout is not None
        if await_ready(proc.stdout, WAIT_S) is None:
            raise RuntimeError("the receiving node did not start")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe from filling
        node = open_node(cfg)
        yield ReceiverProcess(node, proc)
    finally:
        if node is not None:
            node.engine.dispose()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def started_workers(roster_workers: int) -> tuple[NoticeWorkers | None, float]:
    """The pool a node configured with ``roster_workers`` holds, started and ready (a running node
    starts it once), and the seconds that took (0 without a pool)."""
    workers = notice_workers(roster_workers)
    if workers is None:
        return None, 0.0
    start = time.perf_counter()
    workers.wait_ready(timeout=WAIT_S)
    return workers, time.perf_counter() - start


# --- a sample batch: what send_migrant_roster builds, for the parts --------------------------------


@dataclass(frozen=True)
class Sample:
    batch: exchange_pb2.MigrantNoticeBatch
    payload: bytes
    envelope: Outgoing
    signed: bytes  # the PAE bytes an envelope signature covers
    small_envelope: bytes  # one notice, for the one-record-per-message reference
    receipt: bytes
    id_numbers: list[str]
    pair_key: bytes
    people: list[tuple[str, date]]  # (name, birth date) of distinct children, for the encoding part


def build_sample(source: RosterSource, live: BenchPki, profiles: Profiles) -> Sample:
    """One 1,000-notice batch of the roster, built and sealed exactly as ``send_migrant_roster``
    does (pairwise tokens, minimised), and a one-notice envelope."""
    directory = live.directory()
    sender, receiver = live.node(SENDER), directory.entry(RECEIVER.node_id)
    key = pair_key(
        sender.encryption_key,
        receiver.encryption_key,
        own_id=SENDER.node_id,
        peer_id=RECEIVER.node_id,
        period=PERIOD,
    )
    records = list(source.records(BATCH))
    encoder = Encoder(key)
    notices = tuple(
        notice_from_record(
            r,
            notice_ref=r.record_id,
            id_token=id_token(key, r.id_number) if r.id_number else b"",
            name_encoding=encoder.name(r.name),
            birth_encoding=encoder.birth(r.birth_date),
        )
        for r in records
    )
    profile = profiles.get(NOTICE_PURPOSE)
    roster_id = str(uuid.uuid4())

    def sealed(batch: NoticeBatch) -> tuple[exchange_pb2.MigrantNoticeBatch, bytes, Outgoing]:
        message = minimise(profile, notice_batch_to_wire(batch))
        assert isinstance(message, exchange_pb2.MigrantNoticeBatch)  # the profile's type
        payload = message.SerializeToString(deterministic=True)
        outgoing = seal(
            sender=SENDER.node_id, recipient=RECEIVER.node_id, profile=profile, payload=payload,
            signer=sender.signers[0], now=utc_now(), lifetime=timedelta(days=7),
        )  # fmt: skip
        return message, payload, outgoing

    batch, payload, envelope = sealed(NoticeBatch(PERIOD, roster_id, 0, notices))
    _, _, small = sealed(NoticeBatch(PERIOD, roster_id, 1, notices[:1]))
    receipt = envelope_pb2.Receipt(body=secrets.token_bytes(160))  # about a real receipt's size
    receipt.signature.value = secrets.token_bytes(64)
    return Sample(
        batch=batch,
        payload=payload,
        envelope=envelope,
        signed=parse_envelope(envelope.data).signed,
        small_envelope=small.data,
        receipt=receipt.SerializeToString(),
        id_numbers=[r.id_number for r in records if r.id_number],
        pair_key=key,
        people=[(r.name, r.birth_date) for r in source.pool],
    )


# --- parts that do not depend on the database ----------------------------------------------------


def _cycle(items: Sequence[bytes], n: int) -> list[bytes]:
    return [items[i % len(items)] for i in range(n)]


class EchoServer:
    """A trivial gRPC servicer over the same mutual TLS as a node (the receiver's identity and the
    directory's CA bundle): it answers every message of a stream with a receipt-sized reply."""

    METHOD = "/tongban.bench.Echo/Stream"

    def __init__(self, live: BenchPki, reply: bytes) -> None:
        directory = live.directory()

        def stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
            for _ in requests:
                yield reply

        handler = grpc.method_handlers_generic_handler(
            "tongban.bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(stream)}
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        port = self.server.add_secure_port(
            "127.0.0.1:0", server_credentials(live.identity(RECEIVER), directory.ca_bundle_pem)
        )
        self.server.start()
        self.channel = secure_channel_to(
            RECEIVER.node_id,
            directory,
            live.identity(SENDER),
            now=utc_now(),
            target=f"127.0.0.1:{port}",
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        self.call = self.channel.stream_stream(self.METHOD, request_serializer=None, response_deserializer=None)

    def stream(self, messages: Sequence[bytes]) -> int:
        answers = sum(1 for _ in self.call(iter(messages), timeout=120))
        if answers != len(messages):
            raise RuntimeError(f"{answers} answers to {len(messages)} messages")
        return len(messages)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait()


def bench_parts(
    sample: Sample, live: BenchPki, profiles: Profiles, *, repeats: int, quick: bool, records: int
) -> tuple[dict[str, Timing], dict[str, Timing], dict[str, int]]:
    """(parts, references, records per item of each): the CPU and network parts of the exchange."""
    scale = 4 if quick else 1
    signer = live.node(SENDER).signers[0].private_key
    public = signer.public_key()
    signature = signer.sign(sample.signed)
    small = secrets.token_bytes(200)
    profile = profiles.get(NOTICE_PURPOSE)
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    aad = b"tongban.at-rest.v1\x00k1\x00outbox\x00" + sample.envelope.message_id.encode("ascii")
    hmac_key = sample.pair_key
    label = b"tongban.v1 id-token\x00"
    numbers = [n.encode("ascii") for n in sample.id_numbers]
    hmac_ops = max(20_000 // scale, len(numbers))
    hmac_inputs = _cycle(numbers, hmac_ops)
    big = _cycle([sample.envelope.data], max(GRPC_MESSAGES // scale, 10))
    tiny = _cycle([sample.small_envelope], max(GRPC_SMALL_MESSAGES // scale, 10))
    env_ops = max(200 // scale, 10)

    def sign() -> int:
        for _ in range(env_ops):
            signer.sign(sample.signed)
        return env_ops

    def verify() -> int:
        for _ in range(env_ops):
            public.verify(signature, sample.signed)
        return env_ops

    def protobuf() -> int:
        ops = max(50 // scale, 5)
        for _ in range(ops):
            exchange_pb2.MigrantNoticeBatch.FromString(sample.batch.SerializeToString(deterministic=True))
        return ops

    def minimise_check() -> int:
        ops = max(50 // scale, 5)
        for _ in range(ops):
            check_payload(profile, minimise(profile, sample.batch))
        return ops

    def aes() -> int:
        for _ in range(env_ops):
            nonce = secrets.token_bytes(12)
            aead.encrypt(nonce, sample.envelope.data, aad)
        return env_ops

    def tokens() -> int:
        for number in hmac_inputs:
            hmac.new(hmac_key, label + number, hashlib.sha256).digest()
        return len(hmac_inputs)

    def encode() -> int:
        # A fresh encoder each run (its caches empty) over the same sequence of children the
        # end-to-end roster sends (the pool repeated to ``records``): the encoding cost of exactly
        # that roster, cache hits included, so the two figures compare like for like.
        encoder = Encoder(hmac_key)
        people = sample.people
        for i in range(records):
            name, born = people[i % len(people)]
            encoder.name(name)
            encoder.birth(born)
        return records

    def sign_small() -> int:
        ops = 20_000 // scale
        for _ in range(ops):
            signer.sign(small)
        return ops

    echo = EchoServer(live, sample.receipt)
    try:
        echo.stream(big[:2])  # the TLS handshake, untimed
        timings = measure_interleaved(
            {
                "ed25519_sign_envelope": Case(sign),
                "ed25519_verify_envelope": Case(verify),
                "protobuf_batch": Case(protobuf),
                "minimise_check_payload": Case(minimise_check),
                "aes_gcm_seal_envelope": Case(aes),
                "hmac_id_token": Case(tokens, unit="records/s"),
                "bloom_encode_name_birth": Case(encode, unit="records/s"),
                "grpc_mtls_stream": Case(lambda: echo.stream(big), unit="messages/s"),
                "ed25519_sign_small": Case(sign_small),
                "grpc_mtls_1_record_per_message": Case(lambda: echo.stream(tiny), unit="messages/s"),
            },
            repeats=repeats,
        )
    finally:
        echo.close()
    reference_names = ("ed25519_sign_small", "grpc_mtls_1_record_per_message")
    references = {name: timings.pop(name) for name in reference_names}
    per_item = dict.fromkeys(timings, BATCH)
    per_item["hmac_id_token"] = 1
    per_item["bloom_encode_name_birth"] = 1
    return timings, references, per_item


# --- parts that depend on the database -----------------------------------------------------------------


def _insert_all(engine: Engine, *tables: tuple[Table, Sequence[dict[str, Any]]]) -> int:
    """Insert each table's rows, all in one transaction; the number of rows of the first table."""
    with engine.begin() as conn:
        for table, rows in tables:
            conn.execute(insert(table), list(rows))
    return len(tables[0][1])


def _outbox_rows(n: int, blob_bytes: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` queued messages as ``enqueue`` writes them: outbox rows and their envelope rows."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    rows = [
        {
            "message_id": message_id,
            "peer": RECEIVER.node_id,
            "purpose": NOTICE_PURPOSE,
            "status": "queued",
            "attempts": 0,
            "next_attempt_at": now,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": None,
            "receipt": None,
            "created_at": now,
            "delivered_at": None,
        }
        for message_id in ids
    ]
    envelopes = [
        {"message_id": message_id, "key_id": "k" * 16, "envelope_sealed": secrets.token_bytes(blob_bytes)}
        for message_id in ids
    ]
    return rows, envelopes


def _inbox_rows(n: int, blob_bytes: int, receipt_bytes: int, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "message_id": str(uuid.uuid4()),
            "sender": SENDER.node_id,
            "purpose": NOTICE_PURPOSE,
            "payload_type": "tongban.v1.MigrantNoticeBatch",
            "envelope_sha256": secrets.token_bytes(32),
            "key_id": "k" * 16,
            "envelope_sealed": secrets.token_bytes(blob_bytes),
            "receipt": secrets.token_bytes(receipt_bytes),
            "received_at": now,
            "expires_at": now + timedelta(days=7),
            "processed_at": None,
        }
        for _ in range(n)
    ]


def _read_sealed(engine: Engine, keyring: DataKeyring, wanted: int) -> int:
    """The records of the roster as iter_period pages them, opened and JSON-decoded (no ChildRecord)."""
    c = child_records.c
    last, seen = "", 0
    while True:
        query = (
            select(c.period, c.record_id, c.key_id, c.pii_sealed)
            .where(
                c.period == PERIOD,
                c.record_id > last,
                c.kind == ChildKind.MIGRANT.value,
                c.registration_division == RECEIVER.division,
            )
            .order_by(c.record_id)
            .limit(BATCH)
        )
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            break
        for row in rows:
            context = b"child_records\x00" + row.period.encode() + b"\x00" + row.record_id.encode()
            json.loads(keyring.open(Sealed(row.key_id, row.pii_sealed), context=context))
        seen += len(rows)
        last = rows[-1].record_id
    if seen != wanted:
        raise RuntimeError(f"read {seen} records, expected {wanted}")
    return seen


def bench_database(pair: Pair, sample: Sample, source: RosterSource, *, repeats: int, quick: bool) -> dict[str, Any]:
    """End to end on the running pair, interleaved with the database parts on the same databases."""
    n = pair.records
    sender_engine = make_engine(pair.sender.node.config.database_url)
    receiver_engine = make_engine(pair.receiver.node.config.database_url)
    try:
        out_scratch = scratch_copy(outbox_table, "bench_outbox")
        env_scratch = scratch_copy(outbox_envelopes, "bench_outbox_envelopes")
        in_scratch = scratch_copy(inbox, "bench_inbox")
        out_scratch.create(sender_engine)
        env_scratch.create(sender_engine)
        in_scratch.create(receiver_engine)
        rows = max(INSERT_ROWS // (4 if quick else 1), 10)
        blob = 12 + len(sample.envelope.data) + 16
        now = datetime.now(UTC)
        out_rows, env_rows = _outbox_rows(rows, blob, now)
        in_rows = _inbox_rows(rows, blob, len(sample.receipt), now)
        keyring, repo = pair.sender.node.keyring, pair.sender.node.children
        # The brief's yardstick: the roster's records as child_records rows, batched insert (bench.store's way).
        record_scratch = scratch_copy(child_records, store_bench.SCRATCH)  # the name keeps index names in 63 bytes
        record_scratch.create(sender_engine)
        record_rows = [store_bench.raw_row(r, PERIOD, "k" * 16) for r in source.records(n)]

        def ours_read() -> int:
            roster = repo.iter_views(PERIOD, kind=ChildKind.MIGRANT, registration_division=RECEIVER.division)
            return sum(1 for _ in roster)

        timings = measure_interleaved(
            {
                "outbox_insert": Case(
                    lambda: _insert_all(sender_engine, (out_scratch, out_rows), (env_scratch, env_rows)),
                    lambda: empty(sender_engine, out_scratch, env_scratch),
                    "rows/s",
                ),
                "inbox_insert": Case(
                    lambda: _insert_all(receiver_engine, (in_scratch, in_rows)),
                    lambda: empty(receiver_engine, in_scratch),
                    "rows/s",
                ),
                "sealed_record_read": Case(lambda: _read_sealed(sender_engine, keyring, n), unit="records/s"),
                "record_insert": Case(
                    lambda: store_bench.insert_raw(sender_engine, record_scratch, record_rows, BATCH),
                    lambda: empty(sender_engine, record_scratch),
                    "rows/s",
                ),
                "end_to_end": Case(pair.exchange, unit="records/s"),
            },
            repeats=repeats,
        )
        # Ours beside the sealed read, once (it explains the gap; bench.store times it properly).
        timings["iter_period"] = measure(ours_read, repeats=1, unit="records/s")
        out_scratch.drop(sender_engine)
        env_scratch.drop(sender_engine)
        record_scratch.drop(sender_engine)
        in_scratch.drop(receiver_engine)
    finally:
        sender_engine.dispose()
        receiver_engine.dispose()
    trust = pair.sender.trust
    if trust is None:
        raise RuntimeError("the sender is not enrolled")
    checks = verify_exchange(pair, trust.current())
    return {
        "timings": timings,
        "checks": checks,
        "runs": list(pair.runs),
        "batch_rows": rows,
        "roster_workers": pair.roster_workers,
        "workers_start_s": pair.workers_start_s,
    }


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _part(timing: Timing, records_per_item: int) -> dict[str, Any]:
    return {**timing.to_json(), "records_per_item": records_per_item, "records_per_s": timing.rate * records_per_item}


def database_section(
    raw: dict[str, Any], cpu_parts: dict[str, dict[str, Any]], description: str, records: int
) -> dict[str, Any]:
    """The JSON of one database: end to end, its parts, the slowest part and the ratio."""
    timings: dict[str, Timing] = raw["timings"]
    parts = {
        "outbox_insert": _part(timings["outbox_insert"], BATCH),
        "inbox_insert": _part(timings["inbox_insert"], BATCH),
        "sealed_record_read": _part(timings["sealed_record_read"], 1),
    }
    every = cpu_parts | parts
    slowest = min(every, key=lambda k: every[k]["records_per_s"])
    per_envelope = {k: v for k, v in every.items() if v["records_per_item"] > 1}
    slowest_envelope = min(per_envelope, key=lambda k: per_envelope[k]["records_per_s"])
    e2e = timings["end_to_end"]
    runs = raw["runs"]
    queue_s, deliver_s = _median([r["queue_s"] for r in runs]), _median([r["deliver_s"] for r in runs])
    ratio = e2e.rate / every[slowest]["records_per_s"]
    record_insert = timings["record_insert"]
    return {
        "database": description,
        "records": records,
        "batch_size": BATCH,
        "envelopes_per_roster": -(-records // BATCH) + 1,
        "roster_workers": raw["roster_workers"],
        "workers_start_s": raw["workers_start_s"],
        "end_to_end": {
            **e2e.to_json(),
            "queue_s": [r["queue_s"] for r in runs],
            "deliver_s": [r["deliver_s"] for r in runs],
            "queue_median_s": queue_s,
            "deliver_median_s": deliver_s,
            "queue_records_per_s": records / queue_s,
            "deliver_records_per_s": records / deliver_s,
        },
        "parts": parts,
        "iter_period": timings["iter_period"].to_json(),
        "raw_insert_rows": raw["batch_rows"],
        "slowest_part": {"name": slowest, "records_per_s": every[slowest]["records_per_s"]},
        "slowest_per_envelope_part": {
            "name": slowest_envelope,
            "records_per_s": per_envelope[slowest_envelope]["records_per_s"],
        },
        "ratio": ratio,
        # The brief's yardstick ("the goal is ≥ half the batched insert rate"): the roster's records
        # inserted as child_records rows, 1,000 per statement, on the same database in the same run.
        "record_insert": record_insert.to_json(),
        "ratio_to_record_insert": e2e.rate / record_insert.rate,
        "ratio_to_slowest_per_envelope_part": e2e.rate / per_envelope[slowest_envelope]["records_per_s"],
        "goal_met": ratio >= GOAL,
        "checks": raw["checks"],
    }


def bench_sqlite(
    source: RosterSource, live: BenchPki, sample: Sample, cpu_parts: dict[str, dict[str, Any]], args: Options
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tongban-bench-") as tmp:
        base = Path(tmp)
        urls = (f"sqlite:///{base / 'sender.db'}", f"sqlite:///{base / 'receiver.db'}")
        with running_pair(base, live, urls, source, args.records, args.roster_workers) as pair:
            raw = bench_database(pair, sample, source, repeats=args.repeats, quick=args.quick)
    description = "two SQLite files in a temporary directory (WAL, synchronous=NORMAL)"
    return database_section(raw, cpu_parts, description, args.records)


def bench_postgres(
    source: RosterSource, live: BenchPki, sample: Sample, cpu_parts: dict[str, dict[str, Any]], args: Options
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(section, server version, reason it was skipped); never raises for a PostgreSQL problem."""
    admin, where = find_postgres()
    if admin is None:
        return None, None, where
    try:
        version = postgres_server_version(admin)
        with ExitStack() as stack:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tongban-bench-")))
            urls = (stack.enter_context(throwaway_database(admin)), stack.enter_context(throwaway_database(admin)))
            pair = stack.enter_context(running_pair(base, live, urls, source, args.records, args.roster_workers))
            raw = bench_database(pair, sample, source, repeats=args.repeats, quick=args.quick)
    except (psycopg.Error, SQLAlchemyError, StorageError) as exc:
        return None, None, f"PostgreSQL failed during the benchmark: {type(exc).__name__}"
    description = f"two throwaway databases on the {where}"
    return database_section(raw, cpu_parts, description, args.records), version, None


# --- memory -----------------------------------------------------------------------------------------------


def bench_memory(source: RosterSource, live: BenchPki, sizes: Sequence[int], roster_workers: int) -> dict[str, Any]:
    """Peak Python memory of one ``send_migrant_roster`` per roster size, from a SQLite store
    holding exactly that roster (stored untimed, before tracing starts), with ``roster_workers`` as
    the end-to-end sender has it (a fresh pool per size, so each worker's peak RSS is that roster's)."""
    directory = live.directory()
    runs = [_memory_run(source, live, directory, n, roster_workers) for n in sizes]
    first, last = runs[0], runs[-1]
    growth = last["peak_python_bytes"] / max(first["peak_python_bytes"], 1)
    return {
        "database": "SQLite file in a temporary directory",
        "batch_size": BATCH,
        "roster_workers": roster_workers,
        "runs": runs,
        "records_ratio": last["records"] / first["records"],
        "peak_growth": growth,
        "worker_rss_growth": last["worker_max_rss_bytes"] / max(first["worker_max_rss_bytes"], 1)
        if roster_workers >= 2
        else None,
        "flat": growth <= FLAT,
        "flat_threshold": FLAT,
        "max_rss_bytes": max_rss_bytes(),
    }


class CheckpointRepository(SqlChildRepository):
    """The node's repository, noting the traced peak so far (above ``base``) each time another
    ``every`` records have been read: how the peak evolves during one roster."""

    def __init__(self, engine: Engine, keyring: DataKeyring, *, every: int) -> None:
        super().__init__(engine, keyring, batch_size=BATCH)
        self.every = every
        self.read = 0
        self.base = 0
        self.peaks: list[tuple[int, int]] = []

    def sealed_pages(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[SealedPage]:
        pages = super().sealed_pages(
            period, kind=kind, registration_division=registration_division, page_size=page_size
        )
        for page in pages:
            yield page
            self._note(len(page))

    def page_ranges(
        self,
        period: str,
        *,
        kind: ChildKind | None = None,
        registration_division: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[PageRange]:
        # With roster workers the sender only cuts the roster into ranges; the builders read them.
        ranges = super().page_ranges(
            period, kind=kind, registration_division=registration_division, page_size=page_size
        )
        for page in ranges:
            yield page
            self._note(page_size or BATCH)  # the last page may be shorter: noted as full

    def _note(self, rows: int) -> None:
        for _ in range(rows):
            self.read += 1
            if self.read % self.every == 0 and tracemalloc.is_tracing():
                self.peaks.append((self.read, tracemalloc.get_traced_memory()[1] - self.base))


def _memory_run(
    source: RosterSource, live: BenchPki, directory: Directory, n: int, roster_workers: int
) -> dict[str, Any]:
    node, profiles = live.node(SENDER), load_profiles()
    with tempfile.TemporaryDirectory(prefix="tongban-bench-") as tmp, ExitStack() as stack:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'memory.db'}")
        workers, _ = started_workers(roster_workers)
        if workers is not None:
            stack.callback(workers.close)
        try:
            migrate(engine)
            keyring = DataKeyring.generate()
            repo = CheckpointRepository(engine, keyring, every=max(n // CHECKPOINTS, 1))
            _say(f"memory: storing {n} records ...")
            start = time.perf_counter()
            store_roster(repo, source, n)
            stored_s = time.perf_counter() - start
            _say(f"memory: send_migrant_roster of {n} records under tracemalloc ...")

            def send() -> int:
                repo.base = tracemalloc.get_traced_memory()[0]
                summary = send_migrant_roster(
                    node_id=SENDER.node_id, period=PERIOD, children=repo, engine=engine, keyring=keyring,
                    directory=directory, profiles=profiles, signer=node.signers[0],
                    encryption_key=node.encryption_key, now=utc_now(), batch_size=BATCH, workers=workers,
                )  # fmt: skip
                return summary.notices

            start = time.perf_counter()
            notices, peak, held = traced_peak(send)
            seconds = time.perf_counter() - start
        finally:
            engine.dispose()
    if notices != n:
        raise RuntimeError(f"sent {notices} notices of {n} records")
    return {
        "records": n,
        "peak_python_bytes": peak,
        "held_python_bytes": held,
        "peak_after_records": [list(p) for p in repo.peaks],
        "worker_max_rss_bytes": workers.max_rss_bytes if workers is not None else 0,
        "store_s": stored_s,
        "traced_send_s": seconds,
    }


# --- report -------------------------------------------------------------------------------------------


def _rate(t: dict[str, Any]) -> str:
    return f"{si(t['per_s'])} {t['unit']}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    parts, refs = result["parts"], result["references"]
    rows: list[list[str]] = [["parts (same run); a part that works per envelope counts 1,000 records per op"]]
    for name, part in parts.items():
        rows.append([PART_LABELS[name], _rate(part), si(part["records_per_s"]), "-", "-"])
    sign, grpc_small = refs["ed25519_sign_small"], refs["grpc_mtls_1_record_per_message"]
    big = parts["grpc_mtls_stream"]
    expected = result["expected"]
    rows += [
        ["host check (reference machine ±30 %)"],
        [
            "Ed25519 sign, 200 B",
            _rate(sign),
            "-",
            f"expected ~{si(expected['ed25519_sign_small'])}",
            f"{sign['per_s'] / expected['ed25519_sign_small']:.2f}",
        ],
        [
            "gRPC stream over mTLS, 1 record/message",
            _rate(grpc_small),
            si(grpc_small["per_s"]),
            f"expected ~{si(expected['grpc_mtls_1_record_per_message'])}",
            f"{grpc_small['per_s'] / expected['grpc_mtls_1_record_per_message']:.2f}",
        ],
        [
            "gRPC stream over mTLS, 1,000 records/message",
            _rate(big),
            si(big["records_per_s"]),
            f"expected ~{si(expected['grpc_mtls_1000_records_per_message'])}",
            f"{big['records_per_s'] / expected['grpc_mtls_1000_records_per_message']:.2f}",
        ],
    ]
    for db in ("sqlite", "postgresql"):
        section = result[db]
        if section is None:
            rows.append([f"{db}: skipped ({result.get(f'{db}_reason')})"])
            continue
        e2e = section["end_to_end"]
        workers = section["roster_workers"]
        rows.append(
            [
                f"{db}: {section['records']} records, {section['envelopes_per_roster']} envelopes per roster, "
                f"roster_workers = {workers}"
                + (f" (pool started untimed in {section['workers_start_s']:.2f} s)" if workers >= 2 else "")
            ]
        )
        for name, part in section["parts"].items():
            rows.append([PART_LABELS[name], _rate(part), si(part["records_per_s"]), "-", "-"])
        read = section["parts"]["sealed_record_read"]
        rows.append(
            [
                "iter_views (ours: + RecordView, plain-column check), 1 run",
                _rate(section["iter_period"]),
                si(section["iter_period"]["per_s"]),
                f"sealed read {si(read['records_per_s'])}",
                f"{section['iter_period']['per_s'] / read['records_per_s']:.2f}",
            ]
        )
        slowest, per_env = section["slowest_part"], section["slowest_per_envelope_part"]
        rows += [
            [
                "END TO END: send → verified receipts",
                f"{e2e['median_s']:.2f} s",
                si(e2e["per_s"]),
                f"slowest part {si(slowest['records_per_s'])} ({slowest['name']})",
                f"{section['ratio']:.2f}",
            ],
            [
                "  queue: send_migrant_roster",
                f"{e2e['queue_median_s']:.2f} s",
                si(e2e["queue_records_per_s"]),
                "-",
                "-",
            ],
            [
                "  deliver: outbox → receipts stored",
                f"{e2e['deliver_median_s']:.2f} s",
                si(e2e["deliver_records_per_s"]),
                "-",
                "-",
            ],
            [
                "  vs batched insert of the records (the brief's yardstick)",
                _rate(section["record_insert"]),
                si(section["record_insert"]["per_s"]),
                "goal >= 0.5",
                f"{section['ratio_to_record_insert']:.2f}",
            ],
            [
                "  vs slowest per-envelope part",
                "-",
                "-",
                f"{si(per_env['records_per_s'])} ({per_env['name']})",
                f"{section['ratio_to_slowest_per_envelope_part']:.3f}",
            ],
        ]
    memory = result["memory"]
    rows.append(
        [
            f"memory: peak Python memory of send_migrant_roster ({memory['database']}), "
            f"roster_workers = {memory['roster_workers']}"
        ]
    )
    first = memory["runs"][0]
    for run in memory["runs"]:
        growth = run["peak_python_bytes"] / max(first["peak_python_bytes"], 1)
        rows.append(
            [
                f"{run['records']} records",
                mib(run["peak_python_bytes"]),
                "-",
                f"{first['records']} records {mib(first['peak_python_bytes'])}",
                f"{growth:.2f}",
            ]
        )
    if memory["worker_rss_growth"] is not None:
        rows.append(
            [
                "  peak RSS of a worker process (whole interpreter)",
                " → ".join(mib(r["worker_max_rss_bytes"]) for r in memory["runs"]),
                "-",
                "-",
                f"{memory['worker_rss_growth']:.2f}",
            ]
        )
    return rows


@dataclass(frozen=True)
class Options:
    records: int
    quick: bool
    repeats: int
    memory_sizes: tuple[int, ...]
    million: bool
    no_postgres: bool
    results_dir: Path | None
    roster_workers: int | None = None


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.exchange",
        description="Bulk roster exchange end to end, beside the raw cost of its parts, and its memory.",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS} records, memory at {QUICK_MEMORY_SIZES}")
    parser.add_argument(
        "--records", type=_records, metavar="N", help=f"roster size end to end (default {DEFAULT_RECORDS})"
    )
    parser.add_argument("--repeats", type=_positive, default=REPEATS, help="runs per figure (median)")
    parser.add_argument("--million", action="store_true", help=f"also measure the memory of a {MILLION}-record roster")
    parser.add_argument(
        "--memory-sizes", type=_sizes, metavar="N,N", help=f"roster sizes of the memory figure (default {MEMORY_SIZES})"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--roster-workers",
        type=int,
        metavar="N",
        help="[exchange] roster_workers of the sending node (default: the node's default; 0 or 1: none)",
    )
    parser.add_argument(
        "--results-dir", type=Path, metavar="DIR", help="where exchange.json goes (default bench/results)"
    )
    args = parser.parse_args(argv)
    sizes = args.memory_sizes or (QUICK_MEMORY_SIZES if args.quick else MEMORY_SIZES)
    if args.million and MILLION not in sizes:
        sizes = (*sizes, MILLION)
    return Options(
        records=args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS),
        quick=args.quick,
        repeats=args.repeats,
        memory_sizes=tuple(sizes),
        million=args.million,
        no_postgres=args.no_postgres,
        results_dir=args.results_dir,
        roster_workers=args.roster_workers,
    )


def isolate_environment() -> None:
    """The nodes of this run read only their own files: ``TONGBAN_*`` overrides of the caller
    (a database URL, a keyring) are dropped, and key files are sealed with a throwaway passphrase."""
    for name in list(os.environ):
        if name.startswith("TONGBAN_") and name not in ENV_KEEP:
            del os.environ[name]
    os.environ[keyfile.ENV_PASSPHRASE] = secrets.token_urlsafe(24)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    isolate_environment()
    started = time.perf_counter()
    phases: dict[str, float] = {}
    mark = [started]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = now - mark[0]
        mark[0] = now

    _say(f"generating a pool of migrant records and the PKI ({args.records} records end to end) ...")
    source = RosterSource.generate(min(POOL, max(args.records, BATCH)))
    live = BenchPki.create()
    profiles = load_profiles()
    sample = build_sample(source, live, profiles)
    freeze_heap()
    phase("setup")

    _say("timing the parts ...")
    cpu, references, per_item = bench_parts(
        sample, live, profiles, repeats=args.repeats, quick=args.quick, records=args.records
    )
    cpu_parts = {name: _part(t, per_item[name]) for name, t in cpu.items()}
    phase("parts")
    _say("timing SQLite end to end ...")
    sqlite = bench_sqlite(source, live, sample, cpu_parts, args)
    phase("sqlite")
    postgresql: dict[str, Any] | None
    pg_version: str | None
    pg_reason: str | None
    if args.no_postgres:
        postgresql, pg_version, pg_reason = None, None, "--no-postgres"
    else:
        _say("timing PostgreSQL end to end ...")
        postgresql, pg_version, pg_reason = bench_postgres(source, live, sample, cpu_parts, args)
    phase("postgresql")
    memory = bench_memory(source, live, args.memory_sizes, sqlite["roster_workers"])
    phase("memory")

    result: dict[str, Any] = {
        "machine": machine_info(postgresql_server=pg_version),
        "params": {
            "records": args.records,
            "quick": args.quick,
            "repeats": args.repeats,
            "batch_size": BATCH,
            "memory_sizes": list(args.memory_sizes),
            "million": args.million,
            "pool": len(source.pool),
            "seed": SEED,
            "period": PERIOD,
            "sender": SENDER.node_id,
            "receiver": RECEIVER.node_id,
            "roster_workers": sqlite["roster_workers"],
            "pid": os.getpid(),
        },
        "goal": {"ratio": GOAL, "memory": "flat in the roster size"},
        "expected": EXPECTED,
        "envelope": {
            "notices": len(sample.batch.notices),
            "payload_bytes": len(sample.payload),
            "envelope_bytes": len(sample.envelope.data),
            "one_notice_envelope_bytes": len(sample.small_envelope),
        },
        "parts": cpu_parts,
        "references": {name: t.to_json() for name, t in references.items()},
        "sqlite": sqlite,
        "postgresql": postgresql,
    }
    if pg_reason is not None:
        result["postgresql_reason"] = pg_reason
    result["memory"] = memory
    result["elapsed_s"] = time.perf_counter() - started
    result["phases_s"] = phases

    path = write_result(NAME, result, results_dir=args.results_dir)
    m = result["machine"]
    print(
        f"bench.exchange: {args.records} records, batches of {BATCH}, median of {args.repeats} | {m['cpu_model']}, "
        f"{m['cpus_usable']} CPUs | {m['python']} | SQLite {m['sqlite']} | PostgreSQL {m['postgresql_server'] or '-'}"
    )
    print(format_table(("figure", "rate", "records/s", "reference (same run)", "ratio"), table_rows(result)))
    verdicts = [
        f"{db}: end to end / slowest part = {result[db]['ratio']:.2f} (goal >= {GOAL}: "
        f"{'met' if result[db]['goal_met'] else 'NOT met'}), "
        f"/ batched record insert = {result[db]['ratio_to_record_insert']:.2f}"
        for db in ("sqlite", "postgresql")
        if result[db] is not None
    ]
    flat = "flat" if memory["flat"] else "NOT flat"
    verdicts.append(f"memory: peak x{memory['peak_growth']:.2f} for x{memory['records_ratio']:.0f} records ({flat})")
    print("; ".join(verdicts))
    print(f"max RSS {mib(memory['max_rss_bytes'])}; {result['elapsed_s']:.0f} s; results: {path}")
    return 0


def _records(value: str) -> int:
    n = int(value)
    if n < MIN_RECORDS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_RECORDS}")
    return n


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _sizes(value: str) -> tuple[int, ...]:
    sizes = tuple(_records(v) for v in value.split(","))
    if len(sizes) < 2 or list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError("two or more increasing sizes, comma-separated")
    return sizes


if __name__ == "__main__":
    raise SystemExit(main())
