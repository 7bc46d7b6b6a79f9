"""The node's gRPC server: node-to-node and county-facing services plus the standard health service.

Servicers are thin: they translate with ``gateway.wire`` and delegate. Envelope delivery arrives
with the exchange layer; until then ``Deliver`` answers UNIMPLEMENTED with a clear message.

Two modes, chosen by :attr:`NodeConfig.enrolled` (a TLS certificate and a pinned root exist):

* **enrolled** — mutual TLS only (:mod:`gateway.trust.tls`), with the trust store's current
  directory as the source of client trust anchors and :class:`PeerAuthInterceptor` binding every
  call (except health) to an active directory node. The directory refresher runs while the server
  runs. A node that is enrolled but has no usable directory refuses to start: it never falls back
  to plaintext.
* **not enrolled** — plaintext, and then only on a loopback address: an unauthenticated port
  never faces a network.
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
from gateway.trust.interceptor import PeerAuthInterceptor
from gateway.trust.store import TrustStore
from gateway.trust.tls import TlsIdentity, server_credentials
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
    """A gRPC server for one node (mutual TLS when enrolled); ``start()``, then ``stop()`` drains.

    ``trust`` replaces the store opened from the configuration (tests use it to inject a clock).
    Raises, before anything listens: ``ConfigError`` (plaintext on a non-loopback address, or an
    address that cannot be bound); for an enrolled node also ``KeyFileError`` / ``CertificateInvalid``
    (TLS key or certificate unusable, or naming another node) and ``DirectoryUnavailable`` /
    ``DocumentExpired`` (no usable directory: refusing to serve rather than serve blind).
    """

    def __init__(self, node: Node, *, max_workers: int = 8, trust: TrustStore | None = None) -> None:
        cfg = node.config
        self.node = node
        self.tls = cfg.enrolled
        self.trust: TrustStore | None = None
        interceptors: list[grpc.ServerInterceptor] = []  # type: ignore[type-arg]
        credentials: grpc.ServerCredentials | None = None
        if self.tls:
            store = trust or TrustStore.from_config(cfg)
            directory = store.ensure_usable()
            identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=cfg.node_id)
            credentials = server_credentials(identity, store.ca_bundle_pem)
            interceptors.append(PeerAuthInterceptor(store.current, store.clock))
            self.trust = store
            log.info("node %s: mutual TLS with directory v%d", cfg.node_id, directory.version)
        else:
            require_loopback(cfg.listen)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        node_pb2_grpc.add_NodeExchangeServicer_to_server(NodeExchangeServicer(node), self._server)
        county_pb2_grpc.add_CountyServicer_to_server(CountyServicer(node), self._server)
        if credentials is not None:
            port = self._server.add_secure_port(cfg.listen, credentials)
        else:
            port = self._server.add_insecure_port(cfg.listen)
        if port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen}")
        host = cfg.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"

    def start(self) -> None:
        self._server.start()
        for name in ("", *SERVICE_NAMES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.trust is not None:
            self.trust.start_refresher()
        log.info(
            "node %s serving on %s (%s)", self.node.config.node_id, self.address, "mTLS" if self.tls else "plaintext"
        )

    def stop(self, grace: float | None = None) -> None:
        self._health.enter_graceful_shutdown()  # health checks answer NOT_SERVING while draining
        if self.trust is not None:
            self.trust.stop_refresher()
        self._server.stop(self.node.config.grace_seconds if grace is None else grace).wait()
        self.node.engine.dispose()
        log.info("node %s stopped", self.node.config.node_id)


def serve_forever(node: Node) -> int:
    """Run until SIGTERM or SIGINT; then drain and return 0.

    Prints one JSON line ``{"event": "ready", "node": …, "address": …, "tls": true|false}`` on stdout
    once serving, so a supervisor (or the demo) learns the bound port when ``listen`` asks for port 0
    and whether to dial it with mutual TLS.
    """
    server = NodeServer(node)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    ready = {"event": "ready", "node": node.config.node_id, "address": server.address, "tls": server.tls}
    print(json.dumps(ready), flush=True)
    stop.wait()
    server.stop()
    print(json.dumps({"event": "stopped", "node": node.config.node_id}), flush=True)
    sys.stdout.flush()
    return 0
