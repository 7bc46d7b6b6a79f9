"""The declared database schema (SQLAlchemy Core).

Migrations in ``gateway/store/migrations`` must produce exactly this schema; a test compares the
migrated database with this metadata on SQLite and PostgreSQL.

Personal data lives only inside ``*_sealed`` columns (AES-GCM, see ``keyring``), each beside the
id of the key that sealed it. Plain columns hold only what routing and counting need: division
codes, the monitoring period, the child's kind, provenance that names a source but no person.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

# Stable constraint names, so migrations can address them on every database.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

node_meta = Table(
    "node_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
)

child_records = Table(
    "child_records",
    metadata,
    # A county system's record id is stable across periods; each period's ledger holds it once.
    Column("period", String(16), primary_key=True),
    Column("record_id", String(36), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("registration_division", String(6), nullable=False),
    Column("residence_division", String(6), nullable=False),
    # HMAC of the normalised ID number under the node's index key; NULL when the ID is missing.
    Column("id_index", LargeBinary(32), nullable=True),
    Column("key_id", String(40), nullable=False),
    Column("pii_sealed", LargeBinary, nullable=False),
    Column("source", String(200), nullable=False),
    Column("source_row", Integer, nullable=True),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("period", "id_index"),
    # A roster's keyset pages: one registration division's children of one kind in record-id
    # order (migration 0010; it also serves every (period, kind) query).
    Index(None, "period", "kind", "registration_division", "record_id"),
    Index(None, "period", "registration_division"),
    Index(None, "period", "residence_division"),
)


# --- exchange (SPEC §3, §4) ----------------------------------------------------------------------

# Messages this node has accepted for delivery. A row is written in the same transaction as the
# business write that produced it ("accepted" means durable); the delivery loop claims rows,
# delivers them and stores the receiver's signed receipt. The envelope is sealed at rest.
outbox = Table(
    "outbox",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("peer", String(64), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # queued | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("last_error", String(200), nullable=True),
    Column("receipt", LargeBinary, nullable=True),  # the receiver's signed receipt (no personal data)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Index(None, "status", "peer", "next_attempt_at"),
)

# The sealed envelope of each outbox row, written with it and never changed (migration 0011). It
# lives apart because the outbox row changes several times on its way (claimed, retried,
# delivered), and SQLite rewrites a whole row on every update: with a roster batch's ~180 KB
# envelope inline, claiming and recording a roster's delivery rewrote every envelope twice.
outbox_envelopes = Table(
    "outbox_envelopes",
    metadata,
    Column("message_id", String(36), primary_key=True),  # the outbox row's
    Column("key_id", String(40), nullable=False),
    Column("envelope_sealed", LargeBinary, nullable=False),
)

# Messages this node has received and verified. The primary key is the message id: a repeated id
# returns the stored receipt and changes nothing (idempotent receiving, replay protection).
inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("payload_type", String(80), nullable=False),
    Column("envelope_sha256", LargeBinary(32), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("envelope_sealed", LargeBinary, nullable=False),
    Column("receipt", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=True),
    Index(None, "purpose", "processed_at"),
)

# The tamper-evident audit trail of every send, receipt and read of personal data: each entry
# names the previous entry's hash. It holds references (message ids, record ids), never values.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("reference", String(80), nullable=False),
    Column("detail", String(200), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("entry_hash", LargeBinary(32), nullable=False),
)

# --- relay (SPEC §7) -------------------------------------------------------------------------------

# Items a node serving the relay role holds for other nodes (store-and-forward). Only routing facts
# are plain; ``item`` is an HPKE ciphertext sealed by the sender to the recipient node, which the
# relay cannot open. A row goes ``held`` → ``receipted`` (the recipient's signed receipt, kept for
# the sender; the item is dropped) or ``refused`` (the recipient's refusal code; the item is
# dropped, and the sender's next push re-queues a fresh one). Unused on nodes that serve no relay.
relay_items = Table(
    "relay_items",
    metadata,
    Column("sender", String(64), primary_key=True),
    Column("message_id", String(36), primary_key=True),
    Column("recipient", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # held | receipted | refused
    Column("item", LargeBinary, nullable=True),  # the sealed envelope while held
    Column("receipt", LargeBinary, nullable=True),  # the recipient's signed receipt (no personal data)
    Column("refusal_status", Integer, nullable=True),
    Column("refusal_code", String(64), nullable=True),
    Column("pushed_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Index(None, "recipient", "state", "pushed_at"),
)

# --- reconciliation (SPEC §5) -----------------------------------------------------------------------

# What a period's reconciliation found (gateway.reconcile.findings): codes and references only —
# this node's record id, the peer's notice/registration reference or roster id, the peer node and
# division — never a name, an ID number or a birth date. A new run for a period replaces all of
# that period's rows in one transaction.
reconcile_findings = Table(
    "reconcile_findings",
    metadata,
    Column("period", String(16), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),  # order within the period's run
    Column("code", String(40), nullable=False),
    Column("role", String(16), nullable=False),  # registration | residence | ledger
    Column("side", String(8), nullable=False),  # local | peer | both
    Column("peer", String(64), nullable=False),  # "" when no node serves the peer division
    Column("peer_division", String(6), nullable=False),
    Column("record_ref", String(36), nullable=False),  # this node's record id, or ""
    Column("peer_ref", String(64), nullable=False),
    Column("detail", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "period", "code"),
)


# --- cases (SPEC §6) --------------------------------------------------------------------------------

# One row per cross-province case this node takes part in, as accepting (residence) or registration
# node (``side``). The application and the child's identity are sealed (``application_sealed``, AAD
# ``cases\0<case id>``); the plain columns are the inbox's index: codes, node ids, divisions, dates.
# ``child_index`` is this node's blind index of the child's ID number (HMAC under the keyring's index
# key), so two applications by one child are found without storing the number.
cases = Table(
    "cases",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("side", String(16), nullable=False),  # residence | registration
    Column("programme", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("accepting_node", String(64), nullable=False),
    Column("accepting_division", String(6), nullable=False),
    Column("registration_node", String(64), nullable=False),
    Column("registration_division", String(6), nullable=False),
    Column("accepted_on", Date, nullable=False),
    Column("child_index", LargeBinary(32), nullable=False),
    Column("flag", String(40), nullable=True),  # e.g. duplicate_application
    Column("key_id", String(40), nullable=False),
    Column("application_sealed", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "status"),
    Index(None, "child_index", "programme"),
)

# A case's lifecycle events in order (``seq`` 1, 2, …): both nodes hold the same rows. The action's
# facts (material items, payment month, reason code and text) are sealed: a reason text is free text.
case_events = Table(
    "case_events",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("action", String(24), nullable=False),
    Column("role", String(24), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("facts_sealed", LargeBinary, nullable=False),
)

# Evidence documents of a case: the reference (id, kind, SHA-256, size, chunk count) and its state:
# ``pending`` (chunks arriving), ``complete`` (every chunk here and the whole checked by SHA-256),
# ``refused`` (the bytes did not match: chunks dropped, never kept as good).
case_documents = Table(
    "case_documents",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("document_id", String(128), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

# The bytes of the documents, sealed chunk by chunk (AAD ``case_chunks\0<case>\0<document>\0<index>``).
case_chunks = Table(
    "case_chunks",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("document_id", String(128), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("key_id", String(40), nullable=False),
    Column("data_sealed", LargeBinary, nullable=False),
)

# 督办: each overdue step of a case this node found, once per (case, step, due day).
case_alerts = Table(
    "case_alerts",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("step", String(24), primary_key=True),
    Column("due", Date, primary_key=True),
    Column("province", String(2), nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
)


# --- custody (SPEC §6) ------------------------------------------------------------------------------

# One row per case whose chain this node holds from its genesis: the lock row appends take
# (``SELECT … FOR UPDATE`` on PostgreSQL) and the chain's head and length, so that an append is a
# conditional update on the head it was checked against. Who holds the case is never stored: it is
# folded from the events (gateway.custody.chain).
custody_cases = Table(
    "custody_cases",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("head", String(64), nullable=False),
    Column("length", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The chain itself, append-only, in chain order (``seq`` 0 is the genesis): each event exactly as
# signed. The primary key (case_id, seq) means two processes can never both append on one head.
custody_events = Table(
    "custody_events",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("predecessor", String(64), nullable=True),
    Column("signer", String(80), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("case_id", "hash"),
)

# Verified events held beside the chain: ``pending`` (the predecessor has not arrived yet),
# ``equivocation`` (its signer signed another event on the same predecessor: with that event, a
# proof), ``conflict`` (another signer's event holds its place, or it is illegal where it stands).
custody_held = Table(
    "custody_held",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("hash", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("predecessor", String(64), nullable=True),
    Column("signer", String(80), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("algorithm", String(32), nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Index(None, "case_id", "predecessor"),
)


# --- county API tokens (SPEC §7) ---------------------------------------------------------------------

# Callers of the county API. Only a hash of each token is stored (gateway.county.auth explains which);
# a revoked token keeps its row, so `tongban county token list` shows who had access until when.
county_tokens = Table(
    "county_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("label", String(80), nullable=False),
    Column("division", String(6), nullable=False),  # "" when the role has no division scope
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Client certificates of the node's county CA (gateway.county.certs): the certificate's SHA-256
# fingerprint, never its key; the role and scope the interceptor applies come from here.
county_certs = Table(
    "county_certs",
    metadata,
    Column("cert_id", String(32), primary_key=True),
    Column("fingerprint", LargeBinary(32), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("label", String(80), nullable=False),
    Column("division", String(6), nullable=False),  # "" when the role has no division scope
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# --- the web inbox (gateway.web): staff accounts, one-time sign-in codes, sessions ------------------
# Secrets are stored only as hashes: passwords with scrypt (salt and parameters in the string),
# sign-in codes and session ids with domain-separated SHA-256 (they carry 256 random bits).
web_staff = Table(
    "web_staff",
    metadata,
    Column("staff_id", String(32), primary_key=True),  # ws- and 16 hex digits
    Column("username", String(40), nullable=False, unique=True),
    Column("display_name", String(40), nullable=False),
    Column("role", String(32), nullable=False),  # registration_staff or case_officer
    Column("division", String(6), nullable=False),  # the county whose cases the account may open
    Column("password_hash", String(200), nullable=True),  # scrypt$…; NULL: sign in with a one-time code
    Column("failed_count", Integer, nullable=False),  # failed sign-ins since the last success
    Column("locked_until", DateTime(timezone=True), nullable=True),  # sign-in throttling
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
)

web_signin_codes = Table(
    "web_signin_codes",
    metadata,
    Column("code_hash", LargeBinary(32), primary_key=True),
    Column("staff_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index(None, "staff_id"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("session_hash", LargeBinary(32), primary_key=True),
    Column("staff_id", String(32), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),  # absolute limit
    Column("last_seen_at", DateTime(timezone=True), nullable=False),  # idle limit counts from here
    Index(None, "staff_id"),
)
