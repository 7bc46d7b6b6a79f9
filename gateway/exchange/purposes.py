"""Purpose profiles: what each kind of message may carry, and nothing else (SPEC §3, PIPL Art. 6/28/31).

Every envelope names a **purpose**. A purpose profile is declared data (``gateway/data/purposes.toml``):
its version, the direction it travels in (sender and recipient roles), its payload message type and
the exact set of **field paths** that payload may carry — ``"period"``, ``"notices.notice_ref"``
(nested with dots; a repeated sub-message is addressed like a single one). Everything here follows
from that one table:

* the **sender** calls :func:`minimise` before signing: every field the profile does not declare is
  cleared, and fields unknown to the schema are dropped;
* the **receiver** calls :func:`parse_payload` (after the signature verified): a payload that does
  not parse is :class:`~gateway.errors.PayloadInvalid`; a payload that carries any set field outside
  the profile, or any field number its schema does not know, is
  :class:`~gateway.errors.ForbiddenField` — so a sender with a newer schema cannot slip an extra
  field past an older receiver;
* ``docs/purposes.md`` is :func:`render_markdown` of the same table (``tongban purposes render``).

Failing closed (STYLE habit 4): an unknown purpose, a purpose of another version, a **reserved**
purpose (declared so the table is complete, but with no payload message yet), a payload type no
profile names, an empty field list, an unknown key or a field path that does not exist in the
payload message — each is an error, never a pass.

**Roles.** Every county node is a residence place (居住地) for some children and a registration place
(户籍地) for others, so a role is the side a node plays *in one message*, not a property of the node.
The profile fixes which side sends: a ``migrant_notice`` goes from the residence side to the
registration side, and its payload's division codes say which counties those are.

This module is pure: it reads the packaged TOML (or text it is given) and protobuf descriptors; it
has no I/O beyond that and no clock.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from tongban.v1 import cases_pb2, custody_pb2, exchange_pb2

from gateway.errors import ConfigError, ForbiddenField, PayloadInvalid, PurposeNotAllowed

_M = TypeVar("_M", bound=Message)

FORMAT = "tongban-purposes-v1"
SEALED_PAYLOAD_TYPE = exchange_pb2.SealedPayload.DESCRIPTOR.full_name

# Every message a purpose profile may name. A payload type outside this map cannot be sent or
# received under any purpose (`payload_class` refuses it), and a profile naming one fails to load.
_PAYLOAD_CLASSES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        exchange_pb2.MigrantNoticeBatch,
        exchange_pb2.RosterManifest,
        exchange_pb2.MatchResultBatch,
        exchange_pb2.SealedPayload,
        custody_pb2.CustodyChain,
        cases_pb2.CaseSupervisionAlert,
    )
}

# An envelope may be valid for at most this long under any purpose (the outbox gives up long before).
_LIFETIME_CAP_SECONDS = 90 * 86_400
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}", re.ASCII)  # fits the 40-character purpose columns


class Role(StrEnum):
    """The side a node plays in one message (see the module docstring)."""

    RESIDENCE = "residence"  # 居住地: where the child lives
    REGISTRATION = "registration"  # 户籍地: where the child's household is registered
    ANY_COUNTY = "any_county"  # either side (manifests and custody events go both ways)

    @property
    def label(self) -> str:
        return {"residence": "residence (居住地)", "registration": "registration (户籍地)", "any_county": "any county"}[
            self.value
        ]


class Status(StrEnum):
    ACTIVE = "active"  # usable: get() returns it
    RESERVED = "reserved"  # declared for completeness; get() refuses it until a payload exists


@dataclass(frozen=True)
class PurposeProfile:
    """One usable purpose, as declared in ``purposes.toml``.

    ``fields`` holds leaf field paths of ``payload_type`` (validated at load time); a sub-message
    may be present only if at least one of its leaves is declared.
    """

    name: str
    version: int
    payload_type: str
    sender_role: Role
    recipient_role: Role
    fields: frozenset[str]
    personal: bool
    encrypted: bool
    max_lifetime_seconds: int
    summary: str = ""

    def __post_init__(self) -> None:
        # Valid by construction, however it was built (loaded, or replaced in a test): a profile
        # that could carry nothing, or names a field that does not exist, is an error, not a pass.
        where = f"purposes: purpose {self.name}"
        descriptor = _payload_descriptor(self.payload_type, where)
        if not self.fields:
            raise ConfigError(f"{where}: the field list is empty (a purpose that may carry nothing is an error)")
        for path in sorted(self.fields):
            _check_path(descriptor, path, where)
        if self.encrypted != (self.payload_type == SEALED_PAYLOAD_TYPE):
            raise ConfigError(f"{where}: an encrypted purpose carries exactly {SEALED_PAYLOAD_TYPE}, and only it does")

    def allows(self, path: str) -> bool:
        """Whether ``path`` is a declared leaf or a sub-message on the way to one."""
        return path in self.fields or path in self._message_paths

    @functools.cached_property
    def _message_paths(self) -> frozenset[str]:
        # "notices" for "notices.sex": the sub-messages that may be present because a leaf is declared.
        return frozenset(".".join(f.split(".")[:n]) for f in self.fields for n in range(1, f.count(".") + 1))

    @functools.cached_property
    def _complete_paths(self) -> frozenset[str]:
        # Sub-message paths under which every leaf of the schema is declared: nothing set inside
        # them can be undeclared, so the walks need not visit each element (a roster holds
        # thousands). Unknown field numbers are still found, in bulk, by `_has_unknown_fields`.
        cls = _PAYLOAD_CLASSES.get(self.payload_type)
        found: set[str] = set()
        if cls is not None:
            _complete(_descriptor(cls), "", self.fields, found)
        return frozenset(found)


@dataclass(frozen=True)
class ReservedPurpose:
    """A purpose SPEC §3 names whose payload message does not exist yet.

    It is listed in the docs so the table of purposes is complete, but :meth:`Profiles.get` refuses
    it and no payload class belongs to it: nothing can be sent under it by accident.
    """

    name: str
    version: int
    sender_role: Role
    recipient_role: Role
    personal: bool
    encrypted: bool
    max_lifetime_seconds: int
    summary: str
    reserved_until: str


@dataclass(frozen=True)
class Profiles:
    """The loaded table of purposes: usable profiles and reserved names."""

    profiles: Mapping[str, PurposeProfile]
    reserved_purposes: Mapping[str, ReservedPurpose]

    def get(self, name: str, version: int | None = None) -> PurposeProfile:
        """The usable profile called ``name`` (of exactly ``version``, when given).

        Raises :class:`~gateway.errors.PurposeNotAllowed` for an unknown name, a reserved purpose,
        or another version (a receiver holds one version of each purpose; the sender must match it).
        """
        profile = self.profiles.get(name)
        if profile is None:
            reserved = self.reserved_purposes.get(name)
            if reserved is not None:
                raise PurposeNotAllowed(f"purpose {name} is reserved until {reserved.reserved_until}")
            raise PurposeNotAllowed(f"unknown purpose {_quoted(name)}")
        if version is not None and version != profile.version:
            raise PurposeNotAllowed(f"purpose {name} version {version}; this node holds version {profile.version}")
        return profile

    def all(self) -> list[PurposeProfile]:
        """Every usable profile, in declaration order."""
        return list(self.profiles.values())

    def reserved(self) -> list[ReservedPurpose]:
        """Every reserved purpose, in declaration order."""
        return list(self.reserved_purposes.values())


def _quoted(text: str) -> str:
    """A name from the wire, shown in an error: quoted, and cut short (it is attacker-chosen)."""
    return repr(text if len(text) <= 60 else text[:60] + "…")


# --- loading --------------------------------------------------------------------------------------

_COMMON_KEYS = {
    "name",
    "version",
    "status",
    "summary",
    "sender",
    "recipient",
    "personal",
    "encrypted",
    "max_lifetime_seconds",
}
_ACTIVE_KEYS = _COMMON_KEYS | {"payload_type", "fields"}
_RESERVED_KEYS = _COMMON_KEYS | {"reserved_until"}


def load_profiles(text: str | None = None) -> Profiles:
    """Parse and validate a purposes table; ``None`` loads the packaged ``gateway/data/purposes.toml``.

    Checks, each failure a :class:`~gateway.errors.ConfigError` naming the purpose and key:

    1. the text is TOML with exactly ``format = "tongban-purposes-v1"`` and a non-empty
       ``[[purpose]]`` list, and nothing else at the top level;
    2. each purpose has exactly the keys its ``status`` requires (no unknown, no missing key), with
       the right types; its name is a lower-case identifier and not declared twice; its version is
       at least 1; its roles are known, and equal only when both are ``any_county``; its lifetime is
       positive and at most 90 days;
    3. an active purpose names a payload type from the allowed set (an encrypted one exactly
       ``tongban.v1.SealedPayload``) and a **non-empty** list of distinct field paths, each of which
       walks through singular or repeated sub-messages to a leaf field of that type.
    """
    if text is None:
        return _packaged()
    return _parse(text)


@functools.cache
def _packaged() -> Profiles:
    # Profiles are immutable, so the packaged table is parsed once per process.
    return _parse(resources.files("gateway").joinpath("data/purposes.toml").read_text(encoding="utf-8"))


def _parse(text: str) -> Profiles:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"purposes: not valid TOML ({exc})") from None
    if set(doc) != {"format", "purpose"}:
        raise ConfigError("purposes: the top level must hold exactly 'format' and [[purpose]] tables")
    if doc["format"] != FORMAT:
        raise ConfigError(f"purposes: format must be {FORMAT!r}")
    entries = doc["purpose"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError("purposes: at least one [[purpose]] is required")
    profiles: dict[str, PurposeProfile] = {}
    reserved: dict[str, ReservedPurpose] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"purposes: entry {i} is not a table")
        item = _parse_entry(entry, i)
        if item.name in profiles or item.name in reserved:
            raise ConfigError(f"purposes: purpose {item.name} is declared twice")
        if isinstance(item, PurposeProfile):
            profiles[item.name] = item
        else:
            reserved[item.name] = item
    if not profiles:
        raise ConfigError("purposes: no active purpose is declared")
    # Read-only views: the packaged table is shared by the whole process (see _packaged).
    return Profiles(MappingProxyType(profiles), MappingProxyType(reserved))


def _parse_entry(entry: dict[str, Any], index: int) -> PurposeProfile | ReservedPurpose:
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"purposes: entry {index} needs a name of lower-case letters, digits and '_'")
    where = f"purposes: purpose {name}"
    try:
        status = Status(str(entry.get("status")))
    except ValueError:
        raise ConfigError(f"{where}: status must be one of {', '.join(Status)}") from None
    expected = _ACTIVE_KEYS if status is Status.ACTIVE else _RESERVED_KEYS
    if unknown := sorted(set(entry) - expected):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (status {status})")
    if missing := sorted(expected - set(entry)):
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    version = _int(entry, "version", where)
    if version < 1:
        raise ConfigError(f"{where}: version must be at least 1")
    lifetime = _int(entry, "max_lifetime_seconds", where)
    if not 0 < lifetime <= _LIFETIME_CAP_SECONDS:
        raise ConfigError(f"{where}: max_lifetime_seconds must be between 1 and {_LIFETIME_CAP_SECONDS}")
    sender, recipient = _role(entry, "sender", where), _role(entry, "recipient", where)
    if sender is recipient and sender is not Role.ANY_COUNTY:
        raise ConfigError(f"{where}: sender and recipient roles must differ (or both be any_county)")
    summary = _str(entry, "summary", where)
    personal, encrypted = _bool(entry, "personal", where), _bool(entry, "encrypted", where)
    if status is Status.RESERVED:
        return ReservedPurpose(
            name,
            version,
            sender,
            recipient,
            personal,
            encrypted,
            lifetime,
            summary,
            _str(entry, "reserved_until", where),
        )
    payload_type = _str(entry, "payload_type", where)
    raw_fields = entry["fields"]
    if not isinstance(raw_fields, list) or not all(isinstance(f, str) for f in raw_fields):
        raise ConfigError(f"{where}: fields must be a list of strings")
    if len(set(raw_fields)) != len(raw_fields):
        raise ConfigError(f"{where}: a field is listed twice")
    return PurposeProfile(  # checks the payload type and every field path
        name=name,
        version=version,
        payload_type=payload_type,
        sender_role=sender,
        recipient_role=recipient,
        fields=frozenset(raw_fields),
        personal=personal,
        encrypted=encrypted,
        max_lifetime_seconds=lifetime,
        summary=summary,
    )


def _int(entry: dict[str, Any], key: str, where: str) -> int:
    value = entry[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be an integer")
    return value


def _str(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _bool(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _role(entry: dict[str, Any], key: str, where: str) -> Role:
    try:
        return Role(entry[key])
    except ValueError:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(Role)}") from None


def _payload_descriptor(payload_type: str, where: str) -> Descriptor:
    cls = _PAYLOAD_CLASSES.get(payload_type)
    if cls is None:
        raise ConfigError(f"{where}: payload_type {payload_type!r} is not a payload message")
    return _descriptor(cls)


def _descriptor(cls: type[Message]) -> Descriptor:
    # The upb runtime's descriptor class is typed apart from descriptor.Descriptor; same interface.
    return cast(Descriptor, cls.DESCRIPTOR)


def _is_message(field: FieldDescriptor) -> bool:
    """A singular or repeated sub-message (a map is not one: its entries are not addressable)."""
    return field.message_type is not None and not field.message_type.GetOptions().map_entry


def _complete(descriptor: Descriptor, prefix: str, fields: frozenset[str], found: set[str]) -> bool:
    """Whether every leaf under ``prefix`` is declared; adds each complete sub-message path to ``found``."""
    complete = True
    for field in descriptor.fields:
        path = prefix + field.name
        if _is_message(field) and field.message_type is not None:
            if _complete(field.message_type, path + ".", fields, found):
                found.add(path)
            else:
                complete = False
        elif path not in fields:
            complete = False
    return complete


def _check_path(descriptor: Descriptor, path: str, where: str) -> None:
    parts = path.split(".")
    current = descriptor
    for depth, part in enumerate(parts):
        field = current.fields_by_name.get(part)
        if field is None:
            raise ConfigError(f"{where}: field {path} does not exist in {descriptor.full_name}")
        last = depth == len(parts) - 1
        if field.message_type is not None and not _is_message(field):
            raise ConfigError(f"{where}: field {path} is a map; maps cannot be declared field by field")
        if last and _is_message(field):
            raise ConfigError(f"{where}: field {path} is a message; list the fields of it that may be carried")
        if not last:
            if not _is_message(field) or field.message_type is None:
                raise ConfigError(f"{where}: field {path}: {part} has no sub-fields")
            current = field.message_type


# --- payloads -------------------------------------------------------------------------------------


def payload_class(payload_type: str) -> type[Message]:
    """The generated message class for ``payload_type``.

    Only types that a purpose profile may name are known; anything else — including the types of
    reserved purposes, which have none yet — raises :class:`~gateway.errors.PurposeNotAllowed`.
    """
    cls = _PAYLOAD_CLASSES.get(payload_type)
    if cls is None:
        raise PurposeNotAllowed(f"no purpose carries payload type {_quoted(payload_type)}")
    return cls


def parse_payload(profile: PurposeProfile, data: bytes) -> Message:
    """Parse a received payload and hold it to ``profile``: the receiver's field check.

    Call it only on bytes whose signature has verified. Raises
    :class:`~gateway.errors.PayloadInvalid` if ``data`` is not a message of
    ``profile.payload_type``, then whatever :func:`check_payload` raises.
    """
    message = payload_class(profile.payload_type)()
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise PayloadInvalid(f"not a {profile.payload_type}") from None
    check_payload(profile, message)
    return message


def check_payload(profile: PurposeProfile, message: Message) -> None:
    """Refuse a message that carries anything ``profile`` does not declare.

    The message must be of ``profile.payload_type`` (:class:`~gateway.errors.PayloadInvalid`
    otherwise). Then :class:`~gateway.errors.ForbiddenField` is raised if, anywhere in it — every
    singular and every element of every repeated sub-message —

    1. a field number is unknown to the schema (what a newer or hostile sender added), or
    2. a set field's path is not declared (a sub-message counts as declared when one of its leaves
       is). A field at its proto3 default value is not set and carries nothing.

    Error details name the field path and the element index (``notices[3].living_since``, or
    ``notices[3].#99`` for an unknown number), never the value.
    """
    _check_type(profile, message)
    if _has_unknown_fields(message):
        where = _first_unknown_field(message, "")
        raise ForbiddenField(f"{where}: a field number unknown to {profile.payload_type}")
    _check_declared(profile, message, "", "")


def _check_type(profile: PurposeProfile, message: Message) -> None:
    if message.DESCRIPTOR.full_name != profile.payload_type:
        raise PayloadInvalid(
            f"purpose {profile.name} carries {profile.payload_type}, not {message.DESCRIPTOR.full_name}"
        )


def _has_unknown_fields(message: Message) -> bool:
    # In bulk, at C speed: dropping unknown fields shrinks the encoding iff there were any (every
    # unknown field is at least a tag byte). Serialising is faster than ByteSize() in upb.
    stripped = type(message)()
    stripped.CopyFrom(message)
    stripped.DiscardUnknownFields()
    return len(stripped.SerializeToString()) != len(message.SerializeToString())


def _first_unknown_field(message: Message, shown: str) -> str:
    """Where the first unknown field number is (depth-first); only called when there is one."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        return f"{shown}#{unknown[0].field_number}"
    for field, value in message.ListFields():
        if _is_message(field):
            for i, child in enumerate(value if field.is_repeated else [value]):
                label = f"{shown}{field.name}[{i}]." if field.is_repeated else f"{shown}{field.name}."
                if _has_unknown_fields(child):
                    return _first_unknown_field(child, label)
    return shown or "message"  # unreachable when _has_unknown_fields(message) holds


def _check_declared(profile: PurposeProfile, message: Message, prefix: str, shown_prefix: str) -> None:
    for field, value in message.ListFields():
        path, shown = prefix + field.name, shown_prefix + field.name
        if not profile.allows(path):
            raise ForbiddenField(f"{shown} is not declared by purpose {profile.name} v{profile.version}")
        if _is_message(field) and path not in profile._complete_paths:
            for i, child in enumerate(value if field.is_repeated else [value]):
                label = f"{shown}[{i}]" if field.is_repeated else shown
                _check_declared(profile, child, path + ".", label + ".")


def minimise(profile: PurposeProfile, message: _M) -> _M:
    """A copy of ``message`` holding only what ``profile`` declares: the sender's side.

    Clears every set field whose path is not declared (recursively, in every element of repeated
    sub-messages) and drops unknown field numbers. The input is not changed. The result always
    passes :func:`check_payload`, and minimising it again changes nothing. A message of another
    type than ``profile.payload_type`` is :class:`~gateway.errors.PayloadInvalid`.
    """
    _check_type(profile, message)
    copy = type(message)()
    copy.CopyFrom(message)
    copy.DiscardUnknownFields()
    _clear_undeclared(profile, copy, "")
    return copy


def _clear_undeclared(profile: PurposeProfile, message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        path = prefix + field.name
        if not profile.allows(path):
            message.ClearField(field.name)
        elif _is_message(field) and path not in profile._complete_paths:
            for child in value if field.is_repeated else [value]:
                _clear_undeclared(profile, child, path + ".")


# --- the docs table -------------------------------------------------------------------------------


def ordered_fields(profile: PurposeProfile) -> list[str]:
    """Declared paths in schema order (field numbers, depth-first), as the proto file reads."""
    descriptor = _descriptor(_PAYLOAD_CLASSES[profile.payload_type])

    def key(path: str) -> tuple[int, ...]:
        numbers, current = [], descriptor
        for part in path.split("."):
            field = current.fields_by_name[part]
            numbers.append(field.number)
            if field.message_type is not None:
                current = field.message_type
        return tuple(numbers)

    return sorted(profile.fields, key=key)


def _lifetime(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} s"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_markdown(profiles: Profiles) -> str:
    """``docs/purposes.md``: the purposes table, generated so it is never written twice."""
    lines = [
        "# Purpose profiles",
        "",
        "<!-- Generated from gateway/data/purposes.toml by `tongban purposes render`; do not edit by hand. -->",
        "",
        "Every envelope names a purpose. Its profile lists the **only** fields the payload may carry",
        "(SPEC §3; PIPL Art. 6, 28, 31): the sender clears every other field before signing, and the",
        "receiver refuses a payload with any other set field, or with a field number its schema does not",
        "know. An unknown purpose, another version of a purpose, and a reserved purpose are refused.",
        "Roles are the side a node plays in one message: every county node is the residence place of",
        "some children and the registration place of others.",
        "",
        "| purpose | version | direction | summary | payload | may carry (nothing else) | personal data | "
        "end-to-end encrypted | max. lifetime |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in profiles.all():
        fields = ", ".join(f"`{f}`" for f in ordered_fields(p))
        lines.append(
            f"| `{p.name}` | {p.version} | {p.sender_role.label} → {p.recipient_role.label} | {p.summary} "
            f"| `{p.payload_type}` | {fields} | {_yes(p.personal)} | {_yes(p.encrypted)} "
            f"| {_lifetime(p.max_lifetime_seconds)} |"
        )
    reserved = profiles.reserved()
    if reserved:
        lines += [
            "",
            "## Reserved purposes",
            "",
            "Declared so the table is complete, but without a payload message yet: a node refuses to send",
            "or accept them (`PurposeNotAllowed`) until the work named here defines what they carry.",
            "",
            "| purpose | version | direction | will carry | personal data | end-to-end encrypted | reserved until |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in reserved:
            lines.append(
                f"| `{r.name}` | {r.version} | {r.sender_role.label} → {r.recipient_role.label} | {r.summary} "
                f"| {_yes(r.personal)} | {_yes(r.encrypted)} | {r.reserved_until} |"
            )
    lines += [
        "",
        "Field paths are nested with dots; a repeated sub-message is addressed like a single one",
        "(`notices.sex` is the `sex` of every notice). Changing a purpose's fields is a protocol change:",
        "bump its version in `gateway/data/purposes.toml`, then run `tongban purposes render`.",
        "",
    ]
    return "\n".join(lines)
