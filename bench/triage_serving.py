"""`POST /consult` of the triage service beside the heart service's `/predict`, in one run.

Issue 20's target: at 16 and 64 connections the triage service answers at least the heart
service's requests/s as consult steps/s, with zero errors. Both services run the same way
(`bentoml serve`, the same workers, auth on, the default SQLite prediction log), one after the
other, under the same wrk load. Two triage bodies: a step in the middle of a consult (answers
checked, the posterior and the next question computed, nothing logged) and the step that ends a
consult (the diagnoses, one prediction-log row).

    uv run python -m bench.triage_serving [--duration 10] [--connections 16,64] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.access import auth_headers, bench_token
from bench.heart_serving import (
    AUTH_ON,
    MEDSERVE,
    Measurement,
    ServerConfig,
    isolate_homes,
    machine_line,
    measure,
    post_json,
    prepare_model,
    publish,
    results_table,
    serve_medserve,
    temp_dir,
)
from tests.triage_patients import answer_for

TARGET = "bentos.respiratory_triage:RespiratoryTriage"
MODEL_ENV = "MEDSERVE_RESPIRATORY_TRIAGE_MODEL_TAG"


def consult_bodies(base_url: str, headers: dict[str, str]) -> tuple[bytes, bytes, int]:
    """(a mid-consult step, the final step, questions asked) of one influenza-like patient,
    walked through the live service."""
    answers = [{"question": "queixa_principal", "answer": "febre"}]
    steps: list[list[dict[str, str]]] = []
    while True:
        payload = json.dumps({"answers": answers}).encode()
        body = post_json(f"{base_url}/consult", payload, headers=headers)
        if body["status"] == "diagnosis":
            break
        steps.append(list(answers))
        question = body["question"]
        answers.append({"question": question["id"], "answer": answer_for(question)})
    middle = steps[len(steps) // 2]
    return (
        json.dumps({"answers": middle}).encode(),
        json.dumps({"answers": answers}).encode(),
        len(answers),
    )


def ratio_lines(heart: Measurement, steps: list[Measurement]) -> list[str]:
    lines = ["| triage body | connections | steps/s | heart req/s | ratio | target >= 1.0 |"]
    lines.append("|---|---|---|---|---|---|")
    for measurement in steps:
        for ours, theirs in zip(measurement.loads, heart.loads, strict=True):
            ratio = ours.rps / theirs.rps
            met = "met" if ratio >= 1.0 and ours.errors == 0 else "not met"
            lines.append(
                f"| {measurement.config.label} | {ours.connections} | {ours.rps:.0f} | "
                f"{theirs.rps:.0f} | {ratio:.2f}x | {met} |"
            )
    return lines


def run(args: argparse.Namespace, tmp: Path) -> str:
    load = os.getloadavg()
    isolate_homes(tmp)
    print("training the heart model and publishing the KB ...", flush=True)
    setup = prepare_model()
    from medserve.database.schema import upgrade
    from medserve.respiratory.settings import get_triage_settings
    from medserve.settings import get_settings
    from training.respiratory_triage import publish as publish_kb

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    from training.respiratory_rules import train as mine_rules

    kb_tag = publish_kb(get_triage_settings().kb_path, settings).tag
    rules = {"MEDSERVE_RESPIRATORY_RULES_MODEL_TAG": mine_rules().tag}
    headers = auth_headers(bench_token(AUTH_ON))
    config = ServerConfig(MEDSERVE, f"heart /predict, workers={args.workers}")
    heart_server = serve_medserve(setup.tag, args.workers, tmp / "heart")
    heart = measure(
        config, heart_server, "/predict", setup.medserve_body, args, lambda _: None, headers
    )
    triage: list[Measurement] = []
    probe = serve_medserve(
        kb_tag, args.workers, tmp / "probe", target=TARGET, model_env=MODEL_ENV, extra_env=rules
    )
    with probe as (url, _):
        middle, final, asked = consult_bodies(url, headers)
    for label, body in (("mid-consult step", middle), (f"final step ({asked} answers)", final)):
        config = ServerConfig(MEDSERVE, f"triage /consult {label}, workers={args.workers}")
        server = serve_medserve(
            kb_tag,
            args.workers,
            tmp / label.split()[0],
            target=TARGET,
            model_env=MODEL_ENV,
            extra_env=rules,
        )
        triage.append(measure(config, server, "/consult", body, args, lambda _: None, headers))
    return "\n".join(
        [
            "# Triage /consult vs heart /predict",
            "",
            machine_line(load),
            f"- wrk {args.duration:g} s per point; auth on (a bearer token per request); "
            f"KB {kb_tag}",
            "",
            results_table([heart, *triage]),
            "",
            *ratio_lines(heart, triage),
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--connections", type=lambda s: [int(c) for c in s.split(",")], default=[16, 64]
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with temp_dir("triage-serving-bench-", args.keep) as tmp:
        text = run(args, tmp)
    publish(text, args.out)


if __name__ == "__main__":
    main()
