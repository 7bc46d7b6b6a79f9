"""Small synthetic records for unit tests (Faker zh_CN names; valid, never real, ID numbers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime

from faker import Faker

from gateway.domain import idnumber
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
from gateway.matching import normalise_name

fake = Faker("zh_CN")
Faker.seed(20261123)

# Every personal value the test process put in a record — names, ID numbers, guardians' names and
# phones: those made here, and (through the hook in tests/conftest.py) those of every other
# ChildRecord built during the session. tests/test_zz_log_hygiene.py looks for them in the logs.
PERSONAL_VALUES: set[str] = set()


def remember(record: ChildRecord) -> None:
    """Add the personal values of ``record`` to :data:`PERSONAL_VALUES`."""
    values = [record.name, record.id_number]
    if record.guardian is not None:
        values += [record.guardian.name, record.guardian.phone]
    PERSONAL_VALUES.update(v for v in values if v)


def child(
    n: int,
    *,
    registration: str = "511321",
    residence: str = "500157",
    kind: ChildKind = ChildKind.MIGRANT,
    with_id: bool = True,
    disabled: bool = False,
    born: date | None = None,
) -> ChildRecord:
    sex = Sex.MALE if n % 2 else Sex.FEMALE
    born = born or date(2012 + n % 10, 1 + n % 12, 1 + n % 28)
    seq = (n * 2 + (1 if sex is Sex.MALE else 0)) % 1000
    if (seq % 2 == 1) != (sex is Sex.MALE):
        seq = (seq + 1) % 1000
    name = fake.last_name() + fake.first_name_male() if sex is Sex.MALE else fake.name_female()
    record = ChildRecord(
        record_id=str(uuid.UUID(int=n + 1)),
        id_number=idnumber.make(registration, born, seq) if with_id else None,
        name=name,
        sex=sex,
        birth_date=born,
        registration_division=registration,
        residence_division=residence,
        living_since=date(2024, 3, 1),
        guardianship=GuardianshipSituation.PARENTS,
        father=ParentStatus(ParentSituation.WITH_CHILD),
        mother=ParentStatus(ParentSituation.DECEASED, date(2020, 5, 17))
        if n % 7 == 0
        else ParentStatus(ParentSituation.WITH_CHILD),
        kind=kind,
        provenance=Provenance(
            source="test:factories",
            imported_at=datetime(2026, 10, 1, 8, 0, tzinfo=UTC),
            node_id="t",
            source_row=n,
        ),
        guardian=Guardian(fake.name(), "母亲", fake.phone_number()) if n % 3 == 0 else None,
        disability=Disability(DisabilityCategory.HEARING, 2) if disabled else None,
        key_care=frozenset({KeyCareFlag.FAMILY_HARDSHIP}) if n % 5 == 0 else frozenset(),
    )
    remember(record)
    return record


def three_character_name() -> str:
    """A Faker zh_CN name of a one-character surname and a two-character given name (a name whose
    one-character edits the matcher can recognise: "Single births" in gateway.matching.matcher)."""
    while True:
        surname, given = fake.last_name(), fake.first_name()
        if len(surname) == 1 and len(given) == 2:
            return surname + given


def one_character_edit(name: str, *, unlike: Iterable[str] = ()) -> str:
    """``name`` with its last character replaced by the last character of a Faker given name, so
    that it sounds like neither ``name`` nor any of ``unlike`` (another toneless pinyin): a typo,
    or a co-twin's name, that only the single-birth rule may link."""
    sounds = {normalise_name(n).letters for n in (name, *unlike)}
    while True:
        edited = name[:-1] + fake.first_name()[-1]
        if normalise_name(edited).letters not in sounds:
            return edited
