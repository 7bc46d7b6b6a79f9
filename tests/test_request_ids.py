"""Request ids in the logs, and gRPC server reflection (issue 8, observability).

* every gRPC call (node port and county API) gets a request id — the caller's well-formed
  ``x-request-id``, else a new one —, every log record made while it is handled carries it, and it
  is sent back as trailing metadata, refusals included;
* the web inbox does the same with the ``X-Request-Id`` header;
* an offered id that is malformed, too long or shaped like an ID number is replaced, never logged;
* both listeners answer server reflection without credentials (public service definitions only).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tongban.v1 import common_pb2, county_pb2_grpc

from gateway import config, logs
from gateway.node import init_node, open_node
from gateway.server import NodeServer
from gateway.web.app import WebInbox

RANDOM_ID = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[NodeServer]:
    d = tmp_path / "node"
    init_node(d, node_id="cq-liangjiang", division="500157", listen="127.0.0.1:0", database_url=db_url)
    s = NodeServer(open_node(config.load(d / "node.toml")))
    s.start()
    yield s
    s.stop(grace=0)


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("county-sys-42", True),
        ("a.b_c:d-e", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("two words", False),
        ("line\nbreak", False),
        ("", False),
        (None, False),
        ("11010519491231002X", False),  # shaped like an ID number: never written to a log
    ],
)
def test_an_offered_request_id_is_kept_only_when_well_formed(offered: str | None, kept: bool) -> None:
    got = logs.request_id_from(offered)
    assert (got == offered) is kept
    if not kept:
        assert RANDOM_ID.fullmatch(got)


def test_records_made_during_a_request_carry_its_id_in_json_and_text() -> None:
    logger = logging.getLogger("tongban.test.request_ids")
    record_of: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record_of.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        token = logs.REQUEST_ID.set("req-7")
        try:
            logger.warning("inside")
        finally:
            logs.REQUEST_ID.reset(token)
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = record_of
    assert json.loads(logs.JsonFormatter().format(inside))["request_id"] == "req-7"
    assert "request_id" not in json.loads(logs.JsonFormatter().format(outside))
    text = logs.formatter(json=False, with_pid=False)
    assert text.format(inside).endswith("inside request=req-7")
    assert text.format(outside).endswith("outside")


def _trailing_id(error_or_call: grpc.Call) -> str | None:
    return dict(error_or_call.trailing_metadata() or ()).get(logs.REQUEST_ID_HEADER)


def test_a_county_call_is_logged_and_answered_with_its_request_id(
    server: NodeServer, caplog: pytest.LogCaptureFixture
) -> None:
    with grpc.insecure_channel(server.county_address) as channel, caplog.at_level(logging.INFO):
        stub = county_pb2_grpc.CountyStub(channel)
        metadata = (("authorization", "Bearer not-a-token"), (logs.REQUEST_ID_HEADER, "county-sys-42"))
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=10, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _trailing_id(refused.value) == "county-sys-42"
        refusals = [r for r in caplog.records if r.name == "tongban.county" and "refused" in r.getMessage()]
        assert refusals
        assert all(getattr(r, "request_id", None) == "county-sys-42" for r in refusals)

        caplog.clear()
        with pytest.raises(grpc.RpcError) as again:  # no id offered: the node makes one up
            stub.GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=10, metadata=metadata[:1])
        made = _trailing_id(again.value)
        assert made is not None
        assert RANDOM_ID.fullmatch(made)
        assert any(getattr(r, "request_id", None) == made for r in caplog.records)


def _services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    return {s.name for s in reply.list_services_response.service}


def test_both_listeners_answer_server_reflection_without_credentials(server: NodeServer) -> None:
    assert _services(server.address) >= {"tongban.v1.NodeExchange", "grpc.health.v1.Health"}
    assert _services(server.county_address) >= {"tongban.v1.County", "grpc.health.v1.Health"}


def test_the_web_inbox_answers_with_the_request_id(server: NodeServer) -> None:
    app = WebInbox(server.node, server.cases)
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen.update(headers)

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/healthz",
        "HTTP_X_REQUEST_ID": "proxy-9",
        "wsgi.input": io.BytesIO(),
    }
    assert b"".join(app(environ, start_response)) == b"ok"
    assert seen["X-Request-Id"] == "proxy-9"
    b"".join(app({**environ, "HTTP_X_REQUEST_ID": "bad id"}, start_response))
    assert RANDOM_ID.fullmatch(seen["X-Request-Id"])
