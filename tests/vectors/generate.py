"""Golden envelope vectors: fixed test-only keys, a fixed clock, compared byte for byte.

Run ``python -m tests.vectors.generate`` from the repository root to rewrite the files after a
deliberate change of the wire format (and say why in the commit); ``--check`` only compares.
``tests/test_envelope.py`` fails whenever the code no longer produces exactly these bytes, and
``tests/test_receiver.py`` feeds every vector to a real receiver and expects the refusal named in
``envelopes.json``.

Ed25519 signatures are deterministic, so the same key, clock and content always give the same
envelope. The keys below are derived from public labels: they are **test-only** and worthless
anywhere else. Every payload is synthetic — tokens and encodings are hashes of labels, no person.

Bad vectors are named after what they break, e.g. ``envelope_wrong_recipient``. The world they are
judged in (``standard world``): the PKI of ``tests.trustkit.standard_pki`` plus ``sc-yilong``,
every node signing with its fixed key; the receiver is ``sc-nanbu`` (511321, the registration
place); the sender is ``cq-liangjiang`` (500157, the residence place); the clock is ``NOW``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2, envelope_pb2, exchange_pb2

from gateway.exchange.envelope import (
    ENVELOPE_TYPE,
    RECEIPT_TYPE,
    digest_of,
    framed,
    make_receipt,
    signed_bytes,
    to_ms,
)
from gateway.trust.signing import Ed25519Signer, b64, pae

HERE = Path(__file__).resolve().parent
INDEX = "envelopes.json"

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # == tests.trustkit.NOW
SENDER = "cq-liangjiang"  # residence place, 500157
RECEIVER = "sc-nanbu"  # registration place, 511321
OTHER_SICHUAN = "sc-yilong"  # 511324: another county of the receiver's province
OTHER_CHONGQING = "cq-beibei"  # 500109: another county of the sender's province
DIVISIONS = {SENDER: "500157", RECEIVER: "511321", OTHER_SICHUAN: "511324", OTHER_CHONGQING: "500109"}
MESSAGE_ID = "7b0c2f4e-2d55-4c1a-9a53-1e0f6d3c0001"
OTHER_MESSAGE_ID = "7b0c2f4e-2d55-4c1a-9a53-1e0f6d3c0002"
DAY = timedelta(days=1)


def vector_signer(node_id: str) -> Ed25519Signer:
    """The fixed, test-only signing key of ``node_id`` (derived from a public label)."""
    seed = hashlib.sha256(b"tongban test-only vector key\x00" + node_id.encode("ascii")).digest()
    return Ed25519Signer(Ed25519PrivateKey.from_private_bytes(seed))


def _h(label: str, size: int = 32) -> bytes:
    return hashlib.sha256(b"tongban synthetic\x00" + label.encode("utf-8")).digest()[:size]


def notice(n: int, *, residence: str = DIVISIONS[SENDER], registration: str = DIVISIONS[RECEIVER]) -> bytes:
    """A synthetic migrant notice (serialised): no name, no ID number, only hashes of labels."""
    return exchange_pb2.MigrantNotice(
        notice_ref=f"notice-{n:04d}",
        id_token=_h(f"id token {n}"),
        name_encoding=_h(f"name encoding {n}"),
        birth_year_month=f"{2012 + n % 10}-{1 + n % 12:02d}",
        sex=1 + n % 2,
        residence_division=residence,
        registration_division=registration,
        living_since="2024-03-01",
        key_care=n % 3 == 0,
        birth_encoding=_h(f"birth encoding {n}"),
    ).SerializeToString()


def notice_batch(count: int = 3, *, batch_index: int = 0, **divisions: str) -> bytes:
    """A synthetic MigrantNoticeBatch payload of ``count`` notices (serialised)."""
    batch = exchange_pb2.MigrantNoticeBatch(period="2026Q4", roster_id="roster-vector-0001", batch_index=batch_index)
    for n in range(count):
        batch.notices.add().ParseFromString(notice(n, **divisions))
    return batch.SerializeToString()


@dataclass(frozen=True)
class Forge:
    """Everything that goes into an envelope, with the honest sender's defaults. A bad vector
    changes one thing. :meth:`build` signs exactly what it is told — no checks — as an attacker or
    a buggy sender would."""

    sender: str = SENDER
    recipient: str = RECEIVER
    message_id: str = MESSAGE_ID
    purpose: str = "migrant_notice"
    profile_version: int = 1
    created_at: datetime = NOW
    expires_at: datetime = NOW + DAY
    payload_type: str = "tongban.v1.MigrantNoticeBatch"
    payload: bytes = b""
    payload_sha256: bytes | None = None  # None: the payload's real digest
    signer: str = SENDER  # whose fixed key signs
    key_id_of: str | None = None  # whose key id the signature names (None: the signer's)
    algorithm: str = "ed25519"
    header_suffix: bytes = b""  # raw bytes appended to the serialised header (unknown fields)

    def header(self) -> bytes:
        payload = self.payload or notice_batch()
        return (
            envelope_pb2.EnvelopeHeader(
                sender=self.sender,
                recipient=self.recipient,
                message_id=self.message_id,
                purpose=self.purpose,
                profile_version=self.profile_version,
                created_at_ms=to_ms(self.created_at),
                expires_at_ms=to_ms(self.expires_at),
                payload_type=self.payload_type,
                payload_sha256=self.payload_sha256 or hashlib.sha256(payload).digest(),
            ).SerializeToString()
            + self.header_suffix
        )

    def build(self) -> bytes:
        header, payload = self.header(), self.payload or notice_batch()
        signer = vector_signer(self.signer)
        key_id = vector_signer(self.key_id_of).public_key.key_id if self.key_id_of else signer.public_key.key_id
        return envelope_pb2.Envelope(
            header=header,
            payload=payload,
            signature=common_pb2.Signature(
                key_id=key_id,
                algorithm=self.algorithm,
                value=signer.sign(pae(ENVELOPE_TYPE, framed(header, payload))),
            ),
        ).SerializeToString()


def _flip_last_byte_of_payload(data: bytes) -> bytes:
    env = envelope_pb2.Envelope.FromString(data)
    env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 0x01])
    return env.SerializeToString()


def _retarget_signed_header(data: bytes) -> bytes:
    # Rewrite the recipient inside the signed header bytes (same length, still parses).
    env = envelope_pb2.Envelope.FromString(data)
    assert RECEIVER.encode() in env.header
    env.header = env.header.replace(RECEIVER.encode(), b"sc-nanbv")
    return env.SerializeToString()


# An unknown field number (16, length-delimited) smuggled into the batch: what a sender with a
# newer schema, or one that skipped minimisation, would send.
_SMUGGLED_FIELD = b"\x82\x01" + bytes([len(b"extra")]) + b"extra"


@dataclass(frozen=True)
class Vector:
    name: str
    expect: str  # "accepted" or the error code the receiver must raise
    about: str
    data: bytes
    after: str | None = None  # a vector the receiver must have accepted first


def vectors() -> list[Vector]:
    """Every envelope vector, in a fixed order."""
    valid = Forge().build()
    return [
        Vector("envelope_valid", "accepted", "a migrant notice batch, residence → registration", valid),
        Vector(
            "envelope_tampered_payload",
            "envelope_signature_invalid",
            "one bit of the payload flipped",
            _flip_last_byte_of_payload(valid),
        ),
        Vector(
            "envelope_tampered_header",
            "envelope_signature_invalid",
            "the signed header's recipient rewritten",
            _retarget_signed_header(valid),
        ),
        Vector(
            "envelope_wrong_recipient",
            "wrong_recipient",
            "correctly signed, addressed to another county of the province",
            Forge(recipient=OTHER_SICHUAN).build(),
        ),
        Vector(
            "envelope_expired",
            "outside_time_window",
            "created three days ago, valid for one day",
            Forge(created_at=NOW - 3 * DAY, expires_at=NOW - 2 * DAY).build(),
        ),
        Vector(
            "envelope_not_yet_valid",
            "outside_time_window",
            "created an hour in the future (beyond the 5-minute skew)",
            Forge(created_at=NOW + timedelta(hours=1), expires_at=NOW + DAY).build(),
        ),
        Vector(
            "envelope_lifetime_too_long",
            "outside_time_window",
            "valid for 30 days; the profile allows 14",
            Forge(expires_at=NOW + 30 * DAY).build(),
        ),
        Vector(
            "envelope_replayed",
            "replayed_message",
            "the message id of envelope_valid with another batch",
            Forge(payload=notice_batch(batch_index=1)).build(),
            after="envelope_valid",
        ),
        Vector(
            "envelope_unknown_purpose",
            "purpose_not_allowed",
            "a purpose no profile declares",
            Forge(purpose="bulk_export").build(),
        ),
        Vector(
            "envelope_forbidden_field",
            "forbidden_field",
            "the batch carries a field number its schema does not declare",
            Forge(payload=notice_batch() + _SMUGGLED_FIELD).build(),
        ),
        Vector(
            "envelope_foreign_province_key",
            "envelope_signature_invalid",
            "claims cq-liangjiang, signed with the key of sc-yilong (another province)",
            Forge(signer=OTHER_SICHUAN).build(),
        ),
        Vector(
            "envelope_foreign_key_under_senders_key_id",
            "envelope_signature_invalid",
            "names cq-liangjiang's key id, signed by cq-beibei's key",
            Forge(signer=OTHER_CHONGQING, key_id_of=SENDER).build(),
        ),
        Vector(
            "envelope_notices_for_another_county",
            "purpose_not_allowed",
            "notices whose registration place is not the recipient",
            Forge(payload=notice_batch(registration=DIVISIONS[OTHER_SICHUAN])).build(),
        ),
        Vector(
            "envelope_payload_digest_mismatch",
            "envelope_malformed",
            "validly signed, but the header's payload digest is not the payload's",
            Forge(payload_sha256=b"\x00" * 32).build(),
        ),
        Vector(
            "envelope_unknown_header_field",
            "envelope_malformed",
            "the signed header carries a field number this node does not know",
            Forge(header_suffix=b"\xf8\x01\x01").build(),
        ),
        Vector("envelope_garbage", "envelope_malformed", "bytes that are not an envelope", b"\xff" * 64),
        Vector(
            "envelope_other_message",
            "accepted",
            "a second valid envelope (another id), to check the world accepts more than one",
            Forge(message_id=OTHER_MESSAGE_ID, payload=notice_batch(batch_index=1)).build(),
        ),
    ]


def receipt_vector() -> bytes:
    """The receiver's signed receipt for ``envelope_valid``, accepted at ``NOW``."""
    return make_receipt(
        message_id=MESSAGE_ID,
        sender=SENDER,
        receiver=RECEIVER,
        envelope_digest=digest_of(signed_bytes(envelope_pb2.Envelope.FromString(Forge().build()))),
        signer=vector_signer(RECEIVER),
        now=NOW,
    ).SerializeToString()


def build() -> dict[str, bytes]:
    """Every file of the vector set: name → exact bytes."""
    files: dict[str, bytes] = {}
    index: list[dict[str, str | None]] = []
    for v in vectors():
        files[f"{v.name}.bin"] = v.data
        index.append(
            {
                "name": v.name,
                "file": f"{v.name}.bin",
                "expect": v.expect,
                "about": v.about,
                "after": v.after,
                "sha256": hashlib.sha256(v.data).hexdigest(),
            }
        )
    files["receipt_valid.bin"] = receipt_vector()
    doc = {
        "about": "Golden envelope vectors (tests/vectors/generate.py). Test-only keys; synthetic payloads.",
        "envelope_type": ENVELOPE_TYPE,
        "receipt_type": RECEIPT_TYPE,
        "clock": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "receiver": RECEIVER,
        "sender": SENDER,
        "keys": {
            node: {"key_id": vector_signer(node).public_key.key_id, "public": b64(vector_signer(node).public_key.raw)}
            for node in sorted(DIVISIONS)
        },
        "receipt": {"file": "receipt_valid.bin", "for": "envelope_valid", "accepted_at": "2026-11-23T12:00:00Z"},
        "vectors": index,
    }
    files[INDEX] = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on any difference")
    args = parser.parse_args(argv)
    files = build()
    stale = sorted(n for n, data in files.items() if not (HERE / n).exists() or (HERE / n).read_bytes() != data)
    extra = sorted(p.name for p in HERE.glob("*.bin") if p.name not in files)
    if args.check:
        for name in stale + extra:
            print(f"differs: {name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name in stale:
        (HERE / name).write_bytes(files[name])
        print(f"wrote {name}")
    for name in extra:
        (HERE / name).unlink()
        print(f"removed {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
