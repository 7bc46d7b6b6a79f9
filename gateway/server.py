"""The node's gRPC server: node-to-node and county-facing services plus the standard health service.

Servicers are thin: they translate with ``gateway.wire`` and delegate. Envelope delivery arrives
with the exchange layer; until then ``Deliver`` answers UNIMPLEMENTED with a clear message.

Until mutual TLS lands with node enrolment, the server refuses to listen on anything but a
loopback address: an unauthenticated port never faces a network.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tongban.v1 import common_pb2, county_pb2_grpc, envelope_pb2, node_pb2_grpc

from gateway.errors import ConfigError
from gateway.node import Node
from gateway.wire import node_info_to_wire

log = logging.getLogger("tongban.server")

SERVICE_NAMES = ("tongban.v1.NodeExchange", "tongban.v1.County")


class NodeExchangeServicer(node_pb2_grpc.NodeExchangeServicer):
    def __init__(self, node: Node) -> None:
        self._info = node_info_to_wire(node.description)

    def GetNodeInfo(self, request: common_pb2.NodeInfoRequest, context: grpc.ServicerContext) -> common_pb2.NodeInfo:
        return self._info

    def Deliver(self, request: envelope_pb2.Envelope, context: grpc.ServicerContext) -> envelope_pb2.Receipt:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "envelope exchange is not enabled in this version")

    def DeliverStream(
        self, request_iterator: Iterator[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> Iterator[envelope_pb2.Receipt]:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "envelope exchange is not enabled in this version")


class CountyServicer(county_pb2_grpc.CountyServicer):
    def __init__(self, node: Node) -> None:
        self._info = node_info_to_wire(node.description)

    def GetNodeInfo(self, request: common_pb2.NodeInfoRequest, context: grpc.ServicerContext) -> common_pb2.NodeInfo:
        return self._info


def require_loopback(listen: str) -> None:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"server.listen {listen!r} is not a loopback address; without mutual TLS (node enrolment) "
        "a node listens only on 127.0.0.1 or ::1"
    )


class NodeServer:
    """A started gRPC server for one node; ``stop()`` drains in-flight calls."""

    def __init__(self, node: Node, *, max_workers: int = 8) -> None:
        require_loopback(node.config.listen)
        self.node = node
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        node_pb2_grpc.add_NodeExchangeServicer_to_server(NodeExchangeServicer(node), self._server)
        county_pb2_grpc.add_CountyServicer_to_server(CountyServicer(node), self._server)
        port = self._server.add_insecure_port(node.config.listen)
        if port == 0:
            raise ConfigError(f"cannot listen on {node.config.listen}")
        host = node.config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"

    def start(self) -> None:
        self._server.start()
        for name in ("", *SERVICE_NAMES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s serving on %s", self.node.config.node_id, self.address)

    def stop(self, grace: float | None = None) -> None:
        self._health.enter_graceful_shutdown()  # health checks answer NOT_SERVING while draining
        self._server.stop(self.node.config.grace_seconds if grace is None else grace).wait()
        self.node.engine.dispose()
        log.info("node %s stopped", self.node.config.node_id)


def serve_forever(node: Node) -> int:
    """Run until SIGTERM or SIGINT; then drain and return 0.

    Prints one JSON line ``{"event": "ready", "node": …, "address": …}`` on stdout once serving, so a
    supervisor (or the demo) learns the bound port when ``listen`` asks for port 0.
    """
    server = NodeServer(node)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(json.dumps({"event": "ready", "node": node.config.node_id, "address": server.address}), flush=True)
    stop.wait()
    server.stop()
    print(json.dumps({"event": "stopped", "node": node.config.node_id}), flush=True)
    sys.stdout.flush()
    return 0
