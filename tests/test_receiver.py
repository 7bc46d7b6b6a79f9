"""The receiver's rules of SPEC §3 as a table of bad envelopes, each judged by a real receiver.

Every case builds a fresh world (the trustkit PKI with the fixed vector keys, a migrated database on
SQLite and on PostgreSQL), forges or changes one thing the way an attacker, a careless operator or a
buggy sender would, and names the one error the receiver must raise — and the database must be
exactly as it was, in every table. The plumbing is at the top; the rules are in ``BAD``.

The world: ``sc-nanbu`` (511321, a registration place) receives; ``cq-liangjiang`` (500157, a
residence place) sends it migrant notices; ``cq-beibei`` and ``sc-yilong`` are bystanders.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Connection, Engine, insert, select
from tongban.v1 import envelope_pb2, exchange_pb2

from gateway.errors import (
    DirectoryUnavailable,
    DocumentExpired,
    EnvelopeMalformed,
    EnvelopeSignatureInvalid,
    EnvelopeTooLarge,
    ExchangeError,
    ForbiddenField,
    GatewayError,
    OutsideTimeWindow,
    PayloadInvalid,
    PurposeNotAllowed,
    ReceiptInvalid,
    RelayItemInvalid,
    RelayNotAllowed,
    ReplayedMessage,
    SenderMismatch,
    SenderNotActive,
    StorageError,
    WrongRecipient,
)
from gateway.exchange.envelope import MAX_ENVELOPE_BYTES, Verified, digest_of, signed_bytes, verify_receipt
from gateway.exchange.purposes import PurposeProfile, load_profiles
from gateway.exchange.receiver import PAIR_RULES, Receiver, check_pair
from gateway.status import EXCHANGE_STATUS, exchange_status, is_permanent, public_message
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring, Sealed
from gateway.store.schema import audit_log, inbox, metadata
from gateway.trust.documents import NodeEntry, NodeStatus
from gateway.trust.signing import Ed25519Signer
from gateway.trust.verifier import Directory, TrustState
from tests.trustkit import NOW, Node, Pki, standard_pki
from tests.vectors.generate import (
    DAY,
    DIVISIONS,
    HERE,
    INDEX,
    MESSAGE_ID,
    OTHER_CHONGQING,
    OTHER_MESSAGE_ID,
    OTHER_SICHUAN,
    RECEIVER,
    SENDER,
    Forge,
    notice_batch,
    vector_signer,
)

PROFILES = load_profiles()

# --- the world ----------------------------------------------------------------------------------------


def make_pki() -> Pki:
    """trustkit's standard PKI plus sc-yilong, every node signing with its fixed vector key."""
    pki = standard_pki()
    pki.provinces["51"].enrol(OTHER_SICHUAN, DIVISIONS[OTHER_SICHUAN])
    for province in pki.provinces.values():
        for node in province.nodes.values():
            node.signers = [vector_signer(node.node_id)]
    return pki


def node(pki: Pki, node_id: str) -> Node:
    return next(p.nodes[node_id] for p in pki.provinces.values() if node_id in p.nodes)


def directory_of(pki: Pki) -> Directory:
    return TrustState.from_pinned_root(pki.roots[0].to_bytes(), NOW).accept(pki.bundle(), NOW)[1]


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, so 'nothing changed' means nothing at all."""
    with engine.connect() as conn:
        return {
            t.name: sorted((tuple(r) for r in conn.execute(select(t)).all()), key=repr) for t in metadata.sorted_tables
        }


@dataclass
class World:
    pki: Pki
    engine: Engine
    keyring: DataKeyring
    directory: Directory
    now: datetime = NOW
    accepted: list[str] = field(default_factory=list)  # message ids the on_accept hook saw
    hook: Callable[[Connection, Verified], None] | None = None
    # TLS peers the interceptor admitted that the receiver's (fresher) directory may not list as such
    admitted: dict[str, NodeEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.receiver = Receiver(
            node_id=RECEIVER,
            engine=self.engine,
            keyring=self.keyring,
            directory=lambda: self.directory,
            profiles=PROFILES,
            signer=vector_signer(RECEIVER),
            clock=lambda: self.now,
            on_accept=self._on_accept,
        )

    def _on_accept(self, conn: Connection, verified: Verified) -> None:
        self.accepted.append(verified.message_id)
        if self.hook is not None:
            self.hook(conn, verified)

    def entry(self, node_id: str) -> NodeEntry:
        return self.admitted.get(node_id) or self.directory.entry(node_id)

    def rebuild_directory(self) -> None:
        self.directory = directory_of(self.pki)

    def receive(self, data: bytes | envelope_pb2.Envelope, peer: str = SENDER) -> envelope_pb2.Receipt:
        return self.receiver.receive(data, self.entry(peer))


def make_world(url: str) -> World:
    engine = make_engine(url)
    migrate(engine)
    pki = make_pki()
    return World(pki, engine, DataKeyring.generate(), directory_of(pki))


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = make_world(db_url)
    yield w
    w.engine.dispose()


def valid(**changes: Any) -> bytes:
    return Forge(**changes).build()


# --- the table of bad envelopes ---------------------------------------------------------------------

# A case prepares the world (if it must) and returns what arrives: the bytes and the TLS peer.
Attempt = tuple[bytes | envelope_pb2.Envelope, str]
Case = Callable[[World], Attempt]


def _append_unknown_envelope_field(w: World) -> Attempt:
    return valid() + b"\xf8\x01\x01", SENDER  # field 31, varint


def _unsigned(w: World) -> Attempt:
    env = envelope_pb2.Envelope.FromString(valid())
    env.ClearField("signature")
    return env.SerializeToString(), SENDER


def _oversized_message(w: World) -> Attempt:
    return envelope_pb2.Envelope(payload=b"\x00" * MAX_ENVELOPE_BYTES), SENDER


def _unknown_sender(w: World) -> Attempt:
    # A peer entry no directory lists (defence in depth: the interceptor would not admit it).
    w.admitted["cq-ghost"] = replace(w.entry(SENDER), node_id="cq-ghost")
    return valid(sender="cq-ghost"), "cq-ghost"


def _sender_status(status: NodeStatus) -> Case:
    def case(w: World) -> Attempt:
        w.admitted[SENDER] = w.entry(SENDER)  # the interceptor admitted the call before the refresh
        node(w.pki, SENDER).status = status
        w.rebuild_directory()
        return valid(), SENDER

    return case


def _rotated(retired_at: datetime, refuse_after: datetime, **changes: Any) -> Case:
    """The sender rotated its key: the fixed key is retired at ``retired_at`` (overlap until
    ``refuse_after``), and the envelope is still signed with it."""

    def case(w: World) -> Attempt:
        sender = node(w.pki, SENDER)
        sender.signers = [vector_signer(SENDER), Ed25519Signer.generate()]
        sender.rotations = [(retired_at, refuse_after)]
        w.rebuild_directory()
        return valid(**changes), SENDER

    return case


def _replayed(w: World) -> Attempt:
    w.receive(valid())
    return valid(payload=notice_batch(batch_index=1)), SENDER


def _sent_to_itself(w: World) -> Attempt:
    return valid(sender=RECEIVER, recipient=RECEIVER, signer=RECEIVER), RECEIVER


def _tampered_payload(w: World) -> Attempt:
    env = envelope_pb2.Envelope.FromString(valid())
    env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 1])
    return env.SerializeToString(), SENDER


def _tampered_header(w: World) -> Attempt:
    env = envelope_pb2.Envelope.FromString(valid())
    header = envelope_pb2.EnvelopeHeader.FromString(env.header)
    header.expires_at_ms += 1000  # one second more: still a well-formed header
    env.header = header.SerializeToString()
    return env.SerializeToString(), SENDER


def bytes_case(data: bytes, peer: str = SENDER) -> Case:
    return lambda w: (data, peer)


BAD: list[tuple[str, Case, type[ExchangeError], str]] = [
    # (case, what arrives, the error, words of its detail: the reason, pinned)
    # 1. size
    ("oversized", bytes_case(b"\x00" * (MAX_ENVELOPE_BYTES + 1)), EnvelopeTooLarge, "limit"),
    ("oversized_message_object", _oversized_message, EnvelopeTooLarge, "limit"),
    # 2. parse (syntax only, nothing trusted yet)
    ("garbage_bytes", bytes_case(b"\xff" * 64), EnvelopeMalformed, "does not decode"),
    ("empty_bytes", bytes_case(b""), EnvelopeMalformed, "sender must be"),
    ("unknown_envelope_field", _append_unknown_envelope_field, EnvelopeMalformed, "envelope carries fields"),
    (
        "unknown_header_field",
        bytes_case(valid(header_suffix=b"\xf8\x01\x01")),
        EnvelopeMalformed,
        "header carries fields",
    ),
    ("message_id_not_a_uuid", bytes_case(valid(message_id="42")), EnvelopeMalformed, "canonical UUID"),
    ("message_id_upper_case", bytes_case(valid(message_id=MESSAGE_ID.upper())), EnvelopeMalformed, "canonical UUID"),
    ("unsigned", _unsigned, EnvelopeMalformed, "signature key id"),
    (
        "time_before_1970",
        bytes_case(valid(created_at=datetime(1969, 1, 1, tzinfo=NOW.tzinfo))),
        EnvelopeMalformed,
        "created_at is not a time",
    ),
    # 3. the TLS peer is the sender
    ("sender_is_not_the_tls_peer", bytes_case(valid(), peer=OTHER_CHONGQING), SenderMismatch, "TLS peer cq-beibei"),
    (
        "peer_replays_another_nodes_envelope",
        bytes_case(valid(), peer=OTHER_SICHUAN),
        SenderMismatch,
        "TLS peer sc-yilong",
    ),
    # 4. the sender is active in the fresh directory
    ("revoked_sender", _sender_status(NodeStatus.REVOKED), SenderNotActive, "is revoked"),
    ("suspended_sender", _sender_status(NodeStatus.SUSPENDED), SenderNotActive, "is suspended"),
    ("unknown_sender", _unknown_sender, SenderNotActive, "cq-ghost"),
    # 5. the signature, by a key of the sender valid at created_at
    ("tampered_payload", _tampered_payload, EnvelopeSignatureInvalid, "key "),
    ("tampered_header", _tampered_header, EnvelopeSignatureInvalid, "key "),
    (
        "foreign_province_key",
        bytes_case(valid(signer=OTHER_SICHUAN)),
        EnvelopeSignatureInvalid,
        "is not a signing key of cq-liangjiang",
    ),
    (
        "foreign_key_under_the_senders_key_id",
        bytes_case(valid(signer=OTHER_CHONGQING, key_id_of=SENDER)),
        EnvelopeSignatureInvalid,
        "key ",
    ),
    ("unknown_signature_algorithm", bytes_case(valid(algorithm="sm2-sm3")), EnvelopeSignatureInvalid, "sm2-sm3"),
    (
        "rotated_key_used_after_its_window",
        _rotated(NOW - timedelta(hours=2), NOW + 7 * DAY),
        EnvelopeSignatureInvalid,
        "rotated before the signing time",
    ),
    (
        "rotated_key_after_the_overlap_ended",
        _rotated(NOW - 2 * DAY, NOW - DAY, created_at=NOW - 3 * DAY),
        EnvelopeSignatureInvalid,
        "overlap window has ended",
    ),
    (
        "dated_before_the_key_was_valid",
        bytes_case(valid(created_at=NOW - 31 * DAY, expires_at=NOW + DAY)),
        EnvelopeSignatureInvalid,
        "not yet valid",
    ),
    # 6. the signed header's payload digest
    ("payload_digest_mismatch", bytes_case(valid(payload_sha256=b"\x00" * 32)), EnvelopeMalformed, "payload_sha256"),
    # 7. the recipient is this node
    ("wrong_recipient", bytes_case(valid(recipient=OTHER_SICHUAN)), WrongRecipient, "addressed to sc-yilong"),
    # 8. the purpose, before the payload is read
    ("unknown_purpose", bytes_case(valid(purpose="bulk_export")), PurposeNotAllowed, "unknown purpose"),
    # custody_event v1 was reserved (no payload); v2 defines it: the old version is refused.
    ("reserved_version_of_a_purpose", bytes_case(valid(purpose="custody_event")), PurposeNotAllowed, "holds version 2"),
    ("other_profile_version", bytes_case(valid(profile_version=2)), PurposeNotAllowed, "version 2"),
    (
        "payload_type_not_the_profiles",
        bytes_case(valid(payload_type="tongban.v1.RosterManifest")),
        PurposeNotAllowed,
        "header's type",
    ),
    ("sent_to_itself", _sent_to_itself, PurposeNotAllowed, "itself"),
    # 9. the message id
    ("replayed", _replayed, ReplayedMessage, "message "),
    # 10. the time window
    ("expired", bytes_case(valid(created_at=NOW - 3 * DAY, expires_at=NOW - 2 * DAY)), OutsideTimeWindow, "expired"),
    ("not_yet_valid", bytes_case(valid(created_at=NOW + timedelta(hours=1))), OutsideTimeWindow, "future"),
    ("lifetime_too_long", bytes_case(valid(expires_at=NOW + 15 * DAY)), OutsideTimeWindow, "longer than"),
    (
        "expires_before_created",
        bytes_case(valid(created_at=NOW, expires_at=NOW)),
        OutsideTimeWindow,
        "before it was created",
    ),
    # 11. the payload, by the profile, then the pair rule on its content
    ("forbidden_field", bytes_case(valid(payload=notice_batch() + b"\x82\x01\x01x")), ForbiddenField, "#16"),
    (
        "payload_not_a_batch",
        bytes_case(valid(payload=b"\xff\xff\xff")),
        PayloadInvalid,
        "not a tongban.v1.MigrantNoticeBatch",
    ),
    (
        "notices_for_another_county",
        bytes_case(valid(payload=notice_batch(registration=DIVISIONS[OTHER_SICHUAN]))),
        PurposeNotAllowed,
        "registration division",
    ),
    (
        "notices_from_another_county",
        bytes_case(valid(payload=notice_batch(residence=DIVISIONS[OTHER_CHONGQING]))),
        PurposeNotAllowed,
        "residence division",
    ),
]


@pytest.mark.parametrize(("name", "case", "error", "why"), BAD, ids=[b[0] for b in BAD])
def test_bad_envelope_is_refused_with_its_own_error_and_changes_nothing(
    world: World, name: str, case: Case, error: type[ExchangeError], why: str
) -> None:
    data, peer_id = case(world)
    peer = world.entry(peer_id)
    before = snapshot(world.engine)
    accepted = list(world.accepted)
    with pytest.raises(ExchangeError) as caught:
        world.receiver.receive(data, peer)
    assert type(caught.value) is error, f"{name}: {caught.value.code}: {caught.value.detail}"
    assert why in (caught.value.detail or ""), f"{name}: refused for another reason: {caught.value.detail}"
    assert snapshot(world.engine) == before
    assert world.accepted == accepted


def test_every_refusal_class_of_the_receiver_has_a_case() -> None:
    not_the_receivers = {ReceiptInvalid, RelayNotAllowed, RelayItemInvalid}  # the sender's; the relay path's
    assert {b[2] for b in BAD} == set(EXCHANGE_STATUS) - not_the_receivers


# --- the order of the checks ---------------------------------------------------------------------------

# Each envelope breaks two rules; the receiver must report the one it checks first.
TWO_FAULTS: list[tuple[str, Case, type[ExchangeError]]] = [
    ("wrong_peer_and_bad_signature", bytes_case(valid(signer=OTHER_SICHUAN), peer=OTHER_CHONGQING), SenderMismatch),
    (
        "bad_signature_and_wrong_recipient",
        bytes_case(valid(signer=OTHER_SICHUAN, recipient=OTHER_SICHUAN)),
        EnvelopeSignatureInvalid,
    ),
    (
        "bad_signature_and_expired",
        bytes_case(valid(signer=OTHER_SICHUAN, created_at=NOW - 3 * DAY, expires_at=NOW - 2 * DAY)),
        EnvelopeSignatureInvalid,
    ),
    ("wrong_recipient_and_unknown_purpose", bytes_case(valid(recipient=OTHER_SICHUAN, purpose="x")), WrongRecipient),
    (
        "unknown_purpose_and_expired",
        bytes_case(valid(purpose="x", created_at=NOW - 3 * DAY, expires_at=NOW - 2 * DAY)),
        PurposeNotAllowed,
    ),
    (
        "expired_and_forbidden_field",
        bytes_case(
            valid(payload=notice_batch() + b"\x82\x01\x01x", created_at=NOW - 3 * DAY, expires_at=NOW - 2 * DAY)
        ),
        OutsideTimeWindow,
    ),
    (
        "forbidden_field_and_notices_for_another_county",
        bytes_case(valid(payload=notice_batch(registration="511324") + b"\x82\x01\x01x")),
        ForbiddenField,
    ),
]


@pytest.mark.parametrize(("name", "case", "error"), TWO_FAULTS, ids=[name for name, _, _ in TWO_FAULTS])
def test_the_first_check_in_the_documented_order_wins(
    world: World, name: str, case: Case, error: type[ExchangeError]
) -> None:
    data, peer = case(world)
    with pytest.raises(ExchangeError) as caught:
        world.receive(data, peer)
    assert type(caught.value) is error, name


# --- accepting ---------------------------------------------------------------------------------------


def test_a_valid_envelope_is_stored_sealed_with_a_receipt_the_sender_can_verify(world: World) -> None:
    data = valid()
    receipt = world.receive(data)
    digest = _digest(data)
    body = verify_receipt(
        receipt, directory=world.directory, receiver=RECEIVER, message_id=MESSAGE_ID, envelope_digest=digest, now=NOW
    )
    assert (body.sender, body.receiver, body.message_id) == (SENDER, RECEIVER, MESSAGE_ID)
    assert world.accepted == [MESSAGE_ID]
    with world.engine.connect() as conn:
        row = conn.execute(select(inbox)).one()
    assert (row.message_id, row.sender, row.purpose) == (MESSAGE_ID, SENDER, "migrant_notice")
    assert row.payload_type == "tongban.v1.MigrantNoticeBatch"
    assert bytes(row.envelope_sha256) == digest
    assert bytes(row.receipt) == receipt.SerializeToString()
    assert row.processed_at is None
    sealed = Sealed(row.key_id, bytes(row.envelope_sealed))
    assert world.keyring.open(sealed, context=b"inbox\0" + MESSAGE_ID.encode()) == data
    assert envelope_pb2.Envelope.FromString(data).payload not in bytes(row.envelope_sealed)  # sealed at rest


def test_a_repeated_envelope_returns_the_original_receipt_and_changes_nothing(world: World) -> None:
    data = valid()
    first = world.receive(data)
    before = snapshot(world.engine)
    world.now = NOW + timedelta(minutes=10)  # a retry, later: the receipt still says when it was accepted
    assert world.receive(data).SerializeToString() == first.SerializeToString()
    assert world.receive(envelope_pb2.Envelope.FromString(data)).SerializeToString() == first.SerializeToString()
    assert snapshot(world.engine) == before
    assert world.accepted == [MESSAGE_ID]


def test_a_retry_after_expiry_still_gets_the_original_receipt(world: World) -> None:
    data = valid()
    first = world.receive(data)
    world.now = NOW + 2 * DAY  # the envelope expired one day ago; its receipt was lost on the way
    assert world.receive(data).SerializeToString() == first.SerializeToString()
    with pytest.raises(OutsideTimeWindow):  # a new message this late is still refused
        world.receive(valid(message_id=OTHER_MESSAGE_ID))


def test_the_receipt_is_the_golden_receipt(world: World) -> None:
    receipt = world.receive((HERE / "envelope_valid.bin").read_bytes())
    assert receipt.SerializeToString() == (HERE / "receipt_valid.bin").read_bytes()


def test_a_lost_race_for_the_same_id_returns_the_winners_receipt(world: World) -> None:
    data = valid()
    first = world.receive(data)
    original = world.receiver._stored_receipt
    calls: list[int] = []

    def blind_once(unverified: Any) -> envelope_pb2.Receipt | None:
        calls.append(1)
        return None if len(calls) == 1 else original(unverified)  # the first look saw no row yet

    world.receiver._stored_receipt = blind_once  # type: ignore[method-assign]
    before = snapshot(world.engine)
    assert world.receive(data).SerializeToString() == first.SerializeToString()
    calls.clear()
    with pytest.raises(ReplayedMessage):
        world.receive(valid(payload=notice_batch(batch_index=1)))
    assert snapshot(world.engine) == before


def test_concurrent_deliveries_of_one_message_store_it_once(world: World) -> None:
    data = valid()
    receipts: list[bytes] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            receipts.append(world.receive(data).SerializeToString())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(receipts)) == 1
    with world.engine.connect() as conn:
        assert len(conn.execute(select(inbox)).all()) == 1


def test_the_audit_hook_runs_in_the_same_transaction(world: World) -> None:
    def write_audit(conn: Connection, verified: Verified) -> None:
        conn.execute(
            insert(audit_log).values(
                at=NOW,
                actor=verified.sender,
                action="received",
                purpose=verified.purpose,
                reference=verified.message_id,
                detail="",
                prev_hash=b"\0" * 32,
                entry_hash=b"\1" * 32,
            )
        )

    world.hook = write_audit
    world.receive(valid())
    with world.engine.connect() as conn:
        assert [r.reference for r in conn.execute(select(audit_log)).all()] == [MESSAGE_ID]


def test_a_failing_audit_hook_stores_nothing(world: World) -> None:
    def refuse(conn: Connection, verified: Verified) -> None:
        raise StorageError("audit log unavailable")

    world.hook = refuse
    before = snapshot(world.engine)
    with pytest.raises(StorageError):
        world.receive(valid())
    assert snapshot(world.engine) == before


def test_an_expired_directory_refuses_as_unavailable_and_stores_nothing(world: World) -> None:
    before = snapshot(world.engine)
    world.now = NOW + 8 * DAY  # trustkit's directory expires after 7 days
    with pytest.raises(DocumentExpired) as caught:
        world.receive(valid(created_at=world.now))
    assert exchange_status(caught.value) == grpc.StatusCode.UNAVAILABLE
    assert not is_permanent(exchange_status(caught.value))
    assert snapshot(world.engine) == before


def test_no_directory_refuses_as_unavailable(world: World) -> None:
    def unavailable() -> Directory:
        raise DirectoryUnavailable("never refreshed")

    world.receiver._directory = unavailable
    with pytest.raises(DirectoryUnavailable) as caught:
        world.receive(valid())
    assert exchange_status(caught.value) == grpc.StatusCode.UNAVAILABLE


def test_a_stream_yields_one_result_per_envelope_in_order(world: World) -> None:
    first, second = valid(), valid(message_id=OTHER_MESSAGE_ID, payload=notice_batch(batch_index=1))
    results = list(world.receiver.receive_many([first, b"\xff", second, first], world.entry(SENDER)))
    assert [type(r).__name__ for r in results] == ["Receipt", "EnvelopeMalformed", "Receipt", "Receipt"]
    assert results[3] == results[0]
    assert world.accepted == [MESSAGE_ID, OTHER_MESSAGE_ID]


def test_an_empty_batch_and_a_large_batch_are_accepted(world: World) -> None:
    world.receive(valid(payload=exchange_pb2.MigrantNoticeBatch(period="2026Q4").SerializeToString()))
    big = notice_batch(2000, batch_index=1)
    world.receive(valid(message_id=OTHER_MESSAGE_ID, payload=big))
    assert world.accepted == [MESSAGE_ID, OTHER_MESSAGE_ID]


def _digest(data: bytes) -> bytes:
    return digest_of(signed_bytes(envelope_pb2.Envelope.FromString(data)))


# --- the golden vectors, judged -----------------------------------------------------------------------

_INDEX = json.loads((HERE / INDEX).read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", _INDEX["vectors"], ids=[v["name"] for v in _INDEX["vectors"]])
def test_golden_vector_is_judged_as_recorded(world: World, vector: dict[str, Any]) -> None:
    files = {v["name"]: Path(HERE / v["file"]).read_bytes() for v in _INDEX["vectors"]}
    if vector["after"]:
        world.receive(files[vector["after"]])
    before = snapshot(world.engine)
    if vector["expect"] == "accepted":
        world.receive(files[vector["name"]])
        assert len(snapshot(world.engine)["inbox"]) == len(before["inbox"]) + 1
        return
    with pytest.raises(ExchangeError) as caught:
        world.receive(files[vector["name"]])
    assert caught.value.code == vector["expect"]
    assert snapshot(world.engine) == before


# --- pair rules ---------------------------------------------------------------------------------------

LJ = NodeEntry(  # cq-liangjiang, a residence place
    "cq-liangjiang", "500157", "", NodeStatus.ACTIVE, "", (), Ed25519Signer.generate().public_key
)
NB = replace(LJ, node_id="sc-nanbu", division="511321")


def _batch(*pairs: tuple[str, str]) -> exchange_pb2.MigrantNoticeBatch:
    batch = exchange_pb2.MigrantNoticeBatch(period="2026Q4")
    for residence, registration in pairs:
        batch.notices.add(residence_division=residence, registration_division=registration)
    return batch


PAIRS: list[tuple[str, str, NodeEntry, NodeEntry, Any, bool]] = [
    # (case, purpose, sender, recipient, payload or None, allowed)
    ("notices_residence_to_registration", "migrant_notice", LJ, NB, _batch(("500157", "511321")), True),
    ("empty_batch", "migrant_notice", LJ, NB, _batch(), True),
    ("before_the_payload_is_read", "migrant_notice", LJ, NB, None, True),
    ("notices_the_wrong_way_round", "migrant_notice", LJ, NB, _batch(("511321", "500157")), False),
    ("residence_not_the_sender", "migrant_notice", LJ, NB, _batch(("500109", "511321")), False),
    ("registration_not_the_recipient", "migrant_notice", LJ, NB, _batch(("500157", "511324")), False),
    ("one_bad_notice_among_good", "migrant_notice", LJ, NB, _batch(("500157", "511321"), ("500157", "")), False),
    ("notice_rule_on_another_message", "migrant_notice", LJ, NB, exchange_pb2.RosterManifest(), False),
    ("to_itself", "migrant_notice", LJ, LJ, None, False),
    ("match_result_back", "match_result", NB, LJ, exchange_pb2.MatchResultBatch(), True),
    ("manifest_either_way", "roster_manifest", NB, LJ, exchange_pb2.RosterManifest(), True),
    ("case_handoff", "case_handoff", LJ, NB, exchange_pb2.SealedPayload(), True),
    ("manifest_to_itself", "roster_manifest", LJ, LJ, None, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "purpose", "sender", "recipient", "payload", "allowed"), PAIRS, ids=[p[0] for p in PAIRS]
)
def test_pair_rule(
    name: str, purpose: str, sender: NodeEntry, recipient: NodeEntry, payload: Any, allowed: bool
) -> None:
    profile = PROFILES.get(purpose)
    if allowed:
        check_pair(profile, sender, recipient, payload)
    else:
        with pytest.raises(PurposeNotAllowed):
            check_pair(profile, sender, recipient, payload)


def test_a_purpose_without_a_pair_rule_is_refused() -> None:
    profile: PurposeProfile = replace(PROFILES.get("roster_manifest"), name="new_purpose")
    with pytest.raises(PurposeNotAllowed):
        check_pair(profile, LJ, NB, None)


def test_every_active_purpose_has_a_pair_rule() -> None:
    assert {p.name for p in PROFILES.all()} == set(PAIR_RULES)


# --- the gRPC mapping ---------------------------------------------------------------------------------

S = grpc.StatusCode
MAPPING: list[tuple[GatewayError, grpc.StatusCode, bool]] = [
    (EnvelopeTooLarge(), S.RESOURCE_EXHAUSTED, True),
    (EnvelopeMalformed(), S.INVALID_ARGUMENT, True),
    (SenderMismatch(), S.PERMISSION_DENIED, True),
    (SenderNotActive(), S.PERMISSION_DENIED, True),
    (EnvelopeSignatureInvalid(), S.UNAUTHENTICATED, True),
    (WrongRecipient(), S.INVALID_ARGUMENT, True),
    (PurposeNotAllowed(), S.INVALID_ARGUMENT, True),
    (ReplayedMessage(), S.ALREADY_EXISTS, True),
    (OutsideTimeWindow(), S.FAILED_PRECONDITION, False),
    (PayloadInvalid(), S.INVALID_ARGUMENT, True),
    (ForbiddenField(), S.INVALID_ARGUMENT, True),
    (DirectoryUnavailable(), S.UNAVAILABLE, False),
    (DocumentExpired(), S.UNAVAILABLE, False),
    (StorageError(), S.UNAVAILABLE, False),
    (GatewayError(), S.INTERNAL, False),
]


@pytest.mark.parametrize(("error", "status", "permanent"), MAPPING, ids=[type(m[0]).__name__ for m in MAPPING])
def test_status_mapping(error: GatewayError, status: grpc.StatusCode, permanent: bool) -> None:
    assert exchange_status(error) is status
    assert is_permanent(status) is permanent


def test_public_messages_carry_the_code_and_never_the_detail() -> None:
    error = WrongRecipient("addressed to sc-yilong; notice-0001")
    assert public_message(error) == "wrong_recipient: the envelope is addressed to another node"
    for cls in EXCHANGE_STATUS:
        assert public_message(cls("secret detail")) == f"{cls.code}: {cls.public_message}"


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_transport_failures_are_transient(code: grpc.StatusCode) -> None:
    if code in (S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.ABORTED, S.INTERNAL, S.UNKNOWN, S.CANCELLED):
        assert not is_permanent(code)
