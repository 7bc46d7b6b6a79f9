"""The county API in mutual-TLS mode: client certificates issued by the node, revocable (issue 7).

Real TLS sockets on 127.0.0.1: a node with ``[county] tls = true`` serves its county API with its own
county CA (created on first use). A certificate it issued (``tongban county cert issue``) works with
the role of its record in the node's database; a revoked one is refused and audited; a certificate
of another node's county CA, a node certificate of the trust directory, and a certificate signed by
this CA but never recorded are refused — at the handshake (nothing but this node's county CA is
trusted) or by the interceptor (the record). The plaintext listener stays the default, and stays on
loopback; the TLS listener may listen on any address.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine, update
from tongban.v1 import common_pb2, county_pb2_grpc

from gateway import audit
from gateway import config as config_mod
from gateway.cases.types import EvidenceKind
from gateway.cli import main
from gateway.client import ClientCertificate, CountyClient, evidence_document, retryable
from gateway.county import auth, certs
from gateway.county.permissions import Role
from gateway.errors import CertificateInvalid, ClientCertificateInvalid, ConfigError, InputError, RecordNotFound
from gateway.node import init_node, open_node
from gateway.server import NodeServer
from gateway.store.schema import county_certs
from gateway.trust.store import utc_now
from tests.test_cases_service import FILES, orphan_draft
from tests.test_mtls import LivePki

TIMEOUT = 5.0


@dataclass
class TlsNode:
    server: NodeServer
    config_dir: Path

    @property
    def engine(self) -> Engine:
        return self.server.node.engine

    def issue(self, out: Path, role: Role, division: str = "") -> tuple[str, ClientCertificate]:
        """`tongban county cert issue`, as the node's operator runs it."""
        args = ["county", "cert", "issue", "--role", role.value, "--label", f"测试 {role.value}"]
        args += ["--out", str(out), "--config", str(self.config_dir)]
        if division:
            args += ["--division", division]
        assert main(args) == 0
        cert_id = certs.list_certs(self.engine)[-1].cert_id
        return cert_id, ClientCertificate.load(out)


def _tls_node(base: Path, node_id: str, division: str, *, listen: str = "127.0.0.1:0") -> TlsNode:
    init_node(base, node_id=node_id, division=division, listen="127.0.0.1:0")
    cfg_path = base / "node.toml"
    county = f'\n[county]\ntls = true\nlisten = "{listen}"\n'
    cfg_path.write_text(cfg_path.read_text(encoding="utf-8") + county, encoding="utf-8")
    server = NodeServer(open_node(config_mod.load(cfg_path)))
    server.start()
    return TlsNode(server, base)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[TlsNode, TlsNode]]:
    ours = _tls_node(tmp_path / "lj", "cq-liangjiang", "500157")
    theirs = _tls_node(tmp_path / "nb", "sc-nanbu", "511321")
    try:
        yield ours, theirs
    finally:
        ours.server.stop(grace=0)
        theirs.server.stop(grace=0)


def refused(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_a_certificate_of_this_node_works_with_the_role_of_its_record(
    nodes: tuple[TlsNode, TlsNode], tmp_path: Path
) -> None:
    ours, _ = nodes
    cert_id, bundle = ours.issue(tmp_path / "ops", Role.NODE_OPERATOR)
    assert stat.S_IMODE((tmp_path / "ops" / certs.CLIENT_KEY).stat().st_mode) == 0o600
    assert (ours.config_dir / certs.CA_DIR / "ca.crt.pem").exists(), "the county CA was created on first use"
    with CountyClient(ours.server.county_address, certificate=bundle, timeout=TIMEOUT) as c:
        assert c.node_info().node_id == "cq-liangjiang"
        assert c.dead_letters() == []
        tail = c.audit_tail(5)
        assert ("county_cert_issued", cert_id) in [(e.action, e.reference) for e in tail]
        assert refused(lambda: c.list_findings("2026Q3")).code() == grpc.StatusCode.PERMISSION_DENIED
    last = audit.tail(ours.engine, 1)[0]
    assert (last.actor, last.action, last.reference) == (cert_id, "county_denied", "ListFindings")
    # The role comes from the node's record, not from what the certificate says about itself.
    with ours.engine.begin() as conn:
        conn.execute(update(county_certs).where(county_certs.c.cert_id == cert_id).values(role="county_system"))
    with CountyClient(ours.server.county_address, certificate=bundle, timeout=TIMEOUT) as c:
        assert c.list_findings("2026Q3") == []
        assert refused(lambda: c.audit_tail(1)).code() == grpc.StatusCode.PERMISSION_DENIED
    # A token may ride along a certificate: its role applies then.
    token, _ = auth.create(ours.engine, role=Role.NODE_OPERATOR, label="with a certificate")
    with CountyClient(ours.server.county_address, token, certificate=bundle, timeout=TIMEOUT) as c:
        assert c.audit_tail(1)


def test_a_revoked_certificate_is_refused_from_its_next_call_and_audited(
    nodes: tuple[TlsNode, TlsNode], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, _ = nodes
    cert_id, bundle = ours.issue(tmp_path / "sys", Role.COUNTY_SYSTEM, "500157")
    with CountyClient(ours.server.county_address, certificate=bundle, timeout=TIMEOUT, attempts=1) as c:
        assert c.list_matches("2026Q3") == []  # the connection is open …
        capsys.readouterr()
        assert main(["county", "cert", "revoke", cert_id, "--config", str(ours.config_dir)]) == 0
        assert f"revoked {cert_id}" in capsys.readouterr().out
        error = refused(lambda: c.list_matches("2026Q3"))  # … and the next call on it is refused
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "client_certificate_invalid: the client certificate is not valid on this node"
    last = audit.tail(ours.engine, 1)[0]
    assert (last.actor, last.action, last.reference, last.detail) == (
        "anonymous",
        "county_denied",
        "ListMatches",
        "reason=client_certificate_invalid",
    )
    actions = [(e.action, e.reference) for e in audit.entries(ours.engine)]
    assert ("county_cert_issued", cert_id) in actions
    assert ("county_cert_revoked", cert_id) in actions
    assert main(["county", "cert", "list", "--config", str(ours.config_dir)]) == 0
    listing = capsys.readouterr().out
    assert cert_id in listing
    assert re.search(rf"{cert_id}\s+county_system\s+500157", listing)


def _with_our_ca(bundle: ClientCertificate, ours: ClientCertificate) -> ClientCertificate:
    """``bundle``'s key and certificate, trusting ``ours``'s CA: the server is verified, so any
    refusal is the server's."""
    return ClientCertificate(bundle.certificate_pem, ours.ca_pem, bundle.key_pem)


def _node_info(address: str, bundle: ClientCertificate, server_name: str) -> grpc.RpcError:
    credentials = grpc.ssl_channel_credentials(bundle.ca_pem, bundle.key_pem, bundle.certificate_pem)
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(address, credentials, options=options) as ch:
        stub = county_pb2_grpc.CountyStub(ch)
        return refused(lambda: stub.GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=TIMEOUT))


def test_certificates_of_another_county_ca_or_of_the_directory_fail_the_handshake(
    nodes: tuple[TlsNode, TlsNode], tmp_path: Path
) -> None:
    ours, theirs = nodes
    _, mine = ours.issue(tmp_path / "mine", Role.NODE_OPERATOR)
    _, other = theirs.issue(tmp_path / "other", Role.NODE_OPERATOR)
    address, name = ours.server.county_address, certs.server_name("cq-liangjiang")
    # Another node's county CA: refused at the handshake, whatever the client trusts.
    error = _node_info(address, _with_our_ca(other, mine), name)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # A node certificate of the trust directory (the same node's, even): refused at the handshake.
    live = LivePki.create()
    node = live.identity("cq-liangjiang")
    directory_cert = ClientCertificate(node.certificate_pem, mine.ca_pem, node.private_key_pem)
    assert _node_info(address, directory_cert, name).code() == grpc.StatusCode.UNAVAILABLE
    # Nothing made it to a handler: no call was admitted, none refused by the interceptor.
    assert all(e.action != "county_denied" for e in audit.entries(ours.engine))
    # And our own certificate works against our node, not against theirs (the client checks the server).
    with CountyClient(theirs.server.county_address, certificate=mine, timeout=TIMEOUT, attempts=1) as c:
        assert refused(c.node_info).code() == grpc.StatusCode.UNAVAILABLE
    with CountyClient(address, certificate=mine, timeout=TIMEOUT) as c:
        assert c.node_info().node_id == "cq-liangjiang"


def test_a_certificate_of_this_ca_the_node_never_recorded_is_refused_by_the_interceptor(
    nodes: tuple[TlsNode, TlsNode], tmp_path: Path
) -> None:
    ours, _ = nodes
    _, mine = ours.issue(tmp_path / "mine", Role.NODE_OPERATOR)
    cfg = ours.server.node.config
    ca = certs.ensure_ca(cfg, now=utc_now())
    key = ec.generate_private_key(ec.SECP256R1())
    forged = certs.client_certificate(
        ca, key, cert_id="cc-0123456789abcdef", role=Role.NODE_OPERATOR, division="", now=utc_now()
    )
    unrecorded = ClientCertificate(
        certs._pem(forged),
        mine.ca_pem,
        certs._private_pem(key),
    )
    with CountyClient(ours.server.county_address, certificate=unrecorded, timeout=TIMEOUT, attempts=1) as c:
        error = refused(c.node_info)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    last = audit.tail(ours.engine, 1)[0]
    assert (last.actor, last.reference, last.detail) == (
        "anonymous",
        "GetNodeInfo",
        "reason=client_certificate_invalid",
    )
    with pytest.raises(ClientCertificateInvalid):
        certs.authenticate_certificate(ours.engine, ca.certificate, certs._pem(forged), now=utc_now())


def test_the_ca_is_kept_and_checked_across_restarts(nodes: tuple[TlsNode, TlsNode], tmp_path: Path) -> None:
    ours, theirs = nodes
    cfg = ours.server.node.config
    first = certs.ensure_ca(cfg, now=utc_now())
    assert certs.ensure_ca(cfg, now=utc_now()).certificate == first.certificate
    _, cert = certs.server_identity(first, now=utc_now())
    assert certs.server_identity(first, now=utc_now())[1] == cert, "a valid server certificate is kept"
    # A CA directory copied from another node is refused.
    other = theirs.server.node.config
    for name in ("ca.key.pem", "ca.crt.pem"):
        (certs.ca_directory(cfg) / name).write_bytes((certs.ca_directory(other) / name).read_bytes())
    with pytest.raises(CertificateInvalid, match="not this node's"):
        certs.ensure_ca(cfg, now=utc_now())
    with pytest.raises(RecordNotFound):
        certs.revoke(ours.engine, "cc-0000000000000000")
    with pytest.raises(InputError):
        certs.revoke(ours.engine, "ct-0000000000000000")


def test_issuing_refuses_a_bad_scope_and_an_existing_key_file(nodes: tuple[TlsNode, TlsNode], tmp_path: Path) -> None:
    ours, _ = nodes
    cfg = str(ours.config_dir)
    base = ["county", "cert", "issue", "--label", "x", "--config", cfg]
    assert main([*base, "--role", "provincial_operator", "--out", str(tmp_path / "a")]) == 65
    assert main([*base, "--role", "provincial_operator", "--division", "50", "--out", str(tmp_path / "b")]) == 0
    assert main([*base, "--role", "county_system", "--out", str(tmp_path / "b")]) == 65, "never overwrite a key"


def test_plaintext_stays_the_default(tmp_path: Path) -> None:
    init_node(tmp_path / "n", node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
    cfg = config_mod.load(tmp_path / "n" / "node.toml")
    assert not cfg.county_tls
    server = NodeServer(open_node(cfg))
    server.start()
    try:
        token, _ = auth.create(server.node.engine, role=Role.CASE_OFFICER, label="plain")
        with CountyClient(server.county_address, token, timeout=TIMEOUT) as c:
            assert c.case_inbox() == []
        assert not certs.ca_directory(cfg).exists(), "no county CA unless asked for"
    finally:
        server.stop(grace=0)


def test_with_client_certificates_the_county_listener_may_listen_beyond_loopback(tmp_path: Path) -> None:
    node = _tls_node(tmp_path / "lj", "cq-liangjiang", "500157", listen="0.0.0.0:0")
    try:
        host, _, port = node.server.county_address.rpartition(":")
        assert host == "0.0.0.0"  # noqa: S104 - listening beyond loopback is what is tested
        _, bundle = node.issue(tmp_path / "ops", Role.NODE_OPERATOR)
        with CountyClient(f"127.0.0.1:{port}", certificate=bundle, timeout=TIMEOUT) as c:
            assert c.node_info().node_id == "cq-liangjiang"
        # Without a certificate of this node's county CA nothing gets through, whatever the address.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            plain = refused(lambda: county_pb2_grpc.CountyStub(ch).GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=2))
        assert plain.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        node.server.stop(grace=0)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.0.2.10:7302", "[::]:0"])
def test_a_plaintext_county_listener_beyond_loopback_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str
) -> None:
    init_node(tmp_path / "n", node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
    monkeypatch.setenv("TONGBAN_COUNTY_LISTEN", listen)
    monkeypatch.setenv("TONGBAN_COUNTY_TLS", "false")
    node = open_node(config_mod.load(tmp_path / "n" / "node.toml"))
    try:
        with pytest.raises(ConfigError, match=r"county\.listen"):
            NodeServer(node)
    finally:
        node.engine.dispose()


@pytest.mark.parametrize(
    ("code", "retried"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.FAILED_PRECONDITION, False),
        (grpc.StatusCode.ALREADY_EXISTS, False),
        (grpc.StatusCode.INTERNAL, False),
    ],
)
def test_which_statuses_a_read_is_retried_on(code: grpc.StatusCode, retried: bool) -> None:
    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return code

    assert retryable(Failed()) is retried
    assert not retryable(ValueError("not a gRPC error"))


def test_reads_are_retried_on_a_deadline_but_rosters_and_case_actions_never() -> None:
    class Slow(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

    calls: list[str] = []
    request_ids: list[str] = []

    class Stub:
        def __getattr__(self, name: str) -> object:
            def call(request: object, **kwargs: object) -> object:
                assert kwargs["timeout"] == 0.5, "every call carries the client's deadline"
                if name in ("SubmitRoster", "ResubmitCase"):
                    list(request)  # type: ignore[call-overload]  # the stream is consumed once
                if name == "OpenCase":
                    sent = list(request)  # type: ignore[call-overload]  # each attempt sends the whole stream
                    request_ids.append(sent[0].application.request_id)
                    assert len(sent) == 1 + len(FILES)
                calls.append(name)
                raise Slow()

            return call

    case = "00000000-0000-4000-8000-000000000001"
    with CountyClient("127.0.0.1:1", "tbc1_unused", timeout=0.5, attempts=3, backoff=0.001) as c:
        c._stub = Stub()  # type: ignore[assignment]
        for read in (lambda: c.get_case(case), lambda: c.get_custody(case), lambda: c.list_matches("2026Q3")):
            calls.clear()
            assert refused(read).code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(calls) == 3, calls
        for write in (
            lambda: c.first_review(case),
            lambda: c.close_case(case),
            lambda: c.submit_roster("2026Q3", []),
            lambda: c.resubmit(case, [(evidence_document("r", EvidenceKind.OTHER, b"r"), b"r")]),
            lambda: c.transfer(case, "500109"),
        ):
            calls.clear()
            assert refused(write).code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert len(calls) == 1, calls
        # Opening a case is idempotent by its request id: retried, with the same request id each time.
        calls.clear()
        assert refused(lambda: c.open_case(orphan_draft(1, FILES), FILES)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert calls == ["OpenCase"] * 3
        assert len(set(request_ids)) == 1
    with pytest.raises(ValueError, match="token"):
        CountyClient("127.0.0.1:1")


def test_the_tls_setting(tmp_path: Path) -> None:
    init_node(tmp_path / "n", node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0")
    path = tmp_path / "n" / "node.toml"
    assert config_mod.load(path, environ={}).county_tls is False
    assert config_mod.load(path, environ={"TONGBAN_COUNTY_TLS": "true"}).county_tls is True
    with pytest.raises(ConfigError, match="TONGBAN_COUNTY_TLS"):
        config_mod.load(path, environ={"TONGBAN_COUNTY_TLS": "maybe"})
    path.write_text(path.read_text(encoding="utf-8") + '\n[county]\ntls = "yes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"county\.tls"):
        config_mod.load(path, environ={})
