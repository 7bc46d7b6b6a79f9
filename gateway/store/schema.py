"""The declared database schema (SQLAlchemy Core).

Migrations in ``gateway/store/migrations`` must produce exactly this schema; a test compares the
migrated database with this metadata on SQLite and PostgreSQL.

Personal data lives only inside ``*_sealed`` columns (AES-GCM, see ``keyring``), each beside the
id of the key that sealed it. Plain columns hold only what routing and counting need: division
codes, the monitoring period, the child's kind, provenance that names a source but no person.
"""

from __future__ import annotations

from sqlalchemy import (
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
