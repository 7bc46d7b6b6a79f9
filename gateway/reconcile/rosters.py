"""Reading back what this node received for a period: rosters of notices, and answers to its own.

**Rosters** (this node as registration place). A residence node sends a roster as batches of
``migrant_notice`` envelopes closed by a ``roster_manifest`` (``gateway.exchange.rosters``). The
inbox holds them as the receiver verified them (each envelope sealed at rest with the data key).
:func:`received_rosters` groups them by (sender, roster id) for one period and decides, per roster:

* **complete** — the manifest arrived, every batch index ``0 … batches-1`` arrived exactly once, the
  number of notices is the manifest's count, and the SHA-256 over the notices *as signed* (for each
  notice in batch order: 4-byte big-endian length ‖ deterministic serialisation — the sender's
  construction) is the manifest's ``entries_sha256``; every notice converts
  (``gateway.wire.notice_from_wire``) and no notice reference repeats;
* **incomplete** — anything else, with a reason made of counts and codes.

The **latest complete roster of each sender counts** (latest by the signed creation time of the
roster's newest envelope); incomplete rosters newer than it (or all of a sender's, if none completed) are reported, and
older ones are superseded and ignored. Memory: two passes over the inbox. The first decrypts each
envelope to read its period, roster id and batch index and keeps only those; the second re-reads the
chosen roster's batches in order and keeps, per notice, what the matcher needs (an
:class:`~gateway.matching.Entry` and a :class:`~gateway.reconcile.findings.NoticeFact`) — never an
envelope, so a county receiving 100,000 notices holds a few tens of megabytes.

**Answers** (this node as residence place): :func:`received_answers` reads the ``match_result``
batches of a period, keeping for each (registration node, notice reference) the answer of the
newest envelope — a registration node that reconciles again answers every notice again.

Envelopes are parsed only after opening the sealed copy the receiver stored, i.e. after every
check of ``gateway.exchange.receiver`` passed; nothing here trusts anything else.
"""

from __future__ import annotations

import hashlib
import struct
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from gateway.errors import InputError, StorageError
from gateway.exchange.envelope import parse_envelope
from gateway.exchange.purposes import payload_class
from gateway.matching import Entry
from gateway.reconcile.findings import NoticeFact
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import inbox
from gateway.wire import (
    MatchResult,
    RosterManifest,
    manifest_from_wire,
    match_batch_from_wire,
    notice_from_wire,
)

NOTICE_PURPOSE = "migrant_notice"
MANIFEST_PURPOSE = "roster_manifest"
RESULT_PURPOSE = "match_result"
NOTICE_TYPE = "tongban.v1.MigrantNoticeBatch"
MANIFEST_TYPE = "tongban.v1.RosterManifest"
RESULT_TYPE = "tongban.v1.MatchResultBatch"
MAX_REF = 64  # reconcile_findings.peer_ref
_PAGE = 32  # inbox rows per query (each holds a whole envelope)
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Opened:
    message_id: str
    sender: str
    created_at: datetime
    payload: Any  # a tongban.v1 message of the header's payload type (parsed, checked at receipt)


def _context(message_id: str) -> bytes:
    return b"inbox\0" + message_id.encode("ascii")


def _open(row: Any, keyring: DataKeyring, payload_type: str) -> _Opened:
    data = keyring.open(Sealed(row.key_id, bytes(row.envelope_sealed)), context=_context(row.message_id))
    unverified = parse_envelope(data)  # verified when it was received; parsed again, not trusted anew
    header = unverified.header
    if header.payload_type != payload_type or header.sender != row.sender:
        raise StorageError(f"inbox message {row.message_id} does not hold what its row says")
    payload = payload_class(payload_type)()
    payload.ParseFromString(unverified.envelope.payload)
    return _Opened(row.message_id, row.sender, unverified.created_at, payload)


def _inbox(
    engine: Engine, keyring: DataKeyring, purpose: str, payload_type: str, ids: Sequence[str] | None = None
) -> Iterator[_Opened]:
    """Open the inbox envelopes of ``purpose`` (or exactly ``ids``, in that order), page by page."""
    c = inbox.c
    columns = (c.message_id, c.sender, c.key_id, c.envelope_sealed)
    if ids is not None:
        for start in range(0, len(ids), _PAGE):
            chunk = list(ids[start : start + _PAGE])
            with engine.connect() as conn:
                by_id = {r.message_id: r for r in conn.execute(select(*columns).where(c.message_id.in_(chunk)))}
            for message_id in chunk:
                if message_id not in by_id:
                    raise StorageError(f"inbox message {message_id} disappeared during reconciliation")
                yield _open(by_id[message_id], keyring, payload_type)
        return
    last = ""
    while True:
        query = select(*columns).where(c.purpose == purpose, c.message_id > last).order_by(c.message_id).limit(_PAGE)
        with engine.connect() as conn:
            rows = list(conn.execute(query))
        if not rows:
            return
        for row in rows:
            yield _open(row, keyring, payload_type)
        last = rows[-1].message_id


# --- rosters ---------------------------------------------------------------------------------------


@dataclass
class _Roster:
    sender: str
    roster_id: str
    manifest: RosterManifest | None = None
    manifest_at: datetime | None = None
    latest_at: datetime = _NEVER  # newest envelope of the roster
    batches: dict[int, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))  # index -> (id, n)

    def problem(self) -> str:
        """Why this roster is not complete, judged without its content ("" if it may be)."""
        received = sum(len(v) for v in self.batches.values())
        if self.manifest is None:
            return f"no manifest; {received} batch(es) received"
        expected = self.manifest.batches
        missing = sum(1 for i in range(expected) if i not in self.batches)
        if missing:
            return f"{missing} of {expected} batch(es) missing"
        if any(len(v) > 1 for v in self.batches.values()) or len(self.batches) != expected:
            return f"batches received {received}, manifest says {expected}"
        count = sum(n for v in self.batches.values() for _, n in v)
        if count != self.manifest.count:
            return f"{count} notice(s) received, manifest says {self.manifest.count}"
        return ""


@dataclass(frozen=True)
class Roster:
    """A complete roster, loaded: the matcher's entries (ref = notice reference) and notice facts."""

    sender: str
    roster_id: str
    manifest: RosterManifest
    entries: tuple[Entry, ...] = field(repr=False)
    notices: dict[str, NoticeFact] = field(repr=False)


@dataclass(frozen=True)
class Incomplete:
    sender: str
    roster_id: str
    reason: str  # counts and codes only


@dataclass(frozen=True)
class Received:
    """What arrived for a period: per sender its latest complete roster, and the incomplete ones."""

    period: str
    complete: dict[str, Roster]
    incomplete: tuple[Incomplete, ...]


def _scan(engine: Engine, keyring: DataKeyring, period: str) -> dict[tuple[str, str], _Roster]:
    """Pass 1: what each envelope of the period belongs to (no notice is kept)."""
    rosters: dict[tuple[str, str], _Roster] = {}

    def roster(sender: str, roster_id: str) -> _Roster:
        return rosters.setdefault((sender, roster_id), _Roster(sender, roster_id))

    for opened in _inbox(engine, keyring, MANIFEST_PURPOSE, MANIFEST_TYPE):
        try:
            manifest = manifest_from_wire(opened.payload)
        except InputError:
            continue  # not ours to judge here: a manifest the receiver accepted but that cannot close a roster
        if manifest.period != period or manifest.purpose != NOTICE_PURPOSE:
            continue
        r = roster(opened.sender, manifest.roster_id)
        r.latest_at = max(r.latest_at, opened.created_at)
        # A repeated manifest for one roster id (a sender bug): the newest one is the one judged.
        if r.manifest_at is None or opened.created_at > r.manifest_at:
            r.manifest, r.manifest_at = manifest, opened.created_at
    for opened in _inbox(engine, keyring, NOTICE_PURPOSE, NOTICE_TYPE):
        batch = opened.payload
        if batch.period != period or not batch.roster_id:
            continue
        r = roster(opened.sender, batch.roster_id)
        r.latest_at = max(r.latest_at, opened.created_at)
        r.batches[int(batch.batch_index)].append((opened.message_id, len(batch.notices)))
    return rosters


def _load(engine: Engine, keyring: DataKeyring, r: _Roster) -> Roster | str:
    """Pass 2: read the roster's batches in order; the loaded roster, or why it is not complete."""
    assert r.manifest is not None  # only called after problem() found nothing
    ids = [r.batches[i][0][0] for i in range(r.manifest.batches)]
    digest = hashlib.sha256()
    entries: list[Entry] = []
    notices: dict[str, NoticeFact] = {}
    for index, opened in enumerate(_inbox(engine, keyring, NOTICE_PURPOSE, NOTICE_TYPE, ids)):
        for position, wire in enumerate(opened.payload.notices):
            data = wire.SerializeToString(deterministic=True)  # the sender's construction (rosters.py)
            digest.update(struct.pack(">I", len(data)) + data)
            try:
                notice = notice_from_wire(wire, f"batch {index} notice {position}")
            except InputError as exc:
                return f"invalid notice: {exc.detail}"
            if notice.notice_ref in notices:
                return f"batch {index} notice {position}: notice reference repeated"
            if len(notice.notice_ref) > MAX_REF:
                return f"batch {index} notice {position}: notice reference longer than {MAX_REF}"
            ym = notice.birth_year_month
            notices[notice.notice_ref] = NoticeFact(notice.notice_ref, bool(notice.id_token), notice.sex, ym)
            entries.append(
                Entry(
                    ref=notice.notice_ref,
                    id_token=notice.id_token,
                    name_encoding=notice.name_encoding,
                    birth_encoding=notice.birth_encoding,
                    sex=notice.sex,
                    birth_year_month=ym,
                )
            )
    if digest.digest() != r.manifest.entries_sha256:
        return "entries_sha256 differs from the manifest"
    return Roster(r.sender, r.roster_id, r.manifest, tuple(entries), notices)


def received_rosters(engine: Engine, keyring: DataKeyring, period: str) -> Received:
    """The rosters received for ``period`` (see the module docstring). ``StorageError`` /
    ``DataKeyMissing`` / ``DecryptionFailed`` if the inbox cannot be read as stored."""
    by_sender: dict[str, list[_Roster]] = defaultdict(list)
    for r in _scan(engine, keyring, period).values():
        by_sender[r.sender].append(r)
    complete: dict[str, Roster] = {}
    incomplete: list[Incomplete] = []
    for sender in sorted(by_sender):
        # Newest first, by the signed creation time of the roster's newest envelope.
        candidates = sorted(by_sender[sender], key=lambda r: (r.latest_at, r.roster_id), reverse=True)
        for r in candidates:
            reason = r.problem()
            if not reason:
                loaded = _load(engine, keyring, r)
                if isinstance(loaded, Roster):
                    complete[sender] = loaded
                    break  # older rosters are superseded
                reason = loaded
            incomplete.append(Incomplete(sender, r.roster_id, reason))
    return Received(period, complete, tuple(incomplete))


# --- answers ---------------------------------------------------------------------------------------


def received_answers(engine: Engine, keyring: DataKeyring, period: str) -> dict[str, list[MatchResult]]:
    """Per registration node, the newest answer to each of this node's notices for ``period``."""
    newest: dict[tuple[str, str], tuple[datetime, int, MatchResult]] = {}
    for opened in _inbox(engine, keyring, RESULT_PURPOSE, RESULT_TYPE):
        if opened.payload.period != period:
            continue
        try:
            batch = match_batch_from_wire(opened.payload)
        except InputError:
            continue  # accepted by the profile but not a valid answer: nothing to act on
        for result in batch.results:
            key = (opened.sender, result.notice_ref)
            rank = (opened.created_at, batch.batch_index)
            if key not in newest or rank >= newest[key][:2]:
                newest[key] = (*rank, result)
    out: dict[str, list[MatchResult]] = defaultdict(list)
    for (sender, _), (_, _, result) in sorted(newest.items()):
        out[sender].append(result)
    return dict(out)
