"""Private key files, encrypted at rest with a passphrase (SPEC §2).

Keys are stored as PKCS#8 PEM encrypted with the passphrase (``BestAvailableEncryption``: PBES2,
readable by OpenSSL), written atomically with mode 0600. The passphrase comes from the caller,
from ``TONGBAN_KEY_PASSPHRASE``, or from the file named by ``TONGBAN_KEY_PASSPHRASE_FILE`` (for
systemd credentials and Kubernetes Secrets); an empty passphrase is refused. A hardware module or
KMS replaces these files behind the :class:`~gateway.trust.signing.Signer` protocol.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from gateway.errors import KeyFileError

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


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    if not passphrase:
        raise KeyFileError("refusing to write a private key without a passphrase")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_secret(path, pem)


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


def read_private_key(path: Path, passphrase: bytes, kind: type[K]) -> K:
    """Load and decrypt a key of the expected type, or raise ``KeyFileError`` (never the key)."""
    try:
        data = path.read_bytes()
    except OSError:
        raise KeyFileError(f"cannot read key file {path}") from None
    if b"ENCRYPTED" not in data:
        raise KeyFileError(f"key file {path} is not encrypted; refusing to use it")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError):
        raise KeyFileError(f"cannot decrypt key file {path} (wrong passphrase or damaged file)") from None
    if not isinstance(key, kind):
        raise KeyFileError(f"key file {path} does not hold a {kind.__name__}")
    return key
