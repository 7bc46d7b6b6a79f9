"""The envelope wire format: what is signed, sealing, parsing, receipts, and the golden vectors.

The receiver's order of checks and its database are tested in ``test_receiver.py``; here the pure
functions of :mod:`gateway.exchange.envelope`, with no database and no clock.
"""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta

import pytest
from tongban.v1 import common_pb2, envelope_pb2, exchange_pb2

from gateway.errors import (
    DocumentExpired,
    EnvelopeMalformed,
    EnvelopeTooLarge,
    ForbiddenField,
    OutsideTimeWindow,
    ReceiptInvalid,
)
from gateway.exchange.envelope import (
    ENVELOPE_TYPE,
    MAX_ENVELOPE_BYTES,
    RECEIPT_TYPE,
    digest_of,
    framed,
    from_ms,
    is_message_id,
    make_receipt,
    parse_envelope,
    seal,
    signed_bytes,
    to_ms,
    verify_receipt,
)
from gateway.exchange.purposes import load_profiles
from gateway.trust.signing import pae, verify
from gateway.trust.verifier import Directory
from tests.test_receiver import directory_of, make_pki
from tests.vectors import generate
from tests.vectors.generate import DAY, MESSAGE_ID, NOW, RECEIVER, SENDER, Forge, notice_batch, vector_signer

PROFILE = load_profiles().get("migrant_notice")


def _seal(**changes: object) -> bytes:
    args: dict[str, object] = {
        "sender": SENDER,
        "recipient": RECEIVER,
        "profile": PROFILE,
        "payload": notice_batch(),
        "signer": vector_signer(SENDER),
        "now": NOW,
        "lifetime": DAY,
        "message_id": MESSAGE_ID,
    }
    args.update(changes)
    return seal(**args).data  # type: ignore[arg-type]


# --- what is signed -------------------------------------------------------------------------------------


def test_seal_signs_the_pae_of_the_framed_header_and_payload() -> None:
    out = seal(
        sender=SENDER,
        recipient=RECEIVER,
        profile=PROFILE,
        payload=notice_batch(),
        signer=vector_signer(SENDER),
        now=NOW + timedelta(microseconds=1500),
        lifetime=DAY,
    )
    env = envelope_pb2.Envelope.FromString(out.data)
    header = envelope_pb2.EnvelopeHeader.FromString(env.header)
    assert (header.sender, header.recipient, header.message_id) == (SENDER, RECEIVER, out.message_id)
    assert (header.purpose, header.profile_version, header.payload_type) == (
        "migrant_notice",
        1,
        "tongban.v1.MigrantNoticeBatch",
    )
    assert header.payload_sha256 == hashlib.sha256(notice_batch()).digest()
    assert out.created_at == NOW + timedelta(milliseconds=1)  # milliseconds on the wire
    assert out.expires_at == out.created_at + DAY
    assert is_message_id(out.message_id)
    expected = b"DSSEv1 %d %s " % (len(ENVELOPE_TYPE), ENVELOPE_TYPE.encode())
    signed = signed_bytes(env)
    assert signed.startswith(expected)
    assert signed.endswith(struct.pack(">Q", len(env.header)) + env.header + env.payload)
    verify(vector_signer(SENDER).public_key, env.signature.algorithm, signed, env.signature.value)
    assert env.signature.key_id == vector_signer(SENDER).public_key.key_id
    assert out.digest == hashlib.sha256(signed).digest()


def test_the_frame_fixes_the_boundary_between_header_and_payload() -> None:
    # Moving a byte from the end of the header to the start of the payload changes what is signed.
    assert framed(b"ab", b"c") != framed(b"a", b"bc")
    assert pae(ENVELOPE_TYPE, b"x") != pae(RECEIPT_TYPE, b"x")  # domain separation by type


def test_seal_refuses_what_a_receiver_would_refuse() -> None:
    with pytest.raises(OutsideTimeWindow):
        _seal(lifetime=timedelta(seconds=PROFILE.max_lifetime_seconds + 1))
    with pytest.raises(OutsideTimeWindow):
        _seal(lifetime=timedelta(0))
    with pytest.raises(ForbiddenField):
        _seal(payload=notice_batch() + b"\x82\x01\x01x")
    with pytest.raises(EnvelopeMalformed):
        _seal(message_id="not-a-uuid")
    big = exchange_pb2.MigrantNoticeBatch(
        notices=[exchange_pb2.MigrantNotice(name_encoding=b"\0" * 1024) for _ in range(4200)]
    ).SerializeToString()
    with pytest.raises(EnvelopeTooLarge):
        _seal(payload=big)


def test_seal_is_deterministic_and_matches_the_forger() -> None:
    assert _seal() == _seal() == Forge().build()


def test_times_are_epoch_milliseconds() -> None:
    assert to_ms(datetime(1970, 1, 1, 0, 0, 1, 999, tzinfo=UTC)) == 1000
    assert from_ms(to_ms(NOW), "t") == NOW
    for bad in (0, -1, 2**63 - 1):
        with pytest.raises(EnvelopeMalformed):
            from_ms(bad, "t")
    with pytest.raises(ValueError, match="timezone-aware"):
        to_ms(datetime(2026, 1, 1))  # naive: the point of the test


# --- parsing (untrusted) --------------------------------------------------------------------------------


def test_parse_keeps_the_received_bytes_and_computes_the_digest() -> None:
    data = _seal()
    unverified = parse_envelope(data)
    assert unverified.data == data
    assert unverified.digest == digest_of(signed_bytes(envelope_pb2.Envelope.FromString(data)))
    assert unverified.message_id == MESSAGE_ID
    assert parse_envelope(envelope_pb2.Envelope.FromString(data)).digest == unverified.digest


def test_the_digest_does_not_depend_on_the_outer_encoding() -> None:
    # The same header, payload and signature fields in another order: the digest names the content.
    env = envelope_pb2.Envelope.FromString(_seal())
    reordered = (
        b"\x1a" + _len(env.signature.SerializeToString()) + env.signature.SerializeToString()
        + b"\x12" + _len(env.payload) + env.payload
        + b"\x0a" + _len(env.header) + env.header
    )  # fmt: skip
    assert reordered != env.SerializeToString()
    assert parse_envelope(reordered).digest == parse_envelope(env.SerializeToString()).digest


def _len(data: bytes) -> bytes:
    n, out = len(data), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _with_header(**fields: int) -> bytes:
    env = envelope_pb2.Envelope.FromString(Forge().build())
    header = envelope_pb2.EnvelopeHeader.FromString(env.header)
    for name, value in fields.items():
        setattr(header, name, value)
    env.header = header.SerializeToString()
    return env.SerializeToString()


BAD_SYNTAX: list[tuple[str, bytes]] = [
    ("oversized", b"\0" * (MAX_ENVELOPE_BYTES + 1)),
    ("header_too_large", envelope_pb2.Envelope(header=b"\0" * 2000).SerializeToString()),
    ("signature_unknown_field", Forge().build() + b"\x1a\x03\xf8\x01\x01"),
    ("sender_too_long", Forge(sender="x" * 65).build()),
    ("sender_not_printable", Forge(sender="cq-\nliangjiang").build()),
    ("digest_short", Forge(payload_sha256=b"\1" * 31).build()),
    ("no_algorithm", Forge(algorithm="").build()),
    ("after_year_9999", _with_header(expires_at_ms=2**62)),
]


@pytest.mark.parametrize(("name", "data"), BAD_SYNTAX, ids=[b[0] for b in BAD_SYNTAX])
def test_parse_refuses_bad_syntax(name: str, data: bytes) -> None:
    with pytest.raises((EnvelopeMalformed, EnvelopeTooLarge)):
        parse_envelope(data)


# --- receipts ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def directory() -> Directory:
    return directory_of(make_pki())


def _receipt(**changes: object) -> envelope_pb2.Receipt:
    args: dict[str, object] = {
        "message_id": MESSAGE_ID,
        "sender": SENDER,
        "receiver": RECEIVER,
        "envelope_digest": b"\7" * 32,
        "signer": vector_signer(RECEIVER),
        "now": NOW,
    }
    args.update(changes)
    return make_receipt(**args)  # type: ignore[arg-type]


def _check(receipt: envelope_pb2.Receipt | bytes, directory: Directory, **changes: object) -> None:
    args: dict[str, object] = {
        "directory": directory,
        "receiver": RECEIVER,
        "message_id": MESSAGE_ID,
        "envelope_digest": b"\7" * 32,
        "now": NOW,
    }
    args.update(changes)
    verify_receipt(receipt, **args)  # type: ignore[arg-type]


def test_a_good_receipt_verifies_as_message_or_bytes(directory: Directory) -> None:
    receipt = _receipt()
    _check(receipt, directory)
    _check(receipt.SerializeToString(), directory)
    body = verify_receipt(
        receipt, directory=directory, receiver=RECEIVER, message_id=MESSAGE_ID, envelope_digest=b"\7" * 32, now=NOW
    )
    assert from_ms(body.accepted_at_ms, "t") == NOW


def _tampered_body() -> envelope_pb2.Receipt:
    receipt = _receipt()
    body = envelope_pb2.ReceiptBody.FromString(receipt.body)
    body.accepted_at_ms += 1
    receipt.body = body.SerializeToString()
    return receipt


def _envelope_signature_as_receipt() -> envelope_pb2.Receipt:
    # The receiver's signature over the same bytes under the *envelope* type must not pass.
    receipt = _receipt()
    receipt.signature.value = vector_signer(RECEIVER).sign(pae(ENVELOPE_TYPE, receipt.body))
    return receipt


BAD_RECEIPTS: list[tuple[str, object, dict[str, object]]] = [
    ("garbage", b"\xff" * 10, {}),
    ("oversized", b"\0" * 5000, {}),
    ("tampered_body", _tampered_body(), {}),
    ("signed_by_the_sender", _receipt(signer=vector_signer(SENDER)), {}),
    ("signed_by_another_node_of_the_province", _receipt(signer=vector_signer(generate.OTHER_SICHUAN)), {}),
    ("signed_under_the_envelope_type", _envelope_signature_as_receipt(), {}),
    ("for_another_message", _receipt(), {"message_id": generate.OTHER_MESSAGE_ID}),
    ("for_other_content", _receipt(), {"envelope_digest": b"\x08" * 32}),
    ("by_another_receiver", _receipt(receiver=SENDER), {}),
    ("expected_from_another_receiver", _receipt(), {"receiver": generate.OTHER_SICHUAN}),
    (
        "unknown_body_field",
        envelope_pb2.Receipt(
            body=_receipt().body + b"\xa8\x01\x01",
            signature=common_pb2.Signature(key_id="k", algorithm="ed25519", value=b"v"),
        ),
        {},
    ),
    ("accepted_before_1970", _receipt(now=datetime(1960, 1, 1, tzinfo=UTC)), {}),
]


@pytest.mark.parametrize(("name", "receipt", "changes"), BAD_RECEIPTS, ids=[b[0] for b in BAD_RECEIPTS])
def test_bad_receipt_is_refused(directory: Directory, name: str, receipt: object, changes: dict[str, object]) -> None:
    with pytest.raises(ReceiptInvalid):
        _check(receipt, directory, **changes)  # type: ignore[arg-type]


def test_a_receipt_checked_against_an_expired_directory_is_transient(directory: Directory) -> None:
    with pytest.raises(DocumentExpired):
        _check(_receipt(), directory, now=NOW + 30 * DAY)


# --- golden vectors ---------------------------------------------------------------------------------------


def test_golden_vectors_are_reproduced_byte_for_byte() -> None:
    built = generate.build()
    on_disk = {p.name: p.read_bytes() for p in generate.HERE.iterdir() if p.suffix in {".bin", ".json"}}
    assert sorted(built) == sorted(on_disk), "run: python -m tests.vectors.generate"
    for name, data in built.items():
        assert on_disk[name] == data, f"{name} differs; if the wire format changed on purpose, regenerate"


def test_golden_index_names_every_bad_vector_after_what_it_breaks() -> None:
    index = json.loads((generate.HERE / generate.INDEX).read_text(encoding="utf-8"))
    names = [v["name"] for v in index["vectors"]]
    assert len(names) == len(set(names))
    assert all(n.startswith("envelope_") for n in names)
    for v in index["vectors"]:
        data = (generate.HERE / v["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == v["sha256"]
    assert index["keys"][SENDER]["key_id"] == vector_signer(SENDER).public_key.key_id


def test_the_golden_envelope_is_what_seal_produces() -> None:
    assert (generate.HERE / "envelope_valid.bin").read_bytes() == _seal()
