"""API tokens for callers of the county API (SPEC §7): created once, stored only as hashes.

A token is ``tbc1_`` followed by 32 random bytes in unpadded base64url (``secrets.token_bytes``);
it is printed once by ``tongban county token create`` and never stored, logged or audited. The node
keeps, per token, a public id (``ct-`` and 16 hex digits: what ``list``, ``revoke`` and the audit
trail name), a role, a label, a division scope and its created / revoked times.

**Why plain SHA-256 and not HMAC under a node secret, nor a password hash.** A token carries 256
bits from the operating system's CSPRNG, so nobody can guess one or search the hash's preimages,
and a slow hash (scrypt, Argon2) would only slow down every call. A keyed hash would protect
*low-entropy* secrets against someone who has read the database; these are not low-entropy, and
a key would tie the table to the keyring (its loss would revoke every token at once, its rotation
would need a re-hash nobody can do without the tokens). The hash is domain-separated
(``tongban.county-token.v1``) so it can never be confused with another SHA-256 the node computes.
Lookup is by the hash (a unique index): the time a lookup takes depends on the hash, not the
token, so it reveals nothing useful about a token.

:func:`authenticate` checks, in order: a token was presented (``TokenMissing``); it has the form
above (``TokenInvalid``); its hash is in the table (``TokenInvalid``); it is not revoked
(``TokenInvalid``) — one error for the last three, so a caller cannot tell a revoked token from a
made-up one.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, Row, Table, insert, select, update

from gateway import audit
from gateway.county.permissions import Role
from gateway.errors import InputError, RecordNotFound, TokenInvalid, TokenMissing
from gateway.store.schema import county_tokens

PREFIX = "tbc1_"
_DOMAIN = b"tongban.county-token.v1\x00"
_TOKEN = re.compile(r"^tbc1_[A-Za-z0-9_-]{43}$")
_TOKEN_ID = re.compile(r"^ct-[0-9a-f]{16}$")
MAX_LABEL = 80
PURPOSE = "county_api"  # the audit purpose of the county API's entries
OPERATOR = "operator"  # the audit actor of token changes: made at the node's command line


@dataclass(frozen=True)
class Caller:
    """Who makes a county call, whatever the credential: the id of its token (``ct-…``) or client
    certificate (``cc-…``) — what the audit trail names —, its role and its division scope ("" for
    none, six digits for a county, two for a province)."""

    caller_id: str
    role: Role
    division: str = ""


@dataclass(frozen=True)
class TokenInfo:
    """What the node knows about a token: everything but the token."""

    token_id: str
    role: Role
    label: str
    division: str  # "" when the role has no division scope
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def caller(self) -> Caller:
        return Caller(self.token_id, self.role, self.division)


def hash_token(token: str) -> bytes:
    """The stored form of a token (see the module docstring for why this hash)."""
    return hashlib.sha256(_DOMAIN + token.encode("ascii")).digest()


def new_token() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL or not label.isprintable():
        raise InputError(f"a token label must be 1-{MAX_LABEL} printable characters")
    return label


def check_scope(role: Role, division: str) -> str:
    """A provincial operator's scope is its province (two digits); any other role may be scoped to one
    county (six digits) or to nothing ("")."""
    if role is Role.PROVINCIAL_OPERATOR:
        if not (len(division) == 2 and division.isascii() and division.isdigit()):
            raise InputError("a provincial_operator token needs --division with the two-digit province code")
    elif division and not (len(division) == 6 and division.isascii() and division.isdigit()):
        raise InputError("--division must be a six-digit county code")
    return division


def _info(r: Any) -> TokenInfo:
    return TokenInfo(
        token_id=r.token_id,
        role=Role(r.role),
        label=r.label,
        division=r.division,
        created_at=_utc(r.created_at) or r.created_at,
        revoked_at=_utc(r.revoked_at),
    )


def record_credential(
    conn: Connection, table: Table, values: dict[str, Any], *, action: str, reference: str, role: Role, at: datetime
) -> None:
    """Insert a county credential's record (a token's hash, a certificate's fingerprint) with its
    audit entry, in the caller's transaction: both commit together or neither does."""
    audit.append(
        conn, actor=OPERATOR, action=action, purpose=PURPOSE, reference=reference, detail=f"role={role.value}", at=at
    )
    conn.execute(insert(table).values(**values))


def revoke_credential(
    engine: Engine, table: Table, key: Column[str], credential_id: str, *, action: str, at: datetime, unknown: str
) -> Row[Any]:
    """Mark a county credential revoked at ``at`` (revoking twice keeps the first time) with its
    audit entry, in one transaction; the record afterwards (``RecordNotFound`` with ``unknown``)."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(table).where(key == credential_id, table.c.revoked_at.is_(None)).values(revoked_at=at)
        ).rowcount
        if changed:
            audit.append(conn, actor=OPERATOR, action=action, purpose=PURPOSE, reference=credential_id, at=at)
        row = conn.execute(select(table).where(key == credential_id)).first()
    if row is None:
        raise RecordNotFound(unknown)
    return row


def create(
    engine: Engine, *, role: Role, label: str, division: str = "", now: datetime | None = None
) -> tuple[str, TokenInfo]:
    """Create a token; return it (to show once, never to store) with its record."""
    label, division = check_label(label), check_scope(role, division)
    token, token_id = new_token(), "ct-" + secrets.token_hex(8)
    at = _utc(now) or datetime.now(UTC)
    values = {
        "token_id": token_id,
        "token_hash": hash_token(token),
        "role": role.value,
        "label": label,
        "division": division,
        "created_at": at,
        "revoked_at": None,
    }
    with engine.begin() as conn:
        record_credential(
            conn, county_tokens, values, action=audit.Action.COUNTY_TOKEN_CREATED, reference=token_id, role=role, at=at
        )
    return token, TokenInfo(token_id, role, label, division, at, None)


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """Every token, active or revoked, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(county_tokens).order_by(county_tokens.c.created_at, county_tokens.c.token_id))
        return [_info(r) for r in rows]


def revoke(engine: Engine, token_id: str, *, now: datetime | None = None) -> TokenInfo:
    """Revoke a token by id (``RecordNotFound`` for an unknown id). Revoking twice keeps the first time."""
    if not _TOKEN_ID.match(token_id):
        raise InputError("a token id looks like ct- followed by 16 hex digits")
    at = _utc(now) or datetime.now(UTC)
    row = revoke_credential(
        engine,
        county_tokens,
        county_tokens.c.token_id,
        token_id,
        action=audit.Action.COUNTY_TOKEN_REVOKED,
        at=at,
        unknown="no county API token with this id",
    )
    return _info(row)


def authenticate(engine: Engine, token: str | None) -> TokenInfo:
    """The active token's record, or ``TokenMissing`` / ``TokenInvalid`` (see the module docstring)."""
    if not token:
        raise TokenMissing()
    if not _TOKEN.match(token):
        raise TokenInvalid()
    with engine.connect() as conn:
        row = conn.execute(select(county_tokens).where(county_tokens.c.token_hash == hash_token(token))).first()
    if row is None:
        raise TokenInvalid()
    info = _info(row)
    if not info.active:
        raise TokenInvalid()
    return info
