"""Two heart services of two workers each writing one real PostgreSQL under concurrent
`/predict` calls while a reader pages `GET /predictions`: every answered prediction id is
stored, and nothing else is (no lost row, no phantom)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from medserve.heart.schema import EXAMPLE_PATIENT
from medserve.prediction_log import PredictionLog, PredictionRow
from tests.conftest import HEART_TARGET, service_env
from tests.databases import PostgresCluster
from tests.servers import ServiceProcess, medserve_service, upgrade_once

SERVICES, WORKERS = 2, 2
CLIENTS_PER_SERVICE = 8
REQUESTS_PER_CLIENT = 25
PATIENTS_PER_REQUEST = 3
PAGE = 200


@pytest.fixture(scope="module")
def shared_log(postgres: PostgresCluster) -> str:
    url = postgres.database("load")
    upgrade_once(url)
    return url


@pytest.fixture(scope="module")
def services(
    heart_tag: str, shared_log: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    with ExitStack() as stack:
        started = []
        for n in range(SERVICES):
            home: Path = tmp_path_factory.mktemp(f"heart-pg-{n}")
            env = service_env(
                home,
                MEDSERVE_HEART_RISK_MODEL_TAG=heart_tag,
                MEDSERVE_DATABASE_URL=shared_log,
                MEDSERVE_WORKERS=str(WORKERS),
                MEDSERVE_GRPC_ENABLED="false",
            )
            started.append(stack.enter_context(medserve_service(HEART_TARGET, home, env)))
        yield started


async def _predict(client: httpx.AsyncClient, answered: list[str], failures: list[int]) -> None:
    patients = [EXAMPLE_PATIENT] * PATIENTS_PER_REQUEST
    for _ in range(REQUESTS_PER_CLIENT):
        answer = await client.post("/predict", json={"patients": patients})
        if answer.status_code != 200:
            failures.append(answer.status_code)
            continue
        answered.extend(p["prediction_id"] for p in answer.json()["predictions"])


async def _page_until_done(client: httpx.AsyncClient, done: asyncio.Event) -> dict[str, int]:
    """Page the log newest first (`until` = the oldest time of the last page) while writes go on."""
    pages = rows = 0
    statuses: dict[str, int] = {}
    while not done.is_set():
        until: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE} | ({"until": until} if until else {})
            answer = await client.get("/predictions", params=params)
            statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
            if answer.status_code != 200:
                break
            page = answer.json()
            pages, rows = pages + 1, rows + len(page)
            if len(page) < PAGE:
                break
            until = page[-1]["created_at"]
    return {"pages": pages, "rows_read": rows} | statuses


def test_no_row_is_lost_with_two_services_of_two_workers_on_one_postgresql(
    services: list[ServiceProcess], shared_log: str
) -> None:
    answered: list[str] = []
    failures: list[int] = []

    async def main() -> dict[str, int]:
        headers = services[0].auth_headers
        limits = httpx.Limits(max_connections=CLIENTS_PER_SERVICE + 1)
        clients = [
            httpx.AsyncClient(base_url=s.url, headers=headers, timeout=60, limits=limits)
            for s in services
        ]
        done = asyncio.Event()
        reader = asyncio.create_task(_page_until_done(clients[0], done))
        await asyncio.gather(
            *(
                _predict(client, answered, failures)
                for client in clients
                for _ in range(CLIENTS_PER_SERVICE)
            )
        )
        done.set()
        read = await reader
        for client in clients:
            await client.aclose()
        return read

    read = asyncio.run(main())
    log = PredictionLog(shared_log)
    with log.engine.connect() as connection:
        stored = list(connection.scalars(select(PredictionRow.id)))
    expected = SERVICES * CLIENTS_PER_SERVICE * REQUESTS_PER_CLIENT * PATIENTS_PER_REQUEST
    print(
        f"load: answered {len(answered)} ids, stored {len(stored)} rows, "
        f"failed calls {len(failures)}, reader {read}"
    )
    assert failures == []
    assert len(answered) == expected and len(set(answered)) == expected
    assert sorted(stored) == sorted(answered)  # none lost, none extra
    assert read["pages"] > 0 and read.get("200", 0) == read["pages"]
