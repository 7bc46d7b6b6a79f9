"""The web inbox: staff accounts, one-time sign-in codes and sessions (secrets stored as hashes).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_staff",
        sa.Column("staff_id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(40), nullable=False),
        sa.Column("display_name", sa.String(40), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("division", sa.String(6), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("staff_id", name="pk_web_staff"),
        sa.UniqueConstraint("username", name="uq_web_staff_username"),
    )
    op.create_table(
        "web_signin_codes",
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("staff_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name="pk_web_signin_codes"),
    )
    op.create_index("ix_web_signin_codes_staff_id", "web_signin_codes", ["staff_id"])
    op.create_table(
        "web_sessions",
        sa.Column("session_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("staff_id", sa.String(32), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_staff_id", "web_sessions", ["staff_id"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_staff_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index("ix_web_signin_codes_staff_id", table_name="web_signin_codes")
    op.drop_table("web_signin_codes")
    op.drop_table("web_staff")
