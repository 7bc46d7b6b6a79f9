"""The node's gRPC server: node-to-node and county-facing services plus the standard health service.

Servicers are thin: they translate with ``gateway.wire`` and delegate. ``NodeExchange.Deliver`` and
``DeliverStream`` hand envelopes to the :class:`~gateway.exchange.receiver.Receiver` with the peer
the interceptor authenticated, and map its refusals once, with
:func:`~gateway.status.exchange_status` (every status is in :mod:`gateway.status`) and a public
message that never carries a detail:
``Deliver`` answers a refusal with that gRPC status; ``DeliverStream`` answers one
``DeliveryResult`` per envelope, in order — the receipt, or a ``Refusal`` with the same status
number, error code and public message — so one refused envelope does not cost the rest of a batch.
A failure of this node itself (no usable directory, database down) ends the stream with its status;
the sender resends whatever got no result.

Two modes, chosen by :attr:`NodeConfig.enrolled` (a TLS certificate and a pinned root exist):

* **enrolled** — mutual TLS only (:mod:`gateway.trust.tls`), with the trust store's current
  directory as the source of client trust anchors and :class:`PeerAuthInterceptor` binding every
  call (except health) to an active directory node. The directory refresher runs while the server
  runs. A node that is enrolled but has no usable directory refuses to start: it never falls back
  to plaintext. The node's message-signing key signs receipts; the outbox's
  :class:`~gateway.exchange.delivery.DeliveryWorker` runs while the server runs, and so does the
  :class:`CaseSync` loop (every ``exchange.case_sync_seconds``: apply received case messages, then
  the custody they make due — :mod:`gateway.cases.custody_hook`). An enrolled node
  without a signing-key file serves everything but envelopes (refused ``UNAVAILABLE``, so senders
  retry) and says so in its log.
* **not enrolled** — plaintext, and then only on a loopback address: an unauthenticated port
  never faces a network.

The county API (``tongban.v1.County``, :mod:`gateway.county`) is served on a listener of its own,
``[county] listen`` (plaintext and loopback only; or mutual TLS with the node's county CA,
``[county] tls = true``, on any address): county systems and staff authenticate with API tokens or
client certificates and every call is checked against the permission table by
:class:`~gateway.county.servicer.CountyAuthInterceptor`. The node-to-node port does not serve it: a
directory node's certificate is no county credential, and a token is never sent to a peer port.

Two more listeners are off unless configured: the web inbox for county staff (``[web] listen``,
loopback only, :mod:`gateway.web`: pages over the same case service) and the Prometheus endpoint
(``[metrics] listen``, :mod:`gateway.metrics`: counts and ages, no personal data).

Relay mode (``[exchange]``, see :mod:`gateway.exchange.relay`), enrolled nodes only:
``transport = "relay"`` delivers the outbox through the relay node ``relay`` instead of directly;
``relays = [...]`` runs one :class:`~gateway.exchange.relay.RelayPuller` per relay and lets the
receiver accept envelopes relayed by them (none when the list is empty; none either without the
node's encryption-key file, which opens relayed items); ``serve_relay = true`` also serves
``tongban.v1.Relay`` over the same mutual TLS and interceptor, storing items in this node's database.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import datetime, timedelta
from types import FrameType
from typing import IO, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy import Connection
from tongban.v1 import common_pb2, custody_pb2, envelope_pb2, node_pb2, node_pb2_grpc, relay_pb2, relay_pb2_grpc

from gateway import audit
from gateway.cases.custody_hook import CaseCustody
from gateway.cases.lifecycle import china_date
from gateway.cases.service import CaseService
from gateway.cases.wiring import CaseParts
from gateway.config import NodeConfig
from gateway.county.servicer import check_county_listen, county_server
from gateway.custody.service import PURPOSE as CUSTODY_PURPOSE
from gateway.custody.service import CustodyService
from gateway.errors import ConfigError, ExchangeError, GatewayError, InputError
from gateway.exchange.delivery import DeliveryWorker, personal_purposes
from gateway.exchange.envelope import Verified
from gateway.exchange.purposes import load_profiles
from gateway.exchange.receiver import OnAccept, Receiver
from gateway.exchange.relay import RelayPuller, RelayServicer, RelayStore, RelayTransport, SqlRelayStore
from gateway.exchange.retry import RetryPolicy
from gateway.exchange.transport import GrpcTransport, Transport
from gateway.metrics import MetricsServer
from gateway.node import Node
from gateway.status import custody_status, exchange_status, public_message
from gateway.trust.interceptor import PeerAuthInterceptor, RequestIdInterceptor, authenticated_peer
from gateway.trust.keyfile import passphrase_from_env, read_encryption_key, read_signing_key
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.tls import TlsIdentity, server_credentials
from gateway.web.app import WebInbox
from gateway.web.server import WebServer
from gateway.wire import custody_chain_from_wire, custody_chain_to_wire, node_info_to_wire

log = logging.getLogger("tongban.server")

SERVICE_NAMES = ("tongban.v1.NodeExchange",)
COUNTY_SERVICE = "tongban.v1.County"
RELAY_SERVICE = "tongban.v1.Relay"


class NodeExchangeServicer(node_pb2_grpc.NodeExchangeServicer):
    """``receiver`` is ``None`` while envelope exchange is unavailable on this node; ``disabled``
    then says why, in a sentence safe for any peer, answered with ``disabled_status``: a node that
    is not enrolled never exchanges (``UNIMPLEMENTED``); an enrolled node without its signing key
    can once an operator installs it (``UNAVAILABLE``, so senders retry)."""

    def __init__(
        self,
        node: Node,
        receiver: Receiver | None = None,
        *,
        disabled: str = "",
        disabled_status: grpc.StatusCode = grpc.StatusCode.UNIMPLEMENTED,
        custody: CustodyService | None = None,
    ) -> None:
        self._info = node_info_to_wire(node.description)
        self._receiver = receiver
        self._custody = custody
        self._disabled = disabled or "envelope exchange is not enabled on this node"
        self._disabled_status = disabled_status

    def GetNodeInfo(self, request: common_pb2.NodeInfoRequest, context: grpc.ServicerContext) -> common_pb2.NodeInfo:
        return self._info

    def _require(self, context: grpc.ServicerContext) -> Receiver:
        if self._receiver is None:
            context.abort(self._disabled_status, f"exchange_disabled: {self._disabled}")
        return self._receiver

    def Deliver(self, request: envelope_pb2.Envelope, context: grpc.ServicerContext) -> envelope_pb2.Receipt:
        receiver = self._require(context)
        peer = authenticated_peer()
        try:
            return receiver.receive(request, peer)
        except GatewayError as exc:
            _log_refusal(peer.node_id, exc)
            context.abort(exchange_status(exc), public_message(exc))

    def DeliverStream(
        self, request_iterator: Iterator[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> Iterator[node_pb2.DeliveryResult]:
        receiver = self._require(context)
        peer = authenticated_peer()
        try:
            for outcome in receiver.receive_many(request_iterator, peer):
                if isinstance(outcome, ExchangeError):
                    _log_refusal(peer.node_id, outcome)
                    yield node_pb2.DeliveryResult(refusal=refusal_to_wire(outcome))
                else:
                    yield node_pb2.DeliveryResult(receipt=outcome)
        except GatewayError as exc:
            _log_refusal(peer.node_id, exc)
            context.abort(exchange_status(exc), public_message(exc))

    def WhoHolds(self, request: node_pb2.WhoHoldsRequest, context: grpc.ServicerContext) -> node_pb2.WhoHoldsResponse:
        """Thin: the service decides (only nodes the chain names) and audits; errors map once."""
        if self._custody is None:
            context.abort(self._disabled_status, f"exchange_disabled: {self._disabled}")
        peer = authenticated_peer()
        try:
            events = self._custody.who_holds(request.case_id, peer.node_id)
        except GatewayError as exc:
            context.abort(custody_status(exc), public_message(exc))
        return node_pb2.WhoHoldsResponse(chain=custody_chain_to_wire(request.case_id, events))


def refusal_to_wire(error: ExchangeError) -> node_pb2.Refusal:
    """The in-stream form of a refusal: what ``Deliver`` would have answered as a status."""
    return node_pb2.Refusal(
        status_code=exchange_status(error).value[0], error_code=error.code, message=error.public_message
    )


def _log_refusal(peer: str, error: GatewayError) -> None:
    # The code only: a detail can name fields or divisions of the refused payload.
    log.info("refused an envelope from %s (%s)", peer, error.code)


def both(*hooks: OnAccept) -> OnAccept:
    """Run several ``on_accept`` hooks, in order, in the transaction that stores the envelope."""

    def on_accept(conn: Connection, verified: Verified) -> None:
        for hook in hooks:
            hook(conn, verified)

    return on_accept


def apply_custody(custody: CustodyService) -> OnAccept:
    """The receiver's ``on_accept`` hook for ``custody_event`` envelopes: convert the chain and let
    the custody service append its events in the transaction that stores the envelope."""

    def on_accept(conn: Connection, verified: Verified) -> None:
        if verified.purpose != CUSTODY_PURPOSE:
            return
        if not isinstance(verified.payload, custody_pb2.CustodyChain):  # the profile guarantees it
            raise InputError("a custody message must carry a CustodyChain")
        case_id, events = custody_chain_from_wire(verified.payload)
        custody.apply(conn, verified.sender, case_id, events)

    return on_accept


def audit_receipts(node_id: str) -> OnAccept:
    """The receiver's ``on_accept`` hook: an audit entry ``receive`` for every accepted message of
    a purpose that carries personal data, in the transaction that stores it."""

    def on_accept(conn: Connection, verified: Verified) -> None:
        if verified.profile.personal:
            audit.append(
                conn,
                actor=node_id,
                action=audit.Action.RECEIVE,
                purpose=verified.purpose,
                reference=verified.message_id,
                detail=f"from={verified.sender}",
            )

    return on_accept


OVERDUE_CHECK_SECONDS = 60.0  # how often the case loop looks for overdue steps (督办)


class CaseSync:
    """The running node's case loop: every ``interval`` seconds, apply the case messages received
    (:meth:`CaseService.sync`), take the custody actions they make due (:meth:`CaseCustody.settle`)
    and record overdue steps (:meth:`CaseService.overdue`, 督办), so cases move without anyone running
    a command. A failed round is logged by error code only (never a message text, which could quote
    a value) and the loop goes on."""

    def __init__(
        self,
        build: Callable[[], CaseService],
        custody: CaseCustody,
        *,
        clock: Callable[[], datetime],
        interval: float,
    ) -> None:
        self._build = build
        self._custody = custody
        self._clock = clock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="case-sync", daemon=True)
        self._overdue_at: float | None = None  # monotonic time of the last overdue check
        self.rounds = 0

    def run_once(self) -> None:
        try:
            now = self._clock()
            service = self._build()
            summary = service.sync(now)
            settled = self._custody.settle()
            if summary.applied or settled:
                log.info("case sync: %d message(s) applied, custody %s", summary.applied, settled or "unchanged")
            # 督办: overdue steps are recorded once per step and due day, and sent to the province's
            # supervising node when one is configured ([cases.supervisors]). Deadlines are days, so
            # this reads every open case once a minute, not on every round.
            tick = time.monotonic()
            if self._overdue_at is None or tick - self._overdue_at >= OVERDUE_CHECK_SECONDS:
                self._overdue_at = tick
                service.overdue(china_date(now), now)  # logs each new alert itself
        except GatewayError as exc:
            log.warning("case sync round failed (%s)", exc.code)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one round; logged by type only
            log.warning("case sync round failed (%s)", type(exc).__name__)
        self.rounds += 1

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.run_once()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


def require_loopback(listen: str, *, setting: str = "server.listen") -> None:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"{setting} {listen!r} is not a loopback address; a plaintext listener (the county API, or a node "
        "without mutual TLS) listens only on 127.0.0.1 or ::1"
    )


class NodeServer:
    """A gRPC server for one node (mutual TLS when enrolled); ``start()``, then ``stop()`` drains.

    ``trust`` replaces the store opened from the configuration (tests use it to inject a clock).
    Raises, before anything listens: ``ConfigError`` (plaintext on a non-loopback address — the
    county API's ``[county] listen`` is, unless ``[county] tls`` — or an address that cannot be
    bound); for an
    enrolled node also ``KeyFileError`` / ``CertificateInvalid``
    (TLS key or certificate unusable, or naming another node) and ``DirectoryUnavailable`` /
    ``DocumentExpired`` (no usable directory: refusing to serve rather than serve blind), and
    ``KeyFileError`` for a signing-key file that exists but cannot be opened.

    When enrolled, :attr:`receiver` verifies and stores incoming envelopes and :attr:`delivery`
    delivers the outbox, directly or through the configured relay; :attr:`pullers` pull from the
    configured relays and :attr:`relay` serves the relay role when configured (see the module
    docstring). ``[exchange]`` tunes them; ``retry_policy`` and ``delivery_poll_interval`` override
    the configured back-off and poll interval, and ``relay_store`` the relay's store (tests use
    them to shorten waits and to inject a misbehaving relay).
    """

    def __init__(
        self,
        node: Node,
        *,
        max_workers: int = 8,
        trust: TrustStore | None = None,
        retry_policy: RetryPolicy | None = None,
        delivery_poll_interval: float | None = None,
        relay_store: RelayStore | None = None,
    ) -> None:
        cfg = node.config
        check_county_listen(cfg)  # before anything listens
        self.node = node
        self.tls = cfg.enrolled
        self.trust: TrustStore | None = None
        self.receiver: Receiver | None = None
        self.custody: CustodyService | None = None
        self.cases: CaseParts | None = None  # the case store, custody hook and service (enrolled, with keys)
        self.delivery: DeliveryWorker | None = None
        self.case_sync: CaseSync | None = None
        self.pullers: list[RelayPuller] = []
        self.relay: RelayServicer | None = None
        self._transport: Transport | None = None
        poll = cfg.exchange_poll_seconds if delivery_poll_interval is None else delivery_poll_interval
        disabled = ""
        interceptors: list[grpc.ServerInterceptor] = [RequestIdInterceptor()]  # type: ignore[type-arg]
        credentials: grpc.ServerCredentials | None = None
        if self.tls:
            store = trust or TrustStore.from_config(cfg)
            directory = store.ensure_usable()
            identity = TlsIdentity.load(cfg.tls_key, cfg.tls_certificate, node_id=cfg.node_id)
            credentials = server_credentials(identity, store.ca_bundle_pem)
            interceptors.append(PeerAuthInterceptor(store.current, store.clock))
            self.trust = store
            log.info("node %s: mutual TLS with directory v%d", cfg.node_id, directory.version)
            profiles = load_profiles()
            if cfg.signing_key.exists():
                signer = Ed25519Signer(read_signing_key(cfg.signing_key, passphrase_from_env()))
                private = None
                if cfg.encryption_key.exists():
                    private = read_encryption_key(cfg.encryption_key, passphrase_from_env())
                else:
                    log.warning(
                        "node %s: no encryption key at %s; not applying case messages", cfg.node_id, cfg.encryption_key
                    )
                self.cases = CaseParts.build(
                    node,
                    signer=signer,
                    encryption_key=private,
                    directory=lambda: store.current(),
                    profiles=profiles,
                    clock=store.clock,
                )
                self.custody = self.cases.custody
                self.receiver = Receiver(
                    node_id=cfg.node_id,
                    engine=node.engine,
                    keyring=node.keyring,
                    directory=lambda: store.current(),
                    profiles=profiles,
                    signer=signer,
                    clock=store.clock,
                    on_accept=both(audit_receipts(cfg.node_id), apply_custody(self.custody)),
                    relays=cfg.exchange_relays,
                )
                if self.cases.can_act:
                    self.case_sync = CaseSync(
                        self.cases.service, self.cases.custody, clock=store.clock, interval=cfg.case_sync_seconds
                    )
            else:
                disabled = "this node has no message-signing key"
                log.warning("node %s: no signing key at %s; envelopes will be refused", cfg.node_id, cfg.signing_key)
            timeout = cfg.exchange_timeout_seconds
            if cfg.exchange_transport == "relay":
                self._transport = RelayTransport(
                    node_id=cfg.node_id,
                    relay_id=cfg.exchange_relay,
                    identity=identity,
                    directory=store.current,
                    clock=store.clock,
                    timeout=timeout,
                )
                log.info("node %s: delivering through relay %s", cfg.node_id, cfg.exchange_relay)
            else:
                self._transport = GrpcTransport(
                    identity=identity, directory=store.current, clock=store.clock, timeout=timeout
                )
            policy = retry_policy or RetryPolicy(
                base_delay=timedelta(seconds=cfg.retry_base_seconds),
                max_delay=timedelta(seconds=cfg.retry_max_seconds),
            )
            self.delivery = DeliveryWorker(
                node_id=cfg.node_id,
                engine=node.engine,
                keyring=node.keyring,
                transport=self._transport,
                directory=store.current,
                personal=personal_purposes(profiles),
                policy=policy,
                clock=store.clock,
                batch_size=cfg.exchange_batch_size,
                lease=timedelta(seconds=cfg.exchange_lease_seconds),
                poll_interval=poll,
            )
            if cfg.exchange_relays and self.receiver is not None:
                self.pullers = self._pullers(cfg, self.receiver, identity, store, poll)
            if cfg.serve_relay:
                self.relay = RelayServicer(
                    relay_store or SqlRelayStore(node.engine), directory=store.current, clock=store.clock
                )
                log.info("node %s: serving the relay role", cfg.node_id)
        else:
            require_loopback(cfg.listen)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        node_pb2_grpc.add_NodeExchangeServicer_to_server(
            NodeExchangeServicer(
                node,
                self.receiver,
                disabled=disabled,
                disabled_status=grpc.StatusCode.UNAVAILABLE if self.tls else grpc.StatusCode.UNIMPLEMENTED,
                custody=self.custody,
            ),
            self._server,
        )
        if self.relay is not None:
            relay_pb2_grpc.add_RelayServicer_to_server(self.relay, self._server)
        services = [health.SERVICE_NAME, node_pb2.DESCRIPTOR.services_by_name["NodeExchange"].full_name]
        if self.relay is not None:
            services.append(relay_pb2.DESCRIPTOR.services_by_name["Relay"].full_name)
        reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], self._server)
        if credentials is not None:
            port = self._server.add_secure_port(cfg.listen, credentials)
        else:
            port = self._server.add_insecure_port(cfg.listen)
        if port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen}")
        host = cfg.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        self._county_server, self.county_address = self._county(node, max_workers, self.cases)
        self.web: WebServer | None = None
        if cfg.web_listen:
            require_loopback(cfg.web_listen, setting="web.listen")
            clock = self.trust.clock if self.trust is not None else utc_now
            self.web = WebServer(WebInbox(node, self.cases, clock=clock), cfg.web_listen)
        self.metrics: MetricsServer | None = None
        if cfg.metrics_listen:
            self.metrics = MetricsServer(
                node,
                cfg.metrics_listen,
                delivery=self.delivery,
                receiver=self.receiver,
                clock=self.trust.clock if self.trust is not None else utc_now,
            )
        self._county_health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._county_health, self._county_server)

    @staticmethod
    def _county(node: Node, max_workers: int, cases: CaseParts | None) -> tuple[grpc.Server, str]:
        """The county API on its own listener, ``[county] listen`` (see :mod:`gateway.county`): the
        node-to-node port admits only directory nodes, and a county caller holds a token (or a
        client certificate of the node's county CA), not a node certificate. The case calls act
        through ``cases`` (``None``: they answer ``FAILED_PRECONDITION``)."""
        return county_server(node, cases, max_workers=max_workers)

    @staticmethod
    def _pullers(
        cfg: NodeConfig, receiver: Receiver, identity: TlsIdentity, store: TrustStore, poll: float
    ) -> list[RelayPuller]:
        if not cfg.encryption_key.exists():
            log.warning("node %s: no encryption key at %s; not pulling from relays", cfg.node_id, cfg.encryption_key)
            return []
        private = read_encryption_key(cfg.encryption_key, passphrase_from_env())
        return [
            RelayPuller(
                node_id=cfg.node_id,
                relay_id=relay_id,
                receiver=receiver,
                identity=identity,
                directory=store.current,
                encryption_key=private,
                clock=store.clock,
                batch_size=cfg.exchange_batch_size,
                poll_interval=poll,
                timeout=cfg.exchange_timeout_seconds,
            )
            for relay_id in cfg.exchange_relays
        ]

    def start(self) -> None:
        self._server.start()
        self._county_server.start()
        if self.web is not None:
            self.web.start()
        if self.metrics is not None:
            self.metrics.start()
        for name in ("", COUNTY_SERVICE):
            self._county_health.set(name, health_pb2.HealthCheckResponse.SERVING)
        services = (*SERVICE_NAMES, RELAY_SERVICE) if self.relay is not None else SERVICE_NAMES
        for name in ("", *services):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.trust is not None:
            self.trust.start_refresher()
        if self.delivery is not None:
            self.delivery.start()
        if self.case_sync is not None:
            self.case_sync.start()
        for puller in self.pullers:
            puller.start()
        log.info(
            "node %s serving on %s (%s), county API on %s",
            self.node.config.node_id,
            self.address,
            "mTLS" if self.tls else "plaintext",
            self.county_address,
        )

    def stop(self, grace: float | None = None) -> None:
        self._health.enter_graceful_shutdown()  # health checks answer NOT_SERVING while draining
        self._county_health.enter_graceful_shutdown()
        grace = self.node.config.grace_seconds if grace is None else grace
        if self.delivery is not None:
            self.delivery.request_stop()
        if self.case_sync is not None:
            self.case_sync.stop(timeout=grace + 10.0)
        for puller in self.pullers:
            puller.stop(timeout=grace + 10.0)
        if self._transport is not None:
            self._transport.close()  # ends streams in flight: their rounds record a retry and finish
        if self.delivery is not None:
            self.delivery.stop(timeout=grace + 10.0)
        if self.trust is not None:
            self.trust.stop_refresher()
        if self.web is not None:
            self.web.stop()
        if self.metrics is not None:
            self.metrics.stop()
        self._county_server.stop(grace).wait()
        self._server.stop(grace).wait()
        self.node.engine.dispose()
        log.info("node %s stopped", self.node.config.node_id)


def await_ready(stdout: IO[str], timeout: float) -> dict[str, Any] | None:
    """Read a ``tongban node serve`` process's standard output up to its ready line (printed by
    :func:`serve_forever`) and return that event; ``None`` if the output ends, or ``timeout``
    seconds pass between lines, first. Other lines are skipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stdout.readline()
        if not line:
            return None
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "ready":
            return event
    return None


def serve_forever(node: Node) -> int:
    """Run until SIGTERM or SIGINT; then drain and return 0.

    Prints one JSON line ``{"event": "ready", "node": …, "address": …, "tls": true|false, "county": …,
    "web": …, "metrics": …}`` (``county``: the county API's address; ``web``: the web inbox's and
    ``metrics``: the Prometheus endpoint's, "" when off) on stdout
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
    ready = {
        "event": "ready",
        "node": node.config.node_id,
        "address": server.address,
        "tls": server.tls,
        "county": server.county_address,
        "web": server.web.address if server.web is not None else "",
        "metrics": server.metrics.address if server.metrics is not None else "",
    }
    print(json.dumps(ready), flush=True)
    stop.wait()
    server.stop()
    print(json.dumps({"event": "stopped", "node": node.config.node_id}), flush=True)
    sys.stdout.flush()
    return 0
