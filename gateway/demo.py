"""``tongban demo``: the project's story on one machine.

So far the story is: two county nodes in different provinces — 重庆市两江新区 (a residence place
for many migrant families) and 四川省南部县 (a registration place) — are initialised with their own
data keys and databases, started as real ``tongban node serve`` processes on loopback, checked
through the gRPC health service, and each imports this quarter's synthetic roster: the migrant
children living in its county and the left-behind children registered there (SPEC §1: 流入地为主,
户籍地为主). Each later capability (keys, exchange, matching, cases, custody) extends this story.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select
from tongban.v1 import common_pb2, node_pb2_grpc

from gateway import config as config_mod
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import Cadence, MonitoringPeriod
from gateway.domain.records import ChildKind
from gateway.domain.rules import load_rules
from gateway.errors import GatewayError
from gateway.node import Node, init_node, open_node
from gateway.roster import intake
from gateway.store.schema import child_records
from gateway.synth.generator import SynthSpec, generate, roster_for
from gateway.trust.keyfile import ENV_PASSPHRASE, ENV_PASSPHRASE_FILE
from gateway.wire import node_info_from_wire


@dataclass(frozen=True)
class DemoNode:
    node_id: str
    division: str
    role: str  # what this county mostly is in the story


DEMO_NODES = (
    DemoNode("cq-liangjiang", "500157", "residence place (居住地) of migrant families"),
    DemoNode("sc-nanbu", "511321", "registration place (户籍地) of migrant and left-behind children"),
)


class DemoFailed(GatewayError):
    code = "demo_failed"
    public_message = "the demo could not complete"


@dataclass
class RunningNode:
    spec: DemoNode
    node: Node
    process: subprocess.Popen[str]
    address: str


def _start(cfg_path: Path, timeout: float = 30.0) -> tuple[subprocess.Popen[str], str]:
    """Start ``tongban node serve`` and wait for its ready line (which carries the bound port)."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "gateway", "node", "serve", "--config", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "ready":
            return proc, str(event["address"])
    proc.kill()
    raise DemoFailed(f"node with config {cfg_path} did not start")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.terminate()  # SIGTERM: graceful shutdown
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _probe(address: str) -> dict[str, Any]:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tongban.v1.NodeExchange"), timeout=5
        )
        info = node_info_from_wire(
            node_pb2_grpc.NodeExchangeStub(channel).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=5)
        )
    return {
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "node_id": info.node_id,
        "division": info.division_code,
    }


def _sealed_check(node: Node, period: str, sample: int = 50) -> dict[str, Any]:
    """Read the raw table and confirm that no stored row holds a name or ID number in clear."""
    secrets: list[bytes] = []
    for record in node.children.iter_period(period):
        secrets.append(record.name.encode("utf-8"))
        if record.id_number:
            secrets.append(record.id_number.encode("ascii"))
        if len(secrets) >= sample:
            break
    with node.engine.connect() as conn:
        rows = conn.execute(select(child_records)).all()
    raw = b"".join(repr(tuple(row)).encode("utf-8") + bytes(row.pii_sealed) for row in rows)
    leaked = sum(1 for s in secrets if s in raw)
    if leaked:
        raise DemoFailed(f"{leaked} personal value(s) found in clear in the database")
    return {
        "rows": len(rows),
        "values_checked": len(secrets),
        "found_in_clear": 0,
        "key_ids": sorted({r.key_id for r in rows}),
    }


@contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tongban-demo-") as tmp:
        yield Path(tmp)


def run(
    *,
    out: TextIO,
    workdir: Path | None = None,
    seed: int = 2026,
    households: int = 400,
    period_label: str | None = None,
    serve: bool = False,
    json_path: Path | None = None,
) -> dict[str, Any]:
    if not os.environ.get(ENV_PASSPHRASE) and not os.environ.get(ENV_PASSPHRASE_FILE):
        # Key files are always encrypted at rest; the demo's nodes get a throwaway passphrase
        # (inherited by the node processes it starts) instead of asking for one.
        os.environ[ENV_PASSPHRASE] = secrets.token_urlsafe(24)
    table = DivisionTable.load_default()
    rules = load_rules()
    today = date.today()
    period = (
        MonitoringPeriod.parse(period_label)
        if period_label
        # The latest *completed* quarter: rosters are reported once a period has ended, so no
        # synthetic birth or move date lies after today.
        else MonitoringPeriod.containing(today, Cadence.QUARTERLY).previous()
    )
    divisions = tuple(n.division for n in DEMO_NODES)
    spec = SynthSpec(
        seed=seed,
        period=period,
        residence_divisions=divisions,
        registration_divisions=divisions,
        households=households,
        node_id="synth",
    )
    summary: dict[str, Any] = {"period": period.label, "seed": seed, "nodes": [], "rosters": {}}
    w = out.write

    with _workdir(workdir) as base:
        w(f"Tongban demo — monitoring period {period.label} ({period.start} to {period.end})\n\n")
        w("1. Initialising county nodes (own data key, own database, migrated schema)\n")
        nodes: list[tuple[DemoNode, Node]] = []
        for spec_node in DEMO_NODES:
            data_dir = base / spec_node.node_id
            cfg_path = data_dir / config_mod.CONFIG_FILE
            if not cfg_path.exists():
                init_node(
                    data_dir,
                    node_id=spec_node.node_id,
                    division=spec_node.division,
                    listen="127.0.0.1:0",
                    table=table,
                )
            node = open_node(config_mod.load(cfg_path), table=table)
            nodes.append((spec_node, node))
            province = table.province_of(spec_node.division)
            place = f"{province.name}{node.description.division_name}"
            w(f"   {spec_node.node_id:<14} {spec_node.division} {place} — {spec_node.role}\n")

        population = Counter(r.kind for r in generate(spec, table, rules))
        summary["population"] = {"households": households, **{k.value: population[k] for k in ChildKind}}
        w(
            f"\n2. A seeded synthetic population (seed {seed}): {households} households, "
            f"{sum(population.values())} children:\n"
            f"   {population[ChildKind.MIGRANT]} 流动 (migrant), {population[ChildKind.LEFT_BEHIND]} 留守 "
            f"(left-behind), {population[ChildKind.NEITHER]} neither — each classified by the real rules\n"
            "   (under 16 on the period's first day, 6 months away, accompanied by a parent or guardian,\n"
            "   Chongqing's central-district exemption).\n"
            "   Importing the roster each county owns (流入地为主: migrants where they live;\n"
            "   户籍地为主: left-behind children where they are registered):\n"
        )
        for spec_node, node in nodes:
            owned = roster_for(generate(spec, table, rules), spec_node.division)
            result = intake(node.children, owned, period=period.label, table=table, today=today)
            counts = node.children.counts_by_kind(period.label)
            w(
                f"   {spec_node.node_id:<14} accepted {result.accepted:>4}  rejected {result.rejected}  "
                f"stored: {counts[ChildKind.MIGRANT]} 流动 (migrant), "
                f"{counts[ChildKind.LEFT_BEHIND]} 留守 (left-behind)\n"
            )
            for code, n in Counter(r.code for r in result.rejections).most_common():
                w(f"   {'':<14} rejected [{code}]: {n}\n")
            summary["rosters"][spec_node.node_id] = {
                "accepted": result.accepted,
                "rejected": result.rejected,
                "rerouted": result.rerouted,
                "stored": {k.value: v for k, v in counts.items()},
                "encryption": _sealed_check(node, period.label),
            }

        w("\n3. Starting the nodes (tongban node serve) and checking them over gRPC\n")
        running: list[RunningNode] = []
        try:
            for spec_node, node in nodes:
                node.engine.dispose()  # the server process opens its own connections
                proc, address = _start(node.config.path)
                running.append(RunningNode(spec_node, node, proc, address))
            for r in running:
                probe = _probe(r.address)
                province = table.province_of(r.spec.division)
                summary["nodes"].append(
                    {
                        "id": r.spec.node_id,
                        "division": r.spec.division,
                        "division_name": r.node.description.division_name,
                        "province": province.code[:2],
                        "province_name": province.name,
                        "address": r.address,
                        "health": probe["health"],
                    }
                )
                w(
                    f"   {r.spec.node_id:<14} {r.address:<21} health={probe['health']}  "
                    f"GetNodeInfo → {probe['node_id']} ({probe['division']})\n"
                )
            if json_path is not None:
                json_path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            w(
                "\nPersonal fields are sealed at rest (AES-256-GCM, key id stored beside each row);\n"
                "plain columns hold only division codes, period and kind.\n"
            )
            if serve:
                w("\nNodes are serving; press Ctrl-C to stop them.\n")
                out.flush()
                try:
                    while all(r.process.poll() is None for r in running):
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
        finally:
            for r in running:
                _stop(r.process)
        w("\n4. Nodes stopped gracefully (SIGTERM). Next in the story: enrolled keys and mutual TLS.\n")
    return summary
