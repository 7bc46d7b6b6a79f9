"""End-to-end encryption (SPEC §3): only the recipient node opens a sealed payload, and only in the
context it was sealed for. Refusals are a table of named cases, each with its own reason."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from tongban.v1 import exchange_pb2

from gateway.errors import ConfigError, SealedPayloadRefused, SealProblem, UnknownAlgorithm
from gateway.exchange.e2e import SUITE, open_sealed, seal_context, seal_to
from gateway.trust.signing import ED25519, PublicKey
from tests.trustkit import Node, standard_pki

PLAINTEXT = "申请人 张三 身份证 511321201506010019 孤儿基本生活费申请".encode()
INNER = "tongban.v1.CaseApplication"
CONTEXT = seal_context(sender="cq-liangjiang", recipient="sc-nanbu", message_id="0b0e-msg-1")


@pytest.fixture(scope="module")
def nodes() -> dict[str, Node]:
    pki = standard_pki()
    return {n.node_id: n for p in pki.provinces.values() for n in p.nodes.values()}


def sealed_for(nodes: dict[str, Node], recipient: str = "sc-nanbu") -> exchange_pb2.SealedPayload:
    return seal_to(nodes[recipient].entry().encryption_key, PLAINTEXT, inner_type=INNER, context=CONTEXT)


def open_as(
    nodes: dict[str, Node], sealed: exchange_pb2.SealedPayload, node: str = "sc-nanbu", context: bytes = CONTEXT
) -> bytes:
    n = nodes[node]
    return open_sealed(sealed, n.encryption_key, n.entry().encryption_key, context=context)


def test_round_trip(nodes: dict[str, Node]) -> None:
    sealed = exchange_pb2.SealedPayload.FromString(sealed_for(nodes).SerializeToString())
    assert sealed.suite == SUITE
    assert sealed.recipient_key_id == nodes["sc-nanbu"].entry().encryption_key.key_id
    assert sealed.inner_type == INNER
    assert open_as(nodes, sealed) == PLAINTEXT


def test_empty_plaintext_round_trips(nodes: dict[str, Node]) -> None:
    sealed = seal_to(nodes["sc-nanbu"].entry().encryption_key, b"", inner_type=INNER, context=CONTEXT)
    assert open_as(nodes, sealed) == b""


def test_ciphertext_never_contains_the_plaintext(nodes: dict[str, Node]) -> None:
    sealed = sealed_for(nodes)
    wire = sealed.SerializeToString()
    for fragment in (PLAINTEXT, "张三".encode(), b"511321201506010019"):
        assert fragment not in wire
    # A fresh ephemeral key per seal: the same plaintext never gives the same ciphertext twice.
    assert sealed_for(nodes).ciphertext != sealed.ciphertext


Change = Callable[[exchange_pb2.SealedPayload, dict[str, Node]], None]


def _flip(index: int) -> Change:
    def mutate(s: exchange_pb2.SealedPayload, _: dict[str, Node]) -> None:
        data = bytearray(s.ciphertext)
        data[index] ^= 0x01
        s.ciphertext = bytes(data)

    return mutate


def _set(field: str, value: object) -> Change:
    return lambda s, _: setattr(s, field, value)


def _unchanged(s: exchange_pb2.SealedPayload, _: dict[str, Node]) -> None:
    pass


def _readdress_to_beibei(s: exchange_pb2.SealedPayload, nodes: dict[str, Node]) -> None:
    s.recipient_key_id = nodes["cq-beibei"].entry().encryption_key.key_id


def _truncate(s: exchange_pb2.SealedPayload, _: dict[str, Node]) -> None:
    s.ciphertext = s.ciphertext[:-1]


OTHER_MESSAGE = seal_context(sender="cq-liangjiang", recipient="sc-nanbu", message_id="0b0e-msg-2")
OTHER_SENDER = seal_context(sender="cq-beibei", recipient="sc-nanbu", message_id="0b0e-msg-1")

# name: (change to the sealed payload, node that opens it, context it opens with, expected reason)
REFUSALS: dict[str, tuple[Change, str, bytes, SealProblem]] = {
    "other_suite": (
        _set("suite", "hpke-x25519-sha256-chacha20poly1305"),
        "sc-nanbu",
        CONTEXT,
        SealProblem.UNKNOWN_SUITE,
    ),
    "no_suite": (_set("suite", ""), "sc-nanbu", CONTEXT, SealProblem.UNKNOWN_SUITE),
    "opened_by_another_node": (_unchanged, "cq-beibei", CONTEXT, SealProblem.OTHER_RECIPIENT_KEY),
    "key_id_rewritten_to_another_node": (_readdress_to_beibei, "cq-beibei", CONTEXT, SealProblem.DECRYPTION_FAILED),
    "wrong_context_message_id": (_unchanged, "sc-nanbu", OTHER_MESSAGE, SealProblem.DECRYPTION_FAILED),
    "wrong_context_sender": (_unchanged, "sc-nanbu", OTHER_SENDER, SealProblem.DECRYPTION_FAILED),
    "inner_type_rewritten": (
        _set("inner_type", "tongban.v1.MigrantNoticeBatch"),
        "sc-nanbu",
        CONTEXT,
        SealProblem.DECRYPTION_FAILED,
    ),
    "tampered_encapsulated_key": (_flip(0), "sc-nanbu", CONTEXT, SealProblem.DECRYPTION_FAILED),
    "tampered_ciphertext": (_flip(40), "sc-nanbu", CONTEXT, SealProblem.DECRYPTION_FAILED),
    "tampered_tag": (_flip(-1), "sc-nanbu", CONTEXT, SealProblem.DECRYPTION_FAILED),
    "truncated_by_one_byte": (_truncate, "sc-nanbu", CONTEXT, SealProblem.DECRYPTION_FAILED),
    "too_short": (_set("ciphertext", b"\x00" * 47), "sc-nanbu", CONTEXT, SealProblem.MALFORMED),
    "empty_ciphertext": (_set("ciphertext", b""), "sc-nanbu", CONTEXT, SealProblem.MALFORMED),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refusals(nodes: dict[str, Node], case: str) -> None:
    change, opener, context, reason = REFUSALS[case]
    sealed = sealed_for(nodes)
    change(sealed, nodes)
    with pytest.raises(SealedPayloadRefused) as info:
        open_as(nodes, sealed, opener, context)
    assert info.value.reason is reason
    assert "张三" not in str(info.value)


def test_sealing_to_a_signing_key_is_refused(nodes: dict[str, Node]) -> None:
    with pytest.raises(UnknownAlgorithm):
        seal_to(PublicKey(ED25519, bytes(range(32))), PLAINTEXT, inner_type=INNER, context=CONTEXT)


def test_sealing_without_inner_type_is_refused(nodes: dict[str, Node]) -> None:
    with pytest.raises(ValueError, match="inner_type"):
        seal_to(nodes["sc-nanbu"].entry().encryption_key, PLAINTEXT, inner_type="", context=CONTEXT)


def test_a_private_key_that_is_not_the_directory_key_is_a_configuration_error(nodes: dict[str, Node]) -> None:
    with pytest.raises(ConfigError):
        open_sealed(
            sealed_for(nodes),
            x25519.X25519PrivateKey.generate(),
            nodes["sc-nanbu"].entry().encryption_key,
            context=CONTEXT,
        )


def test_context_encoding_is_unambiguous() -> None:
    a = seal_context(sender="ab", recipient="c", message_id="m")
    b = seal_context(sender="a", recipient="bc", message_id="m")
    assert a != b
