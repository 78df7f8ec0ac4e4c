"""Ray job entrypoint: train any registered model.

    python -m ray_jobs.train heart_risk [--with-feedback] [--export s3://bucket/prefix]

Runs on a local Ray by default; under `ray job submit` or a KubeRay RayJob it joins that cluster
(`RAY_ADDRESS` is set for it). The training itself runs as a Ray task, which saves to the model
store of the node it ran on and, with `--export`, uploads the model from there.
"""

from __future__ import annotations

import argparse
import json
import sys

import ray
from ray.util.queue import Queue

from medserve.ray_runtime import connect
from medserve.settings import get_settings, use_local_bentoml_home
from training.progress import ProgressCallback
from training.registry import TRAINERS, TrainOutcome

PROGRESS_POLL_S = 0.5  # how often the driver forwards the task's progress reports


@ray.remote(num_cpus=1)
def train_task(
    model: str, with_feedback: bool, export_uri: str | None, progress: Queue | None = None
) -> dict:
    """Train `model` on this Ray node; returns the `TrainOutcome` as a dict. `progress` is a
    queue the reports go to (the driver may run on another node)."""
    use_local_bentoml_home()
    from medserve import model_store

    settings = get_settings()
    report = progress.put_nowait if progress is not None else None
    outcome = TRAINERS[model](settings, with_feedback, report)
    if export_uri:
        outcome.exported_to = model_store.export_model(outcome.tag, export_uri, settings)
    return outcome.model_dump()


def run(
    model: str,
    with_feedback: bool = False,
    export_uri: str | None = None,
    progress: ProgressCallback | None = None,
) -> TrainOutcome:
    """Connect to (or start) Ray, run the training task, return its outcome; `progress` is
    called in this process with the task's reports."""
    if model not in TRAINERS:
        raise SystemExit(f"unknown model {model!r}; known: {', '.join(sorted(TRAINERS))}")
    # MEDSERVE_* carries the training configuration (e.g. MEDSERVE_CT_TRAIN_IMAGE_SIZE): the
    # training task runs in a worker that does not inherit the driver's environment.
    connect(log_to_driver=True, forward_environment=True)
    if progress is None:
        outcome = ray.get(train_task.remote(model, with_feedback, export_uri))
    else:
        outcome = _run_reporting(model, with_feedback, export_uri, progress)
    return TrainOutcome.model_validate(outcome)


def _run_reporting(
    model: str, with_feedback: bool, export_uri: str | None, progress: ProgressCallback
) -> dict:
    """Run the task with a queue actor for its reports, forwarding them until it ends."""
    queue = Queue(actor_options={"num_cpus": 0})
    try:
        ref = train_task.remote(model, with_feedback, export_uri, queue)
        while True:
            done, _ = ray.wait([ref], timeout=PROGRESS_POLL_S)
            # Drained after `done` is seen: every report was put before the task returned.
            for report in queue.get_nowait_batch(queue.qsize()):
                progress(report)
            if done:
                return ray.get(ref)
    finally:
        queue.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TRAINERS))
    parser.add_argument("--with-feedback", action="store_true", help="add confirmed outcomes")
    parser.add_argument("--export", default=None, help="s3://bucket/prefix or a folder")
    args = parser.parse_args(argv)
    outcome = run(args.model, args.with_feedback, args.export)
    if outcome.report:
        print(outcome.report)
    print(json.dumps({"event": "trained", **outcome.model_dump()}, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
