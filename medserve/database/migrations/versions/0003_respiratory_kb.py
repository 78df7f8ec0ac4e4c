"""The respiratory knowledge base's tables (issue 20): versions, diseases, attributes, values
(symptoms and factor values as attribute/value pairs) and the disease <-> value links carrying
the symbolic probabilities, as the source system kept them (medserve/respiratory/kb_tables.py).

Revision ID: 0003
Revises: 0002
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
        "kb_versions",
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("review_status", sa.String(32), nullable=False),
        sa.Column("model_tag", sa.String(128), nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "kb_diseases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kb_version", sa.String(32), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("icd10", sa.String(16), nullable=False),
        sa.Column("probability", sa.String(8), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["kb_version"], ["kb_versions.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_kb_diseases_version_code", "kb_diseases", ["kb_version", "code"], unique=True
    )
    op.create_table(
        "kb_attributes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kb_version", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(["kb_version"], ["kb_versions.version"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_kb_attributes_version_name", "kb_attributes", ["kb_version", "name"], unique=True
    )
    op.create_table(
        "kb_values",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("attribute_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["attribute_id"], ["kb_attributes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kb_values_attribute", "kb_values", ["attribute_id"])
    op.create_table(
        "kb_links",
        sa.Column("disease_id", sa.Integer(), nullable=False),
        sa.Column("value_id", sa.Integer(), nullable=False),
        sa.Column("probability", sa.String(8), nullable=False),
        sa.ForeignKeyConstraint(["disease_id"], ["kb_diseases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["value_id"], ["kb_values.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("disease_id", "value_id"),
    )
    op.create_index("ix_kb_links_value", "kb_links", ["value_id"])


def downgrade() -> None:
    for table in ("kb_links", "kb_values", "kb_attributes", "kb_diseases", "kb_versions"):
        op.drop_table(table)
