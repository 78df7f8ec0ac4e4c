"""What a model must provide to be served, and the per-worker inference path around it.

Each model implements `ServedModel` (KServe-style separate steps: preprocess, predict,
postprocess); `InferencePipeline` adds everything that is the same for every model: adaptive
batching, the prediction log, metrics and drift. All transports call `InferencePipeline.infer`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from medserve.drift import DriftMonitor, ReferenceProfile
from medserve.prediction_log import PredictionLog, PredictionRecord, new_ids, utcnow
from medserve.serving.batching import AdaptiveBatcher, BatchLimits
from medserve.serving.metrics import service_metrics
from medserve.serving.v2 import TensorSpec
from medserve.settings import Settings

# PSI gauges are recomputed at most this often (scrapes are seconds apart; batches are not).
DRIFT_EXPORT_INTERVAL_S = 0.25


class ServedModel(ABC):
    """A loaded model as the serving layer sees it."""

    name: ClassVar[str]
    instance_schema: ClassVar[type[BaseModel]]
    instances_key: ClassVar[str] = "instances"  # JSON key of the instance list in /predict
    v2_inputs: ClassVar[tuple[TensorSpec, ...]]  # Open Inference Protocol v2 tensors
    v2_outputs: ClassVar[tuple[TensorSpec, ...]]
    example: ClassVar[Any]  # one valid instance as JSON (docs, client snippets, smoke tests)
    # Heavy models (TensorFlow, ONNX Runtime) release the GIL while they compute: predicting in a
    # thread keeps the event loop accepting and decoding the next requests meanwhile.
    predict_in_thread: ClassVar[bool] = False
    tag: str
    reference: ReferenceProfile

    @classmethod
    @abstractmethod
    def load(cls, tag: str) -> ServedModel:
        """Load a stored model by its full tag."""

    @abstractmethod
    def preprocess(self, instances: Sequence[BaseModel]) -> np.ndarray:
        """Validated instances -> the model's input rows (float64 matrix)."""

    @abstractmethod
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """One batch of rows -> one output row per input row (e.g. class probabilities)."""

    @abstractmethod
    def postprocess(self, output: np.ndarray, prediction_id: str, instance: BaseModel) -> BaseModel:
        """One output row (and the instance it answers, for per-input facts) -> the answer."""

    @abstractmethod
    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """(features in reference order, score, predicted class) for the drift monitor."""

    @abstractmethod
    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """v2 input tensors -> unvalidated JSON-like instances (schema-validated next)."""

    @classmethod
    @abstractmethod
    def tensors_from_instances(cls, instances: Sequence[Any]) -> dict[str, np.ndarray]:
        """Instances -> v2 input tensors (the inverse of `instances_from_tensors`, for clients)."""

    @abstractmethod
    def tensors_from_answers(self, answers: Sequence[BaseModel]) -> dict[str, np.ndarray]:
        """Answers -> one array per declared v2 output tensor."""

    @abstractmethod
    def allowed(self, field: str) -> str | None:
        """Allowed values of an input field, for 422 messages."""

    def batch_limits(self, settings: Settings) -> BatchLimits:
        """The platform's batch size and one batch at a time, unless a model knows better."""
        return BatchLimits(settings.max_batch_size)

    def predicted_class(self, output: np.ndarray) -> int:
        return int(np.argmax(output))

    def logged_inputs(self, instance: BaseModel) -> dict[str, Any]:
        """What the prediction log keeps of one instance (override for array inputs)."""
        return instance.model_dump()


class InferencePipeline:
    """Validation-free inference path of one worker: batch -> predict -> log -> metrics."""

    def __init__(self, model: ServedModel, settings: Settings, log: PredictionLog) -> None:
        self.model = model
        self.settings = settings
        self.log = log
        self.metrics = service_metrics()
        self.drift = DriftMonitor(model.reference, settings.drift_window)
        self._drift_exported_at = 0.0
        self._drift_export_scheduled = False
        limits = model.batch_limits(settings)
        self.batcher = AdaptiveBatcher(
            self._infer_batch, limits.max_batch_size, settings.max_latency_ms, limits.concurrency
        )
        self.metrics.model_info.labels(model.name, model.tag).set(1)
        self.metrics.reference_positive_rate.labels(model.name).set(model.reference.positive_rate)
        self.metrics.drift_psi_threshold.labels(model.name).set(settings.drift_psi_threshold)

    async def _infer_batch(self, rows: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        if self.model.predict_in_thread:
            outputs = await asyncio.to_thread(self.model.predict, rows)
        else:
            outputs = self.model.predict(rows)
        self.metrics.inference_duration.labels(self.model.name).observe(
            time.perf_counter() - started
        )
        self.metrics.batch_size.labels(self.model.name).observe(len(rows))
        self._update_drift(rows, outputs)
        return outputs

    def _update_drift(self, rows: np.ndarray, outputs: np.ndarray) -> None:
        """Feed the window and the score histogram now; recompute the PSI gauges at most every
        interval, trailing edge included, so the last batch of a burst is always exported."""
        features, scores, predicted = self.model.drift_inputs(rows, outputs)
        self.drift.observe(features, scores, predicted)
        score_histogram = self._score_histogram
        for score in scores.tolist():
            score_histogram.observe(score)
        if self._drift_export_scheduled:
            return
        wait = DRIFT_EXPORT_INTERVAL_S - (time.monotonic() - self._drift_exported_at)
        if wait <= 0:
            self._export_drift()
        else:
            self._drift_export_scheduled = True
            asyncio.get_running_loop().call_later(wait, self._export_drift)

    def _export_drift(self) -> None:
        self._drift_export_scheduled = False
        self._drift_exported_at = time.monotonic()
        snapshot = self.drift.snapshot()
        name = self.model.name
        self.metrics.drift_window_samples.labels(name).set(snapshot.samples)
        if snapshot.samples < self.settings.drift_min_samples:
            return
        for feature, value in snapshot.feature_psi.items():
            self.metrics.feature_psi.labels(name, feature).set(value)
        self.metrics.prediction_psi.labels(name).set(snapshot.score_psi)
        self.metrics.positive_rate.labels(name).set(snapshot.positive_rate)

    async def infer(
        self, instances: Sequence[BaseModel], request_id: str, transport: str
    ) -> list[BaseModel]:
        """Answers for validated instances, logged before they are returned."""
        rows = self.model.preprocess(instances)
        outputs = await self.batcher.submit(rows)
        answers, records = [], []
        now = utcnow()
        ids = new_ids(len(instances))
        classes = [self.model.predicted_class(output) for output in outputs]
        for instance, output, predicted, prediction_id in zip(
            instances, outputs, classes, ids, strict=True
        ):
            answer = self.model.postprocess(output, prediction_id, instance)
            answers.append(answer)
            records.append(
                PredictionRecord(
                    id=prediction_id,
                    model=self.model.name,
                    model_tag=self.model.tag,
                    request_id=request_id,
                    transport=transport,
                    created_at=now,
                    inputs=self.model.logged_inputs(instance),
                    outputs=answer.model_dump(by_alias=True, exclude={"prediction_id"}),
                    predicted_class=predicted,
                )
            )
        for predicted, count in Counter(classes).items():
            self._prediction_counter(predicted).inc(count)
        self._instances_histogram(transport).observe(len(instances))
        await self.log.record_async(records, wait=self.settings.prediction_log_wait)
        return answers

    @functools.cache  # noqa: B019 - one pipeline per worker, lives as long as the process
    def _prediction_counter(self, predicted: int) -> Any:
        return self.metrics.predictions.labels(self.model.name, str(predicted))

    @functools.cached_property
    def _score_histogram(self) -> Any:
        return self.metrics.prediction_score.labels(self.model.name)

    @functools.cache  # noqa: B019
    def _instances_histogram(self, transport: str) -> Any:
        return self.metrics.instances_per_request.labels(self.model.name, transport)

    @functools.cache  # noqa: B019
    def request_timer(self, transport: str, outcome: str) -> Any:
        """The latency histogram child of one (transport, outcome) pair (label lookup cached)."""
        return self.metrics.request_duration.labels(self.model.name, transport, outcome)
