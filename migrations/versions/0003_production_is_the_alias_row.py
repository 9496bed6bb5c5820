"""Production is recorded once, as the ``production`` alias row: stored ``production`` statuses become ``indexed``.

The registry shows the version the alias row names as ``production``; its stored status is ``indexed`` (it is still a
rollback target once another version is promoted). The downgrade writes ``production`` back into the status of the
version the alias row names, as revision 0002 expects.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE model_versions SET status = 'indexed' WHERE status = 'production'"))


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE model_versions SET status = 'production' WHERE id IN "
            "(SELECT model_version_id FROM aliases WHERE alias = 'production')"
        )
    )
