"""督办 through the exchange (SPEC §6): an overdue step alerts the province's supervising node.

两江新区 (500157) answers for a push that is overdue on a fixed clock (accepted on Tuesday 29
September 2026, the push taken back, so it is due on Friday 9 October after the National Day
holiday). With ``[cases] supervisors`` naming 北碚区's node as Chongqing's supervising node, the
alert is queued once per step and due day as a ``case_supervision`` message, delivered through the
real receiver and listed there by county; without a supervisor it stays a local ``case_alerts``
row, as before. No personal data travels: case id, programme, step, due day, node and county.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.cases import lifecycle as lc
from gateway.cases.service import SUPERVISION_PURPOSE, CaseService
from gateway.exchange import outbox
from gateway.store.schema import case_events, cases
from gateway.trust.store import utc_now
from tests.test_cases_custody import Net
from tests.test_cases_service import BB, DIVISIONS, FILES, LJ, orphan_draft
from tests.test_cases_transfer import build_net
from tests.test_mtls import LivePki

ACCEPTED = datetime(2026, 9, 29, 10, 0, tzinfo=lc.CHINA)
DUE = date(2026, 10, 9)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    live = LivePki.create()
    directory = live.directory()
    built = build_net(tmp_path, live, lambda: directory)
    yield built
    for node in built.nodes.values():
        node.service.store.engine.dispose()


def _overdue_push(service: CaseService, n: int) -> str:
    case_id = service.accept(orphan_draft(n, FILES), FILES, ACCEPTED)
    with service.store.engine.begin() as conn:  # take the push back: the case sits accepted
        conn.execute(case_events.delete().where(case_events.c.case_id == case_id, case_events.c.seq == 2))
        conn.execute(cases.update().where(cases.c.case_id == case_id).values(status="accepted"))
    return case_id


def _supervision_rows(service: CaseService) -> int:
    return sum(1 for m in outbox.list_messages(service.store.engine, limit=1000) if m.purpose == SUPERVISION_PURPOSE)


def test_an_overdue_step_reaches_the_supervising_node_once_and_is_listed_by_county(net: Net) -> None:
    lj, bb = net.nodes[LJ].service, net.nodes[BB].service
    lj.supervisors = {"50": BB, "5001": BB}
    assert lj.supervisor() == BB
    net.deliver(LJ)  # the handoff, out of the way
    case_id = _overdue_push(lj, 41)
    assert lj.overdue(DUE, datetime.now(UTC)) == []
    assert _supervision_rows(lj) == 0
    (alert,) = lj.overdue(date(2026, 10, 10), datetime.now(UTC))
    assert alert.new
    assert _supervision_rows(lj) == 1
    again = lj.overdue(date(2026, 10, 12), datetime.now(UTC))
    assert [a.new for a in again] == [False]
    assert _supervision_rows(lj) == 1, "one alert per step and due day"
    assert [(a[0], a[1], a[2]) for a in lj.store.alerts()] == [(case_id, "push", DUE)], "the local row stays"

    net.deliver(LJ)
    (received,) = bb.supervision()
    assert (received.case_id, received.programme, received.step, received.due) == (case_id, "orphan", "push", DUE)
    assert (received.responsible_node, received.division) == (LJ, DIVISIONS[LJ])
    assert net.nodes[LJ].service.supervision() == [], "nothing received at the county itself"


def test_without_a_supervisor_the_alert_stays_local(net: Net) -> None:
    lj = net.nodes[LJ].service
    assert lj.supervisor() is None
    case_id = _overdue_push(lj, 42)
    (alert,) = lj.overdue(date(2026, 10, 10), utc_now())
    assert alert.new
    assert _supervision_rows(lj) == 0
    assert [a[0] for a in lj.store.alerts()] == [case_id]
    lj.supervisors = {"50": LJ}
    assert lj.supervisor() is None, "a node does not alert itself"


def test_the_alerts_of_several_cases_are_listed_by_county_and_due_day(net: Net) -> None:
    lj, bb = net.nodes[LJ].service, net.nodes[BB].service
    lj.supervisors = {"50": BB}
    _overdue_push(lj, 43)
    _overdue_push(lj, 44)
    lj.overdue(date(2026, 10, 10), utc_now())
    net.deliver(LJ)
    listed = bb.supervision()
    assert len(listed) == 2
    assert {a.division for a in listed} == {DIVISIONS[LJ]}
    assert listed == sorted(listed, key=lambda a: (a.division, a.due, a.case_id, a.step))
