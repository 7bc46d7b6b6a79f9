"""The case workflow through the service, between in-memory nodes (SPEC §6).

Three nodes of a real (test) PKI, each with its own SQLite database and keyring: 两江新区
(``cq-liangjiang``) and 北碚区 (``cq-beibei``) accept applications, 南部县 (``sc-nanbu``) decides.
:class:`Net` moves envelopes from a node's outbox to the peer's real :class:`Receiver` (signature,
purpose, time window, payload profile all checked), so only the sockets are missing; the mutual-TLS
run is ``tests/test_cases_e2e.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway import audit
from gateway.cases import lifecycle as lc
from gateway.cases.clock import Step as ClockStep
from gateway.cases.codec import ChildIdentity
from gateway.cases.service import CaseService, Draft
from gateway.cases.store import CaseStore, DocumentState, Side
from gateway.cases.types import (
    Carer,
    EvidenceDocument,
    EvidenceKind,
    Hardship,
    PaymentAccount,
    Programme,
    RecognitionApplication,
    SubsidyApplication,
)
from gateway.domain.records import Disability, DisabilityCategory, ParentSituation, ParentStatus
from gateway.errors import (
    AttachmentRefused,
    CaseNotFound,
    IllegalTransition,
    MaterialAlreadyRequested,
    NotEligible,
)
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.schema import case_events, cases
from gateway.trust.store import utc_now
from tests.factories import child, fake
from tests.test_mtls import LivePki

LJ, BB, NB = "cq-liangjiang", "cq-beibei", "sc-nanbu"
DIVISIONS = {LJ: "500157", BB: "500109", NB: "511321"}


@dataclass
class Net:
    services: dict[str, CaseService]
    receivers: dict[str, Receiver]
    keyrings: dict[str, DataKeyring]
    live: LivePki
    tamper: Callable[[str, bytes], bytes] | None = None

    def deliver(self, sender: str) -> int:
        """Deliver every queued envelope of ``sender`` to its peers; returns how many."""
        service = self.services[sender]
        claimed = outbox.claim(service.store.engine, "test", limit=10_000)
        directory = self.live.directory()
        for item in claimed:
            data = item.envelope(self.keyrings[sender])
            if self.tamper is not None:
                data = self.tamper(item.purpose, data)
            receipt = self.receivers[item.peer].receive(data, directory.entry(sender))
            with service.store.engine.begin() as conn:
                outbox.mark_delivered(conn, item.message_id, receipt.SerializeToString())
        return len(claimed)

    def settle(self, now: datetime) -> None:
        """Deliver and sync until nothing moves."""
        for _ in range(10):
            moved = sum(self.deliver(n) for n in self.services)
            for service in self.services.values():
                service.sync(now)
            if not moved:
                return


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    live = LivePki.create()
    directory = live.directory()
    profiles = load_profiles()
    services, receivers, keyrings = {}, {}, {}
    for node_id, division in DIVISIONS.items():
        engine = make_engine(f"sqlite:///{tmp_path / node_id}.db")
        migrate(engine)
        keyring = DataKeyring.generate()
        pki = live.node(node_id)
        services[node_id] = CaseService(
            node_id=node_id,
            division=division,
            store=CaseStore(engine, keyring),
            keyring=keyring,
            directory=directory,
            encryption_key=pki.encryption_key,
            signer=pki.signers[0],
            profiles=profiles,
        )
        receivers[node_id] = Receiver(
            node_id=node_id,
            engine=engine,
            keyring=keyring,
            directory=live.directory,
            profiles=profiles,
            signer=pki.signers[0],
            clock=utc_now,
        )
        keyrings[node_id] = keyring
    yield Net(services, receivers, keyrings, live)
    for service in services.values():
        service.store.engine.dispose()


def document(document_id: str, kind: EvidenceKind, data: bytes) -> EvidenceDocument:
    return EvidenceDocument(document_id, kind, hashlib.sha256(data).hexdigest(), len(data))


def orphan_draft(n: int, files: dict[str, bytes]) -> Draft:
    record = child(n, registration="511321", residence="500157")
    assert record.id_number is not None
    evidence = tuple(document(name, EvidenceKind.DEATH_CERTIFICATE, data) for name, data in files.items())
    application = RecognitionApplication(
        programme=Programme.ORPHAN,
        father=ParentStatus(ParentSituation.DECEASED, date(2021, 3, 2)),
        mother=ParentStatus(ParentSituation.DECEASED, date(2022, 7, 9)),
        carer=Carer(fake.name(), "祖父母", "13800000000"),
        evidence=evidence,
    )
    return Draft(application, ChildIdentity(record.id_number, record.name), "511321", record.record_id)


def living_subsidy_draft(n: int, data: bytes) -> Draft:
    record = child(n, registration="511321", residence="500157", disabled=True)
    assert record.id_number is not None
    certificate = Disability(DisabilityCategory.HEARING, 2)
    application = SubsidyApplication(
        programme=Programme.LIVING_SUBSIDY,
        certificate_number=certificate.certificate_number(record.id_number),
        disability=certificate,
        hardship=Hardship.DIBAO,
        payment_account=PaymentAccount("重庆农村商业银行", "6228480000000000", fake.name()),
        evidence=(document("cert", EvidenceKind.DISABILITY_CERTIFICATE, data),),
    )
    return Draft(application, ChildIdentity(record.id_number, record.name), "511321", record.record_id)


FILES = {"father-death": b"%PDF synthetic father" * 2000, "mother-death": b"%PDF synthetic mother" * 30000}


def history(service: CaseService, case_id: str) -> list[tuple[str, str, datetime]]:
    return [(e.action.value, e.role.value, e.at) for e in service.store.load(case_id).state.history]


def test_the_whole_lifecycle_through_the_service(net: Net) -> None:
    lj, nb = net.services[LJ], net.services[NB]
    now = utc_now()
    case_id = lj.accept(orphan_draft(1, FILES), FILES, now)
    assert lj.store.load(case_id).state.status is lc.Status.PUSHED
    # the mother's certificate is 600 kB: three chunks of 256 KiB, each in its own envelope
    assert [d.chunks for d in lj.store.load(case_id).documents] == [1, 3]
    net.settle(now)
    received = nb.store.load(case_id)
    assert received.row.side is Side.REGISTRATION
    assert received.state.status is lc.Status.RECEIVED
    assert {d.state for d in received.documents} == {DocumentState.COMPLETE}
    assert lj.store.load(case_id).state.status is lc.Status.RECEIVED

    t = now + timedelta(minutes=1)
    nb.request_material(case_id, [EvidenceKind.HOUSEHOLD_REGISTER], t)
    with pytest.raises(MaterialAlreadyRequested):
        nb.request_material(case_id, [EvidenceKind.OTHER], t)
    net.settle(t)
    assert lj.store.load(case_id).state.status is lc.Status.MATERIAL_REQUESTED
    register = b"synthetic household register"
    lj.resubmit(case_id, [(document("register", EvidenceKind.HOUSEHOLD_REGISTER, register), register)], t)
    net.settle(t)
    t2 = t + timedelta(minutes=1)
    nb.first_review(case_id, t2)
    nb.approve(case_id, date(t2.year, t2.month, 1), t2)
    net.settle(t2)
    assert lj.store.load(case_id).state.status is lc.Status.RESULT_DELIVERED
    lj.notify_applicant(case_id, t2)
    lj.close(case_id, t2)
    net.settle(t2)
    assert nb.store.load(case_id).state.status is lc.Status.CLOSED
    assert history(lj, case_id) == history(nb, case_id)
    assert [a for a, _, _ in history(nb, case_id)] == [
        "accept",
        "push",
        "receive",
        "request_material",
        "resubmit",
        "first_review",
        "approve",
        "deliver_result",
        "notify_applicant",
        "close",
    ]
    assert lj.show(case_id).clocks == nb.show(case_id).clocks
    decision = lj.store.load(case_id).state.decision
    assert decision is not None
    assert decision.approved
    assert decision.payment_from == date(t2.year, t2.month, 1)


def test_illegal_actions_are_refused_and_change_nothing(net: Net) -> None:
    lj, nb = net.services[LJ], net.services[NB]
    now = utc_now()
    case_id = lj.accept(orphan_draft(2, FILES), FILES, now)
    net.settle(now)

    def snapshot() -> tuple[int, int, int]:
        with nb.store.engine.connect() as conn:
            events = conn.execute(select(func.count()).select_from(case_events)).scalar_one()
            queued = len(outbox.list_messages(nb.store.engine, limit=1000))
            status = conn.execute(select(cases.c.status)).scalar_one()
        return int(events), queued, hash(status)

    before = snapshot()
    with pytest.raises(IllegalTransition):  # recognition: the township reviews first
        nb.approve(case_id, date(now.year, now.month, 1), now)
    with pytest.raises(IllegalTransition):  # the residence side may not decide
        lj.reject(case_id, "parents_not_qualifying", "synthetic", now)
    with pytest.raises(IllegalTransition):  # nor the registration side notify
        nb.notify_applicant(case_id, now)
    with pytest.raises(CaseNotFound):
        nb.first_review("00000000-0000-4000-8000-000000000000", now)
    assert snapshot() == before


def test_a_document_that_does_not_match_is_refused_at_acceptance(net: Net) -> None:
    draft = orphan_draft(3, FILES)
    with pytest.raises(AttachmentRefused):
        net.services[LJ].accept(draft, {**FILES, "mother-death": b"other bytes"}, utc_now())
    assert net.services[LJ].store.rows() == []


def test_a_tampered_chunk_is_refused_and_reported(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    lj, nb = net.services[LJ], net.services[NB]
    from gateway.cases import handoff

    real_split = handoff.split

    def bad_split(data: bytes, size: int = handoff.CHUNK_BYTES) -> list[bytes]:
        pieces = real_split(data, size)
        return [pieces[0][:-1] + b"!", *pieces[1:]]  # the sender signs a corrupted first chunk

    now = utc_now()
    monkeypatch.setattr(handoff, "split", bad_split)
    bad = lj.accept(orphan_draft(5, FILES), FILES, now)
    net.settle(now)
    stored = nb.store.load(bad)
    assert {d.state for d in stored.documents} == {DocumentState.REFUSED}
    assert stored.state.status is lc.Status.PUSHED  # never counts as received
    assert any(e.action == "attachment_refused" and e.reference == bad for e in audit.entries(nb.store.engine))
    assert {d.state for d in lj.store.load(bad).documents} == {DocumentState.REFUSED}  # reported back


def test_a_second_application_for_the_same_benefit_is_flagged_to_both(net: Net) -> None:
    lj, bb, nb = net.services[LJ], net.services[BB], net.services[NB]
    now = utc_now()
    draft = orphan_draft(6, FILES)
    first = lj.accept(draft, FILES, now)
    second = bb.accept(draft, FILES, now)
    net.settle(now)
    assert nb.store.load(first).row.flag == nb.store.load(second).row.flag == "duplicate_application"
    assert lj.store.load(first).row.flag == "duplicate_application"
    assert bb.store.load(second).row.flag == "duplicate_application"


def test_orphan_allowance_excludes_the_living_subsidy_at_decision(net: Net) -> None:
    lj, nb = net.services[LJ], net.services[NB]
    now = utc_now()
    orphan = lj.accept(orphan_draft(7, FILES), FILES, now)
    net.settle(now)
    nb.first_review(orphan, now)
    nb.approve(orphan, date(now.year, now.month, 1), now)
    cert = b"synthetic disability certificate"
    subsidy = lj.accept(living_subsidy_draft(7, cert), {"cert": cert}, now)
    net.settle(now)
    with pytest.raises(NotEligible) as info:
        nb.approve(subsidy, date(now.year, now.month, 1), now)
    assert info.value.detail == "orphan_allowance_excludes_living_subsidy"
    nb.reject(subsidy, "orphan_allowance_excludes_living_subsidy", "享受孤儿基本生活保障", now)
    net.settle(now)
    assert lj.store.load(subsidy).state.status is lc.Status.RESULT_DELIVERED


def test_overdue_steps_raise_one_alert_each_across_the_national_day_holiday(net: Net) -> None:
    lj = net.services[LJ]
    # Accepted on Tuesday 29 September 2026 and never delivered: push is due 3 working days later,
    # which the National Day holiday (1-7 October) pushes to Friday 9 October.
    accepted = datetime(2026, 9, 29, 10, 0, tzinfo=lc.CHINA)
    case_id = lj.accept(orphan_draft(8, FILES), FILES, accepted)
    with lj.store.engine.begin() as conn:  # take the push back: the case sits accepted
        conn.execute(case_events.delete().where(case_events.c.case_id == case_id, case_events.c.seq == 2))
        conn.execute(cases.update().values(status="accepted"))
    clock = lj.show(case_id).clocks[ClockStep.PUSH]
    assert clock.due == date(2026, 10, 9)
    assert lj.overdue(date(2026, 10, 9), datetime.now(UTC)) == []
    alerts = lj.overdue(date(2026, 10, 10), datetime.now(UTC))
    assert [(a.case_id, a.step, a.due, a.province, a.new) for a in alerts] == [
        (case_id, ClockStep.PUSH, date(2026, 10, 9), "50", True)
    ]
    again = lj.overdue(date(2026, 10, 12), datetime.now(UTC))
    assert [a.new for a in again] == [False]
    entries = [e for e in audit.entries(lj.store.engine) if e.action == "case_overdue"]
    assert [(e.reference, e.detail) for e in entries] == [(case_id, "step=push due=2026-10-09 province=50")]
    (item,) = lj.inbox(date(2026, 10, 10))
    assert (item.case_id, item.overdue, item.due) == (case_id, True, date(2026, 10, 9))
