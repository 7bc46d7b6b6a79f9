"""The one map from the error tree (:mod:`gateway.errors`) to gRPC status codes.

Every gRPC edge of a node aborts a refused call with a status from here and :func:`public_message`
— ``"<code>: <public message>"``, never an exception's detail, so never personal data. An error
class can mean different things to different callers, so the map is one table per service, side
by side in this module (not one per servicer):

* :func:`trust_status` — the interceptor's refusal of a *peer* on the node-to-node port: whom it
  cannot authenticate is ``UNAUTHENTICATED``; a node that is known but not allowed is
  ``PERMISSION_DENIED``; no usable directory is ``UNAVAILABLE`` (try again later).
* :func:`exchange_status` — the receiver's refusal of an *envelope* (and the relay's of an item),
  and :data:`PERMANENT_STATUSES`, the statuses after which a sender dead-letters instead of
  resending (:func:`is_permanent`).
* :func:`custody_status` — a custody question (WhoHolds) refused.
* :func:`county_status` — the county API: a *third* node's trust problem there (the peer of a case
  is no longer active) is ``FAILED_PRECONDITION``, not the caller's authentication.

Each table is looked up along the error's class hierarchy (most specific class first).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from gateway.errors import (
    AttachmentRefused,
    CallDenied,
    CaseError,
    CaseNotFound,
    CasesUnavailable,
    CertificateInvalid,
    CountyAuthError,
    CustodyError,
    CustodyEventMalformed,
    DirectoryUnavailable,
    DocumentExpired,
    DuplicateRecord,
    EnvelopeMalformed,
    EnvelopeSignatureInvalid,
    EnvelopeTooLarge,
    ExchangeError,
    ForbiddenField,
    GatewayError,
    IllegalTransition,
    InputError,
    InvalidCase,
    NodeNotActive,
    NotEligible,
    NotInvolved,
    OutsideTimeWindow,
    PayloadInvalid,
    PeerMismatch,
    PeerNotAuthenticated,
    PurposeNotAllowed,
    ReceiptInvalid,
    RecordNotFound,
    RelayItemInvalid,
    RelayNotAllowed,
    ReplayedMessage,
    SenderMismatch,
    SenderNotActive,
    StorageError,
    TokenInvalid,
    TokenMissing,
    TrustError,
    UnknownCase,
    UnknownNode,
    UnknownReasonCode,
    WrongRecipient,
)

Code = grpc.StatusCode

TRUST_STATUS: Mapping[type[GatewayError], Code] = {
    PeerNotAuthenticated: Code.UNAUTHENTICATED,
    CertificateInvalid: Code.UNAUTHENTICATED,
    UnknownNode: Code.UNAUTHENTICATED,
    NodeNotActive: Code.PERMISSION_DENIED,
    PeerMismatch: Code.PERMISSION_DENIED,
    DocumentExpired: Code.UNAVAILABLE,
    DirectoryUnavailable: Code.UNAVAILABLE,
}
"""A peer refused by the interceptor. A ``TrustError`` not listed is ``UNAUTHENTICATED`` (fail
closed: refused, and not "try again")."""

EXCHANGE_STATUS: Mapping[type[GatewayError], Code] = {
    EnvelopeMalformed: Code.INVALID_ARGUMENT,
    EnvelopeTooLarge: Code.RESOURCE_EXHAUSTED,
    SenderMismatch: Code.PERMISSION_DENIED,
    SenderNotActive: Code.PERMISSION_DENIED,
    EnvelopeSignatureInvalid: Code.UNAUTHENTICATED,
    WrongRecipient: Code.INVALID_ARGUMENT,
    PurposeNotAllowed: Code.INVALID_ARGUMENT,
    OutsideTimeWindow: Code.FAILED_PRECONDITION,
    ReplayedMessage: Code.ALREADY_EXISTS,
    ForbiddenField: Code.INVALID_ARGUMENT,
    PayloadInvalid: Code.INVALID_ARGUMENT,
    ReceiptInvalid: Code.INVALID_ARGUMENT,
    # Only the relay path raises these (step 3', and the puller's opening of a relayed item); they
    # travel back through the relay as a RelayRefusal.
    RelayNotAllowed: Code.PERMISSION_DENIED,
    RelayItemInvalid: Code.INVALID_ARGUMENT,
}
"""An envelope refused by the receiver. An ``ExchangeError`` not listed is ``INVALID_ARGUMENT``
(refused, not "try again")."""

# Statuses after which resending the same envelope cannot succeed: the sender dead-letters it.
# FAILED_PRECONDITION (the time window) is deliberately *not* here: "not yet valid" heals once the
# clocks agree, and an expired envelope is dead-lettered by its sender, which knows its expiry.
# RESOURCE_EXHAUSTED is only ever "too large" here; rate limiting, if added, must use UNAVAILABLE.
PERMANENT_STATUSES = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.PERMISSION_DENIED,
        Code.UNAUTHENTICATED,
        Code.ALREADY_EXISTS,
        Code.RESOURCE_EXHAUSTED,
        Code.NOT_FOUND,
        Code.UNIMPLEMENTED,
        Code.OUT_OF_RANGE,
    }
)

COUNTY_STATUS: Mapping[type[GatewayError], Code] = {
    TokenMissing: Code.UNAUTHENTICATED,
    TokenInvalid: Code.UNAUTHENTICATED,
    CallDenied: Code.PERMISSION_DENIED,
    CountyAuthError: Code.UNAUTHENTICATED,
    InputError: Code.INVALID_ARGUMENT,
    InvalidCase: Code.INVALID_ARGUMENT,
    UnknownReasonCode: Code.INVALID_ARGUMENT,
    CustodyEventMalformed: Code.INVALID_ARGUMENT,
    CaseNotFound: Code.NOT_FOUND,
    UnknownCase: Code.NOT_FOUND,
    RecordNotFound: Code.NOT_FOUND,
    DuplicateRecord: Code.ALREADY_EXISTS,
    CasesUnavailable: Code.FAILED_PRECONDITION,
    IllegalTransition: Code.FAILED_PRECONDITION,
    NotEligible: Code.FAILED_PRECONDITION,
    AttachmentRefused: Code.FAILED_PRECONDITION,
    CaseError: Code.FAILED_PRECONDITION,
    CustodyError: Code.FAILED_PRECONDITION,  # e.g. custody_not_permitted: not the holder
    DirectoryUnavailable: Code.UNAVAILABLE,
    DocumentExpired: Code.UNAVAILABLE,
    TrustError: Code.FAILED_PRECONDITION,  # e.g. the peer node is no longer active
    StorageError: Code.UNAVAILABLE,
}
"""How each error surfaces to a county caller; an error not listed is ``INTERNAL``. ``UNAVAILABLE``
is the one status a county client retries (idempotent calls only)."""

CUSTODY_STATUS: Mapping[type[GatewayError], Code] = {
    NotInvolved: Code.PERMISSION_DENIED,
    InputError: Code.INVALID_ARGUMENT,  # a malformed case id
    TrustError: Code.UNAVAILABLE,  # no usable directory
    StorageError: Code.UNAVAILABLE,
}
"""A custody question refused; anything else is ``INTERNAL``."""


def _lookup(table: Mapping[type[GatewayError], Code], error: GatewayError, otherwise: Code) -> Code:
    for cls in type(error).__mro__:
        code = table.get(cls)
        if code is not None:
            return code
    return otherwise


def trust_status(error: TrustError) -> Code:
    return _lookup(TRUST_STATUS, error, Code.UNAUTHENTICATED)


def exchange_status(error: GatewayError) -> Code:
    """The status for any error the receiver raises: envelope refusals by :data:`EXCHANGE_STATUS`;
    trust errors as :func:`trust_status`; a storage error ``UNAVAILABLE``; anything else in the
    tree ``INTERNAL`` (a fault of this node: the sender should retry later)."""
    if isinstance(error, ExchangeError):
        return _lookup(EXCHANGE_STATUS, error, Code.INVALID_ARGUMENT)
    if isinstance(error, TrustError):
        return trust_status(error)
    if isinstance(error, StorageError):
        return Code.UNAVAILABLE
    return Code.INTERNAL


def is_permanent(code: Code) -> bool:
    """Whether a sender should stop resending an envelope refused with ``code`` (dead letter)."""
    return code in PERMANENT_STATUSES


def county_status(error: GatewayError) -> Code:
    return _lookup(COUNTY_STATUS, error, Code.INTERNAL)


def custody_status(error: GatewayError) -> Code:
    return _lookup(CUSTODY_STATUS, error, Code.INTERNAL)


def public_message(error: GatewayError) -> str:
    """``"<code>: <public message>"`` — safe for any caller: no detail, no personal data."""
    return f"{error.code}: {error.public_message}"
