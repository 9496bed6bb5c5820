"""Category-alignment reports: alignment_reports (one per version and run) and their alignment_segments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alignment_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("run", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("against_version", sa.Integer(), nullable=True),
        sa.Column("collection", sa.String(length=256), nullable=False),
        sa.Column("major_category", sa.String(length=256), nullable=True),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("n_queries", sa.Integer(), nullable=False),
        sa.Column("n_skipped", sa.Integer(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("breaches", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.CheckConstraint("run >= 1", name=op.f("ck_alignment_reports_run_positive")),
        sa.CheckConstraint("k >= 1", name=op.f("ck_alignment_reports_k_positive")),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_alignment_reports_model_version_id_model_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alignment_reports")),
        sa.UniqueConstraint("model_version_id", "run", name=op.f("uq_alignment_reports_model_version_id_run")),
    )
    op.create_index(
        op.f("ix_alignment_reports_model_version_id"), "alignment_reports", ["model_version_id"], unique=False
    )
    op.create_table(
        "alignment_segments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("segment", sa.String(length=256), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("interaction_share", sa.Float(), nullable=False),
        sa.Column("alignment_distance", sa.Float(), nullable=False),
        sa.Column("relative_alignment", sa.Float(), nullable=True),
        sa.Column("mean_norm", sa.Float(), nullable=False),
        sa.Column("centroid_norm", sa.Float(), nullable=False),
        sa.Column("n_queries", sa.Integer(), nullable=False),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.Column("ndcg", sa.Float(), nullable=True),
        sa.Column("coverage", sa.Float(), nullable=False),
        sa.Column("deltas", sa.JSON(), nullable=False),
        sa.CheckConstraint("kind IN ('category', 'popularity')", name=op.f("ck_alignment_segments_kind")),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["alignment_reports.id"],
            name=op.f("fk_alignment_segments_report_id_alignment_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alignment_segments")),
        sa.UniqueConstraint("report_id", "kind", "segment", name=op.f("uq_alignment_segments_report_id_kind_segment")),
    )
    op.create_index(op.f("ix_alignment_segments_report_id"), "alignment_segments", ["report_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alignment_segments_report_id"), table_name="alignment_segments")
    op.drop_table("alignment_segments")
    op.drop_index(op.f("ix_alignment_reports_model_version_id"), table_name="alignment_reports")
    op.drop_table("alignment_reports")
