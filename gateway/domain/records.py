"""The canonical child record and its vocabulary (SPEC §1).

These frozen dataclasses are the domain types every other layer converts to and from: adapters
build them from county files, the store encrypts their personal fields, the exchange minimises
them per purpose. They import nothing outside the standard library.

Personal fields are excluded from ``repr`` so that a record that ends up in a log line or an
exception never prints a name, an ID number or a birth date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import NamedTuple

from gateway.errors import InvalidRecord


class Sex(StrEnum):
    MALE = "male"  # 男
    FEMALE = "female"  # 女

    @property
    def label_zh(self) -> str:
        return "男" if self is Sex.MALE else "女"


class ChildKind(StrEnum):
    """What the monitoring rules make of a child (SPEC §1)."""

    MIGRANT = "migrant"  # 流动儿童: monitored at the residence place (流入地为主)
    LEFT_BEHIND = "left_behind"  # 留守儿童: monitored at the registration place (户籍地为主)
    NEITHER = "neither"

    @property
    def label_zh(self) -> str:
        return {"migrant": "流动儿童", "left_behind": "留守儿童", "neither": "其他"}[self.value]


class ParentSituation(StrEnum):
    """A parent's situation as the national child-welfare system records it (父母情况)."""

    AT_HOME = "at_home"  # 在家 (in the registration county, living with the child)
    WITH_CHILD = "with_child"  # 随迁 (moved with the child to the residence county)
    WORKING_AWAY = "working_away"  # 外出务工
    DECEASED = "deceased"  # 死亡
    MISSING = "missing"  # 失踪 / 失联
    IMPRISONED = "imprisoned"  # 服刑在押
    COMPULSORY_DETOX = "compulsory_detox"  # 强制隔离戒毒
    SEVERE_ILLNESS = "severe_illness"  # 重病
    SEVERE_DISABILITY = "severe_disability"  # 重残
    GUARDIANSHIP_REVOKED = "guardianship_revoked"  # 被撤销监护资格
    DEPORTED = "deported"  # 被遣送(出境)
    UNKNOWN = "unknown"  # 不详

    @property
    def label_zh(self) -> str:
        return _PARENT_LABELS[self]


_PARENT_LABELS: dict[ParentSituation, str] = {
    ParentSituation.AT_HOME: "在家",
    ParentSituation.WITH_CHILD: "随迁",
    ParentSituation.WORKING_AWAY: "外出务工",
    ParentSituation.DECEASED: "死亡",
    ParentSituation.MISSING: "失踪",
    ParentSituation.IMPRISONED: "服刑在押",
    ParentSituation.COMPULSORY_DETOX: "强制隔离戒毒",
    ParentSituation.SEVERE_ILLNESS: "重病",
    ParentSituation.SEVERE_DISABILITY: "重残",
    ParentSituation.GUARDIANSHIP_REVOKED: "被撤销监护资格",
    ParentSituation.DEPORTED: "被遣送",
    ParentSituation.UNKNOWN: "不详",
}


class GuardianshipSituation(StrEnum):
    """Who actually looks after the child (监护情况)."""

    PARENTS = "parents"  # 父母监护
    ONE_PARENT = "one_parent"  # 单亲监护
    ENTRUSTED = "entrusted"  # 委托照护 (grandparents, other relatives)
    INSTITUTION = "institution"  # 机构养育
    NONE = "none"  # 监护缺失


class KeyCareFlag(StrEnum):
    """Key-care flags (重点关爱对象), SPEC §1."""

    FAMILY_HARDSHIP = "family_hardship"  # 家庭生活困难
    DISABILITY = "disability"  # 自身残疾
    LACK_OF_GUARDIANSHIP = "lack_of_guardianship"  # 监护缺失
    VAGRANCY = "vagrancy"  # 流浪
    PSYCH_BEHAVIOURAL = "psych_behavioural"  # 心理和行为异常
    ASKED_FOR_HELP = "asked_for_help"  # 主动提出救助帮扶需求


class DisabilityCategory(IntEnum):
    """Disability category codes (残疾类别)."""

    VISUAL = 1  # 视力
    HEARING = 2  # 听力
    SPEECH = 3  # 言语
    PHYSICAL = 4  # 肢体
    INTELLECTUAL = 5  # 智力
    MENTAL = 6  # 精神
    MULTIPLE = 7  # 多重


@dataclass(frozen=True)
class Disability:
    """A disability as certified (health data: always encrypted at rest).

    ``level`` runs 1-4, 1 being the most severe (一级 … 四级).
    """

    category: DisabilityCategory
    level: int

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 4:
            raise InvalidRecord("disability level must be 1-4")

    def certificate_number(self, id_number: str) -> str:
        """The certificate number is the ID number followed by category and level (SPEC §1)."""
        return f"{id_number}{int(self.category)}{self.level}"


@dataclass(frozen=True)
class ParentStatus:
    situation: ParentSituation
    since: date | None = None  # e.g. date of death or of the start of a sentence


@dataclass(frozen=True)
class Guardian:
    """The person actually caring for the child. Personal data."""

    name: str = field(repr=False)
    relation: str  # 父亲, 母亲, 祖父母, 外祖父母, 其他亲属, …
    phone: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Provenance:
    """Where a record came from: kept with it so every figure can be traced to a source row."""

    source: str  # e.g. "synth:seed=7", "csv:roster-2026Q4.csv"
    imported_at: datetime
    node_id: str
    source_row: int | None = None


@dataclass(frozen=True)
class ChildRecord:
    """One child in a county ledger (台账).

    ``id_number`` is the normalised, valid 18-character resident ID number, or ``None`` when the
    source had none (or an invalid one: an ID failing its check character counts as missing).
    ``registration_division`` (户籍地) and ``residence_division`` (现居住地) are current county-level
    GB/T 2260 codes. ``kind`` is the classification the owning node made (see ``classify``).

    ``single_birth`` is what the registration county's **household register** (户籍登记) says of the
    child, decided when the ledger was imported with one (``tongban roster import
    --household-register``): ``True`` — found there, and no other member of its household was born
    within a day of it; ``False`` — a sibling was born within a day (twins), or the register could
    not decide (not found, ambiguous, a possible co-twin's row unreadable); ``None`` — not decided
    (imported without a register, or through a path that carries no register). Only the
    registration node's matcher reads it (``gateway.matching``, "Single births"); it is never sent.
    Personal data like the rest: sealed with the record, never in a plain column or a log line.
    """

    record_id: str
    id_number: str | None = field(repr=False)
    name: str = field(repr=False)
    sex: Sex = field(repr=False)
    birth_date: date = field(repr=False)
    registration_division: str
    residence_division: str
    living_since: date | None = field(repr=False)
    guardianship: GuardianshipSituation = field(repr=False)
    father: ParentStatus = field(repr=False)
    mother: ParentStatus = field(repr=False)
    kind: ChildKind
    provenance: Provenance
    guardian: Guardian | None = field(default=None, repr=False)
    disability: Disability | None = field(default=None, repr=False)
    key_care: frozenset[KeyCareFlag] = field(default=frozenset(), repr=False)
    single_birth: bool | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for label, code in (
            ("registration_division", self.registration_division),
            ("residence_division", self.residence_division),
        ):
            if len(code) != 6 or not code.isdigit():
                raise InvalidRecord(f"{label} must be a six-digit division code")
        if self.disability is not None and KeyCareFlag.DISABILITY not in self.key_care:
            # Own disability is itself a key-care flag (自身残疾): keep the two consistent.
            object.__setattr__(self, "key_care", self.key_care | {KeyCareFlag.DISABILITY})

    @property
    def registration_province(self) -> str:
        return self.registration_division[:2]

    @property
    def residence_province(self) -> str:
        return self.residence_division[:2]


class RecordView(NamedTuple):
    """The part of a stored child record that notices and matching use, read without building the
    whole :class:`ChildRecord` (guardian, parents, disability and provenance stay sealed).

    A tuple rather than a frozen dataclass because a roster send builds one per child: the store
    decodes the sealed JSON straight into it (``gateway.domain.codec.view_from_json``). Values are
    those of the record the node validated at intake, so ``id_number`` is canonical or ``None``.
    """

    record_id: str
    id_number: str | None
    name: str
    sex: Sex
    birth_date: date
    registration_division: str
    residence_division: str
    living_since: date | None
    key_care: bool
    kind: ChildKind
    single_birth: bool | None = None  # ChildRecord.single_birth: for the registration side's matcher
