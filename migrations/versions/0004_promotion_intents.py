"""Promotion intents: each move of the production alias is recorded before it happens and resolved after it.

A promotion, rollback or realignment commits a ``pending`` row here before the vector store's alias moves, and
resolves it (``completed`` or ``aborted``) in the transaction that moves the production alias row and writes the
audit event. A process killed in between leaves the row pending for ``towerctl models reconcile``. The unique
(model_id, pending) allows one pending intent per model: ``pending`` is TRUE while pending and NULL afterwards.

The downgrade drops the table, pending intents included: resolve them with ``towerctl models reconcile`` first.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "promotion_intents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("from_collection", sa.String(length=256), nullable=True),
        sa.Column("to_collection", sa.String(length=256), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("pending", sa.Boolean(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("audit_event_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "action IN ('promote', 'rollback', 'realign')", name=op.f("ck_promotion_intents_action")
        ),
        sa.CheckConstraint("state IN ('pending', 'completed', 'aborted')", name=op.f("ck_promotion_intents_state")),
        sa.CheckConstraint(
            "(state = 'pending' AND pending = true) OR (state <> 'pending' AND pending IS NULL)",
            name=op.f("ck_promotion_intents_pending_flag"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_promotion_intents_model_id_models"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["audit_event_id"],
            ["audit_log.id"],
            name=op.f("fk_promotion_intents_audit_event_id_audit_log"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_intents")),
        sa.UniqueConstraint("model_id", "pending", name=op.f("uq_promotion_intents_model_id_pending")),
    )


def downgrade() -> None:
    op.drop_table("promotion_intents")
