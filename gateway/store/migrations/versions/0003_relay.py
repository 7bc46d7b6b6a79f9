"""Relay: the items a relay node holds for other nodes (store-and-forward).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "relay_items",
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("item", sa.LargeBinary(), nullable=True),
        sa.Column("receipt", sa.LargeBinary(), nullable=True),
        sa.Column("refusal_status", sa.Integer(), nullable=True),
        sa.Column("refusal_code", sa.String(64), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sender", "message_id", name="pk_relay_items"),
    )
    op.create_index("ix_relay_items_recipient_state_pushed_at", "relay_items", ["recipient", "state", "pushed_at"])


def downgrade() -> None:
    op.drop_index("ix_relay_items_recipient_state_pushed_at", table_name="relay_items")
    op.drop_table("relay_items")
