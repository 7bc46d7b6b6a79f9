"""Custody: each case's chain of signed events, and the verified events held beside it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _event_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("signer", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "custody_cases",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name="pk_custody_cases"),
    )
    op.create_table(
        "custody_events",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("predecessor", sa.String(64), nullable=True),
        *_event_columns(),
        sa.PrimaryKeyConstraint("case_id", "seq", name="pk_custody_events"),
        sa.UniqueConstraint("case_id", "hash", name="uq_custody_events_case_id_hash"),
    )
    op.create_table(
        "custody_held",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("predecessor", sa.String(64), nullable=True),
        *_event_columns(),
        sa.PrimaryKeyConstraint("case_id", "hash", name="pk_custody_held"),
    )
    op.create_index("ix_custody_held_case_id_predecessor", "custody_held", ["case_id", "predecessor"])


def downgrade() -> None:
    op.drop_index("ix_custody_held_case_id_predecessor", table_name="custody_held")
    op.drop_table("custody_held")
    op.drop_table("custody_events")
    op.drop_table("custody_cases")
