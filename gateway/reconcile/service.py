"""Running a period's reconciliation on one node, and reading its findings back for a report.

:func:`run` does, for one monitoring period:

1. **As registration place** — reads the rosters received (:func:`~gateway.reconcile.rosters.received_rosters`);
   for each sender with a complete roster, derives the pair key (this node's encryption key, the
   sender's directory key, the period), encodes this node's whole ledger under it (``iter_views``,
   every kind; an ID token for each valid ID number, the keyed name and birth encodings) and runs
   :func:`gateway.matching.match` with the ledger on the left and the sender's notices on the right.
   Pair keys differ per sender, so every sender is matched on its own. A record imported with the
   household register as a **single birth** (``single_birth``, ``tongban roster import
   --household-register``) also gets ``Entry.single_birth`` (and then every record its name's edit
   masks), so a notice whose name is a one-character edit of it, born the same day, may be matched
   automatically (:mod:`gateway.matching.matcher`, "Single births"); that knowledge never leaves
   this node.
2. **As residence place** — reads the answers received for its own notices
   (:func:`~gateway.reconcile.rosters.received_answers`).
3. Derives the findings and the replies (:func:`gateway.reconcile.findings.reconcile`, pure).
4. In **one transaction**: replaces the period's findings, and queues the replies in the outbox — one
   signed ``match_result`` envelope per batch of answers, like a roster. Either both happen or neither.

The opaque ``registration_ref`` of a reply is ``HMAC(field_key(pair key, "registration-ref"),
record id)``, shortened: the sender cannot read the record id out of it, a third node cannot link it
across pairs or periods, and this node can recompute it from its ledger.

:func:`report_rows` joins the stored findings with the node's own ledger for the staff's report
(record id, source row and — for that report only — the child's name). Nothing here logs a
personal value: the module logs codes and counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import Connection, select

from gateway import audit
from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.domain.records import RecordView
from gateway.errors import InputError, InvalidIdNumber, TrustError
from gateway.exchange import outbox
from gateway.exchange.envelope import seal
from gateway.exchange.purposes import Profiles, minimise
from gateway.exchange.tokens import HmacSha256, IdTokens, field_key, pair_key
from gateway.matching import Encoder, Entry, Thresholds, match
from gateway.node import Node
from gateway.reconcile import store
from gateway.reconcile.findings import (
    Answers,
    Code,
    Finding,
    LedgerFact,
    PeerMatch,
    Reconciliation,
    Reply,
    RosterProblem,
    label,
    reconcile,
)
from gateway.reconcile.rosters import RESULT_PURPOSE, received_answers, received_rosters
from gateway.store.schema import child_records
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory
from gateway.wire import MatchResultBatch, match_batch_to_wire

log = logging.getLogger(__name__)

REPLY_BATCH = 1000
REPLY_LIFETIME = timedelta(days=7)
_REF_LABEL = "registration-ref"
_REF_BYTES = 16
REPORT_PURPOSE = "reconciliation_report"  # the audit trail's name for the staff's report


@dataclass(frozen=True)
class RunSummary:
    """What a run did: counts only."""

    period: str
    findings: dict[tuple[Code, str], int]  # (code, peer) -> count
    rosters_matched: dict[str, int]  # sender -> notices matched against the ledger
    rosters_incomplete: int
    answers_read: dict[str, int]  # registration node -> answers read
    replies_queued: dict[str, int] = field(default_factory=dict)  # sender -> envelopes queued

    def by_code(self) -> dict[Code, int]:
        out: Counter[Code] = Counter()
        for (code, _), n in self.findings.items():
            out[code] += n
        return dict(out)


def registration_refs(key: bytes) -> Callable[[str], str]:
    """The opaque reference of each ledger record in replies to one sender (see the module
    docstring), under that pair's key: the subkey and its HMAC states prepared once."""
    mac = HmacSha256(field_key(key, _REF_LABEL))

    def ref(record_id: str) -> str:
        return mac.digest(record_id.encode("utf-8"))[:_REF_BYTES].hex()

    return ref


def _year_month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _valid_id(view: RecordView) -> bool:
    # Stored numbers were validated at intake; a number that no longer parses counts as missing.
    if not view.id_number:
        return False
    try:
        idnumber.parse(view.id_number)
    except InvalidIdNumber:
        return False
    return True


def _token_or_empty(tokens: IdTokens, view: RecordView) -> bytes:
    if not view.id_number:
        return b""
    try:
        return tokens.of(view.id_number)
    except InvalidIdNumber:
        return b""


def _fact(view: RecordView) -> LedgerFact:
    return LedgerFact(
        record_id=view.record_id,
        kind=view.kind,
        registration_division=view.registration_division,
        residence_division=view.residence_division,
        valid_id=_valid_id(view),
        sex=view.sex,
        birth_year_month=_year_month(view.birth_date),
    )


def _ledger_entry(encoder: Encoder, tokens: IdTokens, view: RecordView, *, edits: bool) -> Entry:
    # A record the household register showed to be a single birth (stored at import) is marked so;
    # with ``edits`` it also carries its name's edit masks. Neither field leaves this node.
    return Entry(
        ref=view.record_id,
        id_token=_token_or_empty(tokens, view),
        name_encoding=encoder.name(view.name),
        birth_encoding=encoder.birth(view.birth_date),
        sex=view.sex,
        birth_year_month=_year_month(view.birth_date),
        single_birth=bool(view.single_birth),
        name_edits=encoder.name_edits(view.name) if edits else b"",
    )


def _ledger_entries(node: Node, period: str, key: bytes) -> list[Entry]:
    """This node's whole ledger for ``period``, encoded under one pair key.

    Once any record is a single birth (imported with the household register), every record gives
    its name's edit masks, as ``tongban match --household-register`` does: the matcher judges how
    common what an edit keeps (王子□) is over the whole ledger, its guard against strangers, and
    counting single births alone would make common patterns look rare. A ledger without single
    births is encoded exactly as before."""
    encoder, tokens = Encoder(key), IdTokens(key)
    views = list(node.children.iter_views(period))
    edits = any(view.single_birth for view in views)
    return [_ledger_entry(encoder, tokens, view, edits=edits) for view in views]


def _division_of(directory: Directory, node_id: str) -> str:
    try:
        return directory.entry(node_id).division
    except TrustError:
        return ""


def compute(
    *,
    node: Node,
    period: str,
    directory: Directory,
    encryption_key: x25519.X25519PrivateKey,
    thresholds: Thresholds,
    now: datetime,
) -> tuple[Reconciliation, RunSummary]:
    """Steps 1–3 of :func:`run` (reads only): the reconciliation and its summary."""
    own_id = node.config.node_id
    ledger = [_fact(view) for view in node.children.iter_views(period)]
    received = received_rosters(node.engine, node.keyring, period)
    matches: list[PeerMatch] = []
    problems = [
        RosterProblem(i.sender, _division_of(directory, i.sender), i.roster_id, i.reason) for i in received.incomplete
    ]
    matched_counts: dict[str, int] = {}
    for sender, roster in sorted(received.complete.items()):
        try:
            peer = directory.active(sender, now)
        except TrustError:
            problems.append(
                RosterProblem(sender, _division_of(directory, sender), roster.roster_id, "sender not active")
            )
            continue
        key = pair_key(encryption_key, peer.encryption_key, own_id=own_id, peer_id=sender, period=period)
        links = match(_ledger_entries(node, period, key), roster.entries, thresholds)
        matches.append(
            PeerMatch(
                peer=sender,
                peer_division=peer.division,
                roster_id=roster.roster_id,
                links=links,
                notices=roster.notices,
                registration_ref=registration_refs(key),
            )
        )
        matched_counts[sender] = len(roster.entries)
        log.info("reconcile: roster of %s matched: %d notices, %d links", sender, len(roster.entries), len(links.links))
    answers = [
        Answers(peer, _division_of(directory, peer), results)
        for peer, results in sorted(received_answers(node.engine, node.keyring, period).items())
    ]
    result = reconcile(
        own_division=node.config.division,
        ledger=ledger,
        matches=matches,
        incomplete=problems,
        answers=answers,
        node_for_division={d: e.node_id for d, e in directory.serving(now).items()},
        thresholds=thresholds,
    )
    counts: Counter[tuple[Code, str]] = Counter((f.code, f.peer) for f in result.findings)
    summary = RunSummary(
        period=period,
        findings=dict(counts),
        rosters_matched=matched_counts,
        rosters_incomplete=len(problems),
        answers_read={a.peer: len(a.results) for a in answers},
    )
    return result, summary


def _queue_replies(
    conn: Connection, node: Node, period: str, reply: Reply, profiles: Profiles, signer: Signer, now: datetime
) -> int:
    profile = profiles.get(RESULT_PURPOSE)
    envelopes = 0
    for index, start in enumerate(range(0, max(len(reply.results), 1), REPLY_BATCH)):
        batch = MatchResultBatch(period, reply.roster_id, index, reply.results[start : start + REPLY_BATCH])
        payload = minimise(profile, match_batch_to_wire(batch)).SerializeToString(deterministic=True)
        outgoing = seal(
            sender=node.config.node_id, recipient=reply.peer, profile=profile, payload=payload,
            signer=signer, now=now, lifetime=REPLY_LIFETIME,
        )  # fmt: skip
        outbox.enqueue(conn, outgoing, node.keyring, now=now)
        envelopes += 1
    return envelopes


def run(
    *,
    node: Node,
    period: str,
    directory: Directory,
    encryption_key: x25519.X25519PrivateKey,
    signer: Signer,
    profiles: Profiles,
    thresholds: Thresholds,
    now: datetime,
    send: bool = True,
) -> RunSummary:
    """Reconcile ``period`` on ``node`` (see the module docstring); ``send=False`` stores the
    findings without queueing replies. Raises ``TrustError`` without a usable directory,
    ``StorageError`` / ``CryptoError`` if the store cannot be read or written."""
    directory.check_fresh(now)
    result, summary = compute(
        node=node, period=period, directory=directory, encryption_key=encryption_key, thresholds=thresholds, now=now
    )
    queued: dict[str, int] = {}
    with node.engine.begin() as conn:
        stored = store.replace(conn, period, result.findings, now=now)
        if send:
            for reply in result.replies:
                queued[reply.peer] = _queue_replies(conn, node, period, reply, profiles, signer, now)
    log.info(
        "reconcile: period %s: %d findings stored, %d reply envelopes queued",
        period,
        stored,
        sum(queued.values()),
    )
    return RunSummary(
        period=summary.period,
        findings=summary.findings,
        rosters_matched=summary.rosters_matched,
        rosters_incomplete=summary.rosters_incomplete,
        answers_read=summary.answers_read,
        replies_queued=queued,
    )


# --- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRow:
    """One line of the staff's report. ``name`` is the child's name from this node's own ledger:
    it goes into the report file only, never into a log or the terminal."""

    finding: Finding = field(repr=False)
    label_zh: str
    label_en: str
    peer_county: str
    source: str = ""
    source_row: int | None = None
    name: str = field(default="", repr=False)


def _county(table: DivisionTable, code: str) -> str:
    if not code:
        return ""
    try:
        return table.lookup(code).name
    except InputError:
        return code


def report_rows(node: Node, period: str, *, with_names: bool = True) -> Iterator[ReportRow]:
    """The stored findings of ``period`` with labels, county names and the local record's provenance."""
    findings = list(store.load(node.engine, period))
    wanted = {f.record_ref for f in findings if f.record_ref}
    provenance: dict[str, tuple[str, int | None]] = {}
    c = child_records.c
    ids = sorted(wanted)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with node.engine.connect() as conn:
            query = select(c.record_id, c.source, c.source_row).where(c.period == period, c.record_id.in_(chunk))
            for r in conn.execute(query):
                provenance[r.record_id] = (r.source, r.source_row)
    names: Mapping[str, str] = {}
    if with_names and wanted:
        names = {v.record_id: v.name for v in node.children.iter_views(period) if v.record_id in wanted}
    table = DivisionTable.load_default()
    for f in findings:
        county = _county(table, f.peer_division)
        zh, en = label(f.code, f.role, county)
        source, row = provenance.get(f.record_ref, ("", None))
        yield ReportRow(f, zh, en, county, source, row, names.get(f.record_ref, ""))


def audit_report(node: Node, period: str, *, rows: int, fmt: str) -> None:
    """Record in the audit trail that a report with names from the ledger was written (a read of
    personal data by the node's staff): references and counts, never a value."""
    with node.engine.begin() as conn:
        audit.append(
            conn,
            actor=node.config.node_id,
            action=audit.Action.READ,
            purpose=REPORT_PURPOSE,
            reference=f"reconcile/{period}",
            detail=f"report format={fmt} findings={rows}",
        )
