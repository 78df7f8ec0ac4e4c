"""Progress reports of a training run, for whoever watches it (`medserve up` draws bars).

Trainers take an optional callback and call it at phase changes and after every epoch; the
callback must be cheap and must not change training (Keras callbacks read no random state).
A run made of parallel parts (the CT backbones) reports each part on its own; the watcher adds
them up. Reports carry counts and names only, never data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field


class TrainingProgress(BaseModel):
    """Where one training (or one parallel part of it) stands."""

    model: str
    phase: str = Field(description="What runs now, for people: 'synthetic beats', 'epochs'.")
    part: str = Field(default="", description="One of several parallel parts (a CT backbone).")
    completed: int = Field(default=0, ge=0)
    total: int | None = Field(default=None, ge=0, description="None: no count known yet.")


ProgressCallback = Callable[[TrainingProgress], None]


@dataclass(frozen=True)
class Reporter:
    """A trainer's handle on its optional callback (picklable when the callback is, so it
    travels into Ray tasks)."""

    model: str
    callback: ProgressCallback | None = None

    def __call__(
        self, phase: str, *, part: str = "", completed: int = 0, total: int | None = None
    ) -> None:
        if self.callback is not None:
            self.callback(
                TrainingProgress(
                    model=self.model, phase=phase, part=part, completed=completed, total=total
                )
            )

    def keras_callbacks(self, epochs: int, part: str = "") -> list[Any]:
        """A Keras callback reporting each finished epoch of `epochs`; none without a callback,
        so an unwatched `fit` runs exactly as before."""
        if self.callback is None:
            return []
        import keras

        reporter = self

        class ReportEpochs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                reporter("epochs", part=part, completed=epoch + 1, total=epochs)

        return [ReportEpochs()]
