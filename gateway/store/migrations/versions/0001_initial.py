"""Initial schema: node metadata and the encrypted child ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_node_meta"),
    )
    op.create_table(
        "child_records",
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("registration_division", sa.String(6), nullable=False),
        sa.Column("residence_division", sa.String(6), nullable=False),
        sa.Column("id_index", sa.LargeBinary(32), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("pii_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("source_row", sa.Integer(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("period", "record_id", name="pk_child_records"),
        sa.UniqueConstraint("period", "id_index", name="uq_child_records_period_id_index"),
    )
    op.create_index("ix_child_records_period_kind", "child_records", ["period", "kind"])
    op.create_index(
        "ix_child_records_period_registration_division",
        "child_records",
        ["period", "registration_division"],
    )
    op.create_index("ix_child_records_period_residence_division", "child_records", ["period", "residence_division"])


def downgrade() -> None:
    op.drop_table("child_records")
    op.drop_table("node_meta")
