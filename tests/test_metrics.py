"""The Prometheus endpoint on a real node store (SQLite and PostgreSQL), scraped over a real socket.

A node gets rows the way its own code writes them — outbox messages queued, delivered and dead,
cases accepted long ago and today with an overdue alert, two periods of reconciliation findings, a
last good directory bundle — and a real receiver refuses two envelopes. The endpoint is scraped on
127.0.0.1 and the exposition parsed with ``prometheus_client``'s own parser: every number must be
what the rows say, every label must be an identifier or a code, and nothing personal appears.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cases import lifecycle as lc
from gateway.cases.codec import CaseFile
from gateway.cases.store import CaseStore, Side, steps_of
from gateway.cases.types import Case, new_case_id
from gateway.errors import ConfigError, EnvelopeMalformed, EnvelopeTooLarge
from gateway.exchange import outbox
from gateway.exchange.delivery import Metrics
from gateway.exchange.envelope import MAX_ENVELOPE_BYTES
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import Receiver
from gateway.metrics import MetricsServer
from gateway.node import Node, init_node, open_node
from gateway.reconcile import store as findings
from gateway.reconcile.findings import Code, Finding, Role
from gateway.reconcile.findings import Side as FindingSide
from gateway.trust.signing import Ed25519Signer
from gateway.trust.verifier import TrustState
from tests.test_cases_service import orphan_draft
from tests.trustkit import NOW as PKI_NOW
from tests.trustkit import standard_pki

T = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # 10:00 in China, a Tuesday
NODE, DIVISION = "cq-liangjiang", "500157"
NB, ZJ = "sc-nanbu", "gz-zhijin"
ALLOWED_LABELS = {"node", "division", "version", "peer", "status", "outcome", "reason", "side", "programme"}
ALLOWED_LABELS |= {"period", "code", "band", "part"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Message:
    message_id: str
    recipient: str
    purpose: str
    data: bytes


@dataclass
class Worker:
    """What the collector reads of a delivery worker: its in-memory counters."""

    metrics: Metrics


@pytest.fixture
def node(tmp_path: Path, db_url: str) -> Iterator[Node]:
    cfg = init_node(tmp_path / "node", node_id=NODE, division=DIVISION, database_url=db_url)
    n = open_node(cfg)
    yield n
    n.engine.dispose()


def scrape(address: str, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
        assert response.status == 200
        body: bytes = response.read()
    return body.decode("utf-8")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"node": NODE, **labels}.items()))]


def tongban(samples: Samples) -> dict[str, list[dict[str, str]]]:
    """Our series by name, with their labels."""
    out: dict[str, list[dict[str, str]]] = {}
    for name, labels in samples:
        if name.startswith("tongban_"):
            out.setdefault(name, []).append(dict(labels))
    return out


# --- the rows -----------------------------------------------------------------------------------------


def fill_outbox(node: Node) -> None:
    """sc-nanbu: two queued (the older 2 h old), one delivered, one dead; gz-zhijin: one queued (30 min)."""
    messages = [
        (Message(str(uuid.uuid4()), NB, "migrant_notice", b"envelope 1"), T - timedelta(hours=2)),
        (Message(str(uuid.uuid4()), NB, "migrant_notice", b"envelope 2"), T - timedelta(hours=1)),
        (Message(str(uuid.uuid4()), NB, "roster_manifest", b"envelope 3"), T - timedelta(hours=3)),
        (Message(str(uuid.uuid4()), NB, "roster_manifest", b"envelope 4"), T - timedelta(hours=4)),
        (Message(str(uuid.uuid4()), ZJ, "case_handoff", b"envelope 5"), T - timedelta(minutes=30)),
    ]
    with node.engine.begin() as conn:
        for m, at in messages:
            outbox.enqueue(conn, m, node.keyring, now=at)
    delivered, dead = messages[2][0].message_id, messages[3][0].message_id
    claimed = outbox.claim(node.engine, "w1", peer=NB, limit=10, now=T - timedelta(minutes=10))
    with node.engine.begin() as conn:
        assert outbox.mark_delivered(conn, delivered, b"receipt", now=T - timedelta(minutes=9))
        assert outbox.mark_dead(conn, dead, "w1", reason="peer_revoked: the recipient is revoked")
    outbox.release(node.engine, "w1", [c.message_id for c in claimed if c.message_id not in {delivered, dead}])


def case_file(n: int, accepted_on: date) -> CaseFile:
    draft = orphan_draft(n, {"scan": b"synthetic scan"})
    case = Case(new_case_id(), draft.application, NODE, DIVISION, NB, "511321", f"ref-{n}", accepted_on)
    return CaseFile(case, draft.child)


def fill_cases(node: Node) -> list[CaseFile]:
    """Two accepted orphan cases at the residence side: one accepted three weeks ago (its push is
    overdue, and an alert was recorded), one today; and one pushed case."""
    store = CaseStore(node.engine, node.keyring)
    old, today, pushed = case_file(1, date(2026, 11, 2)), case_file(2, T.date()), case_file(3, T.date())
    with node.engine.begin() as conn:
        for file, actions in (
            (old, [(lc.Role.RESIDENCE_STAFF, lc.Accept(), datetime(2026, 11, 2, 2, 0, tzinfo=UTC))]),
            (today, [(lc.Role.RESIDENCE_STAFF, lc.Accept(), T)]),
            (pushed, [(lc.Role.RESIDENCE_STAFF, lc.Accept(), T), (lc.Role.RESIDENCE_NODE, lc.Push(), T)]),
        ):
            store.create(conn, file, Side.RESIDENCE, now=T)
            state, steps = steps_of(lc.new_state(file.case), actions)
            store.append(conn, state, steps)
        assert store.record_alert(conn, old.case_id, "push", date(2026, 11, 5), "50", T)
    return [old, today, pushed]


def fill_findings(node: Node) -> None:
    def run(*codes: Code) -> list[Finding]:
        return [Finding(c, Role.REGISTRATION, FindingSide.BOTH, peer=NB, peer_division="511321") for c in codes]

    with node.engine.begin() as conn:
        findings.replace(conn, "2026Q3", run(Code.MATCHED, Code.ROSTER_MISSING), now=T - timedelta(days=60))
        latest = run(Code.MATCHED, Code.MATCHED, Code.MATCHED, Code.REVIEW, Code.NOT_IN_LEDGER, Code.NOT_IN_LEDGER)
        findings.replace(conn, "2026Q4", latest, now=T - timedelta(days=1))


def fill_directory(node: Node) -> None:
    """The last good bundle as the trust store leaves it, adopted an hour ago."""
    path = node.config.last_good_directory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(standard_pki().bundle())  # version 1, expires PKI_NOW + 7 days
    adopted = (T - timedelta(hours=1)).timestamp()
    os.utime(path, (adopted, adopted))


def refusing_receiver(node: Node) -> Receiver:
    pki = standard_pki()
    directory = TrustState.from_pinned_root(pki.roots[0].to_bytes(), PKI_NOW).accept(pki.bundle(), PKI_NOW)[1]
    receiver = Receiver(
        node_id=NODE,
        engine=node.engine,
        keyring=node.keyring,
        directory=lambda: directory,
        profiles=load_profiles(),
        signer=Ed25519Signer.generate(),
        clock=lambda: PKI_NOW,
    )
    peer = directory.entry(NB)
    with pytest.raises(EnvelopeMalformed):
        receiver.receive(b"not an envelope", peer)
    with pytest.raises(EnvelopeTooLarge):
        receiver.receive(b"\0" * (MAX_ENVELOPE_BYTES + 1), peer)
    return receiver


# --- the tests ----------------------------------------------------------------------------------------


def test_the_endpoint_reports_the_nodes_state(node: Node) -> None:
    fill_outbox(node)
    files = fill_cases(node)
    fill_findings(node)
    fill_directory(node)
    receiver = refusing_receiver(node)
    counts = Metrics()
    for name, n in (("delivered", 4), ("retried", 2), ("failed.peer_unreachable", 2)):
        counts.inc(name, n)
    server = MetricsServer(node, "127.0.0.1:0", delivery=Worker(counts), receiver=receiver, clock=lambda: T)
    server.start()
    try:
        assert server.address.startswith("127.0.0.1:")
        assert not server.address.endswith(":0")
        text = scrape(server.address)
        with pytest.raises(urllib.error.HTTPError) as info:
            scrape(server.address, "/")
        assert info.value.code == 404
        info.value.close()
    finally:
        server.stop()
    s = parse(text)

    assert value(s, "tongban_node_info", division=DIVISION, version=node.description.software_version) == 1
    # outbox: depth by peer and status, age of the oldest queued message per peer
    assert value(s, "tongban_outbox_messages", peer=NB, status="queued") == 2
    assert value(s, "tongban_outbox_messages", peer=NB, status="delivered") == 1
    assert value(s, "tongban_outbox_messages", peer=NB, status="dead") == 1
    assert value(s, "tongban_outbox_messages", peer=ZJ, status="queued") == 1
    assert value(s, "tongban_outbox_oldest_queued_age_seconds", peer=NB) == 2 * 3600
    assert value(s, "tongban_outbox_oldest_queued_age_seconds", peer=ZJ) == 30 * 60
    # this process's delivery counters and the receiver's refusals by code
    assert value(s, "tongban_delivery_outcomes_total", outcome="delivered") == 4
    assert value(s, "tongban_delivery_outcomes_total", outcome="retried") == 2
    assert value(s, "tongban_delivery_outcomes_total", outcome="dead") == 0
    assert value(s, "tongban_delivery_failures_total", reason="peer_unreachable") == 2
    assert value(s, "tongban_receive_refusals_total", reason="envelope_malformed") == 1
    assert value(s, "tongban_receive_refusals_total", reason="envelope_too_large") == 1
    # cases by state, overdue, alerts
    assert value(s, "tongban_cases", side="residence", programme="orphan", status="accepted") == 2
    assert value(s, "tongban_cases", side="residence", programme="orphan", status="pushed") == 1
    assert value(s, "tongban_cases_overdue", side="residence", programme="orphan") == 1
    assert value(s, "tongban_case_overdue_alerts_total") == 1
    # the latest reconciled period only
    assert {labels["period"] for labels in tongban(s)["tongban_reconcile_findings"]} == {"2026Q4"}
    assert value(s, "tongban_reconcile_findings", period="2026Q4", code="matched") == 3
    assert value(s, "tongban_reconcile_findings", period="2026Q4", code="not_in_ledger") == 2
    assert value(s, "tongban_match_outcomes", period="2026Q4", band="matched") == 3
    assert value(s, "tongban_match_outcomes", period="2026Q4", band="review") == 1
    # the directory
    assert value(s, "tongban_directory_version") == 1
    assert value(s, "tongban_directory_age_seconds") == pytest.approx(3600, abs=1)
    assert value(s, "tongban_directory_expiry_seconds") == (PKI_NOW + timedelta(days=7) - T).total_seconds()
    # every part read; the process collector is there too
    ups = {
        labels["part"]: value(s, "tongban_metrics_up", part=labels["part"])
        for labels in tongban(s)["tongban_metrics_up"]
    }
    assert ups == dict.fromkeys(("outbox", "delivery", "receiver", "cases", "overdue", "reconcile", "directory"), 1)
    assert any(name.startswith("process_") for name, _ in s)
    # labels are identifiers and codes only; no personal value anywhere in the exposition
    for series in tongban(s).values():
        for labels in series:
            assert set(labels) <= ALLOWED_LABELS, labels
    for file in files:
        assert file.child.name not in text
        assert file.child.id_number not in text


def test_a_part_that_fails_is_reported_and_the_rest_still_answers(node: Node) -> None:
    fill_outbox(node)
    path = node.config.last_good_directory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a bundle")
    server = MetricsServer(node, "127.0.0.1:0", clock=lambda: T)
    server.start()
    try:
        s = parse(scrape(server.address))
    finally:
        server.stop()
    assert value(s, "tongban_metrics_up", part="directory") == 0
    assert value(s, "tongban_metrics_up", part="outbox") == 1
    assert value(s, "tongban_outbox_messages", peer=NB, status="queued") == 2
    assert "tongban_directory_version" not in tongban(s)
    # without a delivery worker or a receiver (a node that is not enrolled) their counters are absent
    assert "tongban_delivery_outcomes_total" not in tongban(s)
    assert "tongban_receive_refusals_total" not in tongban(s)


def test_overdue_cases_are_recounted_at_most_every_interval(node: Node) -> None:
    server = MetricsServer(node, "127.0.0.1:0", clock=lambda: T, overdue_every=3600)
    server.start()
    try:
        before = parse(scrape(server.address))
        fill_cases(node)
        after = parse(scrape(server.address))
    finally:
        server.stop()
    assert "tongban_cases_overdue" not in tongban(before)
    assert value(after, "tongban_cases", side="residence", programme="orphan", status="accepted") == 2
    assert "tongban_cases_overdue" not in tongban(after), "cached until the interval has passed"


def test_two_nodes_in_one_process_keep_their_own_registries(tmp_path: Path) -> None:
    nodes = [
        open_node(init_node(tmp_path / node_id, node_id=node_id, division=division))
        for node_id, division in ((NODE, DIVISION), (NB, "511321"))
    ]
    servers = [MetricsServer(n, "127.0.0.1:0", clock=lambda: T) for n in nodes]
    try:
        for server in servers:
            server.start()
        seen = [{labels["node"] for labels in tongban(parse(scrape(s.address)))["tongban_node_info"]} for s in servers]
        assert seen == [{NODE}, {NB}]
    finally:
        for server in servers:
            server.stop()
            server.stop()  # idempotent
        for n in nodes:
            n.engine.dispose()


def test_an_address_that_cannot_be_bound_is_a_configuration_error(tmp_path: Path) -> None:
    n = open_node(init_node(tmp_path / "node", node_id=NODE, division=DIVISION))
    first = MetricsServer(n, "127.0.0.1:0")
    try:
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            MetricsServer(n, first.address)
        for bad in ("7309", "127.0.0.1:port", "127.0.0.1:99999"):
            with pytest.raises(ConfigError, match=r"metrics\.listen"):
                MetricsServer(n, bad)
    finally:
        first.stop()  # never started: closes the socket
        n.engine.dispose()
