"""Writing generated ledgers: the national system's CSV export, and JSON Lines for machines.

CSV
---
The column headers are those of the national child-welfare information system's export
(:data:`CSV_HEADER`), values in Chinese where the system shows Chinese (性别 男/女, 父亲情况 外出务工 …),
dates ``YYYY-MM-DD``, division columns as the six-digit code. Files are UTF-8 **with a BOM** and
CRLF line ends, which is what Excel expects of a CSV with Chinese text. Several key-care flags
are joined with the enumeration comma ``、``; a disability is written as its category (视力残疾 …)
and level (一级 … 四级) as on the disability certificate. An empty cell means "none" or "unknown".

JSON Lines
----------
One JSON object per record, keys in a fixed order, enum *values* (``"migrant"``, ``"with_child"``),
ISO dates, ``ensure_ascii=False``; :func:`record_from_json` reads a line back into an identical
:class:`~gateway.domain.records.ChildRecord`.

Both writers take a **binary** stream and return the number of records written; output is
byte-for-byte a function of the records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import IO, Any

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
from gateway.errors import InvalidRecord

CSV_HEADER: tuple[str, ...] = (
    "姓名",
    "性别",
    "公民身份号码",
    "出生日期",
    "户籍地",
    "现居住地",
    "居住起始日期",
    "父亲情况",
    "母亲情况",
    "监护情况",
    "监护人姓名",
    "监护人关系",
    "监护人联系电话",
    "残疾类别",
    "残疾等级",
    "重点关爱情形",
    "儿童类别",
)

# records.py gives label_zh for Sex, ChildKind and ParentSituation; these enums have none yet, so
# their labels (the system's wording, as in the comments of records.py) live here.
GUARDIANSHIP_LABELS: Mapping[GuardianshipSituation, str] = {
    GuardianshipSituation.PARENTS: "父母监护",
    GuardianshipSituation.ONE_PARENT: "单亲监护",
    GuardianshipSituation.ENTRUSTED: "委托照护",
    GuardianshipSituation.INSTITUTION: "机构养育",
    GuardianshipSituation.NONE: "监护缺失",
}
KEY_CARE_LABELS: Mapping[KeyCareFlag, str] = {
    KeyCareFlag.FAMILY_HARDSHIP: "家庭生活困难",
    KeyCareFlag.DISABILITY: "自身残疾",
    KeyCareFlag.LACK_OF_GUARDIANSHIP: "监护缺失",
    KeyCareFlag.VAGRANCY: "流浪",
    KeyCareFlag.PSYCH_BEHAVIOURAL: "心理和行为异常",
    KeyCareFlag.ASKED_FOR_HELP: "主动提出救助帮扶需求",
}
DISABILITY_CATEGORY_LABELS: Mapping[DisabilityCategory, str] = {
    DisabilityCategory.VISUAL: "视力残疾",
    DisabilityCategory.HEARING: "听力残疾",
    DisabilityCategory.SPEECH: "言语残疾",
    DisabilityCategory.PHYSICAL: "肢体残疾",
    DisabilityCategory.INTELLECTUAL: "智力残疾",
    DisabilityCategory.MENTAL: "精神残疾",
    DisabilityCategory.MULTIPLE: "多重残疾",
}
DISABILITY_LEVEL_LABELS: Mapping[int, str] = {1: "一级", 2: "二级", 3: "三级", 4: "四级"}
KEY_CARE_SEPARATOR = "、"


def _day(value: date | None) -> str:
    return value.isoformat() if value is not None else ""


def csv_row(record: ChildRecord) -> list[str]:
    """One record as the cells of :data:`CSV_HEADER`, in order."""
    guardian = record.guardian
    disability = record.disability
    return [
        record.name,
        record.sex.label_zh,
        record.id_number or "",
        _day(record.birth_date),
        record.registration_division,
        record.residence_division,
        _day(record.living_since),
        record.father.situation.label_zh,
        record.mother.situation.label_zh,
        GUARDIANSHIP_LABELS[record.guardianship],
        guardian.name if guardian else "",
        guardian.relation if guardian else "",
        (guardian.phone or "") if guardian else "",
        DISABILITY_CATEGORY_LABELS[disability.category] if disability else "",
        DISABILITY_LEVEL_LABELS[disability.level] if disability else "",
        KEY_CARE_SEPARATOR.join(KEY_CARE_LABELS[f] for f in KeyCareFlag if f in record.key_care),
        record.kind.label_zh,
    ]


def write_csv(records: Iterable[ChildRecord], stream: IO[bytes]) -> int:
    """Write the header and one row per record as UTF-8 with BOM, CRLF line ends.

    ``stream`` is binary and is left open. Returns the number of rows written (header excluded).
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="", write_through=True)
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow(CSV_HEADER)
        count = 0
        for record in records:
            writer.writerow(csv_row(record))
            count += 1
        text.flush()
    finally:
        text.detach()  # hand the caller's stream back open
    return count


# --- JSON Lines -------------------------------------------------------------------------------------


def _parent(status: ParentStatus) -> dict[str, Any]:
    return {"situation": status.situation.value, "since": _day(status.since) or None}


def record_to_json(record: ChildRecord) -> dict[str, Any]:
    """A record as a JSON-ready dict (enum values, ISO dates, key-care flags in enum order)."""
    guardian = record.guardian
    disability = record.disability
    provenance = record.provenance
    return {
        "record_id": record.record_id,
        "id_number": record.id_number,
        "name": record.name,
        "sex": record.sex.value,
        "birth_date": record.birth_date.isoformat(),
        "registration_division": record.registration_division,
        "residence_division": record.residence_division,
        "living_since": _day(record.living_since) or None,
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


def _optional_day(value: object) -> date | None:
    return None if value is None else date.fromisoformat(str(value))


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
            father=ParentStatus(
                ParentSituation(data["father"]["situation"]), _optional_day(data["father"]["since"])
            ),
            mother=ParentStatus(
                ParentSituation(data["mother"]["situation"]), _optional_day(data["mother"]["since"])
            ),
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
        )
    except KeyError as exc:
        raise InvalidRecord(f"JSON record lacks the key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRecord(
            f"JSON record has a value of the wrong type or form ({type(exc).__name__})"
        ) from None


def write_jsonl(records: Iterable[ChildRecord], stream: IO[bytes]) -> int:
    """One compact JSON object per line, UTF-8 without BOM, ``\\n`` line ends. Returns the count."""
    count = 0
    for record in records:
        line = json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
        stream.write(line.encode("utf-8") + b"\n")
        count += 1
    return count
