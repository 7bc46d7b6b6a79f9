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
(``unroutable``), never silently skipped. Records stream from the store a page at a time, still
sealed; nothing holds a whole roster in memory.

Step 2 for one page is :func:`gateway.exchange.roster_pages.build_page`. With ``workers`` (a
:class:`~gateway.exchange.roster_pages.NoticeWorkers` pool, ``[exchange] roster_workers``) a roster
of more than one batch is cut into keyset ranges of record ids, and its pages are read and built
by the workers and by this process, at most a few at a time, while this function signs the built
ones and queues them — in page order, in the same single transaction, with the same bytes as
without workers.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Engine, func, select

from gateway.domain.records import ChildKind
from gateway.errors import DataKeyMissing
from gateway.exchange import outbox
from gateway.exchange.envelope import seal
from gateway.exchange.purposes import Profiles, minimise
from gateway.exchange.roster_pages import BuiltPage, NoticeWorkers, PageJob, build_page
from gateway.exchange.tokens import pair_key
from gateway.matching import Encoder
from gateway.store.keyring import DataKeyring
from gateway.store.repository import ChildRepository, PageRange, SealedPage
from gateway.store.schema import inbox
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory
from gateway.wire import RosterManifest, manifest_to_wire

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


def _keys_for(keyring: DataKeyring, page: SealedPage) -> dict[str, bytes]:
    """The data keys a page's rows are sealed under, and no other (what goes with a page read here)."""
    keys: dict[str, bytes] = {}
    for key_id in set(page.key_ids):
        key = keyring.keys.get(key_id)
        if key is None:
            raise DataKeyMissing(f"key id {key_id}")
        keys[key_id] = key
    return keys


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
    workers: NoticeWorkers | None = None,
) -> SendSummary:
    """Queue this period's migrant notices for every registration county concerned (see module).

    ``workers``: build the pages of rosters of more than one batch in these worker processes
    (``None``: all in this process). The queued envelopes carry the same notices either way, and
    an error raised while building a page (a row that fails to open, say) is raised here as the
    same ``GatewayError``, with nothing of that roster queued.
    """
    notice_profile = profiles.get(NOTICE_PURPOSE)
    manifest_profile = profiles.get(MANIFEST_PURPOSE)
    own = directory.active(node_id, now)
    database_url = _shared_url(engine) if workers is not None else ""
    rosters: list[PeerRoster] = []
    unroutable: dict[str, int] = {}
    serving = directory.serving(now)
    for division in children.registration_divisions(period, kind=ChildKind.MIGRANT):
        if division == own.division:
            continue  # not a migrant of ours to report elsewhere
        peer = serving.get(division)
        migrant, size = ChildKind.MIGRANT, batch_size
        if peer is None:
            pages = children.sealed_pages(period, kind=migrant, registration_division=division, page_size=size)
            unroutable[division] = sum(len(page) for page in pages)
            continue
        key = pair_key(encryption_key, peer.encryption_key, own_id=node_id, peer_id=peer.node_id, period=period)
        encoder = Encoder(key)  # one per roster: it caches the keyed positions of each q-gram
        roster_id = str(uuid.uuid4())
        jobs: Iterator[PageJob]
        if workers is not None and database_url:
            # The builders read the pages themselves (a worker from the database, this process
            # through the store): this process only cuts the roster into keyset ranges.
            jobs = (
                PageJob(notice_profile, period, roster_id, index, page, dict(keyring.keys), key, database_url)
                for index, page in enumerate(
                    children.page_ranges(period, kind=migrant, registration_division=division, page_size=size)
                )
            )
        else:
            jobs = (
                PageJob(notice_profile, period, roster_id, index, page, _keys_for(keyring, page), key)
                for index, page in enumerate(
                    children.sealed_pages(period, kind=migrant, registration_division=division, page_size=size)
                )
            )

        digest = hashlib.sha256()
        count = batches = without_token = 0
        with engine.begin() as conn, closing(_built(jobs, encoder, children.read_page, workers)) as built:
            for page in built:
                digest.update(page.entries)  # the manifest digest covers exactly what is signed
                outgoing = seal(
                    sender=node_id, recipient=peer.node_id, profile=notice_profile, payload=page.payload,
                    signer=signer, now=now, lifetime=lifetime,
                )  # fmt: skip
                outbox.enqueue(conn, outgoing, keyring, now=now)
                count += page.notices
                without_token += page.without_token
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


def _built(
    jobs: Iterator[PageJob],
    encoder: Encoder,
    read: Callable[[PageRange], SealedPage],
    workers: NoticeWorkers | None,
) -> Generator[BuiltPage, None, None]:
    """The built pages of one roster, in order: with ``workers`` when the roster has more than one
    batch (a single batch is not worth starting or calling another process), else here alone."""
    first = next(jobs, None)
    if first is None:
        return
    second = next(jobs, None)
    if second is None or workers is None:
        for job in itertools.chain((first,) if second is None else (first, second), jobs):
            yield build_page(job, job.rows if isinstance(job.rows, SealedPage) else read(job.rows), encoder)
        return
    with closing(workers.map(itertools.chain((first, second), jobs), encoder, read)) as built:
        yield from built


def _shared_url(engine: Engine) -> str:
    """The URL other processes reach ``engine``'s database by (credentials included), or ``""``
    for a database private to this process (SQLite in memory)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:") or "memory" in str(url)):
        return ""
    return url.render_as_string(hide_password=False)


def received(engine: Engine) -> dict[tuple[str, str], int]:
    """Envelopes this node has accepted, per (sender, purpose) — counts only, no content."""
    c = inbox.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.sender, c.purpose, func.count()).group_by(c.sender, c.purpose))
        return {(sender, purpose): int(n) for sender, purpose, n in rows}
