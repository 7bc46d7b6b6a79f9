"""Outbox envelopes in a table of their own.

An outbox row is updated several times on its way (claimed, retried, delivered with its receipt);
its sealed envelope never changes. SQLite rewrites the whole row on every update, so with roster
batches of ~180 KB inline every claim and every delivery rewrote each envelope: about 45 % of a
roster's delivery time on SQLite (2026-12-06, 20,000 records). The envelope (with the id of the key
that sealed it) moves to ``outbox_envelopes``, keyed by the message id; the data is copied, not
re-sealed (the sealing context is the message id, which does not change).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_envelopes",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("envelope_sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox_envelopes"),
    )
    op.execute(
        "INSERT INTO outbox_envelopes (message_id, key_id, envelope_sealed) "
        "SELECT message_id, key_id, envelope_sealed FROM outbox"
    )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("envelope_sealed")
        batch.drop_column("key_id")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("key_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("envelope_sealed", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE outbox SET "
        "key_id = (SELECT e.key_id FROM outbox_envelopes e WHERE e.message_id = outbox.message_id), "
        "envelope_sealed = (SELECT e.envelope_sealed FROM outbox_envelopes e WHERE e.message_id = outbox.message_id)"
    )
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("key_id", existing_type=sa.String(40), nullable=False)
        batch.alter_column("envelope_sealed", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table("outbox_envelopes")
