"""Roster intake: validate child records against the domain rules and store the good ones.

This is the service layer the CLI, the demo and (later) the county API and the file adapters call.
Each record is checked in a fixed order; a record that fails becomes a :class:`Rejection` carrying
its position, a stable error code and a public reason — never the offending value. Accepted
records are stored in one transaction, so an intake either lands whole or not at all.

``all_or_nothing`` stores nothing at all when any record is rejected (the summary then says
``stored=False``); the command line's ``--all-or-nothing`` and the county API's ``SubmitRoster``
both use it.

Checks, in order:

1. the ID number, when present, is a valid GB 11643 number whose prefix is a division code that
   ever existed (historical table), and its embedded birth date and sex agree with the record's;
2. registration and residence divisions are known; a retired code is re-routed to its single
   current successor (SPEC §1) — a code with several successors or an unknown one is rejected,
   because guessing would send a child's record to the wrong county.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.domain.records import ChildKind, ChildRecord
from gateway.errors import GatewayError, InputError, InvalidRecord
from gateway.store.repository import ChildRepository


@dataclass(frozen=True)
class Rejection:
    position: int  # 1-based position in the submitted sequence
    code: str
    reason: str


@dataclass(frozen=True)
class IntakeSummary:
    period: str
    accepted: int
    by_kind: dict[ChildKind, int]
    rerouted: int
    rejections: tuple[Rejection, ...] = field(default=())
    stored: bool = True  # False: nothing was stored (all_or_nothing and a record was rejected)

    @property
    def rejected(self) -> int:
        return len(self.rejections)


def validate(record: ChildRecord, table: DivisionTable, *, today: date) -> tuple[ChildRecord, bool]:
    """Return the record ready to store (with retired divisions re-routed) and whether it was
    re-routed. Raises a :class:`~gateway.errors.InputError` subclass on the first rule broken."""
    if record.id_number is not None:
        rid = idnumber.parse(record.id_number, today=today, division_existed=table.existed)
        if rid.birth_date != record.birth_date:
            raise InvalidRecord("the birth date contradicts the one in the ID number")
        if rid.sex != record.sex:
            raise InvalidRecord("the sex contradicts the one in the ID number")
        if rid.number != record.id_number:
            record = dataclasses.replace(record, id_number=rid.number)
    if record.birth_date > today:
        raise InvalidRecord("the birth date is in the future")
    registration = table.resolve(record.registration_division)
    residence = table.resolve(record.residence_division)
    rerouted = (registration, residence) != (record.registration_division, record.residence_division)
    if rerouted:
        record = dataclasses.replace(record, registration_division=registration, residence_division=residence)
    return record, rerouted


class _RolledBack(Exception):
    """Raised inside the stored stream to roll its transaction back (``all_or_nothing``)."""


def intake(
    repo: ChildRepository,
    records: Iterable[ChildRecord | InputError],
    *,
    period: str,
    table: DivisionTable,
    today: date,
    all_or_nothing: bool = False,
) -> IntakeSummary:
    """Validate every record, store the valid ones atomically, and summarise.

    A reader that cannot even build a record from a row passes the :class:`InputError` instead,
    so that the row keeps its position and is reported like any other rejection. With
    ``all_or_nothing``, a single rejection rolls the whole intake back: the summary lists the
    rejections, with nothing accepted and ``stored=False``.
    """
    rejections: list[Rejection] = []
    by_kind = dict.fromkeys(ChildKind, 0)
    rerouted = 0

    def valid() -> Iterator[ChildRecord]:
        nonlocal rerouted
        for position, record in enumerate(records, start=1):
            if isinstance(record, InputError):
                rejections.append(Rejection(position, record.code, str(record)))
                continue
            try:
                good, moved = validate(record, table, today=today)
            except GatewayError as exc:
                rejections.append(Rejection(position, exc.code, str(exc)))
                continue
            rerouted += moved
            by_kind[good.kind] += 1
            yield good
        if all_or_nothing and rejections:
            raise _RolledBack  # inside add_many's transaction: nothing of this intake is stored

    try:
        accepted = repo.add_many(valid(), period=period)
    except _RolledBack:
        return IntakeSummary(period, 0, dict.fromkeys(ChildKind, 0), 0, tuple(rejections), stored=False)
    return IntakeSummary(period, accepted, by_kind, rerouted, tuple(rejections))
