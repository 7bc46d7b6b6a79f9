"""When to try a delivery again, and when to stop (SPEC §4). Pure: no clock, no randomness, no I/O.

Delivery fails in two ways, and each outcome of an attempt is named by a :class:`Reason`:

* **permanent** — retrying cannot help: the receiver refused the envelope itself (a bad signature, a
  forbidden field, a purpose not allowed between the pair …) or the peer has been revoked or removed
  from the directory. The message becomes a **dead letter** at once, with its reason, for an
  operator to see (``tongban outbox list --status dead``, the ``dead`` metric). Never silently.
* **transient** — the peer is unreachable, slow, busy or suspended, our own directory is unusable
  for a moment, or a receipt did not verify (perhaps our directory lags the peer's key rotation;
  re-sending is harmless because receiving is idempotent). The message is tried again after an
  exponential back-off with jitter — until :attr:`RetryPolicy.give_up_after` has passed since it was
  accepted, after which it too becomes a dead letter (``gave_up``). So nothing retries forever and
  nothing is dropped.

Back-off happens at two scales. Inside one delivery round, ``tenacity`` retries a single attempt a
few times within seconds (a dropped connection, a peer restarting): :attr:`RetryPolicy.quick_attempts`
and :attr:`RetryPolicy.quick_wait`. Across rounds, the schedule is durable: :meth:`RetryPolicy.decide`
returns the time at which the outbox row is due again, and the delivery loop writes it to
``outbox.next_attempt_at`` so a restarted process (or another process sharing the database) keeps it.

:meth:`RetryPolicy.decide` takes the random number used for jitter as an argument, so the whole
schedule is a table in ``tests/test_retry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.errors import DeliveryFailed

MAX_REASON_CHARS = 200  # outbox.last_error


class Reason(StrEnum):
    """Why a delivery attempt did not end with a verified receipt. Values are stable codes."""

    PEER_UNREACHABLE = "peer_unreachable"  # connection refused, TLS handshake failed, UNAVAILABLE
    PEER_TIMEOUT = "peer_timeout"  # DEADLINE_EXCEEDED
    PEER_ERROR = "peer_error"  # the peer failed without refusing (INTERNAL, UNKNOWN, a short stream …)
    NOT_TRUSTED_BY_PEER = "not_trusted_by_peer"  # the peer's interceptor refused this node (its directory may lag)
    PEER_SUSPENDED = "peer_suspended"  # not active in our directory, but may be reinstated
    PEER_REVOKED = "peer_revoked"  # revoked in our directory: it will not come back
    PEER_UNKNOWN = "peer_unknown"  # not in our directory (any more)
    DIRECTORY_UNUSABLE = "directory_unusable"  # our own directory is missing or expired
    REFUSED = "refused"  # the receiver refused this envelope and says retrying cannot help
    REFUSED_TRANSIENT = "refused_transient"  # the receiver refused, but the refusal may pass (clock skew)
    RECEIPT_INVALID = "receipt_invalid"  # an answer that does not verify as the receipt we need
    EXPIRED = "expired"  # the envelope expired before it was delivered: no receiver may accept it now
    UNREADABLE = "unreadable"  # the sealed envelope cannot be opened here (data key missing, damaged row)
    GAVE_UP = "gave_up"  # transient failures for longer than the policy allows
    AWAITING_RECEIPT = "awaiting_receipt"  # a relay holds the envelope; the recipient has not answered yet
    RELAY_REFUSED = "relay_refused"  # a relay refused, or reports a refusal: unauthenticated, so never final
    RELAY_UNUSABLE = "relay_unusable"  # our relay is not active in our directory, or cannot seal for the peer


PERMANENT: frozenset[Reason] = frozenset(
    {Reason.PEER_REVOKED, Reason.PEER_UNKNOWN, Reason.REFUSED, Reason.EXPIRED, Reason.UNREADABLE, Reason.GAVE_UP}
)
"""Reasons that make a message a dead letter at once. Every other reason is retried."""

QUICK: frozenset[Reason] = frozenset({Reason.PEER_UNREACHABLE, Reason.PEER_TIMEOUT, Reason.PEER_ERROR})
"""Transient reasons worth the quick in-round retries (a dropped connection, a restarting peer). The
others (a suspended peer, our own directory, a refusal) will not change within seconds."""

STREAM_STATUS: dict[str, Reason] = {
    "UNAVAILABLE": Reason.PEER_UNREACHABLE,
    "DEADLINE_EXCEEDED": Reason.PEER_TIMEOUT,
    "UNAUTHENTICATED": Reason.NOT_TRUSTED_BY_PEER,
    "PERMISSION_DENIED": Reason.NOT_TRUSTED_BY_PEER,
}
"""A gRPC status (by name) that ends a whole stream, before or between results. Such a status comes
from the transport, from the peer's interceptor (it does not — yet — trust this node: directories
refresh at different times) or from the peer's own trouble (no directory, database down); refusals
of an *envelope* arrive inside the stream instead. So none of these is permanent; any status not
listed is ``peer_error``."""


class Undelivered(DeliveryFailed):
    """:class:`DeliveryFailed` with its :class:`Reason`; ``permanent`` follows :data:`PERMANENT`."""

    def __init__(self, reason: Reason, message: str = "") -> None:
        self.reason = reason
        detail = f"{reason.value}: {message}" if message else reason.value
        super().__init__(detail[:MAX_REASON_CHARS], permanent=reason in PERMANENT)


def failure(reason: Reason, message: str = "") -> Undelivered:
    """The failure for ``reason``; its detail starts with the reason code (``"peer_revoked: …"``).
    ``message`` must hold no personal data: error codes, node ids, public messages."""
    return Undelivered(reason, message)


def stream_failure(status_name: str, message: str = "") -> Undelivered:
    """The failure for a gRPC status that ended a stream (see :data:`STREAM_STATUS`)."""
    reason = STREAM_STATUS.get(status_name, Reason.PEER_ERROR)
    return Undelivered(reason, f"{status_name} {message}".strip())


def refusal_failure(*, permanent: bool, status_name: str, error_code: str) -> Undelivered:
    """The failure for a receiver's refusal of one envelope; ``permanent`` is the receiver's own
    verdict on the status (:func:`gateway.status.is_permanent`)."""
    return Undelivered(Reason.REFUSED if permanent else Reason.REFUSED_TRANSIENT, f"{error_code} ({status_name})")


def quick_retry(error: DeliveryFailed) -> bool:
    """Whether a failure is worth a quick retry inside the same round."""
    return isinstance(error, Undelivered) and error.reason in QUICK


def reason_text(error: DeliveryFailed) -> str:
    """What the outbox row records as ``last_error``: the detail, bounded to the column."""
    return (error.detail or error.code)[:MAX_REASON_CHARS]


@dataclass(frozen=True)
class Retry:
    """Try again at ``at``; ``reason`` goes to ``outbox.last_error``."""

    at: datetime
    reason: str


@dataclass(frozen=True)
class Dead:
    """Stop: the message is a dead letter with ``reason``."""

    reason: str


Decision = Retry | Dead


@dataclass(frozen=True)
class RetryPolicy:
    """The back-off schedule and the horizon after which transient failures become final.

    After the ``n``-th failed attempt (``n`` ≥ 1) a transient failure is retried after
    ``min(max_delay, base_delay · multiplier^(n-1))``, shortened by up to ``jitter`` of itself
    (``jitter`` = 0.25 and a random ``r`` in [0, 1) give a delay in (¾·d, d]) so that the messages
    of a peer that comes back do not all arrive at the same instant.
    """

    base_delay: timedelta = timedelta(seconds=5)
    multiplier: float = 2.0
    max_delay: timedelta = timedelta(minutes=30)
    jitter: float = 0.25
    give_up_after: timedelta = timedelta(days=3)
    quick_attempts: int = 3  # tenacity, inside one round: attempts at one stream, then durable back-off
    quick_wait: timedelta = timedelta(milliseconds=200)  # first quick wait (exponential, with jitter)

    def __post_init__(self) -> None:
        if self.base_delay <= timedelta(0) or self.max_delay < self.base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if self.multiplier < 1.0:
            raise ValueError("multiplier must be at least 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.give_up_after <= timedelta(0):
            raise ValueError("give_up_after must be positive")
        if self.quick_attempts < 1 or self.quick_wait < timedelta(0):
            raise ValueError("need quick_attempts >= 1 and quick_wait >= 0")

    def delay(self, attempts: int, rand: float) -> timedelta:
        """The wait after ``attempts`` failed attempts, for a uniform random ``rand`` in [0, 1)."""
        if attempts < 1:
            raise ValueError("attempts counts failed attempts, from 1")
        if not 0.0 <= rand < 1.0:
            raise ValueError("rand must be in [0, 1)")
        base, cap = self.base_delay.total_seconds(), self.max_delay.total_seconds()
        try:
            raw = min(cap, base * self.multiplier ** (attempts - 1))
        except OverflowError:  # thousands of attempts: long past the cap
            raw = cap
        return timedelta(seconds=raw * (1.0 - self.jitter * rand))

    def decide(
        self, error: DeliveryFailed, *, attempts: int, created_at: datetime, now: datetime, rand: float
    ) -> Decision:
        """What to do with a message after its ``attempts``-th attempt failed with ``error``.

        In order: a permanent failure is a dead letter with its own reason; a transient failure
        of a message accepted more than ``give_up_after`` ago is a dead letter ``gave_up`` (the
        last reason is kept in the text); otherwise retry after :meth:`delay`, but never later
        than the horizon (one last attempt is made there).
        """
        reason = reason_text(error)
        if error.permanent:
            return Dead(reason)
        horizon = created_at + self.give_up_after
        if now >= horizon:
            return Dead(reason_text(failure(Reason.GAVE_UP, f"after {attempts} attempt(s); last: {reason}")))
        return Retry(min(now + self.delay(attempts, rand), horizon), reason)
