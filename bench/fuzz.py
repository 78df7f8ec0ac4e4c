"""A longer schemathesis run against every service's `/openapi.json` (issue 19).

Trains small models into an isolated home (kept with `--home`, so a second run starts at once),
serves the three services as the test suite does, fuzzes each (every operation, positive and
negative data, then stateful scenarios along the links) with a token holding every client role,
and prints a markdown table: operations, cases sent, answers by status class, failures, time.

    uv run python -m bench.fuzz [--examples 100] [--stateful 30] [--services heart_risk,...] \
        [--home DIR] [--out bench/results/fuzz.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.heart_serving import isolate_homes
from bench.loadgen import markdown_table

TARGETS = {
    "heart_risk": "bentos.heart_risk:HeartRisk",
    "ecg_anomaly": "bentos.ecg_anomaly:EcgAnomaly",
    "ct_pattern": "bentos.ct_pattern:CtPattern",
}


def _train_heart() -> str:
    from training.heart_risk import HeartTrainConfig, train

    return train(HeartTrainConfig()).tag


def _train_ecg() -> str:
    from training.ecg_anomaly import EcgTrainConfig, train

    # The test suite's small model (tests/conftest.py, not imported: it moves the homes).
    config = EcgTrainConfig(normal_beats=600, abnormal_beats_per_class=90, epochs=40, batch_size=32)
    return train(config).tag


def _train_ct() -> str:
    from training.ct_pattern import CtTrainConfig, train

    config = CtTrainConfig(
        image_size=64,
        mobilenet_alpha=0.35,
        architectures=["mobilenet_v2"],
        epochs=2,
        patience=2,
        augment_copies=1,
        synthetic_nsip_patients=3,
        synthetic_uip_patients=3,
        synthetic_slices_per_patient=3,
        synthetic_size=128,
        version="fuzz",
    )
    return train(config).tag


TRAIN: dict[str, Callable[[], str]] = {
    "heart_risk": _train_heart,
    "ecg_anomaly": _train_ecg,
    "ct_pattern": _train_ct,
}


def model_tag(model: str) -> str:
    """The stored model of the isolated home, trained now if there is none."""
    from medserve import model_store

    with contextlib.suppress(Exception):
        return model_store.resolve_tag(f"{model}:latest")
    return TRAIN[model]()


@contextlib.contextmanager
def serving(model: str, tag: str, workdir: Path) -> Iterator[str]:
    from tests.servers import medserve_service

    env = dict(os.environ) | {f"MEDSERVE_{model.upper()}_MODEL_TAG": tag}
    with medserve_service(TARGETS[model], workdir, env, timeout_s=300) as service:
        yield service.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=100, help="per operation and mode")
    parser.add_argument("--stateful", type=int, default=30, help="stateful scenarios")
    parser.add_argument("--services", default=",".join(TARGETS))
    parser.add_argument("--home", type=Path, default=None, help="keep models here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="medserve-fuzz-"))
    if (root / "medserve-home").exists():
        os.environ["MEDSERVE_HOME"] = str(root / "medserve-home")
        os.environ["BENTOML_HOME"] = str(root / "bentoml-home")
    else:
        isolate_homes(root)

    from medserve.auth.roles import Role
    from tests.auth_tokens import bearer
    from tests.fuzzing import fuzz_service

    headers = bearer(Role.PREDICT, Role.REVIEW, Role.READ_LOG, subject="fuzz")
    rows: list[dict[str, object]] = []
    failures: list[str] = []
    for model in args.services.split(","):
        tag = model_tag(model)
        with serving(model, tag, root / f"run-{model}-{int(time.time())}") as url:
            report = fuzz_service(model, url, headers, args.examples, args.stateful)
        by_class = {f"{k}xx": 0 for k in (2, 3, 4, 5)}
        for status, n in report.statuses.items():
            by_class[f"{status // 100}xx"] += n
        rows.append(
            {
                "service": model,
                "operations": report.operations,
                "cases": report.cases,
                "stateful steps": report.stateful_steps,
                **by_class,
                "failing operations": len(report.failures),
                "seconds": f"{report.seconds:.0f}",
            }
        )
        failures += [f"- {model} {label}: {text}" for label, text in report.failures.items()]
    table = markdown_table(rows)
    text = (
        f"schemathesis {_version()}, {args.examples} examples per operation and mode "
        f"(positive, negative), {args.stateful} stateful scenarios per service\n\n{table}\n"
        + ("\n".join(failures) + "\n" if failures else "")
    )
    print(text)
    if args.out:
        args.out.write_text(text)
    sys.exit(1 if failures else 0)


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("schemathesis")


if __name__ == "__main__":
    main()
