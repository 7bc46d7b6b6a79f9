"""The trust documents (SPEC §2) as frozen dataclasses, with strict JSON codecs.

* :class:`Root` — the national root of trust: root keys and threshold (k of n), the directory
  publisher's keys and threshold, and the provincial operators, each with the division-code prefix
  it governs, its signing keys and threshold, and its CA certificate for node TLS identities.
* :class:`ProvincePart` — one operator's signed list of its nodes.
* :class:`NodeEntry` — a node: id, division, endpoint, status, TLS certificate, message-signing keys
  (with rotation dates), encryption key.
* :class:`Manifest` — the directory publisher's signed list of which province parts (by version and
  digest) make up directory version N, and when it expires.
* :class:`Bundle` — what nodes fetch: root history, the signed manifest and the signed parts.

Parsing is strict (unknown or missing fields are :class:`~gateway.errors.MalformedDocument`) and
happens only *after* a signature over the exact bytes has verified. Encoding is deterministic
(sorted keys), so the same document always has the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway.errors import MalformedDocument
from gateway.trust.dsse import SignedDocument
from gateway.trust.signing import ENCRYPTION_ALGORITHMS, SIGNATURE_ALGORITHMS, PublicKey

SPEC_VERSION = 1
ROOT_TYPE = "application/vnd.tongban.root+json"
PART_TYPE = "application/vnd.tongban.province-part+json"
MANIFEST_TYPE = "application/vnd.tongban.directory+json"


# --- JSON helpers ----------------------------------------------------------------------------------


def encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedDocument(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise MalformedDocument(f"{what} must be a JSON object")
    return doc


def _fields(doc: object, what: str, required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    if not isinstance(doc, dict):
        raise MalformedDocument(f"{what} must be an object")
    missing = required - set(doc)
    unknown = set(doc) - required - optional
    if missing or unknown:
        raise MalformedDocument(f"{what}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return doc


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedDocument(f"{what} must be a non-empty string")
    return value


def _int(value: object, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise MalformedDocument(f"{what} must be an integer >= {minimum}")
    return value


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise MalformedDocument(f"{what} must be a UTC time like 2026-11-23T00:00:00Z")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise MalformedDocument(f"{what} must be a UTC time like 2026-11-23T00:00:00Z") from None


def _opt_time(value: object, what: str) -> datetime | None:
    return None if value is None else parse_time(value, what)


def _keys(doc: object, what: str, algorithms: frozenset[str]) -> dict[str, PublicKey]:
    """A {key_id: key} map whose ids must be the keys' real ids."""
    if not isinstance(doc, dict):
        raise MalformedDocument(f"{what} must be an object of key id to key")
    keys: dict[str, PublicKey] = {}
    for kid, kdoc in doc.items():
        key = PublicKey.from_json(kdoc, f"{what}[{kid}]")
        if key.algorithm not in algorithms:
            raise MalformedDocument(f"{what}[{kid}]: {key.algorithm} keys are not allowed here")
        if key.key_id != kid:
            raise MalformedDocument(f"{what}: key id {kid} does not match its key")
        keys[kid] = key
    return keys


def _keys_json(keys: Mapping[str, PublicKey]) -> dict[str, dict[str, str]]:
    return {kid: k.to_json() for kid, k in sorted(keys.items())}


def _prefix(value: object, what: str) -> str:
    prefix = _str(value, what)
    if not (2 <= len(prefix) <= 6 and prefix.isascii() and prefix.isdigit()):
        raise MalformedDocument(f"{what} must be 2-6 digits")
    return prefix


# --- Root -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvinceOperator:
    prefix: str  # division-code prefix it governs, e.g. "50"
    name: str  # e.g. 重庆市民政局
    keys: Mapping[str, PublicKey]
    threshold: int
    ca_certificate: str = field(repr=False)  # PEM; trust anchor for its nodes' TLS certificates

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keys": _keys_json(self.keys),
            "threshold": self.threshold,
            "ca_certificate": self.ca_certificate,
        }


@dataclass(frozen=True)
class Root:
    version: int
    expires: datetime
    keys: Mapping[str, PublicKey]
    threshold: int
    directory_keys: Mapping[str, PublicKey]
    directory_threshold: int
    provinces: Mapping[str, ProvinceOperator]  # by prefix

    def to_payload(self) -> bytes:
        return encode(
            {
                "type": "root",
                "spec_version": SPEC_VERSION,
                "version": self.version,
                "expires": format_time(self.expires),
                "keys": _keys_json(self.keys),
                "threshold": self.threshold,
                "directory_keys": _keys_json(self.directory_keys),
                "directory_threshold": self.directory_threshold,
                "provinces": {p: op.to_json() for p, op in sorted(self.provinces.items())},
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Root:
        doc = _fields(
            decode(payload, "root"),
            "root",
            {
                "type",
                "spec_version",
                "version",
                "expires",
                "keys",
                "threshold",
                "directory_keys",
                "directory_threshold",
                "provinces",
            },
        )
        _header(doc, "root", "root")
        provinces: dict[str, ProvinceOperator] = {}
        if not isinstance(doc["provinces"], dict):
            raise MalformedDocument("root.provinces must be an object")
        for prefix, pdoc in doc["provinces"].items():
            what = f"root.provinces[{prefix}]"
            p = _fields(pdoc, what, {"name", "keys", "threshold", "ca_certificate"})
            provinces[_prefix(prefix, what)] = ProvinceOperator(
                prefix=prefix,
                name=_str(p["name"], f"{what}.name"),
                keys=_keys(p["keys"], f"{what}.keys", SIGNATURE_ALGORITHMS),
                threshold=_int(p["threshold"], f"{what}.threshold", 1),
                ca_certificate=_str(p["ca_certificate"], f"{what}.ca_certificate"),
            )
        for a in provinces:
            for b in provinces:
                if a != b and b.startswith(a):
                    raise MalformedDocument(f"root: prefixes {a} and {b} overlap")
        return cls(
            version=_int(doc["version"], "root.version", 1),
            expires=parse_time(doc["expires"], "root.expires"),
            keys=_keys(doc["keys"], "root.keys", SIGNATURE_ALGORITHMS),
            threshold=_int(doc["threshold"], "root.threshold", 1),
            directory_keys=_keys(doc["directory_keys"], "root.directory_keys", SIGNATURE_ALGORITHMS),
            directory_threshold=_int(doc["directory_threshold"], "root.directory_threshold", 1),
            provinces=provinces,
        )

    def operator_for(self, division: str) -> ProvinceOperator | None:
        for prefix, op in self.provinces.items():
            if division.startswith(prefix):
                return op
        return None


def _header(doc: Mapping[str, Any], kind: str, what: str) -> None:
    if doc["type"] != kind:
        raise MalformedDocument(f"{what}.type must be {kind!r}")
    if doc["spec_version"] != SPEC_VERSION:
        raise MalformedDocument(f"{what}.spec_version {doc['spec_version']!r} is not supported")


# --- Province parts and node entries --------------------------------------------------------------


class NodeStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


@dataclass(frozen=True)
class NodeSigningKey:
    """A message-signing key of a node, with its rotation dates.

    ``retired_at``: when it was replaced (messages signed after this are refused);
    ``refuse_after``: end of the overlap window (after this nothing signed by it verifies).
    """

    key: PublicKey
    valid_from: datetime
    retired_at: datetime | None = None
    refuse_after: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key.to_json(),
            "key_id": self.key.key_id,
            "valid_from": format_time(self.valid_from),
            "retired_at": None if self.retired_at is None else format_time(self.retired_at),
            "refuse_after": None if self.refuse_after is None else format_time(self.refuse_after),
        }

    @classmethod
    def from_json(cls, doc: object, what: str) -> NodeSigningKey:
        d = _fields(doc, what, {"algorithm", "public", "key_id", "valid_from", "retired_at", "refuse_after"})
        key = PublicKey.from_json({"algorithm": d["algorithm"], "public": d["public"]}, what)
        if key.algorithm not in SIGNATURE_ALGORITHMS:
            raise MalformedDocument(f"{what}: {key.algorithm} is not a signature algorithm")
        if d["key_id"] != key.key_id:
            raise MalformedDocument(f"{what}: key_id does not match the key")
        k = cls(
            key,
            parse_time(d["valid_from"], f"{what}.valid_from"),
            _opt_time(d["retired_at"], f"{what}.retired_at"),
            _opt_time(d["refuse_after"], f"{what}.refuse_after"),
        )
        if (k.retired_at is None) != (k.refuse_after is None):
            raise MalformedDocument(f"{what}: retired_at and refuse_after go together")
        if k.retired_at is not None and k.refuse_after is not None and k.refuse_after < k.retired_at:
            raise MalformedDocument(f"{what}: refuse_after is before retired_at")
        return k


@dataclass(frozen=True)
class NodeEntry:
    node_id: str
    division: str
    endpoint: str
    status: NodeStatus
    tls_certificate: str = field(repr=False)  # PEM, issued by the province CA
    signing_keys: tuple[NodeSigningKey, ...] = field(repr=False)
    encryption_key: PublicKey = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "division": self.division,
            "endpoint": self.endpoint,
            "status": self.status.value,
            "tls_certificate": self.tls_certificate,
            "signing_keys": [k.to_json() for k in self.signing_keys],
            "encryption_key": self.encryption_key.to_json(),
        }

    @classmethod
    def from_json(cls, doc: object, what: str) -> NodeEntry:
        d = _fields(
            doc,
            what,
            {
                "node_id",
                "division",
                "endpoint",
                "status",
                "tls_certificate",
                "signing_keys",
                "encryption_key",
            },
        )
        division = _str(d["division"], f"{what}.division")
        if len(division) != 6 or not division.isascii() or not division.isdigit():
            raise MalformedDocument(f"{what}.division must be six digits")
        try:
            status = NodeStatus(d["status"])
        except ValueError:
            raise MalformedDocument(f"{what}.status must be active, suspended or revoked") from None
        if not isinstance(d["signing_keys"], list) or not d["signing_keys"]:
            raise MalformedDocument(f"{what}.signing_keys must be a non-empty list")
        enc = PublicKey.from_json(d["encryption_key"], f"{what}.encryption_key")
        if enc.algorithm not in ENCRYPTION_ALGORITHMS:
            raise MalformedDocument(f"{what}.encryption_key: {enc.algorithm} is not an encryption algorithm")
        return cls(
            node_id=_str(d["node_id"], f"{what}.node_id"),
            division=division,
            endpoint=_str(d["endpoint"], f"{what}.endpoint"),
            status=status,
            tls_certificate=_str(d["tls_certificate"], f"{what}.tls_certificate"),
            signing_keys=tuple(
                NodeSigningKey.from_json(k, f"{what}.signing_keys[{i}]") for i, k in enumerate(d["signing_keys"])
            ),
            encryption_key=enc,
        )


@dataclass(frozen=True)
class ProvincePart:
    prefix: str
    version: int
    expires: datetime
    nodes: tuple[NodeEntry, ...]

    def to_payload(self) -> bytes:
        return encode(
            {
                "type": "province-part",
                "spec_version": SPEC_VERSION,
                "prefix": self.prefix,
                "version": self.version,
                "expires": format_time(self.expires),
                "nodes": [n.to_json() for n in sorted(self.nodes, key=lambda n: n.node_id)],
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> ProvincePart:
        doc = _fields(
            decode(payload, "province part"),
            "province part",
            {"type", "spec_version", "prefix", "version", "expires", "nodes"},
        )
        _header(doc, "province-part", "province part")
        if not isinstance(doc["nodes"], list):
            raise MalformedDocument("province part.nodes must be a list")
        return cls(
            prefix=_prefix(doc["prefix"], "province part.prefix"),
            version=_int(doc["version"], "province part.version", 1),
            expires=parse_time(doc["expires"], "province part.expires"),
            nodes=tuple(NodeEntry.from_json(n, f"province part.nodes[{i}]") for i, n in enumerate(doc["nodes"])),
        )


# --- Directory manifest and bundle ----------------------------------------------------------------


@dataclass(frozen=True)
class PartRef:
    version: int
    sha256: str  # hex digest of the part's payload bytes


@dataclass(frozen=True)
class Manifest:
    version: int
    expires: datetime
    root_version: int
    parts: Mapping[str, PartRef]

    def to_payload(self) -> bytes:
        return encode(
            {
                "type": "directory",
                "spec_version": SPEC_VERSION,
                "version": self.version,
                "expires": format_time(self.expires),
                "root_version": self.root_version,
                "parts": {p: {"version": r.version, "sha256": r.sha256} for p, r in sorted(self.parts.items())},
            }
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Manifest:
        doc = _fields(
            decode(payload, "directory"),
            "directory",
            {"type", "spec_version", "version", "expires", "root_version", "parts"},
        )
        _header(doc, "directory", "directory")
        if not isinstance(doc["parts"], dict):
            raise MalformedDocument("directory.parts must be an object")
        parts = {}
        for prefix, ref in doc["parts"].items():
            r = _fields(ref, f"directory.parts[{prefix}]", {"version", "sha256"})
            digest = _str(r["sha256"], f"directory.parts[{prefix}].sha256")
            if len(digest) != 64:
                raise MalformedDocument(f"directory.parts[{prefix}].sha256 must be 64 hex characters")
            parts[_prefix(prefix, "directory.parts")] = PartRef(_int(r["version"], "part version", 1), digest)
        return cls(
            version=_int(doc["version"], "directory.version", 1),
            expires=parse_time(doc["expires"], "directory.expires"),
            root_version=_int(doc["root_version"], "directory.root_version", 1),
            parts=parts,
        )


@dataclass(frozen=True)
class Bundle:
    """What a node fetches: every root since version 1 (so any node can walk the rotation chain),
    the signed manifest, and the signed province parts."""

    roots: tuple[SignedDocument, ...]
    manifest: SignedDocument
    parts: Mapping[str, SignedDocument]

    def to_bytes(self) -> bytes:
        doc = {
            "tongban_directory_bundle": SPEC_VERSION,
            "roots": [r.to_json() for r in self.roots],
            "manifest": self.manifest.to_json(),
            "parts": {p: d.to_json() for p, d in sorted(self.parts.items())},
        }
        return json.dumps(doc, sort_keys=True, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Bundle:
        doc = _fields(
            decode(data, "directory bundle"),
            "bundle",
            {"tongban_directory_bundle", "roots", "manifest", "parts"},
        )
        if doc["tongban_directory_bundle"] != SPEC_VERSION:
            raise MalformedDocument("unsupported directory bundle format")
        if not isinstance(doc["roots"], list) or not isinstance(doc["parts"], dict):
            raise MalformedDocument("bundle.roots must be a list and bundle.parts an object")
        return cls(
            roots=tuple(SignedDocument.from_json(r, f"bundle.roots[{i}]") for i, r in enumerate(doc["roots"])),
            manifest=SignedDocument.from_json(doc["manifest"], "bundle.manifest"),
            parts={p: SignedDocument.from_json(d, f"bundle.parts[{p}]") for p, d in doc["parts"].items()},
        )
