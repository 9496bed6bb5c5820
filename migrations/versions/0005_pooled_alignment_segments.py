"""Pooled alignment segments: the segment kind ``pooled`` and the ``pooled`` flag of a category segment.

An alignment report judges the categories with too few items or test queries together, as one segment of kind
``pooled`` (named "small categories"); each such category keeps its own row, flagged ``pooled``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = "kind IN ('category', 'popularity')"
KINDS_AFTER = "kind IN ('category', 'popularity', 'pooled')"


def upgrade() -> None:
    with op.batch_alter_table("alignment_segments") as batch:
        batch.add_column(sa.Column("pooled", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.drop_constraint(op.f("ck_alignment_segments_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_alignment_segments_kind"), KINDS_AFTER)


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM alignment_segments WHERE kind = 'pooled'"))
    with op.batch_alter_table("alignment_segments") as batch:
        batch.drop_constraint(op.f("ck_alignment_segments_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_alignment_segments_kind"), KINDS_BEFORE)
        batch.drop_column("pooled")
