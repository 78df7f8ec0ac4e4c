"""Retention of the prediction log: `medserve db prune` deletes what is older than the setting.

The log holds patient inputs and grows without bound. Predictions older than
`MEDSERVE_PREDICTION_LOG_RETENTION_DAYS` go, with their feedback, in batches of
`MEDSERVE_PREDICTION_LOG_PRUNE_BATCH_SIZE`, each batch its own short transaction, so serving
writers never wait long behind a prune. The audit trail is kept: it holds ids, not patient
values, and is what proves who saw the deleted rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from medserve.prediction_log import FeedbackRow, PredictionRow, utcnow


class Pruned(BaseModel):
    """What a prune deleted, and in how many transactions."""

    cutoff: datetime
    predictions: int = 0
    feedback: int = 0
    batches: int = 0


def cutoff_for(retention_days: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(days=retention_days)


def prune(engine: Engine, cutoff: datetime, batch_size: int) -> Pruned:
    """Delete predictions made before `cutoff` (and their feedback), `batch_size` at a time."""
    result = Pruned(cutoff=cutoff)
    oldest_first = (
        select(PredictionRow.id)
        .where(PredictionRow.created_at < cutoff)
        .order_by(PredictionRow.created_at)
        .limit(batch_size)
    )
    while True:
        with engine.begin() as connection:
            ids = list(connection.scalars(oldest_first))
            if not ids:
                return result
            feedback = delete(FeedbackRow).where(FeedbackRow.prediction_id.in_(ids))
            result.feedback += connection.execute(feedback).rowcount
            predictions = delete(PredictionRow).where(PredictionRow.id.in_(ids))
            result.predictions += connection.execute(predictions).rowcount
        result.batches += 1
