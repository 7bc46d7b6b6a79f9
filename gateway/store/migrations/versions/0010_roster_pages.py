"""Roster pages read off one index: (period, kind, registration_division, record_id).

A roster send pages one registration division's migrants in record-id order (keyset pages,
``page_ranges`` and ``read_page``). With only (period, kind) and (period, registration_division)
indexes, each page boundary walked the primary key filtering rows — a walk over the whole period
per page, for every division. This index answers each boundary from the index alone and each page
by a range of it. It starts with (period, kind), so it replaces that index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_NEW = "ix_child_records_period_kind_registration_division_record_id"
_OLD = "ix_child_records_period_kind"


def upgrade() -> None:
    op.create_index(_NEW, "child_records", ["period", "kind", "registration_division", "record_id"])
    op.drop_index(_OLD, table_name="child_records")


def downgrade() -> None:
    op.create_index(_OLD, "child_records", ["period", "kind"])
    op.drop_index(_NEW, table_name="child_records")
