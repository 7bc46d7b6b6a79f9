"""Several gateway processes of one node on one PostgreSQL apply each inbound case message once.

南部县's node runs two case services on one database (two engines, as two processes would have),
both syncing at the same time, over and over, while 两江新区's application, its document chunks and
later steps arrive. Every message is applied by exactly one of them: one case, one history without a
repeated step, every inbox row processed once (``gateway.cases.handoff.claim``: ``FOR UPDATE SKIP
LOCKED``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.cases import lifecycle as lc
from gateway.cases.service import CaseService, SyncSummary
from gateway.cases.store import CaseStore
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import inbox
from gateway.trust.store import utc_now
from tests.test_cases_service import FILES, orphan_draft
from tests.test_mtls import LivePki

LJ, NB = "cq-liangjiang", "sc-nanbu"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("several processes of one node share PostgreSQL (SPEC §8); SQLite is one process's file")
    return db_url


class Pair:
    def __init__(self, tmp: Path, pg_url: str) -> None:
        self.live = LivePki.create()
        directory = self.live.directory()
        profiles = load_profiles()
        self.keyrings = {LJ: DataKeyring.generate(), NB: DataKeyring.generate()}
        lj_engine = make_engine(f"sqlite:///{tmp / 'lj.db'}")
        migrate(lj_engine)
        nb_engine = make_engine(pg_url)
        migrate(nb_engine)

        def service(node_id: str, division: str, engine: object) -> CaseService:
            pki = self.live.node(node_id)
            return CaseService(
                node_id=node_id, division=division, store=CaseStore(engine, self.keyrings[node_id]),  # type: ignore[arg-type]
                keyring=self.keyrings[node_id], directory=directory, encryption_key=pki.encryption_key,
                signer=pki.signers[0], profiles=profiles,
            )  # fmt: skip

        self.lj = service(LJ, "500157", lj_engine)
        # Two "processes" of 南部县: one database, an engine (connection pool) each.
        self.nb = [service(NB, "511321", nb_engine), service(NB, "511321", make_engine(pg_url))]
        pki = self.live.node(NB)
        self.receiver = Receiver(
            node_id=NB, engine=nb_engine, keyring=self.keyrings[NB], directory=self.live.directory,
            profiles=profiles, signer=pki.signers[0], clock=utc_now,
        )  # fmt: skip

    def deliver_to_nb(self) -> int:
        claimed = outbox.claim(self.lj.store.engine, "test", limit=10_000)
        for item in claimed:
            receipt = self.receiver.receive(item.envelope(self.keyrings[LJ]), self.live.directory().entry(LJ))
            with self.lj.store.engine.begin() as conn:
                outbox.mark_delivered(conn, item.message_id, receipt.SerializeToString())
        return len(claimed)

    def sync_both(self, now: datetime, rounds: int = 5) -> list[SyncSummary]:
        summaries: list[SyncSummary] = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def run(service: CaseService) -> None:
            try:
                start.wait()
                for _ in range(rounds):
                    summaries.append(service.sync(now))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in self.nb]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        if errors:
            raise errors[0]
        return summaries

    def close(self) -> None:
        for s in (self.lj, *self.nb):
            s.store.engine.dispose()


@pytest.fixture
def pair(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    p = Pair(tmp_path, pg_url)
    yield p
    p.close()


def test_two_processes_of_one_node_apply_each_case_message_once(pair: Pair) -> None:
    case_id = pair.lj.accept(orphan_draft(41, FILES), FILES, NOW)
    messages = pair.deliver_to_nb()
    assert messages >= 3  # the application and its document chunks
    summaries = pair.sync_both(NOW + timedelta(seconds=1))
    assert sum(s.applied for s in summaries) == messages
    assert sum(len(s.received) for s in summaries) == 1
    nb = pair.nb[0].store.load(case_id)
    assert nb.state.status is lc.Status.RECEIVED
    assert [e.action for e in nb.state.history] == [lc.ActionKind.ACCEPT, lc.ActionKind.PUSH, lc.ActionKind.RECEIVE]

    # Later steps from 两江新区 (a withdrawal) are applied once as well.
    pair.lj.sync(NOW + timedelta(seconds=2))  # 两江新区 learns of the receipt from 南部县's steps, if any
    pair.lj.withdraw(case_id, NOW + timedelta(seconds=3))
    later = pair.deliver_to_nb()
    assert later >= 1
    summaries = pair.sync_both(NOW + timedelta(seconds=4))
    assert sum(s.applied for s in summaries) == later
    history = [e.action for e in pair.nb[1].store.load(case_id).state.history]
    assert history.count(lc.ActionKind.WITHDRAW) == 1
    with pair.nb[0].store.engine.connect() as conn:
        pending = conn.execute(select(func.count()).select_from(inbox).where(inbox.c.processed_at.is_(None)))
        assert pending.scalar_one() == 0
