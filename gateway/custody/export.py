"""The custody chain file: a case's chain as a JSON document anyone can verify offline.

``tongban custody export`` writes it and ``tongban custody verify`` reads it. The form::

    {"format": "tongban-custody-chain-v1", "case_id": "<uuid>",
     "events": [{"case_id": …, "predecessor": "<hex>" | null, "signer": …,
                 "body": "<base64>", "key_id": …, "algorithm": …, "signature": "<base64>"}, …]}

Each event's fields are the bytes its signer signed, unchanged (the body and signature in base64,
the predecessor in hex, exactly as :class:`~gateway.custody.events.SignedEvent` holds them), so the
file verifies with the same :func:`~gateway.custody.chain.verify_chain` as the wire form. No
personal data: a case id, node ids, kinds, a case type, dates, hashes and signatures.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from gateway.custody.events import SignedEvent
from gateway.errors import CustodyEventMalformed

FORMAT = "tongban-custody-chain-v1"
_EVENT_KEYS = {"case_id", "predecessor", "signer", "body", "key_id", "algorithm", "signature"}


def dumps(case_id: str, events: Sequence[SignedEvent]) -> str:
    doc = {
        "format": FORMAT,
        "case_id": case_id,
        "events": [
            {
                "case_id": e.case_id,
                "predecessor": e.predecessor,
                "signer": e.signer,
                "body": base64.b64encode(e.body).decode("ascii"),
                "key_id": e.key_id,
                "algorithm": e.algorithm,
                "signature": base64.b64encode(e.signature).decode("ascii"),
            }
            for e in events
        ],
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise CustodyEventMalformed(f"{what} must be base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise CustodyEventMalformed(f"{what} must be base64") from None


def loads(text: str | bytes) -> tuple[str, tuple[SignedEvent, ...]]:
    """The case id and events of a chain file, in file order; ``CustodyEventMalformed`` for
    anything that is not exactly the form above (nothing is verified here)."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise CustodyEventMalformed("the chain file is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "case_id", "events"} or doc["format"] != FORMAT:
        raise CustodyEventMalformed(f"the chain file must be a {FORMAT} document")
    raw = doc["events"]
    if not isinstance(raw, list):
        raise CustodyEventMalformed("events must be a list")
    events: list[SignedEvent] = []
    for i, e in enumerate(raw):
        if not isinstance(e, dict) or set(e) != _EVENT_KEYS:
            raise CustodyEventMalformed(f"events[{i}] must have exactly {sorted(_EVENT_KEYS)}")
        event = SignedEvent(
            case_id=e["case_id"],
            predecessor=e["predecessor"],
            signer=e["signer"],
            body=_b64(e["body"], f"events[{i}].body"),
            key_id=e["key_id"],
            algorithm=e["algorithm"],
            signature=_b64(e["signature"], f"events[{i}].signature"),
        )
        event.check_shape()
        if event.case_id != doc["case_id"]:
            raise CustodyEventMalformed(f"events[{i}] is of another case")
        events.append(event)
    return str(doc["case_id"]), tuple(events)
