"""Secrets at rest: private key files and the data keyring, sealed with a passphrase (SPEC §2).

Every secret file is one JSON document::

    {"format": "tongban-sealed-v1", "content": "pkcs8-der",
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64>"},
     "nonce": "<base64>", "ciphertext": "<base64>"}

The key is derived from the passphrase with scrypt (memory-hard, so guessing a passphrase from a
stolen file is expensive — unlike PKCS#8's PBES2 with the 2,048 PBKDF2 rounds ``cryptography``
writes), and the content is sealed with AES-256-GCM, the format and content type bound as
associated data. Files are written atomically with mode 0600; a file that is not sealed is refused.

The passphrase comes from the caller, from ``TONGBAN_KEY_PASSPHRASE``, or from the file named by
``TONGBAN_KEY_PASSPHRASE_FILE`` (systemd credentials, Kubernetes Secrets); an empty passphrase is
refused. A hardware module or KMS replaces these files behind the
:class:`~gateway.trust.signing.Signer` protocol.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.errors import KeyFileError

SEALED_FORMAT = "tongban-sealed-v1"
# scrypt cost for newly sealed files (about 32 MiB and 0.1 s per derivation); the parameters are
# stored in each file, so raising them later keeps old files readable.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1

ENV_PASSPHRASE = "TONGBAN_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
ENV_PASSPHRASE_FILE = "TONGBAN_KEY_PASSPHRASE_FILE"  # noqa: S105 - a variable name

PrivateKey = ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
K = TypeVar("K", ed25519.Ed25519PrivateKey, x25519.X25519PrivateKey, ec.EllipticCurvePrivateKey)


def passphrase_from_env() -> bytes:
    """The key passphrase from the environment, or ``KeyFileError`` if none is configured."""
    value = os.environ.get(ENV_PASSPHRASE)
    if not value and os.environ.get(ENV_PASSPHRASE_FILE):
        try:
            value = Path(os.environ[ENV_PASSPHRASE_FILE]).read_text(encoding="utf-8").strip()
        except OSError:
            raise KeyFileError(f"cannot read {ENV_PASSPHRASE_FILE}") from None
    if not value:
        raise KeyFileError(f"no key passphrase: set {ENV_PASSPHRASE} or {ENV_PASSPHRASE_FILE}")
    return value.encode("utf-8")


def _aad(content: str) -> bytes:
    return f"{SEALED_FORMAT}\x00{content}".encode("ascii")


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def seal(plaintext: bytes, passphrase: bytes, *, content: str) -> bytes:
    """Seal ``plaintext`` under ``passphrase`` (scrypt → AES-256-GCM); returns the file bytes."""
    if not passphrase:
        raise KeyFileError("refusing to seal a secret without a passphrase")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    doc = {
        "format": SEALED_FORMAT,
        "content": content,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "nonce": _b64(nonce),
        "ciphertext": _b64(AESGCM(key).encrypt(nonce, plaintext, _aad(content))),
    }
    return json.dumps(doc, indent=2).encode("ascii") + b"\n"


def is_sealed(data: bytes) -> bool:
    try:
        return bool(json.loads(data).get("format") == SEALED_FORMAT)
    except (ValueError, AttributeError, UnicodeDecodeError):
        return False


def open_sealed(data: bytes, passphrase: bytes, *, content: str, what: str) -> bytes:
    """Open a sealed file's bytes; ``KeyFileError`` if it is not sealed, holds other content,
    is damaged, or the passphrase is wrong (the error never says which byte or key)."""
    if not is_sealed(data):
        raise KeyFileError(f"{what} is not a sealed Tongban secret; refusing to use it")
    try:
        doc = json.loads(data)
        kdf = doc["kdf"]
        if doc["content"] != content or kdf["name"] != "scrypt":
            raise KeyFileError(f"{what} does not hold {content}")
        key = _derive(passphrase, _unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
        nonce, ciphertext = _unb64(doc["nonce"]), _unb64(doc["ciphertext"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{what} is damaged") from None
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _aad(content))
    except InvalidTag:
        raise KeyFileError(f"cannot open {what} (wrong passphrase or damaged file)") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_secret(path, seal(der, passphrase, content="pkcs8-der"))


def write_secret(path: Path, data: bytes) -> None:
    """Write atomically; the file never exists with permissions wider than 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_any_private_key(path: Path, passphrase: bytes) -> PrivateKey:
    """Open a sealed key file, or raise ``KeyFileError`` (never the key)."""
    try:
        data = path.read_bytes()
    except OSError:
        raise KeyFileError(f"cannot read key file {path}") from None
    der = open_sealed(data, passphrase, content="pkcs8-der", what=f"key file {path}")
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {path} does not hold a private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"key file {path} does not hold a Tongban key type")
    return key


def read_private_key(path: Path, passphrase: bytes, kind: type[K]) -> K:
    """Open a sealed key file holding a key of type ``kind``."""
    key = read_any_private_key(path, passphrase)
    if not isinstance(key, kind):
        raise KeyFileError(f"key file {path} does not hold a {kind.__name__}")
    return key


# Named readers: mypy refuses an abstract class (every key class here is one) as a ``type[K]``
# argument, so the one ignore lives here instead of at every caller.
def read_tls_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """The node's (or a CA's) ECDSA P-256 key."""
    return read_private_key(path, passphrase, ec.EllipticCurvePrivateKey)  # type: ignore[type-abstract]


def read_signing_key(path: Path, passphrase: bytes) -> ed25519.Ed25519PrivateKey:
    return read_private_key(path, passphrase, ed25519.Ed25519PrivateKey)  # type: ignore[type-abstract]


def read_encryption_key(path: Path, passphrase: bytes) -> x25519.X25519PrivateKey:
    return read_private_key(path, passphrase, x25519.X25519PrivateKey)  # type: ignore[type-abstract]
