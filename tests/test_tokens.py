"""Pairwise tokens (SPEC §3): who can derive a pair key, and which ID spellings share a token.

Keys come from an in-memory PKI (``tests.trustkit``) exactly as the directory lists them: each side
uses its own private encryption key and the peer's public ``NodeEntry.encryption_key``.
"""

from __future__ import annotations

import hmac
import random
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from gateway.domain import idnumber
from gateway.errors import CryptoError, IdProblem, InputError, InvalidIdNumber, UnknownAlgorithm
from gateway.exchange.tokens import HmacSha256, IdTokens, field_key, id_token, pair_key, stored_id_token
from gateway.trust.signing import ED25519, X25519_HPKE, PublicKey
from tests.trustkit import Node, standard_pki

PERIOD = "2026Q3"
ID = idnumber.make("511321", date(2015, 6, 1), 123)  # ends in a digit
ID_X = next(
    n for s in range(0, 1000, 2) if (n := idnumber.make("511321", date(2015, 6, 1), s)).endswith("X")
)  # ends in X


@pytest.fixture(scope="module")
def nodes() -> dict[str, Node]:
    pki = standard_pki()
    return {n.node_id: n for p in pki.provinces.values() for n in p.nodes.values()}


def key(nodes: dict[str, Node], own: str, peer: str, period: str = PERIOD, *, as_id: str | None = None) -> bytes:
    """``own`` derives its key with ``peer``, optionally claiming to be ``as_id``."""
    return pair_key(
        nodes[own].encryption_key,
        nodes[peer].entry().encryption_key,
        own_id=as_id or own,
        peer_id=peer,
        period=period,
    )


# --- who derives what ----------------------------------------------------------------------------


def test_both_sides_derive_the_same_key(nodes: dict[str, Node]) -> None:
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    assert len(k) == 32
    assert key(nodes, "sc-nanbu", "cq-liangjiang") == k
    assert id_token(k, ID) == id_token(key(nodes, "sc-nanbu", "cq-liangjiang"), ID)


# (description, key of the pair, the other key) — each pair of keys must differ
DIFFERENT_KEYS = {
    "another_period": (("cq-liangjiang", "sc-nanbu", "2026Q3"), ("cq-liangjiang", "sc-nanbu", "2026Q4")),
    "another_cadence_same_months": (("cq-liangjiang", "sc-nanbu", "2026Q3"), ("cq-liangjiang", "sc-nanbu", "2026H2")),
    "another_pair_sharing_a_node": (("cq-liangjiang", "sc-nanbu", PERIOD), ("cq-beibei", "sc-nanbu", PERIOD)),
}


@pytest.mark.parametrize("case", list(DIFFERENT_KEYS), ids=list(DIFFERENT_KEYS))
def test_keys_differ(nodes: dict[str, Node], case: str) -> None:
    (own_a, peer_a, period_a), (own_b, peer_b, period_b) = DIFFERENT_KEYS[case]
    a, b = key(nodes, own_a, peer_a, period_a), key(nodes, own_b, peer_b, period_b)
    assert a != b
    assert id_token(a, ID) != id_token(b, ID)


def test_a_third_node_cannot_derive_the_pair_key(nodes: dict[str, Node]) -> None:
    # cq-beibei knows both public keys and both node ids, and claims to be cq-liangjiang.
    genuine = key(nodes, "cq-liangjiang", "sc-nanbu")
    forged = key(nodes, "cq-beibei", "sc-nanbu", as_id="cq-liangjiang")
    assert forged != genuine
    assert id_token(forged, ID) != id_token(genuine, ID)


def test_a_rotated_encryption_key_gives_another_pair_key(nodes: dict[str, Node]) -> None:
    node = nodes["sc-nanbu"]
    rotated = x25519.X25519PrivateKey.generate()
    before = key(nodes, "sc-nanbu", "cq-liangjiang")
    after = pair_key(
        rotated,
        nodes["cq-liangjiang"].entry().encryption_key,
        own_id=node.node_id,
        peer_id="cq-liangjiang",
        period=PERIOD,
    )
    assert before != after


# --- refused inputs ------------------------------------------------------------------------------

_ZERO = PublicKey(X25519_HPKE, bytes(32))  # a small-order point: the shared secret would be all zeros

PAIR_KEY_REFUSALS: dict[str, tuple[dict[str, object], type[Exception]]] = {
    "signing_key_as_peer_key": ({"peer_public": PublicKey(ED25519, bytes(range(32)))}, UnknownAlgorithm),
    "same_node_twice": ({"peer_id": "cq-liangjiang"}, InputError),
    "empty_own_id": ({"own_id": ""}, InputError),
    "lower_case_period": ({"period": "2026q3"}, InputError),
    "period_with_space": ({"period": " 2026Q3"}, InputError),
    "full_width_period": ({"period": "２０２６Q3"}, InputError),
    "small_order_peer_key": ({"peer_public": _ZERO}, CryptoError),
}


@pytest.mark.parametrize("case", list(PAIR_KEY_REFUSALS), ids=list(PAIR_KEY_REFUSALS))
def test_pair_key_refusals(nodes: dict[str, Node], case: str) -> None:
    change, error = PAIR_KEY_REFUSALS[case]
    args: dict[str, object] = {
        "peer_public": nodes["sc-nanbu"].entry().encryption_key,
        "own_id": "cq-liangjiang",
        "peer_id": "sc-nanbu",
        "period": PERIOD,
        **change,
    }
    with pytest.raises(error):
        pair_key(nodes["cq-liangjiang"].encryption_key, **args)  # type: ignore[arg-type]


# --- one token per number ------------------------------------------------------------------------

FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")

SAME_NUMBER = {
    "canonical": ID_X,
    "lower_case_x": ID_X.lower(),
    "full_width": ID_X.translate(FULL_WIDTH),
    "full_width_lower_x": ID_X[:17].translate(FULL_WIDTH) + "ｘ",
    "spaces_and_ideographic_space": f"{ID_X[:6]} {ID_X[6:14]}\u3000{ID_X[14:]}",
    "excel_apostrophe": "'" + ID_X,
    "hyphens": f"{ID_X[:6]}-{ID_X[6:14]}-{ID_X[14:]}",
}


@pytest.mark.parametrize("spelling", list(SAME_NUMBER.values()), ids=list(SAME_NUMBER))
def test_every_spelling_of_a_number_has_one_token(nodes: dict[str, Node], spelling: str) -> None:
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    assert id_token(k, spelling) == id_token(k, ID_X)


def test_different_numbers_have_different_tokens(nodes: dict[str, Node]) -> None:
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    assert id_token(k, ID) != id_token(k, ID_X)
    assert ID.encode() not in id_token(k, ID)


_BAD_DATE_BODY = "511321" + "20151332" + "001"  # month 13, day 32, with a correct check character
INVALID_IDS = {
    "empty": ("", IdProblem.EMPTY),
    "seventeen_digits": (ID[:17], IdProblem.LENGTH),
    "letter_inside": (ID[:5] + "A" + ID[6:], IdProblem.CHARACTER),
    "wrong_check_character": (ID[:17] + ("0" if ID[17] != "0" else "1"), IdProblem.CHECK_CHARACTER),
    "impossible_birth_date": (_BAD_DATE_BODY + idnumber.check_character(_BAD_DATE_BODY), IdProblem.BIRTH_DATE),
}


@pytest.mark.parametrize("case", list(INVALID_IDS), ids=list(INVALID_IDS))
def test_an_invalid_number_gets_no_token(nodes: dict[str, Node], case: str) -> None:
    raw, reason = INVALID_IDS[case]
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    with pytest.raises(InvalidIdNumber) as info:
        id_token(k, raw)
    assert info.value.reason is reason
    if raw:
        assert raw not in str(info.value)


def test_a_stored_number_has_the_token_id_token_gives(nodes: dict[str, Node]) -> None:
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    for number in (ID, ID_X):  # canonical, as intake stores them
        assert stored_id_token(k, number) == id_token(k, number)


STORED_BAD = {
    "seventeen_digits": (ID[:17], IdProblem.LENGTH),
    "lower_case_x": (ID_X.lower(), IdProblem.CHECK_CHARACTER),  # not canonical: intake never stores it
    "letter_inside": (ID[:5] + "A" + ID[6:], IdProblem.CHARACTER),
    "wrong_check_character": (ID[:17] + ("0" if ID[17] != "0" else "1"), IdProblem.CHECK_CHARACTER),
}


@pytest.mark.parametrize("case", list(STORED_BAD), ids=list(STORED_BAD))
def test_a_stored_number_failing_its_check_gets_no_token(nodes: dict[str, Node], case: str) -> None:
    raw, reason = STORED_BAD[case]
    with pytest.raises(InvalidIdNumber) as info:
        stored_id_token(key(nodes, "cq-liangjiang", "sc-nanbu"), raw)
    assert info.value.reason is reason
    assert raw not in str(info.value)


# --- per-field subkeys ---------------------------------------------------------------------------


def test_field_keys_are_independent(nodes: dict[str, Node]) -> None:
    k = key(nodes, "cq-liangjiang", "sc-nanbu")
    name, birth = field_key(k, "name"), field_key(k, "birth")
    assert len(name) == 32
    assert name != birth
    assert k not in (name, birth)
    assert field_key(k, "name") == name  # deterministic
    assert field_key(key(nodes, "cq-liangjiang", "sc-nanbu", "2026Q4"), "name") != name


@pytest.mark.parametrize(
    ("k", "field", "says"),
    [
        pytest.param(b"short", "name", "32 bytes", id="short_key"),
        pytest.param(bytes(32), "", "field name", id="empty_field"),
        pytest.param(bytes(32), "姓名", "field name", id="non_ascii_field"),
    ],
)
def test_field_key_refusals(k: bytes, field: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        field_key(k, field)


def test_id_token_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        id_token(b"short", ID)


# --- HMAC with prepared states ------------------------------------------------------------------------

# RFC 4231, test cases 1, 2, 6 and 7 (HMAC-SHA-256): a short key, a short ASCII key, and two keys
# longer than the block (hashed first).
RFC_4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key needs"
        b" to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


@pytest.mark.parametrize(("key", "message", "expected"), RFC_4231)
def test_hmac_with_prepared_states_passes_rfc_4231(key: bytes, message: bytes, expected: str) -> None:
    h = HmacSha256(key)
    assert h.digest(message).hex() == expected
    assert h.digest(message).hex() == expected  # the prepared states are not consumed by a digest


def test_hmac_with_prepared_states_is_hmac_sha256_with_its_prefix() -> None:
    rng = random.Random("tongban-hmac")
    for n in range(200):
        key, prefix, message = (rng.randbytes(rng.randrange(0, 150)) for _ in range(3))
        assert HmacSha256(key, prefix).digest(message) == hmac.digest(key, prefix + message, "sha256"), n


def test_id_tokens_of_one_key_equal_the_one_off_functions(nodes: dict[str, Node]) -> None:
    k = key(nodes, "sc-nanbu", "cq-liangjiang")
    tokens = IdTokens(k)
    for number in [ID, ID_X, *(idnumber.make("511321", date(2015, 6, 1), s) for s in range(1, 40, 3))]:
        assert tokens.of(number) == tokens.of_stored(number) == id_token(k, number) == stored_id_token(k, number)
        assert tokens.of(" " + number.lower()) == id_token(k, number)  # every spelling, as id_token
    with pytest.raises(InvalidIdNumber):
        tokens.of_stored(ID[:17] + ("0" if ID[17] != "0" else "1"))
    with pytest.raises(ValueError, match="32 bytes"):
        IdTokens(k[:16])
