"""Custody over real processes and mutual TLS (SPEC §6; issue 6's "same scenario once for real").

Three nodes enrolled with the real ``tongban keys`` flow: cq-liangjiang (A, residence) and
sc-nanbu (B, registration) run as ``tongban node serve`` processes; B's directory endpoint is a TCP
proxy that can cut every connection; sc-wuhou (C) is enrolled but not involved. The test acts as
each county's staff through :class:`CustodyService` on each node's own database (what a county
system does through its node), and only from that node's own view. A smaller version of
``tests/test_custody_sim.py``'s random scenario: 20 cases opened at A for B, random offers,
accepts, declines, recall requests and closes; B is SIGKILLed while A's outbox is delivering to it
and restarted; the connection is cut and restored. After healing: on both nodes every case has
exactly one holder, nothing pending, and the two chains are identical. C asking WhoHolds over mTLS
is refused (PERMISSION_DENIED); B gets the chain; an exported chain verifies offline with the CLI.
"""

from __future__ import annotations

import contextlib
import io
import random
import uuid
from datetime import date
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select
from tongban.v1 import node_pb2, node_pb2_grpc

from gateway.cli import main
from gateway.config import NodeConfig
from gateway.custody.chain import can_act, verify_chain
from gateway.custody.events import CaseType
from gateway.custody.service import CustodyService
from gateway.errors import NotPermitted
from gateway.exchange.purposes import load_profiles
from gateway.node import open_node
from gateway.store.schema import outbox
from gateway.trust.keyfile import passphrase_from_env, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore
from gateway.trust.tls import TlsIdentity, secure_channel_to
from gateway.wire import custody_chain_from_wire
from tests.test_fault_injection import NodeProcess, Proxy, enrol_world, free_port, wait_until

pytestmark = pytest.mark.slow

A, B, C = "cq-liangjiang", "sc-nanbu", "sc-wuhou"
DIVISIONS = {A: "500157", B: "511321", C: "510107"}
PROVINCES = (("50", "重庆市民政局"), ("51", "四川省民政厅"))
CASES = 20


def enrol(base: Path, ports: dict[str, int], proxy_port: int) -> dict[str, NodeConfig]:
    """Three nodes, 南部县 behind the cutting proxy."""
    return enrol_world(base, DIVISIONS, ports, endpoints={B: proxy_port})


class Staff:
    """A county's staff acting on their own node's database, from their own node's view."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.node = open_node(cfg)
        self.trust = TrustStore.from_config(cfg)
        self.trust.ensure_usable()
        self.svc = CustodyService(
            node_id=cfg.node_id,
            engine=self.node.engine,
            keyring=self.node.keyring,
            signer=Ed25519Signer(read_signing_key(cfg.signing_key, passphrase_from_env())),
            directory=lambda: self.trust.current(),
            profiles=load_profiles(),
            clock=self.trust.clock,
        )

    def queued(self) -> int:
        with self.node.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(outbox).where(outbox.c.status == "queued")).scalar_one()
            )

    def dead(self) -> int:
        with self.node.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(outbox).where(outbox.c.status == "dead")).scalar_one()
            )

    def act(self, rng: random.Random, case_id: str, peer: str) -> None:
        state = self.svc.view(case_id)
        if state is None or state.closed:
            return
        me = self.svc.node_id
        try:
            if can_act(state, me):
                if rng.random() < 0.05:
                    self.svc.close(case_id)
                else:
                    self.svc.offer(case_id, peer)
            elif state.pending is not None and state.pending.to_node == me:
                (self.svc.accept if rng.random() < 0.7 else self.svc.decline)(case_id)
            elif state.pending is not None and state.pending.from_node == me and rng.random() < 0.3:
                self.svc.recall_request(case_id)
        except NotPermitted:
            pass  # the view moved between reading and acting: a real county sees the same refusal

    def close(self) -> None:
        self.node.engine.dispose()


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def who_holds(cfg: NodeConfig, ask: str, case_id: str) -> node_pb2.WhoHoldsResponse:
    trust = TrustStore.from_config(cfg)
    directory = trust.ensure_usable()
    identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=cfg.node_id)
    channel = secure_channel_to(ask, directory, identity, now=trust.clock())
    try:
        return node_pb2_grpc.NodeExchangeStub(channel).WhoHolds(node_pb2.WhoHoldsRequest(case_id=case_id), timeout=10)
    finally:
        channel.close()


def test_random_custody_scenario_over_real_processes(tmp_path: Path) -> None:
    ports = {n: free_port() for n in DIVISIONS}
    proxy = Proxy(free_port(), ports[B], rate=10_000_000)
    proxy.restore()
    cfgs = enrol(tmp_path, ports, proxy.port)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {n: NodeProcess(cfgs[n], logs / f"{n}.log") for n in (A, B)}
    staff = {n: Staff(cfgs[n]) for n in (A, B)}
    rng = random.Random(20261208)
    try:
        for p in procs.values():
            p.start()
        cases = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(CASES)]
        for case_id in cases:
            staff[A].svc.open_case(case_id, CaseType.ORPHAN, B, date(2026, 11, 2))
        for i in range(240):
            if i == 40:
                procs[B].kill()  # SIGKILL while A's outbox is delivering to it
            if i == 70:
                procs[B].start()
            if i == 120:
                proxy.cut()
            if i == 150:
                proxy.restore()
            who = rng.choice((A, B))
            staff[who].act(rng, rng.choice(cases), B if who == A else A)

        # Heal: let the outboxes drain; the targets of pending offers answer; until nothing moves.
        for _ in range(30):
            wait_until(lambda: staff[A].queued() == 0 and staff[B].queued() == 0, timeout=60, what="outboxes drained")
            answered = 0
            for n, s in staff.items():
                for case_id in cases:
                    state = s.svc.view(case_id)
                    if state is not None and state.pending is not None and state.pending.to_node == n:
                        s.svc.accept(case_id)
                        answered += 1
            if answered:
                continue
            views = {n: [s.svc.view(c) for c in cases] for n, s in staff.items()}
            if all(v is not None and v.pending is None for vs in views.values() for v in vs) and all(
                a is not None and b is not None and a.head == b.head for a, b in zip(views[A], views[B], strict=True)
            ):
                break
        else:
            raise AssertionError("custody did not settle")
        assert staff[A].dead() == 0
        assert staff[B].dead() == 0

        moved = 0
        for case_id in cases:
            chain_a, chain_b = staff[A].svc.chain(case_id), staff[B].svc.chain(case_id)
            assert chain_a == chain_b, f"case {case_id}: different chains"
            state = verify_chain(chain_a, staff[A].svc._directory(), staff[A].trust.clock())
            assert state.holder is not None
            assert state.pending is None
            actors = [n for n in (A, B, C) if can_act(state, n)]
            assert actors == ([] if state.closed else [state.holder])
            views = [staff[n].svc.view(case_id) for n in (A, B)]
            assert all(v is not None and v.equivocations == () for v in views)
            moved += sum(1 for e in state.chain if e.kind.value == "accept")
        assert moved > 0, "some cases changed hands"
        assert procs[B].starts == 2

        # Who holds case C? Involved B gets the chain from A; uninvolved C is refused.
        case_id = cases[0]
        answer = who_holds(cfgs[B], A, case_id)
        assert custody_chain_from_wire(answer.chain)[1] == staff[A].svc.chain(case_id)
        with pytest.raises(grpc.RpcError) as refused:
            who_holds(cfgs[C], A, case_id)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

        # The exported chain verifies offline from public material only.
        out = tmp_path / "chain.json"
        code, _, err = cli("custody", "export", case_id, "--config", str(cfgs[A].path), "--out", str(out))
        assert code == 0, err
        national = tmp_path / "national"
        code, printed, err = cli(
            "custody", "verify", str(out), "--directory", str(national / "directory.json"),
            "--root", str(national / "root" / "root.json"),
        )  # fmt: skip
        assert code == 0, err
        assert staff[A].svc.chain(case_id)[-1].hash in printed
        code, printed, err = cli("custody", "show", case_id, "--config", str(cfgs[B].path))
        assert code == 0, err
        assert "holder" in printed
        tampered = out.read_text(encoding="utf-8").replace('"signature": "', '"signature": "AAAA', 1)
        out.write_text(tampered, encoding="utf-8")
        code, _, err = cli("custody", "verify", str(out), "--directory", str(national / "directory.json"))
        assert code == 65
        assert "custody_bad_signature" in err
    finally:
        for p in procs.values():
            p.stop()
        for s in staff.values():
            s.close()
        proxy.cut()
