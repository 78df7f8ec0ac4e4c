"""Alembic's environment: migrations run on the connection `schema.upgrade` opened (inside its
lock and transaction); there is no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through medserve.database.schema.upgrade")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
