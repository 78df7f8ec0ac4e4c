"""Per-request CPU of `POST /consult` beside the heart's `/predict`, in this process.

The same HTTP app, data plane, auth check and prediction log as a worker, driven by raw ASGI
calls (no server, no client, no network): what is left is the per-request work of the service
itself, the part `bench/triage_serving.py`'s wrk figures divide among a worker's requests.
Concurrent callers on one event loop (1: no batch or group commit shares anything; 16: the
heart's batches and the log's group commits do, as under wrk); CPU time counts every thread of
the process (the log writer too). `--profile` prints the functions with the most own time.

    uv run python -m bench.triage_inprocess [--seconds 3] [--concurrency 1,16] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.access import auth_headers, bench_token
from bench.heart_serving import AUTH_ON, isolate_homes, machine_line, publish, temp_dir
from tests.triage_patients import answer_for

HOST = "bench"
# One loop for every call: the heart's batcher and the log keep futures of the loop they run on.
RUNNER = asyncio.Runner()


@dataclass(frozen=True, slots=True)
class Body:
    label: str
    path: str
    body: bytes


@dataclass(frozen=True, slots=True)
class PerRequest:
    label: str
    concurrency: int
    calls: int
    wall_us: float
    cpu_us: float


class AsgiCaller:
    """POSTs one body to an ASGI app the way uvicorn hands it a request."""

    def __init__(self, app: Any, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "server": ("127.0.0.1", 3000),
            "client": ("127.0.0.1", 50000),
            "headers": [
                (b"host", HOST.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *self.headers,
            ],
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # a disconnect the app never waits for here
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def build_app(model: Any) -> Any:
    """The service's HTTP app bound to a data plane over `model`, as `MedserveService` does."""
    from medserve.audit import AuditTrail
    from medserve.auth.authenticator import Authenticator
    from medserve.auth.settings import get_auth_settings
    from medserve.prediction_log import PredictionLog
    from medserve.serving.dataplane import DataPlane
    from medserve.serving.http_security import HttpAccess
    from medserve.serving.service import http_api
    from medserve.settings import get_settings

    settings = get_settings()
    routes: list[Any] = []
    if model.name == "respiratory_triage":
        from medserve.respiratory.consult_api import CONSULT_ROUTES

        routes = list(CONSULT_ROUTES)
    api = http_api(routes)
    plane = DataPlane(model, settings, PredictionLog(settings.resolved_database_url))
    auth = get_auth_settings().model_copy(update={"allowed_hosts": [HOST]})
    api.attach(plane, HttpAccess(Authenticator(auth), AuditTrail(plane.log.engine), auth))
    return api.app


def triage_bodies(caller: AsgiCaller) -> list[Body]:
    """A mid-consult step and the final step of the benchmark's influenza-like patient."""

    async def walk() -> list[Body]:
        answers = [{"question": "queixa_principal", "answer": "febre"}]
        steps: list[list[dict[str, str]]] = []
        while True:
            status, raw = await caller.post("/consult", json.dumps({"answers": answers}).encode())
            assert status == 200, raw
            answer = json.loads(raw)
            if answer["status"] == "diagnosis":
                break
            steps.append(list(answers))
            question = answer["question"]
            answers.append({"question": question["id"], "answer": answer_for(question)})
        middle = steps[len(steps) // 2]
        return [
            Body(f"mid-consult step ({len(middle)} answers)", "/consult", _dumps(middle)),
            Body(f"final step ({len(answers)} answers)", "/consult", _dumps(answers)),
        ]

    return RUNNER.run(walk())


def _dumps(answers: list[dict[str, str]]) -> bytes:
    return json.dumps({"answers": answers}).encode()


async def _calls(caller: AsgiCaller, body: Body, deadline: float) -> int:
    calls = 0
    while time.perf_counter() < deadline:
        status, raw = await caller.post(body.path, body.body)
        assert status == 200, raw
        calls += 1
    return calls


async def _loop(caller: AsgiCaller, body: Body, seconds: float, concurrency: int) -> int:
    """`concurrency` callers in a loop for `seconds`: the calls made."""
    deadline = time.perf_counter() + seconds
    done = await asyncio.gather(*(_calls(caller, body, deadline) for _ in range(concurrency)))
    return sum(done)


def per_request(
    caller: AsgiCaller, body: Body, seconds: float, concurrency: int, profile: bool
) -> PerRequest:
    """Mean wall and CPU microseconds per call, optionally under cProfile."""
    RUNNER.run(_loop(caller, body, seconds / 4, concurrency))  # warm-up
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    calls = RUNNER.run(_loop(caller, body, seconds, concurrency))
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
        print(f"== {body.label} x{concurrency}: {calls} calls\n{out.getvalue()}", flush=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return PerRequest(body.label, concurrency, calls, wall / calls * 1e6, cpu / calls * 1e6)


def run(args: argparse.Namespace, tmp: Path) -> str:
    load = os.getloadavg()
    isolate_homes(tmp)
    from medserve.database.schema import upgrade
    from medserve.heart.model import HeartRiskModel
    from medserve.respiratory.model import TriageModel
    from medserve.respiratory.settings import get_triage_settings
    from medserve.settings import get_settings
    from tests.heart_samples import VALID_PATIENT
    from training.heart_risk import HeartTrainConfig, train
    from training.respiratory_rules import train as mine_rules
    from training.respiratory_triage import publish as publish_kb

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    headers = auth_headers(bench_token(AUTH_ON))
    heart = AsgiCaller(build_app(HeartRiskModel.load(train(HeartTrainConfig()).tag)), headers)
    kb_tag = publish_kb(get_triage_settings().kb_path, settings).tag
    model = TriageModel.load(kb_tag, {"respiratory_rules": mine_rules().tag})
    triage = AsgiCaller(build_app(model), headers)
    heart_body = Body("heart /predict (1 patient)", "/predict", _patients(VALID_PATIENT))
    bodies = [(heart, heart_body)] + [(triage, body) for body in triage_bodies(triage)]
    bodies = [(c, b) for c, b in bodies if b.label.split()[0] in args.bodies]
    # As `MedserveService` does once its model is loaded: without it every full collection
    # walks the imports and models, a cost the served workers do not pay.
    gc.freeze()
    results = [
        per_request(caller, body, args.seconds, concurrency, args.profile)
        for concurrency in args.concurrency
        for caller, body in bodies
    ]
    return "\n".join(
        [
            "# Per-request CPU in-process: triage /consult vs heart /predict",
            "",
            machine_line(load),
            f"- raw ASGI calls on one event loop, {args.seconds:g} s per body and concurrency, "
            f"auth on, SQLite log; KB {kb_tag}",
            "",
            "| body | concurrent calls | calls | wall us/request | CPU us/request |",
            "|---|---|---|---|---|",
            *(
                f"| {r.label} | {r.concurrency} | {r.calls} | {r.wall_us:.0f} | {r.cpu_us:.0f} |"
                for r in results
            ),
        ]
    )


def _patients(patient: Mapping[str, Any]) -> bytes:
    return json.dumps({"patients": [patient]}).encode()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16]
    )
    parser.add_argument(
        "--bodies",
        type=lambda s: s.split(","),
        default=["heart", "mid-consult", "final"],
        help="which bodies to time (to sample one with py-spy)",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with temp_dir("triage-inprocess-bench-", args.keep) as tmp:
        text = run(args, tmp)
    publish(text, args.out)


if __name__ == "__main__":
    main()
