"""A Python client for the county API of one's own node (``tongban.v1.County``, SPEC §7).

::

    from gateway.client import CountyClient

    with CountyClient("127.0.0.1:7302", token) as county:   # token from `tongban county token create`
        print(county.node_info().node_id)
        for item in county.case_inbox():
            print(item.case_id, item.status, item.due, "OVERDUE" if item.overdue else "")

Every call has a deadline (``timeout`` seconds). A call answered ``UNAVAILABLE`` (the node
restarting, its database briefly away) is retried with exponential back-off, at most ``attempts``
times in all; every other status is final and raised as the ``grpc.RpcError`` it is — in particular
``UNAUTHENTICATED`` (no, an unknown or a revoked token) and ``PERMISSION_DENIED`` (the token's role
may not make the call; the node audits it). The token travels as ``authorization: Bearer <token>``
metadata and is never logged or put in an error by this client.

The county API listens on loopback (``[county] listen``), so the channel is plaintext.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import grpc
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from tongban.v1 import common_pb2, county_pb2, county_pb2_grpc

from gateway.cases.service import InboxItem
from gateway.county import wire as cw
from gateway.county.wire import AuditLine, DeadLetter
from gateway.reconcile.findings import Finding
from gateway.wire import NodeDescription, node_info_from_wire

T = TypeVar("T")


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


class CountyClient:
    """Typed calls to the county API (see the module docstring)."""

    def __init__(
        self, address: str, token: str, *, timeout: float = 10.0, attempts: int = 4, backoff: float = 0.2
    ) -> None:
        if attempts < 1 or timeout <= 0:
            raise ValueError("attempts must be at least 1 and timeout positive")
        self._channel = grpc.insecure_channel(address)
        self._stub = county_pb2_grpc.CountyStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._retrying = retry(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=backoff, max=5.0),
            reraise=True,
        )

    def _call(self, fn: Callable[[], T]) -> T:
        result: T = self._retrying(fn)()
        return result

    def node_info(self) -> NodeDescription:
        reply = self._call(
            lambda: self._stub.GetNodeInfo(common_pb2.NodeInfoRequest(), timeout=self._timeout, metadata=self._metadata)
        )
        return node_info_from_wire(reply)

    def list_findings(self, period: str) -> list[Finding]:
        """The reconciliation findings of ``period`` (e.g. ``"2026Q3"``): codes and references."""
        request = county_pb2.ListFindingsRequest(period=period)
        reply = self._call(lambda: self._stub.ListFindings(request, timeout=self._timeout, metadata=self._metadata))
        return [cw.finding_from_wire(f) for f in reply.findings]

    def case_inbox(self, *, include_closed: bool = False) -> list[InboxItem]:
        """The node's cases by due date, overdue marked (no personal data)."""
        request = county_pb2.CaseInboxRequest(include_closed=include_closed)
        reply = self._call(lambda: self._stub.CaseInbox(request, timeout=self._timeout, metadata=self._metadata))
        return [cw.inbox_item_from_wire(i) for i in reply.items]

    def dead_letters(self, *, peer: str = "", limit: int = 0) -> list[DeadLetter]:
        """Outbox messages the node gave up on (``limit`` 0: the server's default)."""
        request = county_pb2.ListDeadLettersRequest(peer=peer, limit=limit)
        reply = self._call(lambda: self._stub.ListDeadLetters(request, timeout=self._timeout, metadata=self._metadata))
        return [cw.dead_letter_from_wire(d) for d in reply.dead_letters]

    def audit_tail(self, n: int = 0) -> list[AuditLine]:
        """The last ``n`` audit entries, oldest first (0: the server's default)."""
        request = county_pb2.AuditTailRequest(n=n)
        reply = self._call(lambda: self._stub.AuditTail(request, timeout=self._timeout, metadata=self._metadata))
        return [cw.audit_line_from_wire(e) for e in reply.entries]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
