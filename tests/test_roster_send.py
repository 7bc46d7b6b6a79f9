"""Sending a roster with and without roster workers (``gateway.exchange.roster_pages``).

What is proved, on SQLite and PostgreSQL:

* worker processes queue exactly the notices the sending process queues (same batches, same bytes
  in the same order, same manifest digest), whether the pool is warm or still starting;
* a row that fails to open in a worker — a plain column edited, a ciphertext moved to another row,
  a key id the keyring lacks — fails the send with the same typed error as without workers, and
  nothing of the roster is queued, not even the batches built before it;
* a worker that dies fails the roster with a ``GatewayError`` (nothing queued) and the next send
  works; at most ``in_flight`` pages are unfinished in the workers and ``2 × in_flight`` held;
  a one-batch roster never starts the pool;
* ``[exchange] roster_workers`` is parsed and checked.

The pool is spawned (never forked) once per module: starting a worker costs a fresh interpreter.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, update
from tongban.v1 import envelope_pb2, exchange_pb2

from gateway import config
from gateway.domain.records import ChildKind
from gateway.errors import (
    ConfigError,
    DataKeyMissing,
    DecryptionFailed,
    GatewayError,
    IdProblem,
    InvalidIdNumber,
    RetiredDivision,
    RowTampered,
)
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.roster_pages import (
    START_METHOD,
    NoticeWorkers,
    PageJob,
    _Raised,
    build_page,
    notice_workers,
)
from gateway.exchange.rosters import MANIFEST_PURPOSE, NOTICE_PURPOSE, SendSummary, send_migrant_roster
from gateway.exchange.tokens import pair_key
from gateway.matching import Encoder
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.repository import SqlChildRepository
from gateway.store.schema import child_records, outbox_envelopes
from gateway.store.schema import outbox as outbox_table
from gateway.trust.verifier import Directory, TrustState
from tests import factories
from tests.trustkit import NOW, Pki, standard_pki

PERIOD = "2026Q4"
SENDER, RECEIVER = "cq-liangjiang", "sc-nanbu"
CHILDREN = 230
BATCH = 20  # 12 batches: enough pages for both workers and for several in flight


@pytest.fixture(scope="module")
def pki() -> Pki:
    return standard_pki()


@pytest.fixture(scope="module")
def directory(pki: Pki) -> Directory:
    return TrustState.from_pinned_root(pki.roots[0].to_bytes(), NOW).accept(pki.bundle(), NOW)[1]


@pytest.fixture(scope="module")
def workers() -> Iterator[NoticeWorkers]:
    with NoticeWorkers(2) as pool:
        pool.wait_ready(timeout=120)
        yield pool


@dataclass
class Store:
    engine: Engine
    keyring: DataKeyring
    children: SqlChildRepository

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    engine = make_engine(db_url)
    migrate(engine)
    keyring = DataKeyring.generate()
    children = SqlChildRepository(engine, keyring, batch_size=7)  # pages of the store ≠ batches
    children.add_many((factories.child(n) for n in range(CHILDREN)), period=PERIOD)
    s = Store(engine, keyring, children)
    yield s
    s.close()


def send(s: Store, pki: Pki, directory: Directory, workers: NoticeWorkers | None) -> SendSummary:
    node = pki.provinces["50"].nodes[SENDER]
    return send_migrant_roster(
        node_id=SENDER,
        period=PERIOD,
        children=s.children,
        engine=s.engine,
        keyring=s.keyring,
        directory=directory,
        profiles=load_profiles(),
        signer=node.signers[0],
        encryption_key=node.encryption_key,
        now=NOW,
        batch_size=BATCH,
        workers=workers,
    )


@dataclass(frozen=True)
class Queued:
    batches: list[exchange_pb2.MigrantNoticeBatch]
    manifest: exchange_pb2.RosterManifest


def queued(s: Store) -> Queued:
    """What the outbox holds, opened: the notice batches in batch order and the manifest."""
    with s.engine.connect() as conn:
        rows = conn.execute(select(outbox_table.c.message_id, outbox_table.c.purpose)).all()
    sent = outbox.envelopes(s.engine, s.keyring)
    batches, manifests = [], []
    for row in rows:
        data = sent[row.message_id]
        payload = envelope_pb2.Envelope.FromString(data).payload
        if row.purpose == NOTICE_PURPOSE:
            batches.append(exchange_pb2.MigrantNoticeBatch.FromString(payload))
        else:
            assert row.purpose == MANIFEST_PURPOSE
            manifests.append(exchange_pb2.RosterManifest.FromString(payload))
    assert len(manifests) == 1
    return Queued(sorted(batches, key=lambda b: b.batch_index), manifests[0])


def outbox_rows(s: Store) -> int:
    with s.engine.connect() as conn:
        return len(conn.execute(select(outbox_table.c.message_id)).all())


def clear_outbox(s: Store) -> None:
    with s.engine.begin() as conn:
        conn.execute(delete(outbox_table))
        conn.execute(delete(outbox_envelopes))


def notices(q: Queued) -> list[bytes]:
    return [n.SerializeToString(deterministic=True) for b in q.batches for n in b.notices]


def test_the_pool_is_spawned_never_forked() -> None:
    assert START_METHOD == "spawn"


@pytest.mark.parametrize("warm", [True, False], ids=["warm_pool", "starting_pool"])
def test_workers_queue_exactly_what_the_sending_process_queues(
    store: Store, pki: Pki, directory: Directory, workers: NoticeWorkers, warm: bool
) -> None:
    alone = send(store, pki, directory, None)
    here = queued(store)
    clear_outbox(store)
    if warm:
        pool: NoticeWorkers = workers
    else:
        pool = NoticeWorkers(2)  # not started: the first pages are built here while it starts
    try:
        with_workers = send(store, pki, directory, pool)
        there = queued(store)
    finally:
        if not warm:
            pool.close()
    expected_batches = -(-CHILDREN // BATCH)
    for summary in (alone, with_workers):
        [roster] = summary.rosters
        assert (roster.notices, roster.batches, roster.without_token) == (CHILDREN, expected_batches, 0)
    assert [b.batch_index for b in there.batches] == list(range(expected_batches))
    assert notices(there) == notices(here)
    assert len(set(notices(there))) == CHILDREN
    assert there.manifest.entries_sha256 == here.manifest.entries_sha256
    assert (there.manifest.count, there.manifest.batches) == (CHILDREN, expected_batches)
    assert {b.roster_id for b in there.batches} == {there.manifest.roster_id}


def _edit_plain_column(s: Store, record_id: str) -> None:
    with s.engine.begin() as conn:
        conn.execute(
            update(child_records).where(child_records.c.record_id == record_id).values(residence_division="500109")
        )


def _move_ciphertext(s: Store, record_id: str) -> None:
    c = child_records.c
    with s.engine.begin() as conn:
        other = conn.execute(select(c.pii_sealed).where(c.record_id != record_id).limit(1)).scalar_one()
        conn.execute(update(child_records).where(c.record_id == record_id).values(pii_sealed=other))


def _unknown_key(s: Store, record_id: str) -> None:
    with s.engine.begin() as conn:
        conn.execute(update(child_records).where(child_records.c.record_id == record_id).values(key_id="dk-gone"))


# A row in the last batches, so that batches before it were built (and queued) when it fails.
BAD_ROWS: dict[str, tuple[Callable[[Store, str], None], type[GatewayError]]] = {
    "plain_column_edited": (_edit_plain_column, RowTampered),
    "ciphertext_moved_from_another_row": (_move_ciphertext, DecryptionFailed),
    "key_id_not_in_keyring": (_unknown_key, DataKeyMissing),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
@pytest.mark.parametrize("with_workers", [False, True], ids=["in_process", "workers"])
def test_a_row_that_fails_to_open_fails_the_roster_and_queues_nothing(
    store: Store, pki: Pki, directory: Directory, workers: NoticeWorkers, case: str, with_workers: bool
) -> None:
    tamper, error = BAD_ROWS[case]
    record_ids = sorted(r.record_id for r in store.children.iter_views(PERIOD, kind=ChildKind.MIGRANT))
    tamper(store, record_ids[-15])
    with pytest.raises(error) as raised:
        send(store, pki, directory, workers if with_workers else None)
    assert type(raised.value) is error
    assert outbox_rows(store) == 0


def test_a_worker_that_dies_fails_the_roster_and_the_next_send_works(
    store: Store, pki: Pki, directory: Directory
) -> None:
    with NoticeWorkers(2) as pool:
        pool.wait_ready(timeout=120)
        os.kill(pool.pids[0], signal.SIGKILL)
        time.sleep(0.5)  # let the pool notice
        with pytest.raises(GatewayError) as raised:
            send(store, pki, directory, pool)
        assert type(raised.value) is GatewayError
        assert "worker" in str(raised.value)
        assert outbox_rows(store) == 0
        pool.wait_ready(timeout=120)  # a new pool starts
        summary = send(store, pki, directory, pool)
    assert summary.notices == CHILDREN


def test_a_one_batch_roster_does_not_start_the_pool(store: Store, pki: Pki, directory: Directory) -> None:
    node = pki.provinces["50"].nodes[SENDER]
    pool = NoticeWorkers(2)
    try:
        summary = send_migrant_roster(
            node_id=SENDER, period=PERIOD, children=store.children, engine=store.engine, keyring=store.keyring,
            directory=directory, profiles=load_profiles(), signer=node.signers[0],
            encryption_key=node.encryption_key, now=NOW, batch_size=CHILDREN, workers=pool,
        )  # fmt: skip
        assert summary.rosters[0].batches == 1
        assert not pool.started
    finally:
        pool.close()


def test_at_most_in_flight_pages_are_out_and_as_many_held(store: Store, pki: Pki, directory: Directory) -> None:
    node = pki.provinces["50"].nodes[SENDER]
    receiver = directory.entry(RECEIVER)
    key = pair_key(node.encryption_key, receiver.encryption_key, own_id=SENDER, peer_id=RECEIVER, period=PERIOD)
    profile = load_profiles().get(NOTICE_PURPOSE)
    pages = store.children.sealed_pages(PERIOD, kind=ChildKind.MIGRANT, page_size=BATCH)
    pulled = 0

    def jobs() -> Iterator[PageJob]:
        nonlocal pulled
        for i, page in enumerate(pages):
            pulled += 1
            yield PageJob(profile, PERIOD, "roster", i, page, dict(store.keyring.keys), key)

    with NoticeWorkers(2, in_flight=3) as pool:
        pool.wait_ready(timeout=120)
        consumed = 0
        for built in pool.map(jobs(), Encoder(key), store.children.read_page):
            consumed += 1
            # out in workers, or built here and not yet handed back; and the next in_flight + 1 jobs looked at
            assert pulled - consumed <= 2 * 3 + 3 + 1
            assert built.notices == BATCH or consumed == -(-CHILDREN // BATCH)
        assert consumed == -(-CHILDREN // BATCH)
        assert pool.max_rss_bytes > 0


def test_a_page_is_the_same_bytes_whatever_the_encoder_has_seen(store: Store, pki: Pki, directory: Directory) -> None:
    node = pki.provinces["50"].nodes[SENDER]
    receiver = directory.entry(RECEIVER)
    key = pair_key(node.encryption_key, receiver.encryption_key, own_id=SENDER, peer_id=RECEIVER, period=PERIOD)
    profile = load_profiles().get(NOTICE_PURPOSE)
    first, second = list(store.children.sealed_pages(PERIOD, kind=ChildKind.MIGRANT, page_size=BATCH))[:2]
    job = PageJob(profile, PERIOD, "roster", 1, second, dict(store.keyring.keys), key)
    warm = Encoder(key)
    build_page(PageJob(profile, PERIOD, "roster", 0, first, dict(store.keyring.keys), key), first, warm)
    assert build_page(job, second, warm).payload == build_page(job, second, Encoder(key)).payload


@pytest.mark.parametrize(
    "error",
    [
        InvalidIdNumber(IdProblem.CHECK_CHARACTER),
        RetiredDivision("510000", ("510100",)),
        RowTampered("a plain column disagrees with the sealed record"),
        DecryptionFailed(),
        GatewayError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_raised_in_a_worker_comes_back_as_the_same_error(error: GatewayError) -> None:
    # What the pool does between a worker and the node: bytes this test just made, not untrusted input.
    carried = pickle.loads(pickle.dumps(_Raised(type(error), error.args, dict(vars(error)))))  # noqa: S301
    rebuilt = carried.rebuild()
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert vars(rebuilt) == vars(error)
    assert rebuilt.args == error.args


# --- [exchange] roster_workers --------------------------------------------------------------------------


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / config.CONFIG_FILE
    path.write_text(config.render("cq-liangjiang", "500157", "127.0.0.1:7301", "sqlite:///node.db") + extra)
    return path


def test_roster_workers_defaults_to_two(tmp_path: Path) -> None:
    cfg = config.load(_config(tmp_path), environ={})
    assert cfg.roster_workers == 2
    pool = notice_workers(cfg.roster_workers)
    assert pool is not None
    assert pool.processes == 1  # and the sending process
    assert not pool.started


@pytest.mark.parametrize(("value", "processes"), [("0", None), ("1", None), ("4", 3)])
def test_roster_workers_0_or_1_build_in_the_sending_process(tmp_path: Path, value: str, processes: int | None) -> None:
    cfg = config.load(_config(tmp_path, f"\n[exchange]\nroster_workers = {value}\n"), environ={})
    pool = notice_workers(cfg.roster_workers)
    assert (pool.processes if pool is not None else None) == processes
    env = config.load(_config(tmp_path), environ={"TONGBAN_EXCHANGE_ROSTER_WORKERS": value})
    assert env.roster_workers == int(value)


@pytest.mark.parametrize("value", ["-1", "65", "true", "2.5", '"2"'])
def test_a_bad_roster_workers_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="roster_workers"):
        config.load(_config(tmp_path, f"\n[exchange]\nroster_workers = {value}\n"), environ={})


@pytest.mark.parametrize("size", [1, 7, BATCH, CHILDREN, CHILDREN + 1])
def test_page_ranges_cut_the_pages_sealed_pages_reads(store: Store, size: int) -> None:
    kind, division = ChildKind.MIGRANT, "511321"
    pages = list(store.children.sealed_pages(PERIOD, kind=kind, registration_division=division, page_size=size))
    ranges = list(store.children.page_ranges(PERIOD, kind=kind, registration_division=division, page_size=size))
    assert [store.children.read_page(r) for r in ranges] == pages
    assert all(len(p) for p in pages)  # never an empty page, even when the last one is full
    assert ranges[-1].upto is None or len(pages[-1]) == size


def test_an_in_memory_database_is_read_by_the_sending_process(pki: Pki, directory: Directory) -> None:
    engine = make_engine("sqlite://")
    try:
        migrate(engine)
        keyring = DataKeyring.generate()
        children = SqlChildRepository(engine, keyring)
        children.add_many((factories.child(n) for n in range(3 * BATCH)), period=PERIOD)
        with NoticeWorkers(1) as pool:
            summary = send(Store(engine, keyring, children), pki, directory, pool)
    finally:
        engine.dispose()
    assert (summary.notices, summary.rosters[0].batches) == (3 * BATCH, 3)
