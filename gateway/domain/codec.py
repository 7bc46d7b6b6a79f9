"""JSON form of the canonical child record (pure; standard library only).

One dict shape serves every place a record is written as JSON: the sealed payload in the node
database (``gateway.store``) and the JSON Lines files of ``tongban synth``. Keys are in a fixed
order, enum *values* are used (``"migrant"``, ``"with_child"``), dates are ISO 8601.
:func:`record_from_json` is the exact inverse and validates: a missing key or a bad value raises
:class:`~gateway.errors.InvalidRecord` naming the problem, never the value.

``single_birth`` (what the household register said, :class:`~gateway.domain.records.ChildRecord`)
is the one optional key: written last, and only when it is known (``true`` or ``false``). A record
without it — every record sealed before the key existed, and every record imported without a
register — reads back as ``None``, and its JSON is byte for byte what it was before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

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
from gateway.errors import InvalidRecord


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _parent(status: ParentStatus) -> dict[str, Any]:
    return {"situation": status.situation.value, "since": _day(status.since)}


def record_to_json(record: ChildRecord) -> dict[str, Any]:
    """A record as a JSON-ready dict (enum values, ISO dates, key-care flags in enum order;
    ``single_birth`` last and only when known)."""
    guardian = record.guardian
    disability = record.disability
    provenance = record.provenance
    out: dict[str, Any] = {
        "record_id": record.record_id,
        "id_number": record.id_number,
        "name": record.name,
        "sex": record.sex.value,
        "birth_date": record.birth_date.isoformat(),
        "registration_division": record.registration_division,
        "residence_division": record.residence_division,
        "living_since": _day(record.living_since),
        "guardianship": record.guardianship.value,
        "father": _parent(record.father),
        "mother": _parent(record.mother),
        "kind": record.kind.value,
        "guardian": (
            None
            if guardian is None
            else {"name": guardian.name, "relation": guardian.relation, "phone": guardian.phone}
        ),
        "disability": (
            None if disability is None else {"category": int(disability.category), "level": disability.level}
        ),
        "key_care": [flag.value for flag in KeyCareFlag if flag in record.key_care],
        "provenance": {
            "source": provenance.source,
            "imported_at": provenance.imported_at.isoformat(),
            "node_id": provenance.node_id,
            "source_row": provenance.source_row,
        },
    }
    if record.single_birth is not None:
        out["single_birth"] = record.single_birth
    return out


def _optional_day(value: object) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


def _single_birth(data: Mapping[str, Any]) -> bool | None:
    """The optional ``single_birth`` key: absent or ``null`` → ``None``; else a JSON boolean."""
    value = data.get("single_birth")
    if value is None or isinstance(value, bool):
        return value
    raise TypeError("single_birth is not a boolean")


def record_from_json(data: Mapping[str, Any]) -> ChildRecord:
    """The inverse of :func:`record_to_json`. Raises :class:`~gateway.errors.InvalidRecord` on a
    missing key or a bad value (the message names the problem, never a value)."""
    try:
        guardian = data["guardian"]
        disability = data["disability"]
        provenance = data["provenance"]
        return ChildRecord(
            record_id=str(data["record_id"]),
            id_number=data["id_number"],
            name=str(data["name"]),
            sex=Sex(data["sex"]),
            birth_date=date.fromisoformat(data["birth_date"]),
            registration_division=str(data["registration_division"]),
            residence_division=str(data["residence_division"]),
            living_since=_optional_day(data["living_since"]),
            guardianship=GuardianshipSituation(data["guardianship"]),
            father=ParentStatus(ParentSituation(data["father"]["situation"]), _optional_day(data["father"]["since"])),
            mother=ParentStatus(ParentSituation(data["mother"]["situation"]), _optional_day(data["mother"]["since"])),
            kind=ChildKind(data["kind"]),
            provenance=Provenance(
                source=str(provenance["source"]),
                imported_at=datetime.fromisoformat(provenance["imported_at"]),
                node_id=str(provenance["node_id"]),
                source_row=provenance["source_row"],
            ),
            guardian=(
                None
                if guardian is None
                else Guardian(str(guardian["name"]), str(guardian["relation"]), guardian["phone"])
            ),
            disability=(
                None
                if disability is None
                else Disability(DisabilityCategory(disability["category"]), int(disability["level"]))
            ),
            key_care=frozenset(KeyCareFlag(flag) for flag in data["key_care"]),
            single_birth=_single_birth(data),
        )
    except KeyError as exc:
        raise InvalidRecord(f"JSON record lacks the key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"JSON record has a value of the wrong type or form ({type(exc).__name__})") from None


_SEXES = {s.value: s for s in Sex}
_KINDS = {k.value: k for k in ChildKind}


def view_from_json(data: Mapping[str, Any]) -> RecordView:
    """The :class:`~gateway.domain.records.RecordView` of a record's JSON form: the fields a notice
    or the matcher needs, validated like :func:`record_from_json` validates them (same errors), and
    nothing else decoded. About three times cheaper than the whole record on a roster send."""
    try:
        living_since = data["living_since"]
        id_number = data["id_number"]
        return RecordView(
            record_id=str(data["record_id"]),
            id_number=None if id_number is None else str(id_number),
            name=str(data["name"]),
            sex=_SEXES[data["sex"]],
            birth_date=date.fromisoformat(data["birth_date"]),
            registration_division=str(data["registration_division"]),
            residence_division=str(data["residence_division"]),
            living_since=None if living_since is None else date.fromisoformat(living_since),
            key_care=bool(data["key_care"]),
            kind=_KINDS[data["kind"]],
            single_birth=_single_birth(data),
        )
    except KeyError:
        # Not exc.args: for an unknown enum value it would quote the value.
        raise InvalidRecord("JSON record lacks a key or has an unknown enumeration value") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(f"JSON record has a value of the wrong type or form ({type(exc).__name__})") from None
