"""Property-based tests: whatever arrives, the receiver never crashes and never stores what it refuses.

Three sources of input, each run against one SQLite world that has already accepted one envelope
(so duplicates and replays of it are in reach):

* random bytes;
* random mutations (bit flips, overwrites, insertions, deletions, truncation, splices) of that valid
  envelope's exact bytes;
* envelopes **correctly signed** by the sender around random header fields and payloads, which get
  past the signature and exercise every later check.

The only exceptions allowed out are the refusals of the error tree (``ExchangeError``, and
``TrustError`` for the directory); the database changes only when a receipt is returned, and then
by exactly the one inbox row of that message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tongban.v1 import common_pb2, envelope_pb2

from gateway.errors import ExchangeError, TrustError
from gateway.exchange.envelope import ENVELOPE_TYPE, framed, to_ms, verify_receipt
from gateway.trust.signing import pae
from tests.test_receiver import World, make_world, snapshot
from tests.vectors.generate import (
    DIVISIONS,
    MESSAGE_ID,
    NOW,
    OTHER_SICHUAN,
    RECEIVER,
    SENDER,
    Forge,
    notice_batch,
    vector_signer,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no example database in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID = Forge().build()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'node.db'}")
    w.receive(VALID)
    yield w
    w.engine.dispose()


def _refused_without_change(world: World, data: bytes) -> bytes | None:
    """Receive ``data``; return the receipt's bytes, or None if it was refused. Refusals must be
    typed and must leave every table as it was."""
    before = snapshot(world.engine)
    try:
        receipt = world.receive(data)
    except (ExchangeError, TrustError) as exc:
        # `pytest --hypothesis-show-statistics` shows which checks the inputs reached (no personal data here)
        event(exc.code if exc.code != "envelope_malformed" else f"{exc.code}: {exc.detail}")
        assert snapshot(world.engine) == before
        return None
    event("accepted")
    return receipt.SerializeToString()


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_refused_and_store_nothing(world: World, data: bytes) -> None:
    before = snapshot(world.engine)
    assert _refused_without_change(world, data) is None or data == VALID
    assert snapshot(world.engine) == before


# --- mutations of the valid envelope -------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        elif op == "splice" and n:
            j = draw(st.integers(0, n - 1))
            data[i:i] = data[j : j + draw(st.integers(1, 32))]
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_mutated_envelopes_are_refused_and_store_nothing(world: World, data: bytes) -> None:
    original = snapshot(world.engine)
    receipt = _refused_without_change(world, data)
    if receipt is not None:
        # Only a mutation that leaves header, payload and signature as they were can pass (e.g. one
        # that re-encodes the outer message); it is then the same envelope: the original receipt.
        env, valid = envelope_pb2.Envelope.FromString(data), envelope_pb2.Envelope.FromString(VALID)
        assert (env.header, env.payload, env.signature) == (valid.header, valid.payload, valid.signature)
        assert receipt == world.receive(VALID).SerializeToString()
    assert snapshot(world.engine) == original


# --- correctly signed, randomly built -------------------------------------------------------------------

_TEXT = st.text(max_size=80)
T = TypeVar("T")


def mostly(draw: st.DrawFn, usual: st.SearchStrategy[T], unusual: st.SearchStrategy[T]) -> T:
    """Draw from ``usual`` nine times in ten, so most envelopes get past the early checks."""
    return draw(usual) if draw(st.sampled_from([True] * 9 + [False])) else draw(unusual)


_PURPOSES = [  # (purpose, payload type): mostly consistent, sometimes not
    ("migrant_notice", "tongban.v1.MigrantNoticeBatch"),
    ("migrant_notice", "tongban.v1.MigrantNoticeBatch"),
    ("migrant_notice", "tongban.v1.MigrantNoticeBatch"),
    ("roster_manifest", "tongban.v1.RosterManifest"),
    ("match_result", "tongban.v1.MatchResultBatch"),
    ("custody_event", "tongban.v1.RosterManifest"),
    ("migrant_notice", "tongban.v1.RosterManifest"),
]
_DAY_MS = 86_400_000
_NOW_MS = to_ms(NOW)
_INT64 = (-(2**63), 2**63 - 1)


@st.composite
def signed_envelopes(draw: st.DrawFn) -> bytes:
    payload = mostly(
        draw,
        st.one_of(
            st.builds(
                notice_batch,
                st.integers(0, 5),
                residence=st.sampled_from(sorted(DIVISIONS.values())),
                registration=st.sampled_from(sorted(DIVISIONS.values())),
            ),
            st.just(notice_batch() + b"\x82\x01\x01x"),
        ),
        st.binary(max_size=512),
    )
    purpose, payload_type = mostly(draw, st.sampled_from(_PURPOSES), st.tuples(_TEXT, _TEXT))
    created = _NOW_MS + mostly(draw, st.integers(-2 * _DAY_MS, 60_000), st.integers(-20 * _DAY_MS, 20 * _DAY_MS))
    created = mostly(draw, st.just(created), st.integers(*_INT64))
    expires = created + mostly(draw, st.integers(2 * _DAY_MS, 13 * _DAY_MS), st.integers(-_DAY_MS, 20 * _DAY_MS))
    expires = mostly(draw, st.just(expires), st.integers(*_INT64))
    header = envelope_pb2.EnvelopeHeader(
        sender=SENDER,
        recipient=mostly(draw, st.just(RECEIVER), st.one_of(st.just(OTHER_SICHUAN), _TEXT)),
        message_id=mostly(draw, st.one_of(st.uuids().map(str), st.just(MESSAGE_ID)), _TEXT),
        purpose=purpose,
        profile_version=mostly(draw, st.just(1), st.integers(0, 2**32 - 1)),
        created_at_ms=max(min(created, _INT64[1]), _INT64[0]),
        expires_at_ms=max(min(expires, _INT64[1]), _INT64[0]),
        payload_type=payload_type,
        payload_sha256=mostly(draw, st.just(hashlib.sha256(payload).digest()), st.binary(max_size=40)),
    ).SerializeToString()
    signer = vector_signer(SENDER)
    return envelope_pb2.Envelope(
        header=header,
        payload=payload,
        signature=common_pb2.Signature(
            key_id=signer.public_key.key_id,
            algorithm="ed25519",
            value=signer.sign(pae(ENVELOPE_TYPE, framed(header, payload))),
        ),
    ).SerializeToString()


@FUZZ
@given(data=signed_envelopes())
def test_signed_random_envelopes_are_refused_cleanly_or_stored_once(world: World, data: bytes) -> None:
    before = snapshot(world.engine)
    receipt = _refused_without_change(world, data)
    if receipt is None:
        return
    after = snapshot(world.engine)
    header = envelope_pb2.EnvelopeHeader.FromString(envelope_pb2.Envelope.FromString(data).header)
    new_rows = [r for r in after["inbox"] if r not in before["inbox"]]
    assert [r[0] for r in new_rows] in ([], [header.message_id])  # a duplicate adds nothing
    assert {k: v for k, v in after.items() if k != "inbox"} == {k: v for k, v in before.items() if k != "inbox"}
    verify_receipt(
        receipt,
        directory=world.directory,
        receiver=RECEIVER,
        message_id=header.message_id,
        envelope_digest=hashlib.sha256(pae(ENVELOPE_TYPE, framed(*_parts(data)))).digest(),
        now=NOW,
    )


def _parts(data: bytes) -> tuple[bytes, bytes]:
    env = envelope_pb2.Envelope.FromString(data)
    return env.header, env.payload
