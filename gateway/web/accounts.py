"""Staff accounts, one-time sign-in codes and sessions of the web inbox; secrets stored only as hashes.

An account (``ws-`` and 16 hex digits) has a user name, a display name, a role
(:class:`StaffRole`: registration-place staff act on the cases registered in their county,
case officers follow the cases accepted in theirs) and the six-digit county it belongs to. It signs
in with a password (scrypt, salt and parameters stored in the hash string) or with a **one-time
sign-in code** the node operator issues (``tongban web code``): 80 random bits, valid for
:data:`CODE_LIFETIME`, usable once, stored as a domain-separated SHA-256.

:func:`sign_in` checks, in order, and answers every failure with the one error
:class:`~gateway.errors.SignInRefused` (unknown user, disabled, wrong secret, used or expired code
look the same), except a locked account: after :data:`MAX_FAILURES` consecutive failures the account
is locked for :data:`LOCK_TIME` (:class:`~gateway.errors.SignInThrottled`, even with the right
secret). An unknown user name still costs one scrypt, so timing does not tell which names exist.
Every sign-in, failed sign-in and sign-out is in the audit trail (actor: the account id, or
``anonymous`` for an unknown name; never the name typed).

A session id is 256 random bits, sent once in the cookie and stored as a hash; a session ends after
:data:`IDLE_TIME` without a request or :data:`SESSION_TIME` after sign-in, whichever comes first.
Each session has its own CSRF token, which every form of the inbox carries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from gateway import audit
from gateway.errors import GatewayError, InputError, RecordNotFound, SessionInvalid, SignInRefused, SignInThrottled
from gateway.store.schema import web_sessions, web_signin_codes, web_staff

PURPOSE = "web_inbox"  # the audit purpose of the inbox's entries
OPERATOR = "operator"
ANONYMOUS = "anonymous"
MAX_FAILURES = 5
LOCK_TIME = timedelta(minutes=15)
CODE_LIFETIME = timedelta(hours=24)
IDLE_TIME = timedelta(minutes=30)
SESSION_TIME = timedelta(hours=8)
MIN_PASSWORD = 12
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: staff type it from a slip of paper
_CODE_DOMAIN = b"tongban.web-signin-code.v1\x00"
_SESSION_DOMAIN = b"tongban.web-session.v1\x00"
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


class StaffRole(StrEnum):
    REGISTRATION_STAFF = "registration_staff"  # 户籍地工作人员: inbox and decisions
    CASE_OFFICER = "case_officer"  # 受理地经办人员: follows the cases accepted in the county

    @property
    def label_zh(self) -> str:
        return {"registration_staff": "户籍地工作人员", "case_officer": "受理地经办人员"}[self.value]


@dataclass(frozen=True)
class Staff:
    staff_id: str
    username: str
    display_name: str
    role: StaffRole
    division: str
    has_password: bool
    locked_until: datetime | None
    created_at: datetime
    disabled_at: datetime | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class Session:
    """A signed-in session: ``session_id`` is only known when it is created (it goes in the cookie)."""

    session_id: str
    staff: Staff
    csrf_token: str
    expires_at: datetime


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return _utc(now) or datetime.now(UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(_CODE_DOMAIN + normalise_code(code).encode("ascii")).digest()


def _session_hash(session_id: str) -> bytes:
    return hashlib.sha256(_SESSION_DOMAIN + session_id.encode("ascii")).digest()


def normalise_code(code: str) -> str:
    """A sign-in code as typed (any case, spaces or dashes) to its canonical ``XXXX-XXXX-XXXX-XXXX``."""
    raw = "".join(ch for ch in code.upper() if ch.isascii() and ch.isalnum())
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def looks_like_code(secret: str) -> bool:
    raw = normalise_code(secret).replace("-", "")
    return len(raw) == 16 and all(ch in _CODE_ALPHABET for ch in raw)


def _staff(r: Any) -> Staff:
    return Staff(
        staff_id=r.staff_id,
        username=r.username,
        display_name=r.display_name,
        role=StaffRole(r.role),
        division=r.division,
        has_password=r.password_hash is not None,
        locked_until=_utc(r.locked_until),
        created_at=_utc(r.created_at) or r.created_at,
        disabled_at=_utc(r.disabled_at),
    )


def _check_username(username: str) -> str:
    username = username.strip()
    if not (3 <= len(username) <= 40) or not all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in username):
        raise InputError("a user name is 3-40 characters of a-z, 0-9, '.', '_' and '-'")
    return username.lower()


def _check_display_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 40 or not name.isprintable():
        raise InputError("a display name is 1-40 printable characters")
    return name


def _check_division(division: str) -> str:
    if not (len(division) == 6 and division.isascii() and division.isdigit()):
        raise InputError("a staff account's division is a six-digit county code")
    return division


def check_password_rule(password: str) -> str:
    if len(password) < MIN_PASSWORD or len(password) > 200:
        raise InputError(f"a password is {MIN_PASSWORD}-200 characters")
    return password


def create_staff(
    engine: Engine,
    *,
    username: str,
    display_name: str,
    role: StaffRole,
    division: str,
    password: str | None = None,
    now: datetime | None = None,
) -> Staff:
    """Create an account (``InputError`` for a bad field or a user name already taken)."""
    username, display_name = _check_username(username), _check_display_name(display_name)
    division = _check_division(division)
    hashed = hash_password(check_password_rule(password)) if password is not None else None
    at, staff_id = _now(now), "ws-" + secrets.token_hex(8)
    with engine.begin() as conn:
        if conn.execute(select(web_staff.c.staff_id).where(web_staff.c.username == username)).first() is not None:
            raise InputError("this user name is taken")
        conn.execute(
            insert(web_staff).values(
                staff_id=staff_id, username=username, display_name=display_name, role=role.value,
                division=division, password_hash=hashed, failed_count=0, locked_until=None, created_at=at,
                disabled_at=None,
            )
        )  # fmt: skip
        audit.append(
            conn, actor=OPERATOR, action="web_staff_created", purpose=PURPOSE, reference=staff_id,
            detail=f"role={role.value} division={division}", at=at,
        )  # fmt: skip
    return find(engine, username)


def find(engine: Engine, username_or_id: str) -> Staff:
    """An account by user name or id (``RecordNotFound``)."""
    t = web_staff
    key = username_or_id.strip().lower()
    with engine.connect() as conn:
        row = conn.execute(select(t).where((t.c.username == key) | (t.c.staff_id == key))).first()
    if row is None:
        raise RecordNotFound("no staff account with this user name or id")
    return _staff(row)


def list_staff(engine: Engine) -> list[Staff]:
    t = web_staff
    with engine.connect() as conn:
        return [_staff(r) for r in conn.execute(select(t).order_by(t.c.created_at, t.c.staff_id))]


def set_password(engine: Engine, username_or_id: str, password: str, *, now: datetime | None = None) -> Staff:
    staff, hashed, at = find(engine, username_or_id), hash_password(check_password_rule(password)), _now(now)
    t = web_staff
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.staff_id == staff.staff_id).values(password_hash=hashed))
        audit.append(conn, actor=OPERATOR, action="web_password_set", purpose=PURPOSE, reference=staff.staff_id, at=at)
    return find(engine, staff.staff_id)


def disable(engine: Engine, username_or_id: str, *, now: datetime | None = None) -> Staff:
    """Disable an account and end its sessions (disabling twice keeps the first time)."""
    staff, at, t = find(engine, username_or_id), _now(now), web_staff
    with engine.begin() as conn:
        conn.execute(update(t).where(t.c.staff_id == staff.staff_id, t.c.disabled_at.is_(None)).values(disabled_at=at))
        conn.execute(delete(web_sessions).where(web_sessions.c.staff_id == staff.staff_id))
        audit.append(
            conn, actor=OPERATOR, action="web_staff_disabled", purpose=PURPOSE, reference=staff.staff_id, at=at
        )
    return find(engine, staff.staff_id)


def issue_code(engine: Engine, username_or_id: str, *, now: datetime | None = None) -> tuple[str, datetime]:
    """A one-time sign-in code for an active account, and when it expires (shown once, stored hashed)."""
    staff, at = find(engine, username_or_id), _now(now)
    if not staff.active:
        raise InputError("this staff account is disabled")
    code = normalise_code("".join(secrets.choice(_CODE_ALPHABET) for _ in range(16)))
    expires = at + CODE_LIFETIME
    with engine.begin() as conn:
        conn.execute(
            insert(web_signin_codes).values(
                code_hash=_code_hash(code), staff_id=staff.staff_id, created_at=at, expires_at=expires, used_at=None
            )
        )
        audit.append(
            conn, actor=OPERATOR, action="web_code_issued", purpose=PURPOSE, reference=staff.staff_id, at=at
        )  # fmt: skip
    return code, expires


def sign_in(engine: Engine, username: str, secret: str, *, now: datetime | None = None) -> Session:
    """Check a user name with a password or a one-time code; a new session, or an error (module docstring).

    A refusal is raised only after its audit entry (and the failure count) are committed.
    """
    at = _now(now)
    with engine.begin() as conn:
        outcome = _attempt(conn, username.strip().lower(), secret, at)
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


def _attempt(conn: Connection, key: str, secret: str, at: datetime) -> Session | GatewayError:
    t, c = web_staff, web_signin_codes
    row = conn.execute(select(t).where(t.c.username == key)).first() if key else None
    if row is None:
        check_password(secret, _DUMMY_HASH)  # the same cost as a known name
        audit.append(
            conn, actor=ANONYMOUS, action="web_signin_failed", purpose=PURPOSE, reference="unknown_user", at=at
        )
        return SignInRefused()
    staff = _staff(row)
    if staff.locked_until is not None and staff.locked_until > at:
        audit.append(
            conn, actor=staff.staff_id, action="web_signin_throttled", purpose=PURPOSE, reference=staff.staff_id, at=at
        )
        return SignInThrottled()
    ok = False
    if staff.active and looks_like_code(secret):
        used = conn.execute(
            update(c)
            .where(
                c.c.code_hash == _code_hash(secret),
                c.c.staff_id == staff.staff_id,
                c.c.used_at.is_(None),
                c.c.expires_at > at,
            )
            .values(used_at=at)
        ).rowcount
        ok = used == 1
    elif row.password_hash is not None:
        ok = check_password(secret, row.password_hash) and staff.active
    else:
        check_password(secret, _DUMMY_HASH)
    if ok:
        conn.execute(update(t).where(t.c.staff_id == staff.staff_id).values(failed_count=0, locked_until=None))
        return _open_session(conn, staff, at)
    failures = int(row.failed_count) + 1
    locked = at + LOCK_TIME if failures >= MAX_FAILURES else None
    conn.execute(
        update(t)
        .where(t.c.staff_id == staff.staff_id)
        .values(failed_count=0 if locked else failures, locked_until=locked)
    )
    audit.append(
        conn, actor=staff.staff_id, action="web_signin_failed", purpose=PURPOSE, reference=staff.staff_id,
        detail="locked" if locked else f"failures={failures}", at=at,
    )  # fmt: skip
    return SignInRefused()


def _open_session(conn: Connection, staff: Staff, at: datetime) -> Session:
    session_id, csrf = _b64(secrets.token_bytes(32)), secrets.token_hex(32)
    expires = at + SESSION_TIME
    conn.execute(
        insert(web_sessions).values(
            session_hash=_session_hash(session_id), staff_id=staff.staff_id, csrf_token=csrf, created_at=at,
            expires_at=expires, last_seen_at=at,
        )
    )  # fmt: skip
    audit.append(conn, actor=staff.staff_id, action="web_signin", purpose=PURPOSE, reference=staff.staff_id, at=at)
    return Session(session_id, staff, csrf, expires)


def session(engine: Engine, session_id: str | None, *, now: datetime | None = None) -> Session:
    """The live session of a cookie value, touched (``SessionInvalid`` if none, ended or disabled)."""
    if not session_id or len(session_id) > 64:
        raise SessionInvalid()
    at, s, t = _now(now), web_sessions, web_staff
    h = _session_hash(session_id)
    with engine.begin() as conn:
        row = conn.execute(select(s).where(s.c.session_hash == h)).first()
        if row is None:
            raise SessionInvalid()
        expires, last = _utc(row.expires_at) or at, _utc(row.last_seen_at) or at  # NOT NULL columns
        staff_row = conn.execute(select(t).where(t.c.staff_id == row.staff_id)).first()
        ended = expires <= at or last + IDLE_TIME <= at or staff_row is None or staff_row.disabled_at is not None
        if ended:
            conn.execute(delete(s).where(s.c.session_hash == h))
        else:
            conn.execute(update(s).where(s.c.session_hash == h).values(last_seen_at=at))
    if ended or staff_row is None:
        raise SessionInvalid()
    return Session(session_id, _staff(staff_row), row.csrf_token, expires)


def sign_out(engine: Engine, session_id: str, *, now: datetime | None = None) -> None:
    at, s = _now(now), web_sessions
    with engine.begin() as conn:
        row = conn.execute(select(s.c.staff_id).where(s.c.session_hash == _session_hash(session_id))).first()
        if row is not None:
            conn.execute(delete(s).where(s.c.session_hash == _session_hash(session_id)))
            audit.append(
                conn, actor=row.staff_id, action="web_signout", purpose=PURPOSE, reference=row.staff_id, at=at
            )  # fmt: skip
