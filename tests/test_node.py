"""A node that starts: init, open, serve over real gRPC on loopback, stop gracefully on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tongban.v1 import common_pb2, county_pb2_grpc, envelope_pb2, node_pb2_grpc

from gateway import config
from gateway.county import auth
from gateway.county.permissions import Role
from gateway.errors import ConfigError, InvalidDivisionCode, RetiredDivision
from gateway.node import init_node, open_node
from gateway.server import NodeServer, require_loopback


@pytest.fixture
def node_dir(tmp_path: Path, db_url: str) -> Path:
    d = tmp_path / "node"
    init_node(d, node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0", database_url=db_url)
    return d


@pytest.fixture
def server(node_dir: Path) -> Iterator[NodeServer]:
    s = NodeServer(open_node(config.load(node_dir / "node.toml")))
    s.start()
    yield s
    s.stop(grace=0)


def test_health_and_node_info_over_grpc(server: NodeServer) -> None:
    assert not server.tls  # not enrolled: plaintext, loopback only (mutual TLS is in test_mtls)
    with grpc.insecure_channel(server.address) as ch:
        for service in ("", "tongban.v1.NodeExchange"):
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        info = node_pb2_grpc.NodeExchangeStub(ch).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=5)
        assert (info.node_id, info.division_code, info.province_code) == ("cq-liangjiang", "500157", "50")
        assert info.division_name == "两江新区"
        # The county API is not on the node-to-node port: it has a listener and credentials of its own.
        with pytest.raises(grpc.RpcError) as refused:
            county_pb2_grpc.CountyStub(ch).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    token, _ = auth.create(server.node.engine, role=Role.COUNTY_SYSTEM, label="test")
    with grpc.insecure_channel(server.county_address) as ch:
        for service in ("", "tongban.v1.County"):
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        bearer = (("authorization", f"Bearer {token}"),)
        county_info = county_pb2_grpc.CountyStub(ch).GetNodeInfo(
            common_pb2.NodeInfoRequest(), timeout=5, metadata=bearer
        )
        assert county_info == info


def test_envelope_delivery_is_explicitly_not_enabled_yet(server: NodeServer) -> None:
    with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError) as info:
        node_pb2_grpc.NodeExchangeStub(ch).Deliver(envelope_pb2.Envelope(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("division", "error"),
    [
        pytest.param("500112", RetiredDivision, id="retired_division"),
        pytest.param("999999", InvalidDivisionCode, id="unknown_division"),
    ],
)
def test_init_refuses_non_current_divisions(tmp_path: Path, division: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        init_node(tmp_path / "n", node_id="cq-old", division=division)
    assert not (tmp_path / "n" / "node.toml").exists()


def test_init_refuses_to_overwrite(node_dir: Path, db_url: str) -> None:
    with pytest.raises(ConfigError):
        init_node(node_dir, node_id="cq-liangjiang", division="500157", database_url=db_url)


def test_open_refuses_a_database_of_another_node(tmp_path: Path, node_dir: Path) -> None:
    cfg = config.load(node_dir / "node.toml", environ={"TONGBAN_NODE_ID": "cq-impostor"})
    with pytest.raises(ConfigError):
        open_node(cfg)


@pytest.mark.parametrize(
    ("listen", "ok"),
    [
        pytest.param("127.0.0.1:7301", True, id="ipv4_loopback"),
        pytest.param("[::1]:7301", True, id="ipv6_loopback"),
        pytest.param("localhost:7301", True, id="localhost"),
        pytest.param("0.0.0.0:7301", False, id="all_interfaces"),
        pytest.param("10.1.2.3:7301", False, id="lan_address"),
        pytest.param("node.example:7301", False, id="hostname"),
    ],
)
def test_without_tls_only_loopback(listen: str, ok: bool) -> None:
    if ok:
        require_loopback(listen)
    else:
        with pytest.raises(ConfigError):
            require_loopback(listen)


@pytest.mark.slow
def test_serve_process_stops_gracefully_on_sigterm(node_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "node", "serve", "--config", str(node_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"server exited early: {proc.stderr.read() if proc.stderr else ''}"
        ready = json.loads(line)
        assert (ready["event"], ready["tls"]) == ("ready", False)
        assert ready["county"].startswith("127.0.0.1:")
        with grpc.insecure_channel(ready["address"]) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["event"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
