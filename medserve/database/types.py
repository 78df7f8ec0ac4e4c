"""Column types whose values mean the same on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken as UTC (every stored time is)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A point in time stored and compared as a UTC instant.

    PostgreSQL's `timestamptz` compares instants by itself. SQLite has no time type: SQLAlchemy
    stores the wall-clock text and drops the offset, so `12:00+05:00` was stored (and compared)
    as `12:00`, five hours off. Binding every value as its UTC wall clock makes the text order
    the instant order there; values come back aware, in UTC, on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)
