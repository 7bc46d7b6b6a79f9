"""Sending a monitoring period's migrant roster to the registration counties concerned (SPEC §5).

For each registration county that the residence node's migrant children come from, the node:

1. finds that county's node in the verified directory (routing by the *current* registration
   division of the record — never by the ID number's prefix);
2. derives the pair key for (this node, that node, period) from the two nodes' directory
   encryption keys, and turns each child record into a minimised notice: pairwise ID token, keyed
   Bloom-filter encodings of the name and the birth date (``gateway.matching``: only the pair can
   compare them), birth year-month, sex, both division codes, living-since date, key-care yes/no —
   no name, no ID number;
3. packs the notices into batches of ``batch_size`` (one signed envelope each, so signature cost
   does not bound throughput), then a signed roster manifest (count, batches, SHA-256 over the
   serialised notices in order) so the receiver knows when it holds the whole roster;
4. queues every envelope of that roster in the outbox **in one transaction**: a roster is either
   wholly accepted for delivery or not at all. The delivery worker does the rest.

A registration county with no active node in the directory is reported in the summary
(``unroutable``), never silently skipped. Records stream from the store in batches; nothing holds
a whole roster in memory.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Engine, func, select

from gateway.domain.records import ChildKind, RecordView
from gateway.errors import InvalidIdNumber
from gateway.exchange import outbox
from gateway.exchange.envelope import seal
from gateway.exchange.purposes import Profiles, minimise
from gateway.exchange.tokens import id_token, pair_key
from gateway.matching import Encoder
from gateway.store.keyring import DataKeyring
from gateway.store.repository import ChildRepository
from gateway.store.schema import inbox
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory
from gateway.wire import (
    NoticeBatch,
    RosterManifest,
    manifest_to_wire,
    notice_batch_to_wire,
    notice_from_record,
)

NOTICE_PURPOSE = "migrant_notice"
MANIFEST_PURPOSE = "roster_manifest"


@dataclass(frozen=True)
class PeerRoster:
    peer: str
    registration_division: str
    roster_id: str
    notices: int
    batches: int
    envelopes: int  # batches + 1 manifest
    without_token: int  # children without a valid ID number: they travel for the fuzzy stage


@dataclass(frozen=True)
class SendSummary:
    period: str
    rosters: tuple[PeerRoster, ...]
    unroutable: dict[str, int] = field(default_factory=dict)  # registration division -> children

    @property
    def notices(self) -> int:
        return sum(r.notices for r in self.rosters)

    @property
    def envelopes(self) -> int:
        return sum(r.envelopes for r in self.rosters)


def _batches(records: Iterator[RecordView], size: int) -> Iterator[list[RecordView]]:
    batch: list[RecordView] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def send_migrant_roster(
    *,
    node_id: str,
    period: str,
    children: ChildRepository,
    engine: Engine,
    keyring: DataKeyring,
    directory: Directory,
    profiles: Profiles,
    signer: Signer,
    encryption_key: x25519.X25519PrivateKey,
    now: datetime,
    batch_size: int = 1000,
    lifetime: timedelta = timedelta(days=7),
) -> SendSummary:
    """Queue this period's migrant notices for every registration county concerned (see module)."""
    notice_profile = profiles.get(NOTICE_PURPOSE)
    manifest_profile = profiles.get(MANIFEST_PURPOSE)
    own = directory.active(node_id, now)
    rosters: list[PeerRoster] = []
    unroutable: dict[str, int] = {}
    serving = directory.serving(now)
    for division in children.registration_divisions(period, kind=ChildKind.MIGRANT):
        if division == own.division:
            continue  # not a migrant of ours to report elsewhere
        peer = serving.get(division)
        records = children.iter_views(period, kind=ChildKind.MIGRANT, registration_division=division)
        if peer is None:
            unroutable[division] = sum(1 for _ in records)
            continue
        key = pair_key(encryption_key, peer.encryption_key, own_id=node_id, peer_id=peer.node_id, period=period)
        encoder = Encoder(key)  # one per roster: it caches the keyed positions of each q-gram
        roster_id = str(uuid.uuid4())
        digest = hashlib.sha256()
        count = batches = without_token = 0
        with engine.begin() as conn:
            for batch in _batches(records, batch_size):
                notices = []
                for view in batch:
                    # Stored numbers were validated at intake; a bad one gets no token, never a weak one.
                    token = b""
                    if view.id_number:
                        try:
                            token = id_token(key, view.id_number)
                        except InvalidIdNumber:
                            token = b""
                    without_token += not token
                    notices.append(
                        notice_from_record(
                            view,
                            notice_ref=view.record_id,
                            id_token=token,
                            name_encoding=encoder.name(view.name),
                            birth_encoding=encoder.birth(view.birth_date),
                        )
                    )
                wire = minimise(
                    notice_profile, notice_batch_to_wire(NoticeBatch(period, roster_id, batches, tuple(notices)))
                )
                for entry in wire.notices:  # the manifest digest covers exactly what is signed
                    data = entry.SerializeToString(deterministic=True)
                    digest.update(struct.pack(">I", len(data)) + data)
                outgoing = seal(
                    sender=node_id, recipient=peer.node_id, profile=notice_profile,
                    payload=wire.SerializeToString(deterministic=True), signer=signer, now=now, lifetime=lifetime,
                )  # fmt: skip
                outbox.enqueue(conn, outgoing, keyring, now=now)
                count += len(notices)
                batches += 1
            manifest = RosterManifest(period, roster_id, count, batches, digest.digest(), NOTICE_PURPOSE)
            payload = minimise(manifest_profile, manifest_to_wire(manifest)).SerializeToString(deterministic=True)
            outgoing = seal(
                sender=node_id, recipient=peer.node_id, profile=manifest_profile, payload=payload,
                signer=signer, now=now, lifetime=lifetime,
            )  # fmt: skip
            outbox.enqueue(conn, outgoing, keyring, now=now)
        rosters.append(PeerRoster(peer.node_id, division, roster_id, count, batches, batches + 1, without_token))
    return SendSummary(period, tuple(rosters), unroutable)


def received(engine: Engine) -> dict[tuple[str, str], int]:
    """Envelopes this node has accepted, per (sender, purpose) — counts only, no content."""
    c = inbox.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.sender, c.purpose, func.count()).group_by(c.sender, c.purpose))
        return {(sender, purpose): int(n) for sender, purpose, n in rows}
