"""The shared prediction log: group commit, feedback, labelled examples."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from medserve.prediction_log import (
    PredictionLog,
    PredictionRecord,
    UnknownPrediction,
    new_ids,
    utcnow,
)


def _record(
    prediction_id: str, model: str = "m", value: int = 1, age_s: float = 0.0
) -> PredictionRecord:
    return PredictionRecord(
        id=prediction_id,
        model=model,
        model_tag=f"{model}:v1",
        request_id="req",
        transport="http_json",
        created_at=utcnow() - timedelta(seconds=age_s),
        inputs={"x": value},
        outputs={"class": value % 2},
        predicted_class=value % 2,
    )


def test_ids_are_unique_sortable_ulids() -> None:
    ids = new_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)


def test_concurrent_records_are_all_committed(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    ids = new_ids(500)

    async def write() -> None:
        await asyncio.gather(
            *(log.record_async([_record(i, value=n).model_dump()]) for n, i in enumerate(ids))
        )

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
        log.add_feedback("m", "0" * 26, {"label": 1})
    with pytest.raises(UnknownPrediction):  # another model's prediction
        log.add_feedback("other", pid, {"label": 1})
    log.add_feedback("m", pid, {"label": 0}, reviewer="dr-a")
    log.add_feedback("m", pid, {"label": 1}, reviewer="dr-b")
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


def test_recent_filters_by_class_and_time_window(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite3'}")
    ids = new_ids(6)
    # ages 0, 100, 200, ... seconds; classes alternate 0/1
    records = [_record(pid, value=n, age_s=100 * n) for n, pid in enumerate(ids)]
    log.record([*records, _record(new_ids(1)[0], model="other")]).result(timeout=10)
    assert [r.id for r in log.recent("m")] == ids  # newest first
    assert [r.id for r in log.recent("m", predicted_class=1)] == ids[1::2]
    now = utcnow()
    window = log.recent("m", since=now - timedelta(seconds=250), until=now - timedelta(seconds=50))
    assert [r.id for r in window] == ids[1:3]
    assert [r.id for r in log.recent("m", limit=2)] == ids[:2]
    log.add_feedback("m", ids[4], {"label": 1})
    log.add_feedback("m", ids[0], {"label": 0})
    assert [e.prediction_id for e in log.labelled("m", since=now - timedelta(seconds=60))] == [
        ids[0]
    ]
    assert log.feedback_of(ids[4]) == {"label": 1}
    assert log.feedback_of(ids[3]) is None


def test_log_of_an_older_release_gains_the_new_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the issue-2 schema, without predicted_class
        db.execute(
            "CREATE TABLE predictions (id VARCHAR(26) PRIMARY KEY, model VARCHAR(64), "
            "model_tag VARCHAR(128), request_id VARCHAR(64), transport VARCHAR(16), "
            "created_at DATETIME, inputs JSON, outputs JSON)"
        )
        db.execute(
            "INSERT INTO predictions VALUES ('01J00000000000000000000000', 'm', 'm:v1', 'r', "
            "'http_json', '2026-01-01 00:00:00', '{}', '{}')"
        )
    log = PredictionLog(f"sqlite:///{path}")
    (old,) = log.recent("m")
    assert old.predicted_class is None
    (pid,) = new_ids(1)
    log.record([_record(pid, value=1)]).result(timeout=10)
    assert [r.id for r in log.recent("m", predicted_class=1)] == [pid]
