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
ISO dates, ``ensure_ascii=False``: the shape of :mod:`gateway.domain.codec` (the same JSON the node
seals in its database), whose ``record_from_json`` reads a line back into an identical record.

Both writers take a **binary** stream and return the number of records written; output is
byte-for-byte a function of the records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from datetime import date
from typing import IO

from gateway.domain.codec import record_to_json
from gateway.domain.records import (
    ChildRecord,
    DisabilityCategory,
    GuardianshipSituation,
    KeyCareFlag,
)

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


def write_jsonl(records: Iterable[ChildRecord], stream: IO[bytes]) -> int:
    """One compact JSON object per line, UTF-8 without BOM, ``\\n`` line ends. Returns the count."""
    count = 0
    for record in records:
        line = json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
        stream.write(line.encode("utf-8") + b"\n")
        count += 1
    return count
