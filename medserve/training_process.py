"""The training process of `medserve up`: trains the missing models one after another on one
Ray session and writes what happens as JSON lines to a file descriptor.

    python -m medserve.training_process --events-fd 3 heart_risk ecg_anomaly ...

It is a child process so that everything TensorFlow, absl and Ray print (through Ray's log
forwarding, all of the workers' output too) goes to the file its output is sent to, not to the
terminal; and so that the local Ray it starts ends with it: it shuts Ray down after the last
model, before exiting. A cluster in `RAY_ADDRESS` is only disconnected from, never stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from medserve.ray_runtime import connect  # before anything imports ray: no `uv run` hook
from training.progress import TrainingProgress
from training.registry import TrainOutcome


class RayConnected(BaseModel):
    kind: Literal["ray"] = "ray"
    local: bool = Field(description="A Ray started here, not the cluster in RAY_ADDRESS.")
    seconds: float


class ProgressReport(BaseModel):
    kind: Literal["progress"] = "progress"
    progress: TrainingProgress


class Trained(BaseModel):
    kind: Literal["trained"] = "trained"
    outcome: TrainOutcome
    seconds: float


class TrainingFailed(BaseModel):
    kind: Literal["failed"] = "failed"
    model: str
    error: str = Field(description="The exception's type and message; details are in the log.")


class RayStopped(BaseModel):
    kind: Literal["ray_stopped"] = "ray_stopped"
    local: bool = Field(description="The local Ray was shut down (else: disconnected only).")


TrainingEvent = Annotated[
    RayConnected | ProgressReport | Trained | TrainingFailed | RayStopped,
    Field(discriminator="kind"),
]
EVENT: TypeAdapter[TrainingEvent] = TypeAdapter(TrainingEvent)

Emit = Callable[[BaseModel], None]


def train_models(models: Sequence[str], emit: Emit) -> bool:
    """Train `models` in order on one Ray session, then leave Ray; False if one failed (the
    rest are not trained: `medserve up` stops on a failure)."""
    import ray

    from ray_jobs.train import run

    if not os.environ.get("RAY_ADDRESS"):
        # Ray would otherwise join the last cluster started on this machine (by anyone) if it
        # still runs; "local" starts our own, which ends with this process.
        os.environ["RAY_ADDRESS"] = "local"
    local = os.environ["RAY_ADDRESS"] == "local"
    started = time.monotonic()
    try:
        connect(log_to_driver=True, forward_environment=True)
        emit(RayConnected(local=local, seconds=time.monotonic() - started))
        return all(_train_one(model, run, emit) for model in models)  # stops at a failure
    finally:
        ray.shutdown()  # ends a Ray started by `connect`; only disconnects from a cluster
        emit(RayStopped(local=local))


def _train_one(model: str, run: Callable[..., TrainOutcome], emit: Emit) -> bool:
    started = time.monotonic()
    try:
        outcome = run(model, progress=lambda report: emit(ProgressReport(progress=report)))
    except Exception as error:  # reported to the launcher; the traceback goes to the log
        import traceback

        traceback.print_exc()
        emit(TrainingFailed(model=model, error=f"{type(error).__name__}: {error}"))
        return False
    emit(Trained(outcome=outcome, seconds=time.monotonic() - started))
    return True


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through `train_models`' `finally`, which shuts the local Ray down.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-fd", type=int, required=True, help="where events are written")
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    events = os.fdopen(args.events_fd, "w", buffering=1)  # line-buffered: one event per line

    def emit(event: BaseModel) -> None:
        events.write(event.model_dump_json() + "\n")

    return 0 if train_models(args.models, emit) else 1


if __name__ == "__main__":
    sys.exit(main())
