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
    Index(None, "period", "kind"),
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
    Column("key_id", String(40), nullable=False),
    Column("envelope_sealed", LargeBinary, nullable=False),
    Column("receipt", LargeBinary, nullable=True),  # the receiver's signed receipt (no personal data)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Index(None, "status", "peer", "next_attempt_at"),
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
