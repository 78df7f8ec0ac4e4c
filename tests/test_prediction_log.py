"""The shared prediction log: group commit, feedback, labelled examples."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from medserve.prediction_log import (
    PredictionLog,
    PredictionRecord,
    UnknownPrediction,
    new_ids,
    utcnow,
)


def _record(prediction_id: str, model: str = "m", value: int = 1) -> PredictionRecord:
    return PredictionRecord(
        id=prediction_id,
        model=model,
        model_tag=f"{model}:v1",
        request_id="req",
        transport="http_json",
        created_at=utcnow(),
        inputs={"x": value},
        outputs={"class": value % 2},
    )


def test_ids_are_unique_sortable_ulids() -> None:
    ids = new_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)


def test_concurrent_records_are_all_committed(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    ids = new_ids(500)

    async def write() -> None:
        await asyncio.gather(*(log.record_async([_record(i, value=n)]) for n, i in enumerate(ids)))

    asyncio.run(write())
    assert len(log.recent("m", limit=1000)) == 500
    stored = log.get(ids[123])
    assert stored is not None
    assert stored.inputs == {"x": 123}
    assert stored.created_at.tzinfo is not None


def test_feedback_needs_a_known_prediction_and_latest_wins(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    (pid,) = new_ids(1)
    log.record([_record(pid)]).result(timeout=10)
    with pytest.raises(UnknownPrediction):
        log.add_feedback("0" * 26, {"label": 1})
    log.add_feedback(pid, {"label": 0}, reviewer="dr-a")
    log.add_feedback(pid, {"label": 1}, reviewer="dr-b")
    (example,) = log.labelled("m")
    assert example.prediction_id == pid
    assert example.outcome == {"label": 1}
    assert log.labelled("other") == []


def test_failed_commit_is_reported_to_the_caller(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    (pid,) = new_ids(1)
    log.record([_record(pid)]).result(timeout=10)
    with pytest.raises(Exception, match="UNIQUE"):
        log.record([_record(pid)]).result(timeout=10)  # duplicate primary key
    (other,) = new_ids(1)
    log.record([_record(other)]).result(timeout=10)  # the writer survived
    assert log.get(other) is not None
