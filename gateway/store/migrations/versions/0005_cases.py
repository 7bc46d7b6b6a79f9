"""Cases: cross-province cases, their events, documents (sealed chunks) and overdue alerts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("programme", sa.String(32), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("accepting_node", sa.String(64), nullable=False),
        sa.Column("accepting_division", sa.String(6), nullable=False),
        sa.Column("registration_node", sa.String(64), nullable=False),
        sa.Column("registration_division", sa.String(6), nullable=False),
        sa.Column("accepted_on", sa.Date(), nullable=False),
        sa.Column("child_index", sa.LargeBinary(32), nullable=False),
        sa.Column("flag", sa.String(40), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("application_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name="pk_cases"),
    )
    op.create_index("ix_cases_status", "cases", ["status"])
    op.create_index("ix_cases_child_index_programme", "cases", ["child_index", "programme"])
    op.create_table(
        "case_events",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("facts_sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_case_events"),
    )
    op.create_table(
        "case_documents",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "document_id", name="pk_case_documents"),
    )
    op.create_table(
        "case_chunks",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("data_sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "document_id", "idx", name="pk_case_chunks"),
    )
    op.create_table(
        "case_alerts",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("step", sa.String(24), nullable=False),
        sa.Column("due", sa.Date(), nullable=False),
        sa.Column("province", sa.String(2), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "step", "due", name="pk_case_alerts"),
    )


def downgrade() -> None:
    op.drop_table("case_alerts")
    op.drop_table("case_chunks")
    op.drop_table("case_documents")
    op.drop_table("case_events")
    op.drop_index("ix_cases_child_index_programme", table_name="cases")
    op.drop_index("ix_cases_status", table_name="cases")
    op.drop_table("cases")
