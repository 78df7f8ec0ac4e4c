"""The schema as the releases before Alembic left it: predictions, feedback, audit_log.

A database those releases created (tables present, no `alembic_version`) is adopted: what
their start-up migration would have added (nullable columns, indexes, the audit table) is
added, nothing else is touched. An empty database gets the tables outright.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

INDEXES = {
    "predictions": {
        "ix_predictions_model_created": ["model", "created_at"],
        "ix_predictions_model_class_created": ["model", "predicted_class", "created_at"],
    },
    "audit_log": {"ix_audit_at": ["at"], "ix_audit_subject_at": ["subject", "at"]},
}
# Columns added by releases after a table was first created (nullable: the old start-up
# migration could add them in place).
LATER_COLUMNS = {
    "predictions": [sa.Column("predicted_class", sa.Integer(), nullable=True)],
    "feedback": [sa.Column("confirmed_by", sa.String(256), nullable=True)],
}


def _predictions() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_tag", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("predicted_class", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def _feedback() -> None:
    op.create_table(
        "feedback",
        sa.Column("prediction_id", sa.String(26), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=True),
        sa.Column("confirmed_by", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"]),
        sa.PrimaryKeyConstraint("prediction_id"),
    )


def _audit_log() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("prediction_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


CREATE = {"predictions": _predictions, "feedback": _feedback, "audit_log": _audit_log}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for table, create in CREATE.items():  # in foreign-key order
        if table not in existing:
            create()
            present_columns: set[str] = set()
            present_indexes: set[str] = set()
        else:
            present_columns = {column["name"] for column in inspector.get_columns(table)}
            present_indexes = {index["name"] or "" for index in inspector.get_indexes(table)}
            for column in LATER_COLUMNS.get(table, []):
                if column.name not in present_columns:
                    op.add_column(table, column)
        for name, columns in INDEXES.get(table, {}).items():
            if name not in present_indexes:
                op.create_index(name, table, columns)


def downgrade() -> None:
    for table in reversed(CREATE):
        op.drop_table(table)
