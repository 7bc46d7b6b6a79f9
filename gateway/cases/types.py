"""Case types: what a cross-province application (跨省通办) is, and who may receive what (SPEC §6).

Four programmes, in two families:

* **recognition** (认定) — orphan (孤儿) and de-facto-unsupported child (事实无人抚养儿童): the
  parents' situations with their dates, the person actually caring for the child, and the evidence;
* **disability subsidies** (残疾人两项补贴) — the living subsidy for disabled people in hardship
  (困难残疾人生活补贴) and the nursing subsidy for severely disabled people (重度残疾人护理补贴): the
  disability certificate, the family's hardship status (低保) and the payment account.

Construction checks **form** only (a field that cannot be right: a certificate number that does not
end in the category and level it claims, a SHA-256 that is not 64 hex digits, a programme in the
wrong family) and raises :class:`~gateway.errors.InvalidCase`. Whether the child **qualifies** is a
separate, pure question — :func:`eligibility` — because an application that does not qualify is
still accepted (受理) and decided "not approved" with a reason code by the registration place; the
codes it returns are those of ``gateway/data/case_reasons.toml``. The sources of each rule are listed
in ``docs/domain-rules.md`` ("Cases").

Personal data (the carer's name and phone, the parents' situations, the certificate number and
disability, the payment account) is excluded from ``repr`` and never appears in an error message.
Evidence travels as references (id, kind, SHA-256, size): the bytes follow later as attachments.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from gateway.domain import idnumber
from gateway.domain.records import Disability, DisabilityCategory, ParentSituation, ParentStatus
from gateway.errors import InvalidCase, InvalidIdNumber

_SHA256_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)
_NODE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}", re.ASCII)
_PHONE = re.compile(r"\+?[0-9][0-9-]{4,19}", re.ASCII)
_ACCOUNT = re.compile(r"[0-9]{8,32}", re.ASCII)
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)

#: The largest attachment a case may reference (a scan of a certificate, not a video).
MAX_DOCUMENT_BYTES = 50 * 1024 * 1024


class ProgrammeFamily(StrEnum):
    RECOGNITION = "recognition"  # 孤儿、事实无人抚养儿童认定
    SUBSIDY = "subsidy"  # 残疾人两项补贴


class Programme(StrEnum):
    """What is applied for. Values are stable codes (wire, storage, reason-code table)."""

    ORPHAN = "orphan"  # 孤儿认定
    DE_FACTO_UNSUPPORTED = "de_facto_unsupported"  # 事实无人抚养儿童认定
    LIVING_SUBSIDY = "living_subsidy"  # 困难残疾人生活补贴
    NURSING_SUBSIDY = "nursing_subsidy"  # 重度残疾人护理补贴

    @property
    def family(self) -> ProgrammeFamily:
        if self in (Programme.ORPHAN, Programme.DE_FACTO_UNSUPPORTED):
            return ProgrammeFamily.RECOGNITION
        return ProgrammeFamily.SUBSIDY

    @property
    def label_zh(self) -> str:
        return _PROGRAMME_LABELS[self]


_PROGRAMME_LABELS: dict[Programme, str] = {
    Programme.ORPHAN: "孤儿认定",
    Programme.DE_FACTO_UNSUPPORTED: "事实无人抚养儿童认定",
    Programme.LIVING_SUBSIDY: "困难残疾人生活补贴",
    Programme.NURSING_SUBSIDY: "重度残疾人护理补贴",
}


class EvidenceKind(StrEnum):
    """The kind of an evidence document (证明材料)."""

    DEATH_CERTIFICATE = "death_certificate"  # 死亡证明 (医院/公安机关), 火化证明
    DECLARATION_OF_DEATH = "declaration_of_death"  # 人民法院宣告死亡判决书
    DECLARATION_OF_MISSING = "declaration_of_missing"  # 人民法院宣告失踪判决书 (失踪宣告)
    LOSS_OF_CONTACT = "loss_of_contact"  # 失联: 公安机关报警回执/查找情况证明
    IMPRISONMENT = "imprisonment"  # 服刑证明 (判决书/监狱证明)
    COMPULSORY_DETOX = "compulsory_detox"  # 强制隔离戒毒决定书
    SEVERE_ILLNESS = "severe_illness"  # 重病诊断证明
    DISABILITY_CERTIFICATE = "disability_certificate"  # 残疾人证
    GUARDIANSHIP_REVOCATION = "guardianship_revocation"  # 撤销监护资格判决书
    DEPORTATION = "deportation"  # 遣送(驱逐)出境证明
    HOUSEHOLD_REGISTER = "household_register"  # 户口簿
    DIBAO_CERTIFICATE = "dibao_certificate"  # 低保证 / 低收入认定证明
    OTHER = "other"  # 其他

    @property
    def label_zh(self) -> str:
        return _EVIDENCE_LABELS[self]


_EVIDENCE_LABELS: dict[EvidenceKind, str] = {
    EvidenceKind.DEATH_CERTIFICATE: "死亡证明",
    EvidenceKind.DECLARATION_OF_DEATH: "宣告死亡判决",
    EvidenceKind.DECLARATION_OF_MISSING: "失踪宣告",
    EvidenceKind.LOSS_OF_CONTACT: "失联证明",
    EvidenceKind.IMPRISONMENT: "服刑证明",
    EvidenceKind.COMPULSORY_DETOX: "强制隔离戒毒决定书",
    EvidenceKind.SEVERE_ILLNESS: "重病证明",
    EvidenceKind.DISABILITY_CERTIFICATE: "残疾人证",
    EvidenceKind.GUARDIANSHIP_REVOCATION: "撤销监护资格判决",
    EvidenceKind.DEPORTATION: "遣送出境证明",
    EvidenceKind.HOUSEHOLD_REGISTER: "户口簿",
    EvidenceKind.DIBAO_CERTIFICATE: "低保证明",
    EvidenceKind.OTHER: "其他",
}

#: Which evidence proves a parent's situation (any one kind of the set). A situation absent here
#: needs no proof of its own (at home, working away, …) and never qualifies a child either.
PROOF_OF_SITUATION: dict[ParentSituation, frozenset[EvidenceKind]] = {
    ParentSituation.DECEASED: frozenset({EvidenceKind.DEATH_CERTIFICATE, EvidenceKind.DECLARATION_OF_DEATH}),
    ParentSituation.MISSING: frozenset({EvidenceKind.DECLARATION_OF_MISSING, EvidenceKind.LOSS_OF_CONTACT}),
    ParentSituation.IMPRISONED: frozenset({EvidenceKind.IMPRISONMENT}),
    ParentSituation.COMPULSORY_DETOX: frozenset({EvidenceKind.COMPULSORY_DETOX}),
    ParentSituation.SEVERE_ILLNESS: frozenset({EvidenceKind.SEVERE_ILLNESS}),
    ParentSituation.SEVERE_DISABILITY: frozenset({EvidenceKind.DISABILITY_CERTIFICATE}),
    ParentSituation.GUARDIANSHIP_REVOKED: frozenset({EvidenceKind.GUARDIANSHIP_REVOCATION}),
    ParentSituation.DEPORTED: frozenset({EvidenceKind.DEPORTATION}),
}


class Hardship(StrEnum):
    """The family's hardship status as the civil-affairs system records it."""

    DIBAO = "dibao"  # 最低生活保障家庭 (低保)
    LOW_INCOME = "low_income"  # 低收入家庭 (低保边缘)
    NONE = "none"


class Extension(StrEnum):
    """Optional widenings the national policy allows a province (有条件的地方可…)."""

    LIVING_SUBSIDY_LOW_INCOME = "living_subsidy_low_income"  # 生活补贴扩大到低收入残疾人
    NURSING_SUBSIDY_NON_SEVERE_INTELLECTUAL_MENTAL = "nursing_subsidy_non_severe_intellectual_mental"


@dataclass(frozen=True)
class EvidenceDocument:
    """A reference to one evidence document; the bytes travel later as an attachment."""

    document_id: str
    kind: EvidenceKind
    sha256: str  # lower-case hex of the document's bytes
    size: int  # bytes

    def __post_init__(self) -> None:
        if not _DOCUMENT_ID.fullmatch(self.document_id):
            raise InvalidCase("evidence document_id must be 1-128 letters, digits or . _ : -")
        if not _SHA256_HEX.fullmatch(self.sha256):
            raise InvalidCase("evidence sha256 must be 64 lower-case hex digits")
        if isinstance(self.size, bool) or not 0 < self.size <= MAX_DOCUMENT_BYTES:
            raise InvalidCase(f"evidence size must be 1..{MAX_DOCUMENT_BYTES} bytes")


@dataclass(frozen=True)
class Carer:
    """The person actually caring for the child (实际抚养人). Personal data."""

    name: str = field(repr=False)
    relation: str  # 祖父母, 外祖父母, 其他亲属, 村(居)委会, …
    phone: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidCase("carer name is empty")
        if not self.relation.strip():
            raise InvalidCase("carer relation is empty")
        if not _PHONE.fullmatch(self.phone):
            raise InvalidCase("carer phone must be 5-20 digits (optionally +, -)")


def _check_documents(evidence: tuple[EvidenceDocument, ...]) -> None:
    ids = [d.document_id for d in evidence]
    if len(set(ids)) != len(ids):
        raise InvalidCase("two evidence documents share a document_id")


@dataclass(frozen=True)
class RecognitionApplication:
    """An application for orphan or de-facto-unsupported-child recognition (孤儿/事实无人抚养儿童认定)."""

    programme: Programme
    father: ParentStatus = field(repr=False)
    mother: ParentStatus = field(repr=False)
    carer: Carer
    evidence: tuple[EvidenceDocument, ...] = ()

    def __post_init__(self) -> None:
        if self.programme.family is not ProgrammeFamily.RECOGNITION:
            raise InvalidCase(f"{self.programme.value} is not a recognition programme")
        _check_documents(self.evidence)

    @property
    def evidence_kinds(self) -> frozenset[EvidenceKind]:
        return frozenset(d.kind for d in self.evidence)


@dataclass(frozen=True)
class PaymentAccount:
    """Where the subsidy is paid (社会保障卡 / 惠民惠农一卡通 account). Personal data."""

    bank: str
    account_number: str = field(repr=False)
    holder_name: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.bank.strip():
            raise InvalidCase("payment account bank is empty")
        if not _ACCOUNT.fullmatch(self.account_number):
            raise InvalidCase("payment account number must be 8-32 digits")
        if not self.holder_name.strip():
            raise InvalidCase("payment account holder name is empty")


@dataclass(frozen=True)
class SubsidyApplication:
    """An application for one of the two disability subsidies (残疾人两项补贴).

    ``certificate_number`` is the disability certificate number: the holder's 18-character ID
    number followed by the category digit and the level digit (SPEC §1, see
    :meth:`~gateway.domain.records.Disability.certificate_number`); construction checks that it is
    exactly that for ``disability`` and that its ID part passes GB 11643.
    """

    programme: Programme
    certificate_number: str = field(repr=False)
    disability: Disability = field(repr=False)
    hardship: Hardship = field(repr=False)
    payment_account: PaymentAccount
    evidence: tuple[EvidenceDocument, ...] = ()

    def __post_init__(self) -> None:
        if self.programme.family is not ProgrammeFamily.SUBSIDY:
            raise InvalidCase(f"{self.programme.value} is not a disability-subsidy programme")
        number = self.certificate_number
        if len(number) != 20:
            raise InvalidCase("disability certificate number must be 20 characters (ID number + category + level)")
        try:
            idnumber.parse(number[:18])
        except InvalidIdNumber as exc:
            raise InvalidCase(f"disability certificate number: {exc.reason.value}") from None
        if number != self.disability.certificate_number(number[:18]):
            raise InvalidCase("disability certificate number does not end in the stated category and level")
        _check_documents(self.evidence)


Application = RecognitionApplication | SubsidyApplication


def new_case_id() -> str:
    """A fresh globally unique case id (a random UUID, canonical lower-case form)."""
    return str(uuid.uuid4())


def _is_division(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


@dataclass(frozen=True)
class Case:
    """One application handed from the accepting (residence) node to the registration node.

    ``case_id`` is a canonical UUID string (:func:`new_case_id`), unique across every node.
    ``accepted_on`` is the acceptance date (受理日期) in China Standard Time: it travels with the
    case through every push and transfer and starts the push clock. ``child_ref`` is the accepting
    node's reference to the child's record, never an ID number. The registration node here is the
    one the case was first pushed to; after a transfer the current one is in the lifecycle state.
    """

    case_id: str
    application: Application
    accepting_node: str
    accepting_division: str
    registration_node: str
    registration_division: str
    child_ref: str
    accepted_on: date

    def __post_init__(self) -> None:
        try:
            canonical = str(uuid.UUID(self.case_id))
        except ValueError:
            raise InvalidCase("case_id must be a UUID") from None
        if canonical != self.case_id:
            raise InvalidCase("case_id must be a UUID in canonical lower-case form")
        for label, node in (("accepting_node", self.accepting_node), ("registration_node", self.registration_node)):
            if not _NODE_ID.fullmatch(node):
                raise InvalidCase(f"{label} is not a node id")
        for label, code in (
            ("accepting_division", self.accepting_division),
            ("registration_division", self.registration_division),
        ):
            if not _is_division(code):
                raise InvalidCase(f"{label} must be a six-digit division code")
        if self.accepting_node == self.registration_node:
            raise InvalidCase("the accepting and registration nodes must differ (a handoff goes between two nodes)")
        if not self.child_ref.strip() or len(self.child_ref) > 128:
            raise InvalidCase("child_ref must be 1-128 characters")
        if isinstance(self.accepted_on, datetime):
            # datetime is a subclass of date; a time of day here would hide a time-zone question.
            raise InvalidCase("accepted_on must be a date, not a datetime")

    @property
    def programme(self) -> Programme:
        return self.application.programme


# --- eligibility ---------------------------------------------------------------------------------

#: Situations that make a parent count as "gone" for recognition (死亡或失踪).
GONE = frozenset({ParentSituation.DECEASED, ParentSituation.MISSING})
#: Situations that make a parent unable to raise the child when the *other* parent is too
#: (事实无人抚养: 重残、重病、服刑在押、强制隔离戒毒、失联, plus 被撤销监护资格).
INCAPABLE_BOTH = frozenset(
    {
        ParentSituation.SEVERE_DISABILITY,
        ParentSituation.SEVERE_ILLNESS,
        ParentSituation.IMPRISONED,
        ParentSituation.COMPULSORY_DETOX,
        ParentSituation.MISSING,
        ParentSituation.GUARDIANSHIP_REVOKED,
    }
)
#: Situations that qualify the other parent when one parent is deceased or missing (adds 被遣送出境).
INCAPABLE_WITH_ONE_GONE = INCAPABLE_BOTH | {ParentSituation.DEPORTED}

SEVERE_LEVELS = frozenset({1, 2})  # 重度残疾: 一级、二级


@dataclass(frozen=True)
class Eligibility:
    """The answer of :func:`eligibility`: ``reasons`` are reason codes (``case_reasons.toml``) that
    a "not approved" decision would cite; empty exactly when ``eligible``."""

    eligible: bool
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, reasons: list[str]) -> Eligibility:
        return cls(eligible=not reasons, reasons=tuple(reasons))


def missing_proof(application: RecognitionApplication) -> tuple[ParentSituation, ...]:
    """The parents' situations that need proof and have no document of an accepted kind."""
    kinds = application.evidence_kinds
    missing: list[ParentSituation] = []
    for parent in (application.father, application.mother):
        accepted = PROOF_OF_SITUATION.get(parent.situation)
        if accepted is not None and not kinds & accepted and parent.situation not in missing:
            missing.append(parent.situation)
    return tuple(missing)


def _recognition(application: RecognitionApplication) -> list[str]:
    father, mother = application.father.situation, application.mother.situation
    pair = {father, mother}
    reasons: list[str] = []
    if application.programme is Programme.ORPHAN:
        # 孤儿: both parents deceased or declared missing by a court (宣告失踪).
        if father not in GONE or mother not in GONE:
            return ["parents_not_qualifying"]
        if ParentSituation.MISSING in pair and EvidenceKind.DECLARATION_OF_MISSING not in application.evidence_kinds:
            reasons.append("missing_not_declared")
    else:
        both_deceased = father is ParentSituation.DECEASED and mother is ParentSituation.DECEASED
        declared_missing = EvidenceKind.DECLARATION_OF_MISSING in application.evidence_kinds
        if both_deceased or (father in GONE and mother in GONE and declared_missing):
            return ["apply_as_orphan"]
        qualifies = (father in INCAPABLE_BOTH and mother in INCAPABLE_BOTH) or (
            (father in GONE and mother in INCAPABLE_WITH_ONE_GONE)
            or (mother in GONE and father in INCAPABLE_WITH_ONE_GONE)
        )
        if not qualifies:
            return ["parents_not_qualifying"]
    if missing_proof(application):
        reasons.append("evidence_missing")
    return reasons


def _subsidy(
    application: SubsidyApplication, receives_orphan_allowance: bool, extensions: frozenset[Extension]
) -> list[str]:
    reasons: list[str] = []
    if EvidenceKind.DISABILITY_CERTIFICATE not in {d.kind for d in application.evidence}:
        reasons.append("evidence_missing")
    disability = application.disability
    if application.programme is Programme.NURSING_SUBSIDY:
        widened = Extension.NURSING_SUBSIDY_NON_SEVERE_INTELLECTUAL_MENTAL in extensions and disability.category in (
            DisabilityCategory.INTELLECTUAL,
            DisabilityCategory.MENTAL,
        )
        if disability.level not in SEVERE_LEVELS and not widened:
            reasons.append("disability_not_severe")
        # SPEC §6: a disabled child receiving the orphan allowance still gets the nursing subsidy.
        return reasons
    # Living subsidy.
    if receives_orphan_allowance:
        reasons.append("orphan_allowance_excludes_living_subsidy")
    hardship_ok = application.hardship is Hardship.DIBAO or (
        application.hardship is Hardship.LOW_INCOME and Extension.LIVING_SUBSIDY_LOW_INCOME in extensions
    )
    if not hardship_ok:
        reasons.append("no_hardship_status")
    return reasons


def eligibility(
    application: Application,
    *,
    receives_orphan_allowance: bool = False,
    extensions: frozenset[Extension] = frozenset(),
) -> Eligibility:
    """Does the application qualify? Pure; never raises for an ineligible application.

    Recognition (孤儿 / 事实无人抚养儿童), parents' situations checked first, then proof:

    * orphan — both parents deceased or missing, else ``parents_not_qualifying``; a missing parent
      needs a court's declaration (失踪宣告), else ``missing_not_declared``;
    * de facto unsupported — both parents deceased (or gone with a declaration of missing) is
      ``apply_as_orphan``; otherwise both incapable (:data:`INCAPABLE_BOTH`), or one deceased or
      missing and the other incapable (:data:`INCAPABLE_WITH_ONE_GONE`), else
      ``parents_not_qualifying``;
    * each qualifying situation needs a document of a kind :data:`PROOF_OF_SITUATION` accepts,
      else ``evidence_missing``.

    Disability subsidies (a disability certificate document is always required: ``evidence_missing``):

    * nursing — level 1 or 2 (重度), else ``disability_not_severe`` (with
      :attr:`Extension.NURSING_SUBSIDY_NON_SEVERE_INTELLECTUAL_MENTAL`, intellectual and mental
      disabilities of any level qualify); receiving the orphan allowance does not matter;
    * living — a 低保 family (with :attr:`Extension.LIVING_SUBSIDY_LOW_INCOME` also a low-income
      one), else ``no_hardship_status``; a child receiving the orphan allowance is excluded:
      ``orphan_allowance_excludes_living_subsidy`` (SPEC §6).

    ``receives_orphan_allowance`` is a fact the registration place checks in its own ledger;
    ``extensions`` are the widenings the registration province has adopted.
    """
    if isinstance(application, RecognitionApplication):
        return Eligibility.of(_recognition(application))
    return Eligibility.of(_subsidy(application, receives_orphan_allowance, extensions))


__all__ = [
    "GONE",
    "INCAPABLE_BOTH",
    "INCAPABLE_WITH_ONE_GONE",
    "MAX_DOCUMENT_BYTES",
    "PROOF_OF_SITUATION",
    "SEVERE_LEVELS",
    "Application",
    "Carer",
    "Case",
    "Eligibility",
    "EvidenceDocument",
    "EvidenceKind",
    "Extension",
    "Hardship",
    "ParentStatus",
    "PaymentAccount",
    "Programme",
    "ProgrammeFamily",
    "RecognitionApplication",
    "SubsidyApplication",
    "eligibility",
    "missing_proof",
    "new_case_id",
]
