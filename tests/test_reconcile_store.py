"""Reading received rosters and answers back from the inbox, and the findings table (SQLite and PostgreSQL).

Envelopes are sealed with the real ``envelope.seal`` and stored as the receiver stores them (sealed at
rest under the data keyring); a roster's manifest digest is built the sender's way. Which roster
counts is a table of named cases.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert

from gateway.domain.records import Sex
from gateway.exchange.envelope import seal
from gateway.exchange.purposes import load_profiles, minimise
from gateway.reconcile import store
from gateway.reconcile.findings import Code, Finding, Role, Side
from gateway.reconcile.rosters import received_answers, received_rosters
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import inbox
from gateway.trust.signing import Ed25519Signer
from gateway.wire import (
    LedgerStatus,
    MatchOutcome,
    MatchResult,
    MatchResultBatch,
    Notice,
    NoticeBatch,
    RosterManifest,
    manifest_to_wire,
    match_batch_to_wire,
    notice_batch_to_wire,
)

PROFILES = load_profiles()
SIGNER = Ed25519Signer.generate()
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PERIOD = "2026Q4"
LJ, NB = "cq-liangjiang", "sc-nanbu"


@dataclass
class Inbox:
    engine: Engine
    keyring: DataKeyring

    def put(self, sender: str, purpose: str, payload: bytes, at: datetime, recipient: str = NB) -> None:
        out = seal(
            sender=sender, recipient=recipient, profile=PROFILES.get(purpose), payload=payload,
            signer=SIGNER, now=at, lifetime=timedelta(days=1),
        )  # fmt: skip
        sealed = self.keyring.seal(out.data, context=b"inbox\0" + out.message_id.encode())
        with self.engine.begin() as conn:
            conn.execute(
                insert(inbox).values(
                    message_id=out.message_id, sender=sender, purpose=purpose, payload_type="x",
                    envelope_sha256=out.digest, key_id=sealed.key_id, envelope_sealed=sealed.blob,
                    receipt=b"r", received_at=at, expires_at=at + timedelta(days=1), processed_at=None,
                )
            )  # fmt: skip

    def roster(
        self,
        roster_id: str,
        sizes: list[int],
        *,
        at: datetime = T0,
        sender: str = LJ,
        period: str = PERIOD,
        skip_batch: int | None = None,
        manifest: bool = True,
        bad_digest: bool = False,
    ) -> None:
        """A roster the way gateway.exchange.rosters sends it (batches, then a manifest)."""
        digest = hashlib.sha256()
        n = 0
        for index, size in enumerate(sizes):
            notices = tuple(
                Notice(
                    notice_ref=f"{roster_id}-{n + i}",
                    birth_year_month="2015-06",
                    sex=Sex.FEMALE,
                    residence_division="500157",
                    registration_division="511321",
                    living_since=None,
                    key_care=False,
                    id_token=bytes([i + 1]) * 32 if i % 2 else b"",
                )
                for i in range(size)
            )
            n += size
            wire = minimise(
                PROFILES.get("migrant_notice"), notice_batch_to_wire(NoticeBatch(period, roster_id, index, notices))
            )
            for entry in wire.notices:
                data = entry.SerializeToString(deterministic=True)
                digest.update(struct.pack(">I", len(data)) + data)
            if index != skip_batch:
                self.put(sender, "migrant_notice", wire.SerializeToString(deterministic=True), at)
        if manifest:
            sha = hashlib.sha256(b"other").digest() if bad_digest else digest.digest()
            m = RosterManifest(period, roster_id, n, len(sizes), sha, "migrant_notice")
            self.put(sender, "roster_manifest", manifest_to_wire(m).SerializeToString(), at)


@pytest.fixture
def box(db_url: str) -> Iterator[Inbox]:
    engine = make_engine(db_url)
    migrate(engine)
    try:
        yield Inbox(engine, DataKeyring.generate())
    finally:
        engine.dispose()


# name: (rosters to put, expected complete roster id or None, expected incomplete {roster id: reason prefix})
CASES: dict[str, tuple[list[dict[str, object]], str | None, dict[str, str]]] = {
    "complete": ([{"roster_id": "a", "sizes": [3, 2]}], "a", {}),
    "empty_roster_is_complete": ([{"roster_id": "a", "sizes": []}], "a", {}),
    "no_manifest": ([{"roster_id": "a", "sizes": [3], "manifest": False}], None, {"a": "no manifest"}),
    "batch_missing": ([{"roster_id": "a", "sizes": [3, 2], "skip_batch": 1}], None, {"a": "1 of 2 batch(es) missing"}),
    "digest_differs": ([{"roster_id": "a", "sizes": [2], "bad_digest": True}], None, {"a": "entries_sha256 differs"}),
    "other_period_is_not_seen": ([{"roster_id": "a", "sizes": [2], "period": "2026Q3"}], None, {}),
    "latest_complete_counts_older_is_superseded": (
        [{"roster_id": "old", "sizes": [2]}, {"roster_id": "new", "sizes": [1], "at": T0 + timedelta(hours=1)}],
        "new",
        {},
    ),
    "newer_incomplete_is_reported_beside_the_complete_one": (
        [
            {"roster_id": "old", "sizes": [2]},
            {"roster_id": "new", "sizes": [1, 1], "at": T0 + timedelta(hours=1), "skip_batch": 0},
        ],
        "old",
        {"new": "1 of 2 batch(es) missing"},
    ),
    "older_incomplete_is_superseded": (
        [
            {"roster_id": "old", "sizes": [2], "manifest": False},
            {"roster_id": "new", "sizes": [1], "at": T0 + timedelta(hours=1)},
        ],
        "new",
        {},
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_which_roster_counts(box: Inbox, name: str) -> None:
    rosters, complete, incomplete = CASES[name]
    for spec in rosters:
        box.roster(**spec)  # type: ignore[arg-type]
    received = received_rosters(box.engine, box.keyring, PERIOD)
    assert (received.complete[LJ].roster_id if LJ in received.complete else None) == complete
    got = {i.roster_id: i.reason for i in received.incomplete}
    assert set(got) == set(incomplete)
    for roster_id, reason in incomplete.items():
        assert got[roster_id].startswith(reason)


def test_a_complete_roster_keeps_what_the_matcher_needs(box: Inbox) -> None:
    box.roster("a", [3, 2])
    roster = received_rosters(box.engine, box.keyring, PERIOD).complete[LJ]
    assert [e.ref for e in roster.entries] == [f"a-{i}" for i in range(5)]
    assert roster.manifest.count == 5
    fact = roster.notices["a-1"]
    assert (fact.has_token, fact.sex, fact.birth_year_month) == (True, Sex.FEMALE, "2015-06")
    assert not roster.notices["a-0"].has_token


def test_answers_newest_per_notice(box: Inbox) -> None:
    def answer(outcome: MatchOutcome, at: datetime) -> None:
        found = outcome is not MatchOutcome.NOT_FOUND
        result = MatchResult("n-1", outcome, LedgerStatus.MIGRANT if found else None, "ref" if found else "")
        batch = MatchResultBatch(PERIOD, "a", 0, (result,))
        box.put(NB, "match_result", match_batch_to_wire(batch).SerializeToString(), at, recipient=LJ)

    answer(MatchOutcome.NOT_FOUND, T0)
    answer(MatchOutcome.MATCHED, T0 + timedelta(hours=2))
    answer(MatchOutcome.POSSIBLE, T0 + timedelta(hours=1))
    (result,) = received_answers(box.engine, box.keyring, PERIOD)[NB]
    assert result.outcome is MatchOutcome.MATCHED
    assert received_answers(box.engine, box.keyring, "2026Q3") == {}


def finding(n: int) -> Finding:
    return Finding(Code.MATCHED, Role.REGISTRATION, Side.BOTH, LJ, "500157", f"r{n}", f"n{n}", "x" * 300)


def test_findings_of_a_period_are_replaced_atomically(box: Inbox) -> None:
    with box.engine.begin() as conn:
        assert store.replace(conn, PERIOD, [finding(i) for i in range(2500)], now=T0) == 2500
        store.replace(conn, "2026Q3", [finding(0)], now=T0)
    with box.engine.begin() as conn:
        store.replace(conn, PERIOD, [finding(7)], now=T0)
    (only,) = store.load(box.engine, PERIOD)
    assert only.record_ref == "r7"
    assert len(only.detail) == store.MAX_DETAIL

    def failing_run() -> None:
        with box.engine.begin() as conn:
            store.replace(conn, PERIOD, [finding(8), finding(9)], now=T0)
            raise RuntimeError("the run failed half-way")

    with pytest.raises(RuntimeError):
        failing_run()
    assert [f.record_ref for f in store.load(box.engine, PERIOD)] == ["r7"]  # the previous run stands
    assert store.counts(box.engine, "2026Q3") == {("matched", LJ): 1}
