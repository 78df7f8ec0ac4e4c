"""`predictions.transport` becomes `predictions.api`, the name of the metrics' label (issue 16).

A rename in place (PostgreSQL, and SQLite since 3.25): no table copy, old rows keep their value.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE predictions RENAME COLUMN transport TO api")


def downgrade() -> None:
    op.execute("ALTER TABLE predictions RENAME COLUMN api TO transport")
