"""The one converter between wire (protobuf, ``tongban.v1``) and domain types.

Nothing else in the code base builds or reads protobuf messages field by field: servicers and
clients call these functions, and ``tests/test_wire.py`` round-trips every message through them.
Conversions from the wire validate: a wire message that cannot become a valid domain value raises
an :class:`~gateway.errors.InputError` (never a half-filled domain object).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from tongban.v1 import common_pb2, records_pb2

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
    Sex,
)
from gateway.errors import InputError, InvalidRecord

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
