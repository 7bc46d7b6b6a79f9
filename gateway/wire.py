"""The one converter between wire (protobuf, ``tongban.v1``) and domain types.

Nothing else in the code base builds or reads protobuf messages field by field: servicers and
clients call these functions, and ``tests/test_wire.py`` round-trips every message through them.
Conversions from the wire validate: a wire message that cannot become a valid domain value raises
an :class:`~gateway.errors.InputError` (never a half-filled domain object).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum

from tongban.v1 import common_pb2, custody_pb2, exchange_pb2, records_pb2

from gateway.custody.events import SignedEvent
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import (
    ChildKind,
    ChildRecord,
    Disability,
    DisabilityCategory,
    Guardian,
    GuardianshipSituation,
    KeyCareFlag,
    ParentSituation,
    ParentStatus,
    Provenance,
    RecordView,
    Sex,
)
from gateway.errors import CustodyEventMalformed, InputError, InvalidRecord

WIRE_VERSION = "tongban.v1"


@dataclass(frozen=True)
class NodeDescription:
    """What a node says about itself (no personal data)."""

    node_id: str
    division_code: str
    division_name: str
    software_version: str
    wire_version: str = WIRE_VERSION

    @property
    def province_code(self) -> str:
        return self.division_code[:2]


def node_info_to_wire(d: NodeDescription) -> common_pb2.NodeInfo:
    return common_pb2.NodeInfo(
        node_id=d.node_id,
        division_code=d.division_code,
        province_code=d.province_code,
        division_name=d.division_name,
        software_version=d.software_version,
        wire_version=d.wire_version,
    )


def node_info_from_wire(m: common_pb2.NodeInfo) -> NodeDescription:
    if len(m.division_code) != 6 or not m.division_code.isdigit():
        raise InputError("NodeInfo.division_code must be six digits")
    if m.province_code != m.division_code[:2]:
        raise InputError("NodeInfo.province_code contradicts division_code")
    return NodeDescription(
        node_id=m.node_id,
        division_code=m.division_code,
        division_name=m.division_name,
        software_version=m.software_version,
        wire_version=m.wire_version,
    )


# --- child records (county-facing API only; never sent node to node) ------------------------------

_SEX_TO_WIRE = {Sex.MALE: records_pb2.SEX_MALE, Sex.FEMALE: records_pb2.SEX_FEMALE}
_SEX_FROM_WIRE = {v: k for k, v in _SEX_TO_WIRE.items()}
_KIND_TO_WIRE = {
    ChildKind.MIGRANT: records_pb2.CHILD_KIND_MIGRANT,
    ChildKind.LEFT_BEHIND: records_pb2.CHILD_KIND_LEFT_BEHIND,
    ChildKind.NEITHER: records_pb2.CHILD_KIND_NEITHER,
}
_KIND_FROM_WIRE = {v: k for k, v in _KIND_TO_WIRE.items()}


def _date_to_wire(d: date | None) -> records_pb2.Date | None:
    return None if d is None else records_pb2.Date(year=d.year, month=d.month, day=d.day)


def _date_from_wire(m: records_pb2.Date, field_name: str) -> date:
    try:
        return date(m.year, m.month, m.day)
    except ValueError:
        raise InvalidRecord(f"{field_name} is not a valid date") from None


def _optional_date(parent: object, name: str) -> date | None:
    has = getattr(parent, "HasField")  # noqa: B009 - protobuf's generic presence test
    return _date_from_wire(getattr(parent, name), name) if has(name) else None


def _parent_to_wire(p: ParentStatus) -> records_pb2.ParentStatus:
    return records_pb2.ParentStatus(situation=p.situation.value, since=_date_to_wire(p.since))


def _parent_from_wire(m: records_pb2.ParentStatus, which: str) -> ParentStatus:
    try:
        situation = ParentSituation(m.situation)
    except ValueError:
        raise InvalidRecord(f"{which}.situation is not a known code") from None
    return ParentStatus(situation, _optional_date(m, "since"))


def record_to_wire(r: ChildRecord) -> records_pb2.ChildRecord:
    m = records_pb2.ChildRecord(
        record_id=r.record_id,
        id_number=r.id_number or "",
        name=r.name,
        sex=_SEX_TO_WIRE[r.sex],
        birth_date=_date_to_wire(r.birth_date),
        registration_division=r.registration_division,
        residence_division=r.residence_division,
        living_since=_date_to_wire(r.living_since),
        guardianship=r.guardianship.value,
        father=_parent_to_wire(r.father),
        mother=_parent_to_wire(r.mother),
        kind=_KIND_TO_WIRE[r.kind],
        provenance=records_pb2.Provenance(
            source=r.provenance.source,
            imported_at_ms=int(r.provenance.imported_at.timestamp() * 1000),
            node_id=r.provenance.node_id,
            source_row=r.provenance.source_row,
        ),
        key_care=sorted(f.value for f in r.key_care),
    )
    if r.guardian is not None:
        m.guardian.CopyFrom(
            records_pb2.Guardian(name=r.guardian.name, relation=r.guardian.relation, phone=r.guardian.phone or "")
        )
    if r.disability is not None:
        m.disability.CopyFrom(records_pb2.Disability(category=int(r.disability.category), level=r.disability.level))
    return m


def record_from_wire(m: records_pb2.ChildRecord) -> ChildRecord:
    """Convert and validate. Raises :class:`InvalidRecord` naming the field (never its value)."""
    if m.sex not in _SEX_FROM_WIRE:
        raise InvalidRecord("sex is unspecified")
    if m.kind not in _KIND_FROM_WIRE:
        raise InvalidRecord("kind is unspecified")
    if not m.HasField("birth_date"):
        raise InvalidRecord("birth_date is missing")
    try:
        guardianship = GuardianshipSituation(m.guardianship)
        key_care = frozenset(KeyCareFlag(f) for f in m.key_care)
    except ValueError:
        raise InvalidRecord("guardianship or key_care holds an unknown code") from None
    disability = None
    if m.HasField("disability"):
        try:
            disability = Disability(DisabilityCategory(m.disability.category), m.disability.level)
        except ValueError:
            raise InvalidRecord("disability.category is not 1-7") from None
    p = m.provenance
    return ChildRecord(
        record_id=m.record_id,
        id_number=m.id_number or None,
        name=m.name,
        sex=_SEX_FROM_WIRE[m.sex],
        birth_date=_date_from_wire(m.birth_date, "birth_date"),
        registration_division=m.registration_division,
        residence_division=m.residence_division,
        living_since=_optional_date(m, "living_since"),
        guardianship=guardianship,
        father=_parent_from_wire(m.father, "father"),
        mother=_parent_from_wire(m.mother, "mother"),
        kind=_KIND_FROM_WIRE[m.kind],
        provenance=Provenance(
            source=p.source,
            imported_at=datetime.fromtimestamp(p.imported_at_ms / 1000, tz=UTC),
            node_id=p.node_id,
            source_row=p.source_row if p.HasField("source_row") else None,
        ),
        guardian=Guardian(m.guardian.name, m.guardian.relation, m.guardian.phone or None)
        if m.HasField("guardian")
        else None,
        disability=disability,
        key_care=key_care,
    )


# --- exchange payloads (SPEC §3): node to node, minimised per purpose ------------------------------
#
# These domain values are what the exchange hands to and receives from the purposes, matching and
# reconciliation code. What each purpose may carry is decided by gateway/data/purposes.toml, not
# here: a field converted here is still cleared by `purposes.minimise` if its purpose does not
# declare it. Conversions from the wire name the offending field, never its value.

# MigrantNotice.sex is an int32 holding tongban.v1.Sex values (records.proto is not imported there).
_SEX_TO_INT = {sex: int(value) for sex, value in _SEX_TO_WIRE.items()}
_SEX_FROM_INT = {value: sex for sex, value in _SEX_TO_INT.items()}
_YEAR_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])", re.ASCII)
_TOKEN_BYTES = 32  # HMAC-SHA256 (gateway.exchange.tokens)


@dataclass(frozen=True)
class Notice:
    """One migrant child as a residence node reports it to the registration node (``migrant_notice``).

    No plain name and no ID number travel: ``id_token`` is the pairwise token of a valid ID number
    (empty when the child has none), ``name_encoding`` and ``birth_encoding`` are keyed Bloom-filter
    encodings for the fuzzy stage. ``notice_ref`` is opaque, chosen by the residence node, and is
    what a match result answers. Personal fields are left out of ``repr``.
    """

    notice_ref: str
    birth_year_month: str = field(repr=False)  # "2015-06"
    sex: Sex = field(repr=False)
    residence_division: str
    registration_division: str
    living_since: date | None = field(repr=False)
    key_care: bool = field(repr=False)  # any key-care flag, as yes/no only
    id_token: bytes = field(default=b"", repr=False)
    name_encoding: bytes = field(default=b"", repr=False)
    birth_encoding: bytes = field(default=b"", repr=False)


def notice_wire_from_record(
    r: ChildRecord | RecordView,
    *,
    notice_ref: str,
    id_token: bytes = b"",
    name_encoding: bytes = b"",
    birth_encoding: bytes = b"",
) -> exchange_pb2.MigrantNotice:
    """The notice of a child record, on the wire: the record minimised to what ``migrant_notice``
    needs. This is the one definition of what a notice takes from a record.

    The birth date is reduced to year and month, key-care flags to yes/no; name, ID number,
    guardian, parents and disability are left behind. Tokens and encodings are computed by the
    caller under the pair key (``gateway.exchange.tokens``) and passed in. A roster send builds
    its batches with this directly (one message per record, no :class:`Notice` in between: that
    halved the cost of this step); :func:`notice_from_record` is the same as a domain value.
    """
    born = r.birth_date
    return exchange_pb2.MigrantNotice(
        notice_ref=notice_ref,
        id_token=id_token,
        name_encoding=name_encoding,
        birth_year_month=f"{born.year:04d}-{born.month:02d}",
        sex=_SEX_TO_INT[r.sex],
        residence_division=r.residence_division,
        registration_division=r.registration_division,
        living_since=r.living_since.isoformat() if r.living_since is not None else "",
        key_care=bool(r.key_care),
        birth_encoding=birth_encoding,
    )


def notice_from_record(
    r: ChildRecord | RecordView,
    *,
    notice_ref: str,
    id_token: bytes = b"",
    name_encoding: bytes = b"",
    birth_encoding: bytes = b"",
) -> Notice:
    """:func:`notice_wire_from_record` as a domain :class:`Notice` (converted and checked by
    :func:`notice_from_wire`, so a notice is defined once)."""
    return notice_from_wire(
        notice_wire_from_record(
            r,
            notice_ref=notice_ref,
            id_token=id_token,
            name_encoding=name_encoding,
            birth_encoding=birth_encoding,
        )
    )


@dataclass(frozen=True)
class NoticeBatch:
    """One batch of a residence node's roster of notices for one registration node and period."""

    period: str  # monitoring period label, e.g. "2026Q3"
    roster_id: str
    batch_index: int  # 0-based
    notices: tuple[Notice, ...]


def _division(value: str, name: str) -> str:
    if len(value) != 6 or not value.isascii() or not value.isdigit():
        raise InvalidRecord(f"{name} must be six digits")
    return value


def _period(value: str, name: str) -> str:
    try:
        return MonitoringPeriod.parse(value).label
    except InputError:
        raise InvalidRecord(f"{name} is not a monitoring period label") from None


def _required(value: str, name: str) -> str:
    if not value:
        raise InvalidRecord(f"{name} is empty")
    return value


def notice_to_wire(n: Notice) -> exchange_pb2.MigrantNotice:
    return exchange_pb2.MigrantNotice(
        notice_ref=n.notice_ref,
        id_token=n.id_token,
        name_encoding=n.name_encoding,
        birth_year_month=n.birth_year_month,
        sex=_SEX_TO_INT[n.sex],
        residence_division=n.residence_division,
        registration_division=n.registration_division,
        living_since=n.living_since.isoformat() if n.living_since is not None else "",
        key_care=n.key_care,
        birth_encoding=n.birth_encoding,
    )


def notice_from_wire(m: exchange_pb2.MigrantNotice, where: str = "notice") -> Notice:
    """Convert and validate one notice; :class:`InvalidRecord` names the field (``where`` prefixes it)."""
    if m.sex not in _SEX_FROM_INT:
        raise InvalidRecord(f"{where}.sex is unspecified or unknown")
    if not _YEAR_MONTH.fullmatch(m.birth_year_month):
        raise InvalidRecord(f"{where}.birth_year_month must be YYYY-MM")
    if m.id_token and len(m.id_token) != _TOKEN_BYTES:
        raise InvalidRecord(f"{where}.id_token must be empty or {_TOKEN_BYTES} bytes")
    living_since = None
    if m.living_since:
        try:
            living_since = date.fromisoformat(m.living_since)
        except ValueError:
            raise InvalidRecord(f"{where}.living_since is not a YYYY-MM-DD date") from None
        if m.living_since != living_since.isoformat():  # one spelling only (fromisoformat accepts others)
            raise InvalidRecord(f"{where}.living_since is not a YYYY-MM-DD date")
    return Notice(
        notice_ref=_required(m.notice_ref, f"{where}.notice_ref"),
        birth_year_month=m.birth_year_month,
        sex=_SEX_FROM_INT[m.sex],
        residence_division=_division(m.residence_division, f"{where}.residence_division"),
        registration_division=_division(m.registration_division, f"{where}.registration_division"),
        living_since=living_since,
        key_care=m.key_care,
        id_token=m.id_token,
        name_encoding=m.name_encoding,
        birth_encoding=m.birth_encoding,
    )


def notice_batch_to_wire(b: NoticeBatch) -> exchange_pb2.MigrantNoticeBatch:
    return exchange_pb2.MigrantNoticeBatch(
        period=b.period,
        roster_id=b.roster_id,
        batch_index=b.batch_index,
        notices=[notice_to_wire(n) for n in b.notices],
    )


def notice_batch_from_wire(m: exchange_pb2.MigrantNoticeBatch) -> NoticeBatch:
    """Convert and validate a batch; the first bad notice is named by its index (``notices[3].sex``)."""
    return NoticeBatch(
        period=_period(m.period, "period"),
        roster_id=_required(m.roster_id, "roster_id"),
        batch_index=m.batch_index,
        notices=tuple(notice_from_wire(n, f"notices[{i}]") for i, n in enumerate(m.notices)),
    )


@dataclass(frozen=True)
class RosterManifest:
    """Closes a roster (``roster_manifest``): its size and a digest over its entries, in order."""

    period: str
    roster_id: str
    count: int  # number of entries
    batches: int  # number of batches
    entries_sha256: bytes
    purpose: str  # the purpose of the entries, e.g. "migrant_notice"


def manifest_to_wire(r: RosterManifest) -> exchange_pb2.RosterManifest:
    return exchange_pb2.RosterManifest(
        period=r.period,
        roster_id=r.roster_id,
        count=r.count,
        batches=r.batches,
        entries_sha256=r.entries_sha256,
        purpose=r.purpose,
    )


def manifest_from_wire(m: exchange_pb2.RosterManifest) -> RosterManifest:
    if len(m.entries_sha256) != 32:
        raise InvalidRecord("entries_sha256 must be 32 bytes")
    if (m.count == 0) != (m.batches == 0) or m.batches > m.count:
        raise InvalidRecord("count and batches contradict each other")
    return RosterManifest(
        period=_period(m.period, "period"),
        roster_id=_required(m.roster_id, "roster_id"),
        count=m.count,
        batches=m.batches,
        entries_sha256=m.entries_sha256,
        purpose=_required(m.purpose, "purpose"),
    )


class MatchOutcome(StrEnum):
    """What the registration node found for one notice (SPEC §5)."""

    MATCHED = "matched"  # linked automatically
    PROBABLE = "probable"  # for a person to review
    POSSIBLE = "possible"  # for a person to review
    NOT_FOUND = "not_found"


class LedgerStatus(StrEnum):
    """How the registration ledger records a found child."""

    MIGRANT = "migrant"  # recorded as moved away, as the notice says
    LEFT_BEHIND = "left_behind"  # recorded as left behind at home: a discrepancy to reconcile
    NEITHER = "neither"


_OUTCOME_TO_WIRE = {
    MatchOutcome.MATCHED: exchange_pb2.MATCH_OUTCOME_MATCHED,
    MatchOutcome.PROBABLE: exchange_pb2.MATCH_OUTCOME_PROBABLE,
    MatchOutcome.POSSIBLE: exchange_pb2.MATCH_OUTCOME_POSSIBLE,
    MatchOutcome.NOT_FOUND: exchange_pb2.MATCH_OUTCOME_NOT_FOUND,
}
_OUTCOME_FROM_WIRE = {v: k for k, v in _OUTCOME_TO_WIRE.items()}
_LEDGER_TO_WIRE = {
    LedgerStatus.MIGRANT: exchange_pb2.LEDGER_STATUS_MIGRANT,
    LedgerStatus.LEFT_BEHIND: exchange_pb2.LEDGER_STATUS_LEFT_BEHIND,
    LedgerStatus.NEITHER: exchange_pb2.LEDGER_STATUS_NEITHER,
}
_LEDGER_FROM_WIRE = {v: k for k, v in _LEDGER_TO_WIRE.items()}


@dataclass(frozen=True)
class MatchResult:
    """The answer to one notice (``match_result``).

    A found child (any outcome but ``NOT_FOUND``) has a ledger status and an opaque
    ``registration_ref``; a child not found has neither. ``claimed_elsewhere`` (only with
    ``MATCHED``): another residence node also reports this child as living there.
    """

    notice_ref: str
    outcome: MatchOutcome
    ledger_status: LedgerStatus | None = None
    registration_ref: str = ""
    claimed_elsewhere: bool = False

    def __post_init__(self) -> None:
        found = self.outcome is not MatchOutcome.NOT_FOUND
        if found != (self.ledger_status is not None) or found != bool(self.registration_ref):
            raise InvalidRecord(
                "a found child has a ledger status and a registration reference; one not found has neither"
            )
        if self.claimed_elsewhere and self.outcome is not MatchOutcome.MATCHED:
            raise InvalidRecord("only a matched child can be claimed elsewhere")


@dataclass(frozen=True)
class MatchResultBatch:
    period: str
    roster_id: str  # the residence node's roster the notices came in
    batch_index: int
    results: tuple[MatchResult, ...]


def match_result_to_wire(r: MatchResult) -> exchange_pb2.MatchResult:
    return exchange_pb2.MatchResult(
        notice_ref=r.notice_ref,
        outcome=_OUTCOME_TO_WIRE[r.outcome],
        ledger_status=(
            _LEDGER_TO_WIRE[r.ledger_status] if r.ledger_status is not None else exchange_pb2.LEDGER_STATUS_UNSPECIFIED
        ),
        registration_ref=r.registration_ref,
        claimed_elsewhere=r.claimed_elsewhere,
    )


def match_result_from_wire(m: exchange_pb2.MatchResult, where: str = "result") -> MatchResult:
    if m.outcome not in _OUTCOME_FROM_WIRE:
        raise InvalidRecord(f"{where}.outcome is unspecified or unknown")
    if m.ledger_status != 0 and m.ledger_status not in _LEDGER_FROM_WIRE:
        raise InvalidRecord(f"{where}.ledger_status is unknown")
    try:
        return MatchResult(
            notice_ref=_required(m.notice_ref, f"{where}.notice_ref"),
            outcome=_OUTCOME_FROM_WIRE[m.outcome],
            ledger_status=_LEDGER_FROM_WIRE.get(m.ledger_status),
            registration_ref=m.registration_ref,
            claimed_elsewhere=m.claimed_elsewhere,
        )
    except InvalidRecord as exc:
        raise InvalidRecord(f"{where}: {exc.detail}") from None


def match_batch_to_wire(b: MatchResultBatch) -> exchange_pb2.MatchResultBatch:
    return exchange_pb2.MatchResultBatch(
        period=b.period,
        roster_id=b.roster_id,
        batch_index=b.batch_index,
        results=[match_result_to_wire(r) for r in b.results],
    )


def match_batch_from_wire(m: exchange_pb2.MatchResultBatch) -> MatchResultBatch:
    return MatchResultBatch(
        period=_period(m.period, "period"),
        roster_id=_required(m.roster_id, "roster_id"),
        batch_index=m.batch_index,
        results=tuple(match_result_from_wire(r, f"results[{i}]") for i, r in enumerate(m.results)),
    )


# --- custody events and chains (SPEC §6): node to node, and the answer to "who holds case C?" ---------
#
# Imported here rather than at the top so that this section stays self-contained at the end of the
# module (it was added while other sections were being edited); hoist the imports when convenient.


def custody_event_to_wire(e: SignedEvent) -> custody_pb2.CustodyEvent:
    """The event's bytes exactly as signed; nothing is re-encoded."""
    return custody_pb2.CustodyEvent(
        case_id=e.case_id,
        predecessor=bytes.fromhex(e.predecessor) if e.predecessor is not None else b"",
        signer=e.signer,
        body=e.body,
        signature=common_pb2.Signature(key_id=e.key_id, algorithm=e.algorithm, value=e.signature),
    )


def custody_event_from_wire(m: custody_pb2.CustodyEvent) -> SignedEvent:
    """A signed event, not yet verified (``gateway.custody.chain.verify_event`` does that).
    Raises ``CustodyEventMalformed`` (an ``InputError``) for a predecessor that is neither empty
    nor 32 bytes, a missing signature, or fields of the wrong shape."""
    if len(m.predecessor) not in (0, 32):
        raise CustodyEventMalformed("predecessor must be empty (genesis) or a 32-byte SHA-256")
    if not m.HasField("signature"):
        raise CustodyEventMalformed("the event has no signature")
    e = SignedEvent(
        case_id=m.case_id,
        predecessor=m.predecessor.hex() if m.predecessor else None,
        signer=m.signer,
        body=m.body,
        key_id=m.signature.key_id,
        algorithm=m.signature.algorithm,
        signature=m.signature.value,
    )
    e.check_shape()
    return e


def custody_chain_to_wire(case_id: str, events: Sequence[SignedEvent]) -> custody_pb2.CustodyChain:
    return custody_pb2.CustodyChain(case_id=case_id, events=[custody_event_to_wire(e) for e in events])


def custody_chain_from_wire(m: custody_pb2.CustodyChain) -> tuple[str, tuple[SignedEvent, ...]]:
    """The case id and its events in the order sent (order is part of what ``verify_chain`` checks).
    Every event must be of the chain's case (``CustodyEventMalformed``)."""
    events = tuple(custody_event_from_wire(e) for e in m.events)
    if any(e.case_id != m.case_id for e in events):
        raise CustodyEventMalformed("a chain holds an event of another case")
    return m.case_id, events
