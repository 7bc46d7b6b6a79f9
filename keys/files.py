"""The files of the keys tool: encrypted private keys, signed public documents, the clock.

Every private key the tool creates is written by :func:`new_signing_key` and friends through
:mod:`gateway.trust.keyfile` — encrypted PKCS#8, mode 0600, in a directory of mode 0700 — and
nothing else in ``keys`` ever writes private key material. Every public document is a
:class:`~gateway.trust.dsse.SignedDocument` JSON file. Nothing is silently overwritten: a command
that would replace a key or a document it does not own refuses with
:class:`~gateway.errors.OperatorStateError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from gateway.errors import InputError, KeyFileError, MalformedDocument, OperatorStateError
from gateway.trust import keyfile
from gateway.trust.dsse import SignedDocument
from gateway.trust.signing import Ed25519Signer


def utc_now() -> datetime:
    """The one clock of the keys tool (whole seconds: documents carry times to the second)."""
    return datetime.now(UTC).replace(microsecond=0)


def short_fingerprint(data: bytes) -> str:
    """A fingerprint people can read to each other over the phone: 128 bits of SHA-256, in groups."""
    digest = hashlib.sha256(data).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def refuse_existing(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise OperatorStateError(f"{path} already exists; refusing to overwrite it")


def require(path: Path, hint: str = "") -> Path:
    if not path.exists():
        raise OperatorStateError(f"{path} does not exist" + (f" ({hint})" if hint else ""))
    return path


# --- private keys --------------------------------------------------------------------------------


def new_signing_key(path: Path, passphrase: bytes) -> Ed25519Signer:
    """Generate an Ed25519 key and write it encrypted to ``path`` (which must not exist)."""
    refuse_existing(path)
    signer = Ed25519Signer.generate()
    private_dir(path.parent)
    keyfile.write_private_key(path, signer.private_key, passphrase)
    return signer


def new_tls_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """Generate an ECDSA P-256 key (node TLS or province CA) and write it encrypted to ``path``."""
    refuse_existing(path)
    key = ec.generate_private_key(ec.SECP256R1())
    private_dir(path.parent)
    keyfile.write_private_key(path, key, passphrase)
    return key


def new_encryption_key(path: Path, passphrase: bytes) -> x25519.X25519PrivateKey:
    """Generate an X25519 key (end-to-end encryption, SPEC §3) and write it encrypted to ``path``."""
    refuse_existing(path)
    key = x25519.X25519PrivateKey.generate()
    private_dir(path.parent)
    keyfile.write_private_key(path, key, passphrase)
    return key


def load_signer(path: Path, passphrase: bytes) -> Ed25519Signer:
    """An Ed25519 signer from an encrypted key file (``KeyFileError`` if it cannot be read)."""
    return Ed25519Signer(keyfile.read_signing_key(path, passphrase))


def load_tls_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    return keyfile.read_tls_key(path, passphrase)


def change_passphrase(path: Path, old: bytes, new: bytes) -> None:
    """Re-seal one key file under a new passphrase (atomically; the key itself is unchanged)."""
    keyfile.write_private_key(path, keyfile.read_any_private_key(path, old), new)


def read_passphrase_file(path: Path) -> bytes:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        raise KeyFileError(f"cannot read passphrase file {path}") from None
    if not value:
        raise KeyFileError(f"passphrase file {path} is empty")
    return value.encode("utf-8")


# --- public documents ----------------------------------------------------------------------------


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise OperatorStateError(f"{what} not found: {path}") from None
    except OSError:
        raise OperatorStateError(f"cannot read {what}: {path}") from None


def read_signed(path: Path, what: str) -> SignedDocument:
    return SignedDocument.parse(read_bytes(path, what), what)


def write_signed(path: Path, doc: SignedDocument) -> None:
    keyfile.write_public(path, doc.to_bytes())


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(read_bytes(path, what))
    except (ValueError, UnicodeDecodeError):
        raise MalformedDocument(f"{what} is not JSON: {path}") from None
    if not isinstance(doc, dict):
        raise MalformedDocument(f"{what} must be a JSON object: {path}")
    return doc


def write_json(path: Path, doc: object) -> None:
    keyfile.write_public(path, json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")


def replace_file(src: Path, dst: Path) -> None:
    """Move ``src`` over ``dst`` atomically (same directory)."""
    os.replace(src, dst)


def days_after(now: datetime, days: int, what: str = "--expires-days") -> datetime:
    """``now`` plus a positive number of days (``InputError`` otherwise)."""
    if days < 1:
        raise InputError(f"{what} must be at least 1")
    return now + timedelta(days=days)
