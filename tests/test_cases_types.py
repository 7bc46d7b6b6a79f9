"""Case types: validation of form (named cases) and eligibility (a table), SPEC §6."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest

from gateway.cases.reasons import ReasonAction, default_reasons, load_reasons
from gateway.cases.types import (
    Carer,
    Case,
    EvidenceDocument,
    EvidenceKind,
    Extension,
    Hardship,
    PaymentAccount,
    Programme,
    RecognitionApplication,
    SubsidyApplication,
    eligibility,
    new_case_id,
)
from gateway.domain import idnumber
from gateway.domain.records import Disability, DisabilityCategory, ParentSituation, ParentStatus
from gateway.errors import ConfigError, InvalidCase, UnknownReasonCode

S = ParentSituation
K = EvidenceKind
ID = idnumber.make("511321", date(2015, 3, 4), 7)  # synthetic, valid
CARER = Carer(name="测试照护人", relation="祖父母", phone="13800000000")
ACCOUNT = PaymentAccount(bank="测试银行", account_number="6222000011112222", holder_name="测试持卡人")


def doc(kind: EvidenceKind, n: int = 0) -> EvidenceDocument:
    return EvidenceDocument(f"doc-{kind.value}-{n}", kind, f"{n:064x}", 1024)


def recognition(
    programme: Programme, father: ParentSituation, mother: ParentSituation, *kinds: EvidenceKind
) -> RecognitionApplication:
    return RecognitionApplication(
        programme=programme,
        father=ParentStatus(father, date(2024, 5, 1)),
        mother=ParentStatus(mother, date(2024, 6, 1)),
        carer=CARER,
        evidence=tuple(doc(k, i) for i, k in enumerate(kinds)),
    )


def subsidy(
    programme: Programme,
    level: int,
    hardship: Hardship = Hardship.DIBAO,
    category: DisabilityCategory = DisabilityCategory.PHYSICAL,
    *,
    certificate: bool = True,
) -> SubsidyApplication:
    disability = Disability(category, level)
    return SubsidyApplication(
        programme=programme,
        certificate_number=disability.certificate_number(ID),
        disability=disability,
        hardship=hardship,
        payment_account=ACCOUNT,
        evidence=(doc(K.DISABILITY_CERTIFICATE),) if certificate else (),
    )


def case(**overrides: Any) -> Case:
    fields: dict[str, Any] = {
        "case_id": "6f1c2a4e-8d0b-4c1e-9a57-3b2d1e0f9a11",
        "application": subsidy(Programme.NURSING_SUBSIDY, 1),
        "accepting_node": "cq-liangjiang",
        "accepting_division": "500157",
        "registration_node": "sc-nanbu",
        "registration_division": "511321",
        "child_ref": "rec-0001",
        "accepted_on": date(2026, 3, 2),
    }
    fields.update(overrides)
    return Case(**fields)


# --- validation of form -------------------------------------------------------------------------

INVALID: dict[str, Any] = {
    "sha256_upper_case": lambda: EvidenceDocument("d1", K.OTHER, "A" * 64, 10),
    "sha256_too_short": lambda: EvidenceDocument("d1", K.OTHER, "a" * 63, 10),
    "document_empty": lambda: EvidenceDocument("d1", K.OTHER, "a" * 64, 0),
    "document_too_large": lambda: EvidenceDocument("d1", K.OTHER, "a" * 64, 50 * 1024 * 1024 + 1),
    "document_id_with_space": lambda: EvidenceDocument("d 1", K.OTHER, "a" * 64, 10),
    "carer_without_name": lambda: Carer(name=" ", relation="祖父母", phone="13800000000"),
    "carer_phone_letters": lambda: Carer(name="测试", relation="祖父母", phone="phone"),
    "recognition_with_subsidy_programme": lambda: recognition(Programme.LIVING_SUBSIDY, S.DECEASED, S.DECEASED),
    "duplicate_document_ids": lambda: RecognitionApplication(
        Programme.ORPHAN, ParentStatus(S.DECEASED), ParentStatus(S.DECEASED), CARER, (doc(K.OTHER), doc(K.OTHER))
    ),
    "subsidy_with_recognition_programme": lambda: replace(
        subsidy(Programme.NURSING_SUBSIDY, 1), programme=Programme.ORPHAN
    ),
    "certificate_number_too_short": lambda: replace(subsidy(Programme.NURSING_SUBSIDY, 1), certificate_number=ID + "4"),
    "certificate_number_bad_check_character": lambda: replace(
        subsidy(Programme.NURSING_SUBSIDY, 1),
        certificate_number=ID[:17] + ("0" if ID[17] != "0" else "1") + "41",
    ),
    "certificate_level_differs_from_disability": lambda: replace(
        subsidy(Programme.NURSING_SUBSIDY, 1), certificate_number=ID + "42"
    ),
    "account_number_with_letters": lambda: PaymentAccount("测试银行", "6222ABCD11112222", "测试"),
    "case_id_not_uuid": lambda: case(case_id="case-1"),
    "case_id_not_canonical": lambda: case(case_id="6F1C2A4E-8D0B-4C1E-9A57-3B2D1E0F9A11"),
    "same_accepting_and_registration_node": lambda: case(registration_node="cq-liangjiang"),
    "registration_division_not_six_digits": lambda: case(registration_division="51132"),
    "node_id_upper_case": lambda: case(accepting_node="CQ"),
    "empty_child_ref": lambda: case(child_ref=""),
    "accepted_on_is_a_datetime": lambda: case(accepted_on=datetime(2026, 3, 2, 9)),
}


@pytest.mark.parametrize("build", INVALID.values(), ids=INVALID.keys())
def test_invalid_form_is_refused(build: Any) -> None:
    with pytest.raises(InvalidCase) as caught:
        build()
    assert ID not in str(caught.value)


def test_valid_case_and_its_programme() -> None:
    c = case()
    assert c.programme is Programme.NURSING_SUBSIDY
    assert Programme.ORPHAN.family.value == "recognition"
    assert Programme.LIVING_SUBSIDY.label_zh == "困难残疾人生活补贴"


def test_new_case_ids_are_unique_canonical_uuids() -> None:
    ids = {new_case_id() for _ in range(100)}
    assert len(ids) == 100
    case(case_id=ids.pop())


def test_repr_hides_personal_data() -> None:
    text = repr(case()) + repr(recognition(Programme.ORPHAN, S.DECEASED, S.DECEASED, K.DEATH_CERTIFICATE))
    for secret in (ID, CARER.name, CARER.phone, ACCOUNT.account_number, ACCOUNT.holder_name, "deceased"):
        assert secret not in text, "a personal value appears in repr"


# --- eligibility, as a table ----------------------------------------------------------------------

ORP, D = Programme.ORPHAN, Programme.DE_FACTO_UNSUPPORTED
L, N = Programme.LIVING_SUBSIDY, Programme.NURSING_SUBSIDY
ALL_EXT = frozenset(Extension)

# name: (application, receives_orphan_allowance, extensions, expected reasons; () = eligible)
ELIGIBILITY: dict[str, tuple[Any, bool, frozenset[Extension], tuple[str, ...]]] = {
    "orphan_both_deceased": (recognition(ORP, S.DECEASED, S.DECEASED, K.DEATH_CERTIFICATE), False, frozenset(), ()),
    "orphan_deceased_and_declared_missing": (
        recognition(ORP, S.DECEASED, S.MISSING, K.DEATH_CERTIFICATE, K.DECLARATION_OF_MISSING),
        False,
        frozenset(),
        (),
    ),
    "orphan_missing_not_declared": (
        recognition(ORP, S.DECEASED, S.MISSING, K.DEATH_CERTIFICATE, K.LOSS_OF_CONTACT),
        False,
        frozenset(),
        ("missing_not_declared",),
    ),
    "orphan_one_parent_imprisoned": (
        recognition(ORP, S.DECEASED, S.IMPRISONED, K.DEATH_CERTIFICATE, K.IMPRISONMENT),
        False,
        frozenset(),
        ("parents_not_qualifying",),
    ),
    "orphan_without_death_certificate": (
        recognition(ORP, S.DECEASED, S.DECEASED, K.HOUSEHOLD_REGISTER),
        False,
        frozenset(),
        ("evidence_missing",),
    ),
    "de_facto_both_imprisoned": (recognition(D, S.IMPRISONED, S.IMPRISONED, K.IMPRISONMENT), False, frozenset(), ()),
    "de_facto_deceased_and_severely_ill": (
        recognition(D, S.DECEASED, S.SEVERE_ILLNESS, K.DEATH_CERTIFICATE, K.SEVERE_ILLNESS),
        False,
        frozenset(),
        (),
    ),
    "de_facto_deceased_and_deported": (
        recognition(D, S.DECEASED, S.DEPORTED, K.DEATH_CERTIFICATE, K.DEPORTATION),
        False,
        frozenset(),
        (),
    ),
    "de_facto_imprisoned_and_deported": (
        recognition(D, S.IMPRISONED, S.DEPORTED, K.IMPRISONMENT, K.DEPORTATION),
        False,
        frozenset(),
        ("parents_not_qualifying",),
    ),
    "de_facto_both_lost_contact": (
        recognition(D, S.MISSING, S.MISSING, K.LOSS_OF_CONTACT),
        False,
        frozenset(),
        (),
    ),
    "de_facto_guardianship_revoked_and_detox": (
        recognition(D, S.GUARDIANSHIP_REVOKED, S.COMPULSORY_DETOX, K.GUARDIANSHIP_REVOCATION, K.COMPULSORY_DETOX),
        False,
        frozenset(),
        (),
    ),
    "de_facto_both_deceased_is_an_orphan": (
        recognition(D, S.DECEASED, S.DECEASED, K.DEATH_CERTIFICATE),
        False,
        frozenset(),
        ("apply_as_orphan",),
    ),
    "de_facto_one_working_away": (
        recognition(D, S.WORKING_AWAY, S.IMPRISONED, K.IMPRISONMENT),
        False,
        frozenset(),
        ("parents_not_qualifying",),
    ),
    "de_facto_unknown_situation": (
        recognition(D, S.UNKNOWN, S.IMPRISONED, K.IMPRISONMENT),
        False,
        frozenset(),
        ("parents_not_qualifying",),
    ),
    "de_facto_proof_of_one_situation_missing": (
        recognition(D, S.IMPRISONED, S.COMPULSORY_DETOX, K.IMPRISONMENT),
        False,
        frozenset(),
        ("evidence_missing",),
    ),
    "nursing_level_1": (subsidy(N, 1), False, frozenset(), ()),
    "nursing_level_2_without_dibao": (subsidy(N, 2, Hardship.NONE), False, frozenset(), ()),
    "nursing_level_3": (subsidy(N, 3), False, frozenset(), ("disability_not_severe",)),
    "nursing_level_3_intellectual_where_extended": (
        subsidy(N, 3, category=DisabilityCategory.INTELLECTUAL),
        False,
        ALL_EXT,
        (),
    ),
    "nursing_level_3_physical_where_extended": (subsidy(N, 3), False, ALL_EXT, ("disability_not_severe",)),
    "nursing_for_child_with_orphan_allowance": (subsidy(N, 1), True, frozenset(), ()),
    "nursing_without_certificate_document": (
        subsidy(N, 1, certificate=False),
        False,
        frozenset(),
        ("evidence_missing",),
    ),
    "living_dibao_level_4": (subsidy(L, 4), False, frozenset(), ()),
    "living_for_child_with_orphan_allowance": (
        subsidy(L, 1),
        True,
        frozenset(),
        ("orphan_allowance_excludes_living_subsidy",),
    ),
    "living_low_income": (subsidy(L, 2, Hardship.LOW_INCOME), False, frozenset(), ("no_hardship_status",)),
    "living_low_income_where_extended": (subsidy(L, 2, Hardship.LOW_INCOME), False, ALL_EXT, ()),
    "living_no_hardship": (subsidy(L, 1, Hardship.NONE), False, ALL_EXT, ("no_hardship_status",)),
    "living_orphan_allowance_and_no_hardship": (
        subsidy(L, 1, Hardship.NONE),
        True,
        frozenset(),
        ("orphan_allowance_excludes_living_subsidy", "no_hardship_status"),
    ),
}


@pytest.mark.parametrize(
    ("application", "orphan_allowance", "extensions", "expected"), ELIGIBILITY.values(), ids=ELIGIBILITY.keys()
)
def test_eligibility(
    application: Any, orphan_allowance: bool, extensions: frozenset[Extension], expected: tuple[str, ...]
) -> None:
    result = eligibility(application, receives_orphan_allowance=orphan_allowance, extensions=extensions)
    assert result.reasons == expected
    assert result.eligible is (not expected)
    for code in expected:  # every reason eligibility gives can be cited by a rejection of that programme
        default_reasons().require(code, ReasonAction.REJECT, application.programme)


def test_disabled_orphan_gets_nursing_but_not_living_subsidy() -> None:
    """SPEC §6, the cross-programme rule, stated once more as the pair it is."""
    assert eligibility(subsidy(N, 1), receives_orphan_allowance=True).eligible
    assert not eligibility(subsidy(L, 1), receives_orphan_allowance=True).eligible


# --- reason codes -------------------------------------------------------------------------------


def test_reason_table_loads_and_refuses_misuse() -> None:
    table = default_reasons()
    assert table.get("other").zh.startswith("其他")
    with pytest.raises(UnknownReasonCode):
        table.get("nope")
    with pytest.raises(UnknownReasonCode):
        table.require("not_registered_here", ReasonAction.REJECT, N)  # a return reason
    with pytest.raises(UnknownReasonCode):
        table.require("apply_as_orphan", ReasonAction.REJECT, N)  # another programme's reason


BAD_REASON_FILES = {
    "not_toml": "format = ",
    "wrong_format": 'format = 2\n[reasons.x1]\nzh="a"\nen="b"\nactions=["reject"]\nprogrammes=["orphan"]',
    "unknown_key": 'format = 1\n[reasons.x1]\nzh="a"\nen="b"\nactions=["reject"]\nprogrammes=["orphan"]\nz=1',
    "unknown_action": 'format = 1\n[reasons.x1]\nzh="a"\nen="b"\nactions=["deny"]\nprogrammes=["orphan"]',
    "unknown_programme": 'format = 1\n[reasons.x1]\nzh="a"\nen="b"\nactions=["reject"]\nprogrammes=["pension"]',
    "empty_text": 'format = 1\n[reasons.x1]\nzh=""\nen="b"\nactions=["reject"]\nprogrammes=["orphan"]',
    "bad_code": 'format = 1\n[reasons.X]\nzh="a"\nen="b"\nactions=["reject"]\nprogrammes=["orphan"]',
    "no_reasons": "format = 1\n[reasons]",
}


@pytest.mark.parametrize("text", BAD_REASON_FILES.values(), ids=BAD_REASON_FILES.keys())
def test_bad_reason_file_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        load_reasons(text)
