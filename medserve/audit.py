"""The audit trail: who touched which patient data, when, through which route, and the outcome.

One row per access to patient data (reading the log, opening a review page, confirming a label),
refused attempts included, in the shared database's own `audit_log` table, and the same entry as
a structured log line. Entries hold ids, roles and route templates, never a patient value or a
credential. `medserve audit --since ... [--subject ...]` lists them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Index, Integer, String, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, Session, mapped_column

from medserve.auth.local import parse_duration
from medserve.database.busy import bounded
from medserve.database.schema import check_schema
from medserve.database.types import UtcDateTime, as_utc
from medserve.logs import get_logger
from medserve.prediction_log import Base, new_id, utcnow
from medserve.settings import get_settings

log = get_logger("audit")
MAX_IDS = 500  # the most a single call touches (a page of the log)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    subject: Mapped[str] = mapped_column(String(256))
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(128))
    prediction_ids: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_at", "at"), Index("ix_audit_subject_at", "subject", "at"))


class AuditEntry(BaseModel):
    """One access: `subject` is "-" when no identity was proven (a 401)."""

    id: str = Field(default_factory=new_id)
    at: datetime = Field(default_factory=utcnow)
    subject: str
    role: str | None
    model: str
    method: str
    route: str
    prediction_ids: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    status: int
    outcome: str
    request_id: str


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (UTC when it has no zone), or a duration back from now
    ('90m', '24h', '7d')."""
    now = now or utcnow()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date, time or duration: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class AuditTrail:
    """Writes and lists audit entries in the shared database."""

    def __init__(self, engine: Engine, timeout_s: float | None = None) -> None:
        """Refuses (SchemaNotCurrent) a database not at this release's schema revision;
        `timeout_s` bounds `record_async` (default `MEDSERVE_DATABASE_TIMEOUT_S`)."""
        self.engine = engine
        self.timeout_s = get_settings().database_timeout_s if timeout_s is None else timeout_s
        check_schema(engine)

    async def record_async(self, entry: AuditEntry) -> None:
        """`record` off the event loop, waited for at most `timeout_s` (else DatabaseBusy)."""
        await bounded(None, self.timeout_s, self.record, entry)

    def record(self, entry: AuditEntry) -> None:
        """Store the entry (committed before return) and log it."""
        with self.engine.begin() as connection:
            connection.execute(insert(AuditRow), [entry.model_dump()])
        log.info(
            "audit",
            extra=entry.model_dump(mode="json", exclude={"prediction_ids"})
            | {"predictions": len(entry.prediction_ids)},
        )

    def entries(
        self, since: datetime, subject: str | None = None, limit: int = 1000
    ) -> list[AuditEntry]:
        query = select(AuditRow).where(AuditRow.at >= since)
        if subject is not None:
            query = query.where(AuditRow.subject == subject)
        query = query.order_by(AuditRow.at, AuditRow.id).limit(limit)
        with Session(self.engine) as session:
            rows = session.scalars(query)
            return [
                AuditEntry.model_validate(row, from_attributes=True).model_copy(
                    update={"at": as_utc(row.at)}
                )
                for row in rows
            ]
