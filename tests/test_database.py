"""Migrations, the schema check at start-up, concurrent starts and upgrades, and retention, on
SQLite and on a real PostgreSQL (tests/databases.py)."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from medserve.audit import AuditTrail
from medserve.cli import app
from medserve.database.commands import upgrade_command
from medserve.database.engine import make_engine
from medserve.database.retention import prune
from medserve.database.schema import SchemaNotCurrent, head_revision, upgrade
from medserve.prediction_log import (
    Base,
    FeedbackRow,
    PredictionLog,
    PredictionRecord,
    PredictionRow,
    new_ids,
    utcnow,
)
from medserve.respiratory import kb_tables  # noqa: F401 - its tables belong to the compared schema
from medserve.settings import Settings, get_settings

FORK = multiprocessing.get_context("fork")  # children start at once: no imports to redo


def _start_a_service(url: str, barrier: Any, answers: Any) -> None:
    """What a service does at start: open the log and the audit trail (both check the schema),
    then write a row through the log's group commit."""
    barrier.wait(timeout=60)
    try:
        log = PredictionLog(url)
        AuditTrail(log.engine)
    except SchemaNotCurrent as refusal:
        answers.put(f"refused: {refusal}")
        return
    log.record([_aged(new_ids(1)[0], 0)]).result(timeout=30)
    answers.put("started")


def _start_together(url: str, count: int) -> list[str]:
    barrier, answers = FORK.Barrier(count), FORK.Queue()
    processes = [
        FORK.Process(target=_start_a_service, args=(url, barrier, answers)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    return sorted(answers.get(timeout=5) for _ in processes)


def schema_differences(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_the_migrated_schema_is_the_models_schema(database: str) -> None:
    assert schema_differences(database) == []


def test_the_first_migration_is_the_schema_before_the_rename(empty_database: str) -> None:
    """Revision 0001 is today's models except the column 0002 renames and the knowledge-base
    tables 0003 adds (tables, columns, types, nullability and indexes compared by Alembic)."""
    upgrade(empty_database, "0001")
    differences = schema_differences(empty_database)
    tables = sorted(d[1].name for d in differences if d[0] == "add_table")
    assert tables == ["kb_attributes", "kb_diseases", "kb_links", "kb_values", "kb_versions"]
    indexes = {d[1].table.name for d in differences if d[0] == "add_index"}
    assert indexes <= set(tables)  # the new tables' own indexes
    columns = sorted((d[0], d[2], d[3].name) for d in differences if "column" in d[0])
    assert columns == [
        ("add_column", "predictions", "api"),
        ("remove_column", "predictions", "transport"),
    ]
    assert len(differences) == len(tables) + len(columns) + len(
        [d for d in differences if d[0] == "add_index"]
    )


def test_services_refuse_a_database_that_is_not_migrated(empty_database: str) -> None:
    with pytest.raises(SchemaNotCurrent, match="run `medserve db upgrade` first"):
        PredictionLog(empty_database)
    with pytest.raises(SchemaNotCurrent, match="medserve db upgrade"):
        AuditTrail(make_engine(empty_database))
    upgrade(empty_database, "0001")
    with pytest.raises(SchemaNotCurrent, match="revision 0001; this release needs 0003"):
        PredictionLog(empty_database)


def test_a_schema_newer_than_the_release_is_refused(database: str) -> None:
    engine = make_engine(database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaNotCurrent, match="newer than this release"):
        PredictionLog(database)


def test_six_services_start_at_once_on_a_migrated_database(database: str) -> None:
    assert _start_together(database, 6) == ["started"] * 6
    engine = make_engine(database)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(PredictionRow)) == 6


def test_six_services_refuse_at_once_on_a_database_not_migrated(empty_database: str) -> None:
    answers = _start_together(empty_database, 6)
    assert all("run `medserve db upgrade` first" in answer for answer in answers), answers
    assert len(answers) == 6


def _upgrade_together(url: str, barrier: Any, answers: Any) -> None:
    barrier.wait(timeout=60)
    try:
        answers.put(upgrade_command(Settings(database_url=url)))
    except Exception as error:  # reported to the test, which fails on it
        answers.put(f"failed: {type(error).__name__}: {error}")


def test_two_upgrades_at_once_are_serialised(empty_database: str) -> None:
    """Two upgrades started together (two `medserve up`, a retried hook Job) in two processes:
    both succeed, one migrates and the other finds the schema current. (The hook's own command
    line runs for real in tests/test_chart_database.py.)"""
    barrier, answers = FORK.Barrier(2), FORK.Queue()
    processes = [
        FORK.Process(target=_upgrade_together, args=(empty_database, barrier, answers))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    said = sorted(answers.get(timeout=5) for _ in processes)
    assert "schema already at revision 0003" in said[0], said
    assert "schema upgraded from nothing to 0003" in said[1], said
    PredictionLog(empty_database)  # current


def _aged(prediction_id: str, days: float) -> PredictionRecord:
    return PredictionRecord(
        id=prediction_id, model="m", model_tag="m:v1", request_id="r", api="http_json",
        created_at=utcnow() - timedelta(days=days), inputs={"x": 1}, outputs={},
    )  # fmt: skip


def test_prune_deletes_old_predictions_and_their_feedback_in_batches(database: str) -> None:
    log = PredictionLog(database)
    old, new = new_ids(7), new_ids(3)
    log.record([_aged(i, 40) for i in old] + [_aged(i, 10) for i in new]).result(timeout=10)
    log.add_feedback("m", old[0], {"label": 1})
    log.add_feedback("m", new[0], {"label": 0})
    done = prune(log.engine, utcnow() - timedelta(days=30), batch_size=3)
    assert (done.predictions, done.feedback, done.batches) == (7, 1, 3)  # 3 + 3 + 1
    assert sorted(r.id for r in log.recent("m")) == sorted(new)
    with log.engine.connect() as connection:
        assert list(connection.scalars(select(FeedbackRow.prediction_id))) == [new[0]]
    again = prune(log.engine, utcnow() - timedelta(days=30), batch_size=3)
    assert (again.predictions, again.batches) == (0, 0)


def _cli(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str) -> tuple[int, str]:
    """`medserve ARGS` in-process with these settings: (exit code, what it printed)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.stdout + result.stderr


def test_the_cli_upgrades_and_prunes_the_configured_database(
    empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSERVE_DATABASE_URL", empty_database)
    monkeypatch.delenv("MEDSERVE_PREDICTION_LOG_RETENTION_DAYS", raising=False)
    code, said = _cli(monkeypatch, "db", "prune", "--days", "30")
    assert code == 2 and "medserve db upgrade" in said
    code, said = _cli(monkeypatch, "db", "upgrade")
    assert code == 0 and "upgraded from nothing to 0003" in said
    log = PredictionLog(empty_database)
    ids = new_ids(3)
    log.record([_aged(ids[0], 100), _aged(ids[1], 100), _aged(ids[2], 1)]).result(timeout=10)
    code, said = _cli(monkeypatch, "db", "prune")
    assert code == 2 and "MEDSERVE_PREDICTION_LOG_RETENTION_DAYS" in said
    code, said = _cli(
        monkeypatch,
        "db",
        "prune",
        MEDSERVE_PREDICTION_LOG_RETENTION_DAYS="30",
        MEDSERVE_PREDICTION_LOG_PRUNE_BATCH_SIZE="1",
    )
    assert code == 0, said
    assert "2 predictions, 0 feedback rows, 2 batches of at most 1" in said
    assert [r.id for r in log.recent("m")] == [ids[2]]
    assert head_revision() == "0003"
