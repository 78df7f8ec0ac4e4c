"""A held database lock: the service stays ready and answers a retryable 503 `database_busy`
within the bound, then works again once the lock is gone (in-process, the fake model; SQLite
and a real PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from medserve.settings import get_settings
from tests.auth_tokens import client_headers
from tests.test_dataplane import Serving, make_serving

TIMEOUT_S = 0.5
# An audited call waits twice at most: its own call, then its audit entry (fail closed).
BOUND_S = 2 * TIMEOUT_S + 1.0
JSON = {"content-type": "application/json"}


@pytest.fixture
def serving(
    empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Serving]:
    monkeypatch.setenv("MEDSERVE_DATABASE_TIMEOUT_S", str(TIMEOUT_S))
    get_settings.cache_clear()
    try:
        yield make_serving(tmp_path, database_url=empty_database, database_timeout_s=TIMEOUT_S)
    finally:
        get_settings.cache_clear()


@contextmanager
def write_lock_held(url: str) -> Iterator[None]:
    """Another connection holds the lock writers need until the block ends: SQLite's write
    lock (BEGIN EXCLUSIVE), or PostgreSQL's table locks on the log's tables."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        holder: Any = sqlite3.connect(parsed.database or "", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        dsn = (
            f"host={parsed.host} port={parsed.port} user={parsed.username} dbname={parsed.database}"
        )
        holder = psycopg.connect(dsn)
        holder.execute("LOCK TABLE predictions, feedback, audit_log IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


async def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = await call
    return answer, time.perf_counter() - started


def test_a_held_lock_gives_503_database_busy_and_readiness_stays_quick(
    serving: Serving, empty_database: str
) -> None:
    async def main() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=serving.http.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=client_headers()
        ) as client:
            predicted = await client.post("/predict", json={"points": [{"x": 1, "flag": 0}]})
            prediction_id = predicted.json()["predictions"][0]["prediction_id"]
            feedback = {"prediction_id": prediction_id, "label": 1}
            with write_lock_held(empty_database):
                pending = asyncio.create_task(
                    _timed(client.post("/feedback", json=feedback, headers=JSON))
                )
                await asyncio.sleep(0.1)  # the feedback call now waits on the lock
                ready, ready_s = await _timed(client.get("/v2/health/ready"))
                still_waiting = not pending.done()
                busy, busy_s = await pending
            after = await client.post("/feedback", json=feedback, headers=JSON)
            return locals()

    seen = asyncio.run(main())
    ready, busy = seen["ready"], seen["busy"]
    assert ready.status_code == 200 and seen["still_waiting"]
    assert seen["ready_s"] < TIMEOUT_S  # answered while the feedback call still waited
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "database_busy" and busy.json()["request_id"]
    assert busy.headers["retry-after"] == "1"
    assert TIMEOUT_S * 0.8 <= seen["busy_s"] < BOUND_S
    assert seen["after"].status_code == 200  # the lock is gone: feedback works again
    log = serving.plane.log
    assert log.feedback_of(seen["prediction_id"]) == {"label": 1}


def test_a_prediction_whose_log_commit_is_blocked_is_a_503_not_a_500(
    serving: Serving, empty_database: str
) -> None:
    """The group commit waits on the same bound: the answer is only sent once the prediction is
    on record, so a busy database makes it a retryable 503, and the next call is answered."""
    body = {"points": [{"x": 1, "flag": 0}]}

    async def main() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=serving.http.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=client_headers()
        ) as client:
            with write_lock_held(empty_database):
                busy, busy_s = await _timed(client.post("/predict", json=body))
            after = await client.post("/predict", json=body)
            return locals()

    seen = asyncio.run(main())
    busy = seen["busy"]
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "database_busy" and busy.headers["retry-after"] == "1"
    assert seen["busy_s"] < BOUND_S
    assert seen["after"].status_code == 200
