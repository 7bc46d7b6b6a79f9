"""The delivery loop (SPEC §4): from the outbox to a verified, stored receipt — or a dead letter.

A :class:`DeliveryWorker` runs one *round* per peer at a time:

1. **Claim** up to ``batch_size`` due rows of that peer (:func:`gateway.exchange.outbox.claim`: a
   lease two workers cannot both win, also across processes sharing one PostgreSQL).
2. **Open** each envelope (sealed at rest) and check it is still worth sending: an envelope that
   cannot be opened (``unreadable``) or has expired (``expired``: no receiver may accept it any
   more) becomes a dead letter without being sent.
3. **Send** the rest in one stream through the :class:`~gateway.exchange.transport.Transport`.
   ``tenacity`` retries that single attempt a few times within seconds for the envelopes that met
   a connection-level failure (:data:`~gateway.exchange.retry.QUICK`).
4. **Verify** every receipt (:func:`~gateway.exchange.envelope.verify_receipt`: signed by a valid
   key of the peer, naming this message id and the digest of exactly the envelope sent) and record
   it: the round's receipted messages in one transaction, each ``delivered`` with its receipt
   stored beside the row — plus an audit entry ``send`` when the purpose carries personal data; for
   any other outcome, per message, what
   :meth:`~gateway.exchange.retry.RetryPolicy.decide` says: a durable retry time, or a dead letter
   (audited ``send_failed`` for personal purposes, logged as a warning, counted in the metrics).

**One dead peer never blocks the others.** A scheduler thread finds the peers with due rows and
hands each to a small thread pool, at most one round per peer at a time in this process; a peer
that does not answer costs one pool thread for at most the transport's timeout, after which its
rows wait for their back-off and the thread serves the next peer.

**Stopping drains.** :meth:`DeliveryWorker.stop` claims nothing new, lets running rounds finish
(quick retries are cut short), and gives back any lease it still holds, so another process can
continue at once.

Logs name message ids, peers and reason codes only — never an envelope, a payload or a value.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_when_event_set, wait_random_exponential

from gateway import audit
from gateway.errors import CryptoError, DeliveryFailed, ExchangeError, GatewayError, ReceiptInvalid, TrustError
from gateway.exchange import outbox
from gateway.exchange.envelope import parse_envelope, verify_receipt
from gateway.exchange.purposes import Profiles
from gateway.exchange.retry import Dead, Reason, RetryPolicy, failure, quick_retry
from gateway.exchange.transport import Receipt, Result, Transport
from gateway.store.keyring import DataKeyring
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.delivery")

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_worker_id() -> str:
    """A worker id unique across processes and hosts sharing one database (fits ``claimed_by``)."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(4)}"[-64:]


def personal_purposes(profiles: Profiles) -> Callable[[str], bool]:
    """Whether a purpose carries personal data, per its profile; an unknown purpose counts as
    personal (fail closed: it is audited rather than silently not)."""

    def personal(purpose: str) -> bool:
        try:
            return profiles.get(purpose).personal
        except GatewayError:
            return True

    return personal


class Metrics:
    """In-memory counters (a Prometheus exporter can read :meth:`snapshot`). Thread-safe.

    ``rounds``, ``sent`` (envelopes put on a stream), ``delivered``, ``retried``, ``dead``, and
    ``failed.<reason>`` for every failed attempt by reason code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True)
class RoundOutcome:
    """What one round for one peer did."""

    peer: str
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0


class _Again(Exception):
    """Internal: some envelopes met a quick-retry failure; tenacity tries the round's send again."""


class DeliveryWorker:
    """Delivers the outbox of node ``node_id`` (see the module docstring).

    ``directory(now)`` is the node's verified directory (``TrustStore.current``), used to verify
    receipts; ``personal(purpose)`` says which sends to audit (:func:`personal_purposes`);
    ``rand()`` gives the jitter (tests pin it). ``lease`` must cover one round: the transport's
    timeout times ``policy.quick_attempts``, plus the waits between them.
    """

    def __init__(
        self,
        *,
        node_id: str,
        engine: Engine,
        keyring: DataKeyring,
        transport: Transport,
        directory: Callable[[datetime], Directory],
        personal: Callable[[str], bool],
        policy: RetryPolicy | None = None,
        clock: Clock = _utc_now,
        worker_id: str | None = None,
        batch_size: int = 100,
        lease: timedelta = timedelta(minutes=5),
        poll_interval: float = 1.0,
        max_parallel_peers: int = 8,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if batch_size < 1 or max_parallel_peers < 1 or poll_interval <= 0:
            raise ValueError("batch_size, max_parallel_peers and poll_interval must be positive")
        self.node_id = node_id
        self.worker_id = worker_id or new_worker_id()
        self.metrics = Metrics()
        self._engine = engine
        self._keyring = keyring
        self._transport = transport
        self._directory = directory
        self._personal = personal
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._batch = batch_size
        self._lease = lease
        self._poll = poll_interval
        self._max_peers = max_parallel_peers
        self._rand = rand
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._thread: threading.Thread | None = None

    # --- one round ------------------------------------------------------------------------------

    def deliver_round(self, peer: str) -> RoundOutcome:
        """Claim, send, verify and record one batch for ``peer`` (steps 1–4 of the module docstring)."""
        claimed = outbox.claim(
            self._engine, self.worker_id, peer=peer, limit=self._batch, lease=self._lease, now=self._clock()
        )
        if not claimed:
            return RoundOutcome(peer)
        self.metrics.inc("rounds")
        now = self._clock()
        tally: Counter[str] = Counter()
        ready: list[tuple[outbox.Claimed, bytes, bytes]] = []  # (row, envelope bytes, digest)
        for row in claimed:
            try:
                data = row.envelope(self._keyring)
                parsed = parse_envelope(data)
            except (CryptoError, ExchangeError) as exc:
                tally[self._failed(row, failure(Reason.UNREADABLE, exc.code), now)] += 1
                continue
            if parsed.expires_at <= now:
                tally[self._failed(row, failure(Reason.EXPIRED, "not delivered before the envelope expired"), now)] += 1
                continue
            ready.append((row, data, parsed.digest))
        results = self._send(peer, [data for _, data, _ in ready]) if ready else []
        self.metrics.inc("sent", len(ready))
        now = self._clock()
        receipted: list[tuple[outbox.Claimed, Receipt]] = []
        for (row, _, digest), result in zip(ready, results, strict=True):
            if isinstance(result, Receipt):
                try:
                    self._verify(peer, row, digest, result, now)
                except ReceiptInvalid as exc:
                    result = failure(Reason.RECEIPT_INVALID, (exc.detail or exc.code)[:120])
                except TrustError as exc:
                    result = failure(Reason.DIRECTORY_UNUSABLE, exc.code)
                else:
                    receipted.append((row, result))
                    continue
            tally[self._failed(row, result, now)] += 1
        if receipted:
            tally["delivered"] += self._delivered(peer, receipted, now)
        return RoundOutcome(peer, len(claimed), tally["delivered"], tally["retried"], tally["dead"])

    def _send(self, peer: str, envelopes: Sequence[bytes]) -> list[Result]:
        """One attempt at the stream, retried by tenacity for the envelopes whose failure was
        connection-level; the last result of each envelope is returned."""
        results: list[Result] = [failure(Reason.PEER_ERROR, "not sent")] * len(envelopes)
        pending = list(range(len(envelopes)))
        quick = self._policy.quick_wait.total_seconds()
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.quick_attempts) | stop_when_event_set(self._stopping),
            wait=wait_random_exponential(multiplier=quick, max=quick * 8),
            retry=retry_if_exception_type(_Again),
            sleep=self._pause,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    answers = self._transport.deliver(peer, [envelopes[i] for i in pending])
                    if len(answers) != len(pending):  # a transport bug: believe none of it
                        log.error("transport answered %d results for %d envelopes", len(answers), len(pending))
                        answers = [failure(Reason.PEER_ERROR, "transport result count mismatch")] * len(pending)
                    for i, answer in zip(pending, answers, strict=True):
                        results[i] = answer
                    pending = [i for i in pending if _quick(results[i])]
                    if pending:
                        raise _Again
        except _Again:
            pass  # out of quick attempts (or stopping): the durable back-off takes over
        return results

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _verify(self, peer: str, row: outbox.Claimed, digest: bytes, receipt: Receipt, now: datetime) -> None:
        verify_receipt(
            receipt.data,
            directory=self._directory(now),
            receiver=peer,
            message_id=row.message_id,
            envelope_digest=digest,
            now=now,
        )

    def _delivered(self, peer: str, receipted: Sequence[tuple[outbox.Claimed, Receipt]], now: datetime) -> int:
        """Record the round's verified receipts and their audit entries in one transaction (one
        commit per round, not per message: a roster's batches arrive together). If it fails, none
        is recorded; the leases expire and the resend collects the receivers' stored receipts."""
        with self._engine.begin() as conn:
            entries = []
            for row, receipt in receipted:
                changed = outbox.mark_delivered(conn, row.message_id, receipt.data, now=now)
                if changed and self._personal(row.purpose):
                    entries.append(
                        audit.NewEntry(
                            actor=self.node_id,
                            action=audit.Action.SEND,
                            purpose=row.purpose,
                            reference=row.message_id,
                            detail=f"to={peer} receipt_sha256={hashlib.sha256(receipt.data).hexdigest()}",
                            at=now,
                        )
                    )
            audit.append_many(conn, entries)
        for row, _ in receipted:
            self.metrics.inc("delivered")
            log.info("message %s delivered to %s (attempt %d)", row.message_id, peer, row.attempts)
        return len(receipted)

    def _failed(self, row: outbox.Claimed, error: DeliveryFailed, now: datetime) -> str:
        reason_code = _code(error.detail or error.code)
        self.metrics.inc(f"failed.{reason_code}")
        decision = self._policy.decide(
            error, attempts=row.attempts, created_at=row.created_at, now=now, rand=self._rand()
        )
        with self._engine.begin() as conn:
            if isinstance(decision, Dead):
                changed = outbox.mark_dead(conn, row.message_id, self.worker_id, reason=decision.reason)
                if changed and self._personal(row.purpose):
                    audit.append(
                        conn,
                        actor=self.node_id,
                        action=audit.Action.SEND_FAILED,
                        purpose=row.purpose,
                        reference=row.message_id,
                        detail=f"to={row.peer} reason={_code(decision.reason)}",
                        at=now,
                    )
            else:
                changed = outbox.mark_retry(
                    conn, row.message_id, self.worker_id, next_attempt_at=decision.at, error=decision.reason
                )
        if not changed:  # our lease ran out and another worker took the row over
            log.info("message %s: lease lost before recording %s", row.message_id, reason_code)
            return "lost"
        if isinstance(decision, Dead):
            self.metrics.inc("dead")
            log.warning("message %s to %s is a dead letter: %s", row.message_id, row.peer, decision.reason)
            return "dead"
        self.metrics.inc("retried")
        log.info(
            "message %s to %s: attempt %d failed (%s); next at %s",
            row.message_id,
            row.peer,
            row.attempts,
            reason_code,
            decision.at.isoformat(timespec="seconds"),
        )
        return "retried"

    # --- running ----------------------------------------------------------------------------------

    def run_pending(self) -> list[RoundOutcome]:
        """Deliver everything due now, peer after peer, in the calling thread (tests, one-shot CLI)."""
        outcomes = []
        for peer in outbox.due_peers(self._engine, now=self._clock()):
            while True:
                outcome = self.deliver_round(peer)
                if outcome.claimed:
                    outcomes.append(outcome)
                if outcome.claimed < self._batch:
                    break
        return outcomes

    def start(self) -> None:
        """Run the scheduler in a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("the delivery worker is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"delivery-{self.node_id}", daemon=True)
        self._thread.start()
        log.info("delivery worker %s started", self.worker_id)

    def notify(self) -> None:
        """Look for due messages now rather than at the next poll (call after enqueueing)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Claim nothing new and cut quick retries short; returns at once (then :meth:`stop`)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Claim nothing new, let running rounds finish (up to ``timeout`` seconds), give back any
        lease still held. To end rounds stuck on a hung peer sooner, :meth:`request_stop` and close
        the transport first."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("delivery worker %s: rounds still running after %ss", self.worker_id, timeout)
            self._thread = None
        try:
            released = outbox.release(self._engine, self.worker_id)
        except GatewayError as exc:
            log.warning("delivery worker %s could not release its leases (%s)", self.worker_id, exc.code)
            return
        except Exception as exc:  # noqa: BLE001 - shutting down: the leases expire anyway
            log.warning("delivery worker %s could not release its leases (%s)", self.worker_id, type(exc).__name__)
            return
        log.info("delivery worker %s stopped (%d lease(s) released)", self.worker_id, released)

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=self._max_peers, thread_name_prefix="deliver") as pool:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    peers = outbox.due_peers(self._engine, now=self._clock())
                except Exception as exc:  # noqa: BLE001 - the database may be back at the next poll
                    log.warning("delivery: cannot read the outbox (%s)", type(exc).__name__)
                    peers = []
                for peer in peers:
                    with self._lock:
                        if peer in self._busy or len(self._busy) >= self._max_peers:
                            continue
                        self._busy.add(peer)
                    pool.submit(self._drain, peer)
                self._wake.wait(self._poll)

    def _drain(self, peer: str) -> None:
        """Rounds for one peer until it has nothing due (or the worker stops)."""
        try:
            while not self._stopping.is_set():
                if self.deliver_round(peer).claimed < self._batch:
                    break
        except Exception as exc:  # noqa: BLE001 - one peer's trouble must not end the loop; leases expire
            # The type only: an exception's text could quote database parameters.
            log.error("delivery round for %s failed (%s)", peer, type(exc).__name__)
        finally:
            with self._lock:
                self._busy.discard(peer)


def _code(reason: str) -> str:
    """The reason code at the head of a reason text (``"peer_revoked: …"`` → ``peer_revoked``),
    reduced to identifier characters: it names metrics and goes into audit entries."""
    head = reason.split(":", 1)[0].strip()
    return "".join(ch for ch in head if ch.isascii() and (ch.isalnum() or ch in "_-."))[:40] or "unknown"


def _quick(result: Result) -> bool:
    return isinstance(result, DeliveryFailed) and quick_retry(result)
