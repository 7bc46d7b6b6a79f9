"""The retry policy as a table: an attempt's outcome → retry at a time, or a dead letter (SPEC §4)."""

# One case per line reads as the rule book it is; those lines are longer than the code's limit.
# ruff: noqa: E501

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import DeliveryFailed
from gateway.exchange.retry import (
    PERMANENT,
    Dead,
    Decision,
    Reason,
    Retry,
    RetryPolicy,
    failure,
    quick_retry,
    refusal_failure,
    stream_failure,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = RetryPolicy(
    base_delay=5 * S, multiplier=2.0, max_delay=timedelta(minutes=30), jitter=0.25, give_up_after=timedelta(days=3)
)


@dataclass(frozen=True)
class Case:
    name: str
    error: DeliveryFailed
    attempts: int
    age: timedelta  # since the message was accepted
    rand: float
    expected: Decision


CASES = [
    # --- transient: back off exponentially, with jitter, up to the cap ---
    Case("unreachable, first failure", failure(Reason.PEER_UNREACHABLE), 1, 0 * S, 0.0, Retry(NOW + 5 * S, "peer_unreachable")),
    Case("unreachable, third failure", failure(Reason.PEER_UNREACHABLE), 3, 60 * S, 0.0, Retry(NOW + 20 * S, "peer_unreachable")),
    Case("jitter shortens by up to a quarter", failure(Reason.PEER_TIMEOUT), 3, 60 * S, 0.5, Retry(NOW + 17.5 * S, "peer_timeout")),
    Case("capped at max_delay", failure(Reason.PEER_ERROR), 20, timedelta(hours=5), 0.0, Retry(NOW + timedelta(minutes=30), "peer_error")),
    Case("huge attempt count stays capped", failure(Reason.PEER_ERROR), 5000, timedelta(days=1), 0.0, Retry(NOW + timedelta(minutes=30), "peer_error")),
    Case("suspended peer may be reinstated", failure(Reason.PEER_SUSPENDED, "sc-nanbu is suspended"), 1, 0 * S, 0.0, Retry(NOW + 5 * S, "peer_suspended: sc-nanbu is suspended")),
    Case("peer does not trust us yet", stream_failure("UNAUTHENTICATED", "unknown_node"), 2, 0 * S, 0.0, Retry(NOW + 10 * S, "not_trusted_by_peer: UNAUTHENTICATED unknown_node")),
    Case("our directory is unusable", failure(Reason.DIRECTORY_UNUSABLE, "document_expired"), 1, 0 * S, 0.0, Retry(NOW + 5 * S, "directory_unusable: document_expired")),
    Case("receipt does not verify: resend", failure(Reason.RECEIPT_INVALID), 1, 0 * S, 0.0, Retry(NOW + 5 * S, "receipt_invalid")),
    Case("refusal that may pass (clock skew)", refusal_failure(permanent=False, status_name="FAILED_PRECONDITION", error_code="outside_time_window"), 1, 0 * S, 0.0, Retry(NOW + 5 * S, "refused_transient: outside_time_window (FAILED_PRECONDITION)")),
    Case("never scheduled past the horizon", failure(Reason.PEER_UNREACHABLE), 30, timedelta(days=3) - 10 * S, 0.0, Retry(NOW + 10 * S, "peer_unreachable")),
    # --- permanent: a dead letter at once, with the reason ---
    Case("peer revoked", failure(Reason.PEER_REVOKED, "sc-nanbu is revoked in directory v2"), 1, 0 * S, 0.0, Dead("peer_revoked: sc-nanbu is revoked in directory v2")),
    Case("peer not in the directory", failure(Reason.PEER_UNKNOWN), 4, 0 * S, 0.0, Dead("peer_unknown")),
    Case("receiver refused the envelope", refusal_failure(permanent=True, status_name="INVALID_ARGUMENT", error_code="forbidden_field"), 1, 0 * S, 0.0, Dead("refused: forbidden_field (INVALID_ARGUMENT)")),
    Case("expired before delivery", failure(Reason.EXPIRED), 7, timedelta(hours=2), 0.0, Dead("expired")),
    Case("cannot be opened here", failure(Reason.UNREADABLE, "data_key_missing"), 1, 0 * S, 0.0, Dead("unreadable: data_key_missing")),
    Case("any permanent DeliveryFailed", DeliveryFailed("custom", permanent=True), 1, 0 * S, 0.0, Dead("custom")),
    # --- transient for too long: gave up, keeping the last reason ---
    Case("transient past the horizon", failure(Reason.PEER_UNREACHABLE), 40, timedelta(days=3), 0.0, Dead("gave_up: after 40 attempt(s); last: peer_unreachable")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_decision_table(case: Case) -> None:
    decision = POLICY.decide(case.error, attempts=case.attempts, created_at=NOW - case.age, now=NOW, rand=case.rand)
    assert decision == case.expected


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("UNAVAILABLE", Reason.PEER_UNREACHABLE),
        ("DEADLINE_EXCEEDED", Reason.PEER_TIMEOUT),
        ("UNAUTHENTICATED", Reason.NOT_TRUSTED_BY_PEER),
        ("PERMISSION_DENIED", Reason.NOT_TRUSTED_BY_PEER),
        ("INTERNAL", Reason.PEER_ERROR),
        ("UNIMPLEMENTED", Reason.PEER_ERROR),
        ("SOMETHING_NEW", Reason.PEER_ERROR),
    ],
)
def test_a_status_that_ends_a_stream_is_never_permanent(status: str, reason: Reason) -> None:
    error = stream_failure(status)
    assert (error.reason, error.permanent) == (reason, False)


@pytest.mark.parametrize(
    ("reason", "quick"),
    [
        (Reason.PEER_UNREACHABLE, True),
        (Reason.PEER_TIMEOUT, True),
        (Reason.PEER_ERROR, True),
        (Reason.PEER_SUSPENDED, False),
        (Reason.DIRECTORY_UNUSABLE, False),
        (Reason.REFUSED_TRANSIENT, False),
        (Reason.RECEIPT_INVALID, False),
    ],
)
def test_only_connection_failures_get_quick_retries(reason: Reason, quick: bool) -> None:
    assert quick_retry(failure(reason)) is quick


def test_permanent_reasons_are_exactly_these() -> None:
    assert {r.value for r in PERMANENT} == {
        "peer_revoked",
        "peer_unknown",
        "refused",
        "expired",
        "unreadable",
        "gave_up",
    }
    for reason in Reason:
        assert failure(reason).permanent is (reason in PERMANENT)


def test_reasons_are_bounded_to_the_column() -> None:
    assert len(failure(Reason.PEER_ERROR, "x" * 500).detail or "") == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_delay": 0 * S},
        {"base_delay": 10 * S, "max_delay": 5 * S},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"give_up_after": 0 * S},
        {"quick_attempts": 0},
    ],
)
def test_a_nonsensical_policy_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case breaks a different rule
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("attempts", "rand"), [(0, 0.0), (1, 1.0), (1, -0.1)])
def test_delay_arguments_are_checked(attempts: int, rand: float) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        POLICY.delay(attempts, rand)


def test_delays_never_shrink_as_attempts_grow_and_stay_within_jitter() -> None:
    previous = timedelta(0)
    for n in range(1, 40):
        d = POLICY.delay(n, 0.0)
        assert d >= previous
        assert POLICY.delay(n, 0.999) > d * 0.75
        previous = d
