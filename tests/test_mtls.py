"""Nodes over real mutual TLS on 127.0.0.1: who gets in, who is refused, and when (SPEC §2).

The server is a real :class:`NodeServer` for cq-liangjiang, enrolled the way an operator would
leave it: an encrypted TLS key (passphrase from ``TONGBAN_KEY_PASSPHRASE``), its certificate, the
pinned root and a directory source file. Certificates are issued at the real current time,
because BoringSSL checks validity against the wall clock. Each refusal case names what it breaks
and where it must be stopped: at the TLS handshake (``UNAVAILABLE`` before any handler runs) or
by the interceptor (the status and error code of :data:`gateway.status.TRUST_STATUS`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tongban.v1 import common_pb2, county_pb2_grpc, node_pb2_grpc

from gateway import config
from gateway.config import NodeConfig
from gateway.errors import (
    CertificateInvalid,
    DirectoryUnavailable,
    GatewayError,
    KeyFileError,
    NodeNotActive,
    PeerNotAuthenticated,
)
from gateway.node import init_node, open_node
from gateway.server import NodeExchangeServicer, NodeServer
from gateway.trust import keyfile
from gateway.trust.documents import NodeEntry, NodeStatus
from gateway.trust.dsse import SignedDocument
from gateway.trust.interceptor import PeerAuthInterceptor, authenticated_peer
from gateway.trust.store import TrustStore, utc_now
from gateway.trust.tls import TlsIdentity, secure_channel_to, server_credentials
from gateway.trust.verifier import Directory, TrustState
from keys import ca
from tests.trustkit import Node as PkiNode
from tests.trustkit import Pki, Province, new_pki, new_province

PASSPHRASE = "correct horse battery staple"
TIMEOUT = 10
NODES = (("50", "cq-liangjiang", "500157"), ("50", "cq-beibei", "500109"), ("51", "sc-nanbu", "511321"))
# A private subchannel pool per channel: a refused handshake on one test channel must not be
# reused (or cached) by the next.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


# --- a PKI valid at the real current time ------------------------------------------------------------


@dataclass
class LivePki:
    pki: Pki
    now: datetime = field(default_factory=utc_now)

    @classmethod
    def create(
        cls, nodes: tuple[tuple[str, str, str], ...] = NODES, provinces: tuple[str, ...] = ("50", "51")
    ) -> LivePki:
        names = {"50": "重庆市", "51": "四川省"}
        live = cls(new_pki(provinces=tuple((p, names[p]) for p in provinces)))
        live.pki.roots = [live.signed_root()]
        for prefix, node_id, division in nodes:
            live.pki.provinces[prefix].enrol(node_id, division, now=live.now)
        return live

    def signed_root(self) -> SignedDocument:
        return self.pki.signed_root(expires=self.now + timedelta(days=365))

    def province(self, prefix: str) -> Province:
        return self.pki.provinces[prefix]

    def node(self, node_id: str) -> PkiNode:
        return next(p.nodes[node_id] for p in self.pki.provinces.values() if node_id in p.nodes)

    def bundle(self, *, expires: datetime | None = None) -> bytes:
        parts = {p: prov.signed_part(expires=self.now + timedelta(days=30)) for p, prov in self.pki.provinces.items()}
        return self.pki.bundle(parts=parts, expires=expires or self.now + timedelta(days=7))

    def directory(self) -> Directory:
        """What a client node has verified: the same bundle, through the real verifier."""
        now = utc_now()
        return TrustState.from_pinned_root(self.pki.roots[0].to_bytes(), now).accept(self.bundle(), now)[1]

    def identity(self, node_id: str) -> TlsIdentity:
        n = self.node(node_id)
        return TlsIdentity.from_key(n.tls_key, n.tls_cert_pem, node_id=node_id)


def issue(ca_province: Province, node_id: str, division: str) -> TlsIdentity:
    """A node certificate the directory does not list, issued by ``ca_province``'s CA (bypassing
    the issuer's prefix check, as a compromised tool would)."""
    key = ca.new_tls_key()
    ca_cert = x509.load_pem_x509_certificate(ca_province.ca_cert_pem.encode())
    cert = ca.issue_node_certificate(
        ca.create_csr(key, node_id=node_id, division=division),
        ca_key=ca_province.ca_key,
        ca_cert=ca_cert,
        prefix=division[:2],
        node_id=node_id,
        division=division,
        now=utc_now(),
    )
    return TlsIdentity.from_key(key, ca.pem(cert))


def issue_nameless(ca_province: Province) -> tuple[bytes, bytes]:
    """A client certificate from a real provincial CA that names no node (key PEM, cert PEM):
    :class:`TlsIdentity` itself would refuse it, so it is returned raw."""
    now = utc_now()
    key = ca.new_tls_key()
    ca_cert = x509.load_pem_x509_certificate(ca_province.ca_cert_pem.encode())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some client")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_province.ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, ca.pem(cert).encode()


# --- an enrolled node on disk ---------------------------------------------------------------------------


def enrol_on_disk(
    tmp: Path,
    live: LivePki,
    node_id: str,
    division: str,
    *,
    refresh_seconds: float = 3600,
    database_url: str = "sqlite:///node.db",
) -> NodeConfig:
    """What ``tongban node init`` plus the operators' enrolment leave in a node's directory."""
    d = tmp / node_id
    init_node(d, node_id=node_id, division=division, listen="127.0.0.1:0", database_url=database_url)
    with (d / "node.toml").open("a", encoding="utf-8") as fh:
        fh.write(f'\n[trust]\ndirectory = "published/bundle.json"\nrefresh_seconds = {refresh_seconds}\n')
    cfg = config.load(d / "node.toml")
    node = live.node(node_id)
    keyfile.write_private_key(cfg.tls_key, node.tls_key, PASSPHRASE.encode())
    keyfile.write_public(cfg.tls_certificate, node.tls_cert_pem.encode())
    keyfile.write_public(cfg.trust_root, live.pki.roots[0].to_bytes())
    assert cfg.enrolled
    return cfg


def publish(cfg: NodeConfig, bundle: bytes) -> None:
    path = Path(cfg.directory_source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bundle)


@dataclass
class Running:
    live: LivePki
    cfg: NodeConfig
    server: NodeServer
    seen: list[NodeEntry]  # the peer each NodeExchange.GetNodeInfo handler saw

    def channel(self, as_node: str, *, expect: str = "cq-liangjiang") -> grpc.Channel:
        return secure_channel_to(
            expect,
            self.live.directory(),
            self.live.identity(as_node),
            now=utc_now(),
            target=self.server.address,
            options=CHANNEL_OPTIONS,
        )

    def raw_channel(self, key_pem: bytes | None, cert_pem: bytes | None) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.live.province("50").ca_cert_pem.encode(),
            private_key=key_pem,
            certificate_chain=cert_pem,
        )
        options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", "cq-liangjiang.node.tongban")]
        return grpc.secure_channel(self.server.address, credentials, options=options)


def node_info(channel: grpc.Channel) -> common_pb2.NodeInfo:
    return node_pb2_grpc.NodeExchangeStub(channel).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=TIMEOUT)


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


@pytest.fixture
def passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    monkeypatch.delenv(keyfile.ENV_PASSPHRASE_FILE, raising=False)


@pytest.fixture
def running(tmp_path: Path, passphrase: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    seen: list[NodeEntry] = []
    original = NodeExchangeServicer.GetNodeInfo

    def spying(self: NodeExchangeServicer, request: Any, context: grpc.ServicerContext) -> Any:
        seen.append(authenticated_peer())
        return original(self, request, context)

    monkeypatch.setattr(NodeExchangeServicer, "GetNodeInfo", spying)
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle())
    server = NodeServer(open_node(cfg))
    server.start()
    try:
        yield Running(live, cfg, server, seen)
    finally:
        server.stop(grace=0)


# --- who gets in ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("peer", ["sc-nanbu", "cq-beibei", "cq-liangjiang"])
def test_an_enrolled_peer_gets_node_info_and_the_handler_sees_who_it_is(running: Running, peer: str) -> None:
    with running.channel(peer) as ch:
        info = node_info(ch)
    assert (info.node_id, info.division_code) == ("cq-liangjiang", "500157")
    assert [e.node_id for e in running.seen] == [peer]
    assert running.seen[0] == running.live.directory().entry(peer)
    assert running.server.tls


def test_county_service_is_not_on_the_mtls_port_and_a_node_certificate_is_no_county_credential(
    running: Running,
) -> None:
    """The county API has its own loopback listener and API tokens (gateway.county): a directory node
    cannot reach it over the node-to-node port, and its certificate opens nothing on the county port."""
    with running.channel("sc-nanbu") as ch:
        error = refused(
            lambda: county_pb2_grpc.CountyStub(ch).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=TIMEOUT)
        )
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(running.server.county_address) as ch:
        error = refused(
            lambda: county_pb2_grpc.CountyStub(ch).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=TIMEOUT)
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_answers_any_tls_client_but_node_exchange_does_not(running: Running) -> None:
    stranger = issue(running.live.province("50"), "cq-yuzhong", "500103")
    with running.raw_channel(stranger.private_key_pem, stranger.certificate_pem) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert refused(lambda: node_info(ch)).code() == grpc.StatusCode.UNAUTHENTICATED
    assert running.seen == []


# --- who is refused, and where ----------------------------------------------------------------------------

ClientCase = Callable[[Running], grpc.Channel]


def _certificate_from_an_unknown_ca(r: Running) -> grpc.Channel:
    rogue = new_province("51", "假四川")  # same prefix, same name pattern, a CA no root lists
    identity = issue(rogue, "sc-nanbu", "511321")
    return r.raw_channel(identity.private_key_pem, identity.certificate_pem)


def _no_client_certificate(r: Running) -> grpc.Channel:
    return r.raw_channel(None, None)


def _another_certificate_for_a_listed_node(r: Running) -> grpc.Channel:
    # The real Chongqing CA issued it (a superseded or mis-issued certificate), but the directory
    # lists a different one for cq-beibei.
    identity = issue(r.live.province("50"), "cq-beibei", "500109")
    return r.raw_channel(identity.private_key_pem, identity.certificate_pem)


def _other_province_ca_claims_a_chongqing_node(r: Running) -> grpc.Channel:
    identity = issue(r.live.province("51"), "cq-beibei", "500109")
    return r.raw_channel(identity.private_key_pem, identity.certificate_pem)


def _node_not_in_the_directory(r: Running) -> grpc.Channel:
    identity = issue(r.live.province("50"), "cq-yuzhong", "500103")
    return r.raw_channel(identity.private_key_pem, identity.certificate_pem)


def _certificate_naming_no_node(r: Running) -> grpc.Channel:
    return r.raw_channel(*issue_nameless(r.live.province("50")))


@pytest.mark.parametrize(
    ("make_channel", "status", "code"),
    [
        pytest.param(_certificate_from_an_unknown_ca, grpc.StatusCode.UNAVAILABLE, None, id="unknown_ca_at_handshake"),
        pytest.param(_no_client_certificate, grpc.StatusCode.UNAVAILABLE, None, id="no_certificate_at_handshake"),
        pytest.param(
            _another_certificate_for_a_listed_node,
            grpc.StatusCode.PERMISSION_DENIED,
            "peer_mismatch",
            id="unlisted_certificate_of_a_listed_node",
        ),
        pytest.param(
            _other_province_ca_claims_a_chongqing_node,
            grpc.StatusCode.PERMISSION_DENIED,
            "peer_mismatch",
            id="other_province_ca_claims_a_node",
        ),
        pytest.param(
            _node_not_in_the_directory, grpc.StatusCode.UNAUTHENTICATED, "unknown_node", id="node_not_in_directory"
        ),
        pytest.param(
            _certificate_naming_no_node,
            grpc.StatusCode.UNAUTHENTICATED,
            "certificate_invalid",
            id="certificate_naming_no_node",
        ),
    ],
)
def test_refused_clients(running: Running, make_channel: ClientCase, status: grpc.StatusCode, code: str | None) -> None:
    with make_channel(running) as ch:
        error = refused(lambda: node_info(ch))
    assert error.code() == status, error.details()
    if code is not None:
        details = error.details() or ""
        assert details.startswith(f"{code}: ")
        assert "cq-" not in details  # the public message names no node: details go to the log
    assert running.seen == []  # no handler ran


def test_a_node_revoked_in_a_new_bundle_is_refused_after_refresh(running: Running) -> None:
    """The integration test of the issue: revocation takes effect at the next refresh, on the
    connection the revoked node already has open."""
    with running.channel("sc-nanbu") as ch:
        assert node_info(ch).node_id == "cq-liangjiang"

        live = running.live
        live.node("sc-nanbu").status = NodeStatus.REVOKED
        live.province("51").version += 1
        live.pki.directory_version += 1
        publish(running.cfg, live.bundle())
        assert node_info(ch).node_id == "cq-liangjiang"  # not yet: the node has not refreshed

        assert running.server.trust is not None
        assert running.server.trust.refresh().version == 2
        error = refused(lambda: node_info(ch))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error.details() == f"{NodeNotActive.code}: {NodeNotActive.public_message}"

    with running.channel("cq-beibei") as ch:  # everyone else is unaffected
        assert node_info(ch).node_id == "cq-liangjiang"
    assert [e.node_id for e in running.seen] == ["sc-nanbu", "sc-nanbu", "cq-beibei"]


def test_an_expired_directory_makes_the_server_unavailable_not_open(tmp_path: Path, passphrase: None) -> None:
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle(expires=live.now + timedelta(hours=1)))
    clock = [utc_now()]
    store = TrustStore.from_config(cfg, clock=lambda: clock[0])
    server = NodeServer(open_node(cfg), trust=store)
    server.start()
    try:
        channel = secure_channel_to(
            "cq-liangjiang",
            live.directory(),
            live.identity("sc-nanbu"),
            now=utc_now(),
            target=server.address,
            options=CHANNEL_OPTIONS,
        )
        with channel:
            assert node_info(channel).node_id == "cq-liangjiang"
            clock[0] += timedelta(hours=2)  # the publisher has been down past the expiry
            error = refused(lambda: node_info(channel))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert (error.details() or "").startswith("document_expired: ")
    finally:
        server.stop(grace=0)


def test_a_province_added_by_a_root_rotation_is_trusted_without_restart(tmp_path: Path, passphrase: None) -> None:
    live = LivePki.create(nodes=(("50", "cq-liangjiang", "500157"),), provinces=("50",))
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle())
    server = NodeServer(open_node(cfg))
    server.start()
    try:
        sichuan = new_province("51", "四川省")
        live.pki.provinces["51"] = sichuan
        sichuan.enrol("sc-nanbu", "511321", now=live.now)
        live.pki.root_version = 2
        live.pki.roots.append(live.signed_root())
        live.pki.directory_version = 2

        def call() -> common_pb2.NodeInfo:
            identity = live.identity("sc-nanbu")
            with secure_channel_to(
                "cq-liangjiang",
                live.directory(),
                identity,
                now=utc_now(),
                target=server.address,
                options=CHANNEL_OPTIONS,
            ) as ch:
                return node_info(ch)

        assert refused(call).code() == grpc.StatusCode.UNAVAILABLE  # Sichuan's CA is not an anchor yet
        publish(cfg, live.bundle())
        assert server.trust is not None
        assert server.trust.refresh().root.version == 2
        assert call().node_id == "cq-liangjiang"
    finally:
        server.stop(grace=0)


# --- the client side checks whom it reached --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "ok"),
    [
        pytest.param("cq-liangjiang", True, id="the_node_meant"),
        pytest.param("cq-beibei", False, id="same_province_other_node_name_check"),
        pytest.param("sc-nanbu", False, id="other_province_ca_check"),
    ],
)
def test_the_client_verifies_the_server_is_the_node_it_meant(running: Running, expect: str, ok: bool) -> None:
    with running.channel("cq-beibei", expect=expect) as ch:
        if ok:
            assert node_info(ch).node_id == "cq-liangjiang"
        else:
            assert refused(lambda: node_info(ch)).code() == grpc.StatusCode.UNAVAILABLE
            assert running.seen == []


def test_the_client_never_dials_a_revoked_node(running: Running) -> None:
    live = running.live
    live.node("cq-liangjiang").status = NodeStatus.REVOKED
    with pytest.raises(NodeNotActive):
        secure_channel_to("cq-liangjiang", live.directory(), live.identity("sc-nanbu"), now=utc_now())


# --- the interceptor on every call shape ------------------------------------------------------------------


def test_the_interceptor_guards_every_call_shape(running: Running) -> None:
    """A throwaway service under the same interceptor: each shape's handler sees the peer, and
    outside a call there is none."""
    store = running.server.trust
    assert store is not None

    def who(*_: object) -> bytes:
        return authenticated_peer().node_id.encode()

    def who_stream(*_: object) -> Iterator[bytes]:
        yield who()
        yield who()

    def consume(requests: Iterator[bytes], _: object) -> bytes:
        list(requests)
        return who()

    def consume_stream(requests: Iterator[bytes], _: object) -> Iterator[bytes]:
        for _r in requests:
            yield who()

    handlers = {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(who),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(who_stream),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(consume),
        "StreamStream": grpc.stream_stream_rpc_method_handler(consume_stream),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[PeerAuthInterceptor(store.current, store.clock)],
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Whoami", handlers)])
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(running.live.identity("cq-liangjiang"), store.ca_bundle_pem)
    )
    server.start()
    try:
        with secure_channel_to(
            "cq-liangjiang",
            running.live.directory(),
            running.live.identity("sc-nanbu"),
            now=utc_now(),
            target=f"127.0.0.1:{port}",
            options=CHANNEL_OPTIONS,
        ) as ch:
            raw: tuple[None, None] = (None, None)  # bytes in, bytes out
            assert ch.unary_unary("/test.Whoami/UnaryUnary", *raw)(b"", timeout=TIMEOUT) == b"sc-nanbu"
            assert list(ch.unary_stream("/test.Whoami/UnaryStream", *raw)(b"", timeout=TIMEOUT)) == [b"sc-nanbu"] * 2
            assert ch.stream_unary("/test.Whoami/StreamUnary", *raw)(iter([b"", b""]), timeout=TIMEOUT) == b"sc-nanbu"
            replies = ch.stream_stream("/test.Whoami/StreamStream", *raw)(iter([b"", b""]), timeout=TIMEOUT)
            assert list(replies) == [b"sc-nanbu"] * 2
    finally:
        server.stop(0).wait()
    with pytest.raises(PeerNotAuthenticated):
        authenticated_peer()


# --- refusing to start -----------------------------------------------------------------------------------


def _no_directory(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    pass  # nothing published, no last good


def _expired_directory_only(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    cfg.last_good_directory.write_bytes(live.bundle(expires=utc_now() - timedelta(minutes=1)))


def _no_passphrase(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    publish(cfg, live.bundle())
    mp.delenv(keyfile.ENV_PASSPHRASE)


def _wrong_passphrase(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    publish(cfg, live.bundle())
    mp.setenv(keyfile.ENV_PASSPHRASE, "not it")


def _plaintext_key_file(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    publish(cfg, live.bundle())
    cfg.tls_key.write_bytes(live.identity("cq-liangjiang").private_key_pem)


def _certificate_of_another_node(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    publish(cfg, live.bundle())
    cfg.tls_certificate.write_text(live.node("cq-beibei").tls_cert_pem)


def _key_of_another_node(cfg: NodeConfig, live: LivePki, mp: pytest.MonkeyPatch) -> None:
    publish(cfg, live.bundle())
    keyfile.write_private_key(cfg.tls_key, live.node("cq-beibei").tls_key, PASSPHRASE.encode())


@pytest.mark.parametrize(
    ("breakage", "error"),
    [
        pytest.param(_no_directory, DirectoryUnavailable, id="no_directory"),
        pytest.param(_expired_directory_only, DirectoryUnavailable, id="only_an_expired_directory"),
        pytest.param(_no_passphrase, KeyFileError, id="no_passphrase"),
        pytest.param(_wrong_passphrase, KeyFileError, id="wrong_passphrase"),
        pytest.param(_plaintext_key_file, KeyFileError, id="unencrypted_key_file"),
        pytest.param(_certificate_of_another_node, CertificateInvalid, id="certificate_of_another_node"),
        pytest.param(_key_of_another_node, KeyFileError, id="key_of_another_node"),
    ],
)
def test_an_enrolled_node_refuses_to_start_rather_than_serve_blind(
    tmp_path: Path,
    passphrase: None,
    monkeypatch: pytest.MonkeyPatch,
    breakage: Callable[[NodeConfig, LivePki, pytest.MonkeyPatch], None],
    error: type[GatewayError],
) -> None:
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    node = open_node(cfg)
    breakage(cfg, live, monkeypatch)
    try:
        with pytest.raises(error):
            NodeServer(node)
    finally:
        node.engine.dispose()


def test_an_enrolled_node_may_listen_beyond_loopback(tmp_path: Path, passphrase: None) -> None:
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle())
    cfg = config.load(cfg.path, environ={"TONGBAN_SERVER_LISTEN": "0.0.0.0:0"})
    server = NodeServer(open_node(cfg))
    server.start()
    server.stop(grace=0)


# --- the real process ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_process_speaks_mutual_tls(tmp_path: Path, passphrase: None) -> None:
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, "cq-liangjiang", "500157")
    publish(cfg, live.bundle())
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "node", "serve", "--config", str(cfg.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},  # with TONGBAN_KEY_PASSPHRASE, as a service unit would set it
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"server exited early: {proc.stderr.read() if proc.stderr else ''}"
        ready = json.loads(line)
        assert (ready["event"], ready["tls"]) == ("ready", True)
        with secure_channel_to(
            "cq-liangjiang",
            live.directory(),
            live.identity("sc-nanbu"),
            now=utc_now(),
            target=ready["address"],
            options=CHANNEL_OPTIONS,
        ) as ch:
            assert node_info(ch).node_id == "cq-liangjiang"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["event"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
