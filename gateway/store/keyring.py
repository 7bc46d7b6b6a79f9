"""The node data keyring: AES-256-GCM keys that encrypt personal fields at rest (SPEC §3).

Every encrypted value is stored beside the id of the key that sealed it, so keys can rotate:
``rotate()`` adds a new active key, new writes use it, old rows stay readable with their old key
until they are re-sealed (``ChildRepository.rewrap``), after which an old key can be retired.

The associated data of every seal binds the ciphertext to its table and row, so a ciphertext
copied into another row (or another table) fails to open instead of silently reading as that row.

A separate *index key* (HMAC-SHA256) computes blind indexes — a deterministic pseudonym of an ID
number that lets the node find a child's row without storing the number in clear. It does not
rotate with the data keys (rotating it means re-indexing every row).

The keyring lives in one file with mode 0600 in the node's data directory, **sealed with the node's
key passphrase** (``gateway.trust.keyfile.seal``: scrypt → AES-256-GCM; the passphrase comes from
``TONGBAN_KEY_PASSPHRASE`` or ``TONGBAN_KEY_PASSPHRASE_FILE``, like the node's private key files),
or it comes in clear from the ``TONGBAN_DATA_KEYRING_JSON`` environment variable when a secret
store (a Kubernetes Secret, a systemd credential) already protects it. A plain keyring file is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError, DataKeyMissing, DecryptionFailed
from gateway.trust.keyfile import open_sealed, passphrase_from_env, seal, write_secret

ALGORITHM = "aes-256-gcm"
_NONCE_BYTES = 12
ENV_KEYRING_JSON = "TONGBAN_DATA_KEYRING_JSON"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes  # nonce ‖ ciphertext ‖ tag


@dataclass
class DataKeyring:
    active_key_id: str
    keys: dict[str, bytes] = field(repr=False)
    index_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.active_key_id not in self.keys:
            raise ConfigError("the keyring's active key is not among its keys")
        for key_id, key in self.keys.items():
            if len(key) != 32:
                raise ConfigError(f"data key {key_id} is not 256 bits")
        if len(self.index_key) < 32:
            raise ConfigError("the index key must be at least 256 bits")
        self._aead = {kid: AESGCM(k) for kid, k in self.keys.items()}

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def generate(cls) -> DataKeyring:
        key_id = _new_key_id()
        return cls(key_id, {key_id: AESGCM.generate_key(bit_length=256)}, secrets.token_bytes(32))

    @classmethod
    def from_json(cls, text: str) -> DataKeyring:
        try:
            doc = json.loads(text)
            active = doc["active"]
            keys = {str(k): _unb64(v, f"data key {k}") for k, v in doc["keys"].items()}
            index_key = _unb64(doc["index_key"], "index key")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError("the data keyring is malformed") from None
        if doc.get("algorithm", ALGORITHM) != ALGORITHM:
            raise ConfigError(f"unsupported data key algorithm {doc.get('algorithm')!r}")
        return cls(str(active), keys, index_key)

    def to_json(self) -> str:
        return json.dumps(
            {
                "algorithm": ALGORITHM,
                "active": self.active_key_id,
                "keys": {k: _b64(v) for k, v in sorted(self.keys.items())},
                "index_key": _b64(self.index_key),
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path | None) -> DataKeyring:
        """Load from ``TONGBAN_DATA_KEYRING_JSON`` if set, else open the sealed file ``path``."""
        inline = os.environ.get(ENV_KEYRING_JSON)
        if inline:
            return cls.from_json(inline)
        if path is None:
            raise ConfigError(f"no data keyring: set {ENV_KEYRING_JSON} or keys.data_keyring")
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"data keyring file not found: {path}") from None
        plain = open_sealed(sealed, passphrase_from_env(), content="data-keyring-json", what="the data keyring")
        return cls.from_json(plain.decode("utf-8"))

    def save(self, path: Path) -> None:
        """Seal with the key passphrase and write atomically with mode 0600."""
        write_secret(path, seal(self.to_json().encode("utf-8"), passphrase_from_env(), content="data-keyring-json"))

    def rotate(self) -> str:
        """Add a new key and make it the active one; returns its id. Old keys stay for reading."""
        key_id = _new_key_id()
        while key_id in self.keys:  # same-second rotations
            key_id = _new_key_id()
        self.keys[key_id] = AESGCM.generate_key(bit_length=256)
        self._aead[key_id] = AESGCM(self.keys[key_id])
        self.active_key_id = key_id
        return key_id

    # --- use ------------------------------------------------------------------------------------

    def seal(self, plaintext: bytes, *, context: bytes) -> Sealed:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        kid = self.active_key_id
        blob = nonce + self._aead[kid].encrypt(nonce, plaintext, _aad(kid, context))
        return Sealed(kid, blob)

    def open(self, sealed: Sealed, *, context: bytes) -> bytes:
        aead = self._aead.get(sealed.key_id)
        if aead is None:
            raise DataKeyMissing(f"key id {sealed.key_id}")
        nonce, body = sealed.blob[:_NONCE_BYTES], sealed.blob[_NONCE_BYTES:]
        try:
            return aead.decrypt(nonce, body, _aad(sealed.key_id, context))
        except InvalidTag:
            raise DecryptionFailed() from None

    def blind_index(self, value: str, *, purpose: bytes) -> bytes:
        """Deterministic keyed pseudonym of ``value`` (domain-separated by ``purpose``)."""
        return hmac.new(self.index_key, purpose + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()


def _aad(key_id: str, context: bytes) -> bytes:
    return b"tongban.at-rest.v1\x00" + key_id.encode("ascii") + b"\x00" + context


def _new_key_id() -> str:
    return f"dk-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
