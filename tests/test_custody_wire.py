"""Custody events and chains through the one wire converter: every event kind round-trips byte for
byte (the signed bytes are carried, never re-encoded), and bad wire messages are typed errors."""

from __future__ import annotations

import pytest
from tongban.v1 import custody_pb2

from gateway.custody.chain import verify_chain
from gateway.errors import CustodyEventMalformed, InputError
from gateway.wire import (
    custody_chain_from_wire,
    custody_chain_to_wire,
    custody_event_from_wire,
    custody_event_to_wire,
)
from tests.test_custody_chain import CASE, DIRECTORY, FULL, NOW, Chain

_EVERY_KIND = Chain()
for _move in (
    ("A", "genesis", "A>B"),
    ("A", "offer", "B"),
    ("B", "recall", "A"),
    ("A", "offer", "B"),
    ("B", "decline"),
    ("A", "offer", "B"),
    ("B", "accept"),
    ("B", "close"),
):
    _EVERY_KIND.move(*_move)


@pytest.mark.parametrize("event", _EVERY_KIND.events, ids=lambda e: f"{e.kind.value}_{e.hash[:6]}")
def test_event_round_trip(event: object) -> None:
    signed = event.signed  # type: ignore[attr-defined]
    wire = custody_pb2.CustodyEvent.FromString(custody_event_to_wire(signed).SerializeToString())
    back = custody_event_from_wire(wire)
    assert back == signed
    assert back.hash == event.hash  # type: ignore[attr-defined]


def test_chain_round_trip_still_verifies() -> None:
    events = [e.signed for e in _EVERY_KIND.events]
    wire = custody_pb2.CustodyChain.FromString(custody_chain_to_wire(CASE, events).SerializeToString())
    case_id, back = custody_chain_from_wire(wire)
    assert (case_id, list(back)) == (CASE, events)
    assert verify_chain(back, DIRECTORY, NOW).closed


def _bad_predecessor(m: custody_pb2.CustodyEvent) -> None:
    m.predecessor = b"\x00" * 31


BAD = [
    ("short_predecessor", _bad_predecessor),
    ("no_signature", lambda m: m.ClearField("signature")),
    ("case_id_not_a_uuid", lambda m: setattr(m, "case_id", "case-1")),
    ("empty_signer", lambda m: setattr(m, "signer", "")),
    ("empty_body", lambda m: setattr(m, "body", b"")),
]


@pytest.mark.parametrize("mutate", [pytest.param(m, id=n) for n, m in BAD])
def test_bad_wire_events_are_typed_errors(mutate: object) -> None:
    m = custody_event_to_wire(FULL[1].signed)
    mutate(m)  # type: ignore[operator]
    with pytest.raises(CustodyEventMalformed) as info:
        custody_event_from_wire(m)
    assert isinstance(info.value, InputError)


def test_chain_with_an_event_of_another_case_is_refused() -> None:
    m = custody_chain_to_wire("0b7e3f0e-2a44-4c55-8f0c-1b2d3e4f5a6b", [e.signed for e in FULL])
    with pytest.raises(CustodyEventMalformed):
        custody_chain_from_wire(m)
