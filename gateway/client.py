"""A Python client for the county API of one's own node (``tongban.v1.County``, SPEC §7).

::

    from gateway.client import ClientCertificate, CountyClient

    with CountyClient("127.0.0.1:7302", token) as county:   # token from `tongban county token create`
        print(county.node_info().node_id)
        for item in county.case_inbox():
            print(item.case_id, item.status, item.due, "OVERDUE" if item.overdue else "")

    # A node in mutual-TLS mode ([county] tls = true), with a certificate from `tongban county cert issue`:
    with CountyClient("node.county.example:7302", certificate=ClientCertificate.load("/etc/county-api")) as county:
        opened = county.open_case(draft, {"d1": scan})   # a case officer opens a case (受理)

**Deadlines and retries.** Every call has a deadline (``timeout`` seconds; ``submit_roster``,
``open_case`` and ``resubmit`` may be given a longer one for large uploads). The reads — every call
but ``submit_roster`` and the case actions — are idempotent, and so is ``open_case``: it sends a
request id (made once per call, or given) and the node answers a repeated one with the case it
opened (``replayed``), never a second case. Answered ``UNAVAILABLE`` (the node restarting, its
database briefly away) or ``DEADLINE_EXCEEDED`` (a slow answer), these are retried with exponential
back-off, at most ``attempts`` times in all (:func:`retryable` is the rule). ``submit_roster`` and
the other case actions (``resubmit``, ``transfer`` and the ``CaseAction`` ones) are **never**
retried: a roster stream that failed stored nothing (and a repeated record is refused
``ALREADY_EXISTS``), and an action that timed out may have been taken — read the case before acting
again. Every other status is final and raised as the ``grpc.RpcError`` it is — in particular
``UNAUTHENTICATED`` (no, an unknown or a revoked token or certificate), ``PERMISSION_DENIED`` (the
role may not make the call; the node audits it), ``INVALID_ARGUMENT`` (also an invalid application:
ID number, case type, division, a document too large), ``NOT_FOUND`` (also for a case outside the
caller's division scope), ``ALREADY_EXISTS`` (a request id used before for another application) and
``FAILED_PRECONDITION`` (the case's state, side or custody does not allow the action, a document's
bytes do not match its reference or are missing, or the node cannot act on cases).

**Credentials.** A token travels as ``authorization: Bearer <token>`` metadata over the plaintext
loopback listener (the default) and is never logged or put in an error by this client. A
:class:`ClientCertificate` makes the channel mutual TLS, trusting only the node's county CA and
expecting the server name the certificate names (``<node>.county.tongban``), whatever address is
dialled; a token may be sent as well (its role then applies).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from tongban.v1 import common_pb2, county_pb2, county_pb2_grpc

from gateway.cases import lifecycle as lc
from gateway.cases.service import TRANSFER_REASON, Draft, InboxItem
from gateway.cases.types import EvidenceDocument, EvidenceKind
from gateway.county import certs
from gateway.county import wire as cw
from gateway.county.views import (
    CaseActionKind,
    CaseCommand,
    CaseDetail,
    CaseOpening,
    CustodySummary,
    MatchLine,
    OpenedCase,
    Resubmission,
    TransferOrder,
    chunks,
)
from gateway.county.wire import AuditLine, DeadLetter, RosterOutcome
from gateway.domain.records import ChildRecord
from gateway.errors import KeyFileError
from gateway.reconcile.findings import Finding
from gateway.wire import NodeDescription, node_info_from_wire

T = TypeVar("T")

#: The statuses a read is retried on: the node was unreachable or slow, and asking again is safe.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def retryable(exc: BaseException) -> bool:
    """Whether a failed *idempotent* call is tried again (see the module docstring)."""
    return isinstance(exc, grpc.RpcError) and exc.code() in RETRYABLE


def evidence_document(document_id: str, kind: EvidenceKind, data: bytes) -> EvidenceDocument:
    """The reference to a document's bytes an application lists (its SHA-256 and size computed here,
    as ``tongban case accept`` computes them from the files)."""
    return EvidenceDocument(document_id, kind, hashlib.sha256(data).hexdigest(), len(data))


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate of a node's county CA, its key and the CA certificate (PEM)."""

    certificate_pem: bytes
    ca_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def load(cls, directory: Path | str) -> ClientCertificate:
        """Read what ``tongban county cert issue --out DIR`` wrote (``KeyFileError`` if a file is missing)."""
        d = Path(directory)
        try:
            return cls(
                (d / certs.CLIENT_CERT).read_bytes(),
                (d / certs.CA_CERT).read_bytes(),
                (d / certs.CLIENT_KEY).read_bytes(),
            )
        except OSError:
            raise KeyFileError(f"cannot read the client certificate, its key or the CA certificate in {d}") from None

    @property
    def server_name(self) -> str:
        """The name the node's county listener must present: ``<node id>.county.tongban``."""
        return certs.server_name(certs.node_of(self.certificate_pem))


class CountyClient:
    """Typed calls to the county API (see the module docstring)."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        certificate: ClientCertificate | None = None,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.2,
    ) -> None:
        if attempts < 1 or timeout <= 0:
            raise ValueError("attempts must be at least 1 and timeout positive")
        if token is None and certificate is None:
            raise ValueError("give an API token, a client certificate, or both")
        if certificate is None:
            self._channel = grpc.insecure_channel(address)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=certificate.ca_pem,
                private_key=certificate.key_pem,
                certificate_chain=certificate.certificate_pem,
            )
            options = [("grpc.ssl_target_name_override", certificate.server_name)]
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._stub = county_pb2_grpc.CountyStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retrying = retry(
            retry=retry_if_exception(retryable),
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

    # --- rosters and matches ---------------------------------------------------------------------

    def submit_roster(
        self,
        period: str,
        records: Iterable[ChildRecord],
        *,
        all_or_nothing: bool = False,
        timeout: float | None = None,
    ) -> RosterOutcome:
        """Import ``records`` as the roster of ``period`` (role ``county_system``): streamed, validated
        like ``tongban roster import``; rejected rows come back by position, code and reason. Never
        retried: a stream that fails part-way stored nothing and may simply be sent again (a
        repeated record id is refused, ``ALREADY_EXISTS``, so nothing is ever stored twice).
        ``timeout`` (default: the client's) covers the whole stream."""

        def requests() -> Iterator[county_pb2.SubmitRosterRequest]:
            yield cw.roster_header_to_wire(period, all_or_nothing=all_or_nothing)
            for record in records:
                yield cw.roster_row_to_wire(record)

        reply = self._stub.SubmitRoster(requests(), timeout=timeout or self._timeout, metadata=self._metadata)
        return cw.roster_outcome_from_wire(reply)

    def list_matches(self, period: str) -> list[MatchLine]:
        """The matched and review links of ``period``: references, bands, per-field agreement."""
        request = county_pb2.ListMatchesRequest(period=period)
        replies = self._call(
            lambda: list(self._stub.ListMatches(request, timeout=self._timeout, metadata=self._metadata))
        )
        return [cw.match_line_from_wire(m) for m in replies]

    # --- cases and custody ------------------------------------------------------------------------

    def get_case(self, case_id: str) -> CaseDetail:
        """A case's states, clocks, documents (metadata), history and custody holder; no names."""
        request = county_pb2.GetCaseRequest(case_id=case_id)
        reply = self._call(lambda: self._stub.GetCase(request, timeout=self._timeout, metadata=self._metadata))
        return cw.case_detail_from_wire(reply)

    def get_custody(self, case_id: str) -> CustodySummary:
        """The node's view of the case's custody chain: holder, pending offer, events."""
        request = county_pb2.GetCustodyRequest(case_id=case_id)
        reply = self._call(lambda: self._stub.GetCustody(request, timeout=self._timeout, metadata=self._metadata))
        return cw.custody_summary_from_wire(reply)

    def case_action(self, command: CaseCommand) -> lc.Status:
        """Take one action on a case; returns the case's state after it. Never retried (an action
        is not idempotent: on ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` read the case with
        :meth:`get_case` before acting again)."""
        request = cw.case_command_to_wire(command)
        reply = self._stub.CaseAction(request, timeout=self._timeout, metadata=self._metadata)
        return cw.case_state_from_wire(reply)

    def request_material(self, case_id: str, items: Sequence[EvidenceKind], *, note: str = "") -> lc.Status:
        """一次性告知: the registration place requests the missing material, once and in full."""
        return self.case_action(CaseCommand(case_id, CaseActionKind.REQUEST_MATERIAL, items=tuple(items), note=note))

    def first_review(self, case_id: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.FIRST_REVIEW))

    def approve(self, case_id: str, payment_month: date) -> lc.Status:
        """Approve; payment starts in the month of ``payment_month``."""
        month = payment_month.replace(day=1)
        return self.case_action(CaseCommand(case_id, CaseActionKind.APPROVE, payment_month=month))

    def reject(self, case_id: str, reason_code: str, text: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.REJECT, reason_code=reason_code, text=text))

    def return_case(self, case_id: str, reason_code: str, text: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.RETURN, reason_code=reason_code, text=text))

    def notify_applicant(self, case_id: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.NOTIFY_APPLICANT))

    def close_case(self, case_id: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.CLOSE))

    def withdraw(self, case_id: str) -> lc.Status:
        return self.case_action(CaseCommand(case_id, CaseActionKind.WITHDRAW))

    # --- opening, resubmitting, transferring ------------------------------------------------------

    def open_case(
        self,
        draft: Draft,
        documents: Mapping[str, bytes],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> OpenedCase:
        """Open a case (受理, role ``case_officer``) and have the node push it to the registration
        node, as ``tongban case accept``: ``draft`` is the application (its evidence references made
        with :func:`evidence_document`), ``documents`` each referenced document's bytes by document
        id, streamed in chunks. Retried on ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` with the same
        ``request_id`` (default: a fresh UUID for this call), so the node opens the case once; pass
        your own request id, kept with the application, to be safe across restarts of your system
        too. A request id is the caller's own: with another token or certificate it opens another
        case. ``timeout`` (default: the client's) covers each attempt's whole stream."""
        opening = CaseOpening(request_id or str(uuid.uuid4()), draft)
        upload = [(d, documents[d.document_id]) for d in draft.application.evidence if d.document_id in documents]

        def requests() -> Iterator[county_pb2.OpenCaseRequest]:
            yield cw.opening_to_wire(opening)
            for document_id, data in chunks(upload):
                yield county_pb2.OpenCaseRequest(chunk=cw.chunk_to_wire(document_id, data))

        reply = self._call(
            lambda: self._stub.OpenCase(requests(), timeout=timeout or self._timeout, metadata=self._metadata)
        )
        return cw.opened_from_wire(reply)

    def resubmit(
        self, case_id: str, documents: Sequence[tuple[EvidenceDocument, bytes]], *, timeout: float | None = None
    ) -> lc.Status:
        """Send the requested material (补正, role ``case_officer``), as ``tongban case resubmit``:
        each document's reference (:func:`evidence_document`) and bytes. Never retried (a second
        resubmission is refused ``FAILED_PRECONDITION``; read the case with :meth:`get_case`)."""
        header = cw.resubmission_to_wire(Resubmission(case_id, tuple(d for d, _ in documents)))

        def requests() -> Iterator[county_pb2.ResubmitCaseRequest]:
            yield header
            for document_id, data in chunks(documents):
                yield county_pb2.ResubmitCaseRequest(chunk=cw.chunk_to_wire(document_id, data))

        reply = self._stub.ResubmitCase(requests(), timeout=timeout or self._timeout, metadata=self._metadata)
        return cw.case_state_from_wire(reply)

    def transfer(self, case_id: str, to_division: str, *, reason: str = TRANSFER_REASON) -> lc.Status:
        """转办 (role ``registration_staff``): the child's 户籍 moved to ``to_division``; the node
        hands the case to the node serving it, as ``tongban case transfer``. Never retried (read the
        case with :meth:`get_case` after a timeout)."""
        request = cw.transfer_to_wire(TransferOrder(case_id, to_division, reason))
        reply = self._stub.TransferCase(request, timeout=self._timeout, metadata=self._metadata)
        return cw.case_state_from_wire(reply)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
