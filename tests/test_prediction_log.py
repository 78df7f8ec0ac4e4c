"""The shared prediction log on SQLite and on a real PostgreSQL: group commit, feedback,
labelled examples, UTC instants, and old rows after the migrations."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import text

from medserve.audit import AuditEntry, AuditTrail
from medserve.database.engine import make_engine
from medserve.database.schema import upgrade
from medserve.prediction_log import (
    PredictionLog,
    PredictionRecord,
    RowInserter,
    UnknownPrediction,
    new_ids,
    utcnow,
)

PLUS_FIVE = timezone(timedelta(hours=5))


def _record(
    prediction_id: str, model: str = "m", value: int = 1, age_s: float = 0.0
) -> PredictionRecord:
    return PredictionRecord(
        id=prediction_id,
        model=model,
        model_tag=f"{model}:v1",
        request_id="req",
        api="http_json",
        created_at=utcnow() - timedelta(seconds=age_s),
        inputs={"x": value},
        outputs={"class": value % 2},
        predicted_class=value % 2,
    )


def test_ids_are_unique_sortable_ulids() -> None:
    ids = new_ids(1000)
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)


def test_concurrent_records_are_all_committed(database: str) -> None:
    log = PredictionLog(database)
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
    assert stored.created_at.tzinfo is not None and stored.api == "http_json"


def test_rows_recorded_in_one_loop_iteration_share_one_commit(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests answered one by one (a triage step: no batch) still group: what is recorded
    during one event-loop iteration is one transaction, and a waiter cancelled meanwhile (a
    client gone) neither loses its rows nor cancels the others' wait."""
    log = PredictionLog(database)
    transactions: list[int] = []
    insert = RowInserter.__call__

    def counted(self: RowInserter, connection: Any, rows: Any) -> None:
        transactions.append(len(rows))
        insert(self, connection, rows)

    monkeypatch.setattr(RowInserter, "__call__", counted)
    ids = new_ids(20)

    async def answer(prediction_id: str) -> None:
        time.sleep(0.002)  # the model's work, releasing the GIL as NumPy does
        await log.record_async([_record(prediction_id).model_dump()])

    async def write() -> None:
        tasks = [asyncio.create_task(answer(i)) for i in ids]
        await asyncio.sleep(0)  # every task records in this iteration
        tasks[0].cancel()
        await asyncio.gather(*tasks[1:])
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]

    asyncio.run(write())
    assert transactions == [20]
    assert {r.id for r in log.recent("m", limit=100)} == set(ids)


def test_feedback_needs_a_known_prediction_and_latest_wins(database: str) -> None:
    log = PredictionLog(database)
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


def test_failed_commit_is_reported_to_the_caller(database: str) -> None:
    log = PredictionLog(database)
    (pid,) = new_ids(1)
    log.record([_record(pid)]).result(timeout=10)
    with pytest.raises(Exception, match=r"UNIQUE|duplicate key"):
        log.record([_record(pid)]).result(timeout=10)  # duplicate primary key
    (other,) = new_ids(1)
    log.record([_record(other)]).result(timeout=10)  # the writer survived
    assert log.get(other) is not None


def test_recent_filters_by_class_and_time_window(database: str) -> None:
    log = PredictionLog(database)
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


def test_one_instant_in_any_offset_selects_the_same_rows(database: str) -> None:
    """Times are UTC instants: `since`/`until` given as +05:00 or as Z mean the same moment
    (on SQLite the offset used to be dropped: 0 rows as +05:00, 1 as Z)."""
    log = PredictionLog(database)
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    ids = new_ids(3)
    rows = [_record(pid, value=n) for n, pid in enumerate(ids)]
    for n, row in enumerate(rows):  # 11:00, 12:00, 13:00 UTC; the middle one stored as +05:00
        moment = base + timedelta(hours=n - 1)
        row.created_at = moment.astimezone(PLUS_FIVE) if n == 1 else moment
    log.record(rows).result(timeout=10)
    log.add_feedback("m", ids[1], {"label": 1})
    for since, until in [
        (base, base + timedelta(minutes=30)),
        (base.astimezone(PLUS_FIVE), (base + timedelta(minutes=30)).astimezone(PLUS_FIVE)),
    ]:
        assert [r.id for r in log.recent("m", since=since, until=until)] == [ids[1]]
        assert [e.prediction_id for e in log.labelled("m", since, until)] == [ids[1]]
    stored = log.get(ids[1])
    assert (
        stored is not None
        and stored.created_at == base
        and stored.created_at.utcoffset() == (timedelta(0))
    )
    trail = AuditTrail(log.engine)
    entry = AuditEntry(
        at=base.astimezone(PLUS_FIVE), subject="s", role=None, model="m", method="GET",
        route="/predictions", status=200, outcome="ok", request_id="r",
    )  # fmt: skip
    trail.record(entry)
    assert [e.id for e in trail.entries(since=base)] == [entry.id]
    assert [e.id for e in trail.entries(since=base.astimezone(PLUS_FIVE))] == [entry.id]
    assert trail.entries(since=base + timedelta(seconds=1)) == []


OLD_PREDICTIONS = (  # the issue-2 schema: no predicted_class yet, `transport` not yet `api`
    "CREATE TABLE predictions (id VARCHAR(26) PRIMARY KEY, model VARCHAR(64) NOT NULL, "
    "model_tag VARCHAR(128) NOT NULL, request_id VARCHAR(64) NOT NULL, "
    "transport VARCHAR(16) NOT NULL, created_at {time} NOT NULL, inputs JSON NOT NULL, "
    "outputs JSON NOT NULL)"
)


def test_a_log_of_an_older_release_is_adopted_and_its_rows_still_read(empty_database: str) -> None:
    """A database the releases before Alembic created (no version table): the upgrade adds what
    later releases added and renames `transport`; the old row reads, with its API."""
    engine = make_engine(empty_database)
    time_type = "TIMESTAMP WITH TIME ZONE" if engine.dialect.name == "postgresql" else "DATETIME"
    with engine.begin() as connection:
        connection.execute(text(OLD_PREDICTIONS.format(time=time_type)))
        connection.execute(
            text(
                "INSERT INTO predictions VALUES ('01J00000000000000000000000', 'm', 'm:v1', "
                "'r', 'grpc', '2026-01-01 00:00:00', '{}', '{}')"
            )
        )
    engine.dispose()
    assert upgrade(empty_database).before is None
    log = PredictionLog(empty_database)
    (old,) = log.recent("m")
    assert old.predicted_class is None and old.api == "grpc"
    assert old.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    (pid,) = new_ids(1)
    log.record([_record(pid, value=1)]).result(timeout=10)
    assert [r.id for r in log.recent("m", predicted_class=1)] == [pid]
    log.add_feedback("m", pid, {"label": 1}, confirmed_by="dr")  # feedback table created too


def test_a_record_given_with_the_old_field_name_still_validates() -> None:
    legacy = {k: v for k, v in _record(new_ids(1)[0]).model_dump().items() if k != "api"}
    assert PredictionRecord.model_validate(legacy | {"transport": "form"}).api == "form"
