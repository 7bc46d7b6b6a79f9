"""Reconciliation: the findings of each monitoring period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_findings",
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("peer", sa.String(64), nullable=False),
        sa.Column("peer_division", sa.String(6), nullable=False),
        sa.Column("record_ref", sa.String(36), nullable=False),
        sa.Column("peer_ref", sa.String(64), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("period", "seq", name="pk_reconcile_findings"),
    )
    op.create_index("ix_reconcile_findings_period_code", "reconcile_findings", ["period", "code"])


def downgrade() -> None:
    op.drop_index("ix_reconcile_findings_period_code", table_name="reconcile_findings")
    op.drop_table("reconcile_findings")
