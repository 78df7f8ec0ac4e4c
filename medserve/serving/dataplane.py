"""The data plane: everything a call goes through, whatever transport carried it.

Adapters (`http_api.py` for JSON and pages, `oip_rest.py` and `oip_grpc.py` for the Open
Inference Protocol) decode their wire format and hand instances or tensors here; the plane owns
validation and its error mapping, admission, adaptive batching, prediction, the prediction log,
metrics and drift, and how every call's outcome is counted. KServe's `DataPlane` and MLServer's
`handlers/dataplane.py` have the same split: one core, thin protocol adapters.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from medserve.database.busy import DatabaseBusy
from medserve.drift import DriftMonitor
from medserve.logs import get_logger
from medserve.prediction_log import PredictionLog, new_id, new_ids, utcnow
from medserve.serving.batching import AdaptiveBatcher
from medserve.serving.errors import (
    FieldError,
    ServiceError,
    database_busy,
    field_errors,
    validation_error,
)
from medserve.serving.metrics import ServiceMetrics, service_metrics
from medserve.serving.model import PREDICTION_ID, Columns, ModelInputs, ServedModel, answer_rows
from medserve.settings import Settings

log = get_logger("dataplane")
T = TypeVar("T")

# PSI gauges are recomputed at most this often (scrapes are seconds apart; batches are not).
DRIFT_EXPORT_INTERVAL_S = 0.25
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def valid_request_id(given: str | None) -> str:
    """`given` if it is a well-formed id (1-64 of [A-Za-z0-9._:-]), else a new ULID.

    Every transport passes client-chosen ids through here: they are logged and stored, so free
    text (which could carry a patient's name) must never get through.
    """
    return given if given and _VALID_REQUEST_ID.match(given) else new_id()


@dataclass(frozen=True, slots=True)
class Answered:
    """One request's answers as columns (prediction ids included); `rows()` gives the same as
    JSON-ready dicts. Tensor adapters read the columns only, so no Python object is made per
    value of an array answer (an ECG reconstruction) on their path."""

    columns: Columns
    keyed: Mapping[str, Sequence[str]]
    # The logged rows (every column but the id and the unlogged ones), made for the log anyway:
    # when nothing is unlogged they are the JSON rows but for the id.
    logged: list[dict[str, Any]]
    complete: bool

    def rows(self) -> list[dict[str, Any]]:
        if not self.complete:
            return answer_rows(self.columns, self.keyed)
        ids = self.columns[PREDICTION_ID].tolist()
        return [{PREDICTION_ID: pid, **row} for pid, row in zip(ids, self.logged, strict=True)]


class DataPlane:
    """One worker's serving core for one model (created once the model is loaded)."""

    def __init__(
        self,
        model: ServedModel,
        settings: Settings,
        log: PredictionLog,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.log = log
        self.metrics = metrics or service_metrics()
        self.drift = DriftMonitor(model.reference, settings.drift_window)
        self._drift_exported_at = 0.0
        self._drift_export_scheduled = False
        limits = model.batch_limits(settings)
        self.batcher = AdaptiveBatcher(
            self._infer_batch, limits.max_batch_size, settings.max_latency_ms, limits.concurrency
        )
        self.request_schema = _request_schema(model, settings.max_instances_per_request)
        self._instances = TypeAdapter(list[model.instance_schema])  # type: ignore[name-defined]
        self.metrics.model_info.labels(model.name, model.tag).set(1)
        self.metrics.reference_positive_rate.labels(model.name).set(model.reference.positive_rate)
        self.metrics.drift_psi_threshold.labels(model.name).set(settings.drift_psi_threshold)

    # -- validation ------------------------------------------------------------------------------
    def parse_json(self, schema: type[BaseModel], body: bytes | str, prefix: str = "") -> Any:
        """Validate a JSON body: malformed JSON is a 400, bad values a 422, too many a 413."""
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            raise self.to_service_error(exc, prefix) from None

    async def predict_request_instances(self, body: bytes) -> list[BaseModel]:
        """The validated instances of a `/predict` body (decoded in a thread for file models)."""
        if self.model.decodes_files:
            return await asyncio.to_thread(self._predict_request_instances, body)
        return self._predict_request_instances(body)

    def _predict_request_instances(self, body: bytes) -> list[BaseModel]:
        parsed = self.parse_json(self.request_schema, body)
        return list(getattr(parsed, self.model.instances_key))

    def to_service_error(self, exc: ValidationError, prefix: str = "") -> ServiceError:
        kinds = {err["type"] for err in exc.errors()}
        if "json_invalid" in kinds:
            return ServiceError(400, "malformed_json", "the body is not valid JSON")
        # Too many instances, not an instance that is too long (an ECG beat of 141 samples).
        if any(
            err["type"] == "too_long" and tuple(err["loc"]) == (self.model.instances_key,)
            for err in exc.errors()
        ):
            return self.too_many_instances(field=self.model.instances_key)
        return validation_error(self.field_errors(exc, prefix))

    def field_errors(self, exc: ValidationError, prefix: str = "") -> list[FieldError]:
        return field_errors(exc, self.model.allowed, prefix)

    async def validate_instances(self, raw: list[Any], prefix: str) -> list[BaseModel]:
        """JSON-like instances decoded from tensors -> validated instances, or a 400 naming the
        first offending `<prefix>.<row>.<field>` (the protocol's status for invalid tensors)."""
        if self.model.decodes_files:
            return await asyncio.to_thread(self._validate_instances, raw, prefix)
        return self._validate_instances(raw, prefix)

    def _validate_instances(self, raw: list[Any], prefix: str) -> list[BaseModel]:
        try:
            return self._instances.validate_python(raw)
        except ValidationError as exc:
            errors = self.field_errors(exc, prefix)
            first = errors[0]
            raise ServiceError(
                400,
                "invalid_tensor",
                f"{len(errors)} invalid value(s); first: {first.field}: {first.message}",
                field=first.field,
                errors=errors,
            ) from None

    def admit(self, count: int) -> None:
        """Refuse, before any conversion, a request with more instances than allowed."""
        if count > self.settings.max_instances_per_request:
            raise self.too_many_instances()

    def too_many_instances(self, field: str | None = None) -> ServiceError:
        limit = self.settings.max_instances_per_request
        return ServiceError(413, "batch_too_large", f"at most {limit} instances per request", field)

    # -- inference -------------------------------------------------------------------------------
    async def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        """Validated JSON instances -> model inputs (in a thread for models that decode files)."""
        if self.model.decodes_files:
            return await asyncio.to_thread(self.model.preprocess, instances)
        return self.model.preprocess(instances)

    async def predict_instances(
        self, instances: Sequence[BaseModel], request_id: str, api: str
    ) -> Answered:
        """Answers for validated JSON instances."""
        return await self.infer(await self.preprocess(instances), request_id, api)

    async def infer(self, inputs: ModelInputs, request_id: str, api: str) -> Answered:
        """Answers for one request's model inputs, logged (durably, by default) before return."""
        model = self.model
        if model.batched:
            outputs = await self.batcher.submit(inputs.rows)
        else:
            outputs = await self._infer_batch(inputs.rows)
        concluded = model.concluded(outputs)
        columns = {PREDICTION_ID: _prediction_ids(len(inputs), concluded)}
        columns |= model.postprocess(outputs, inputs)
        logged_columns = {
            name: column
            for name, column in columns.items()
            if name != PREDICTION_ID and name not in model.unlogged_columns
        }
        logged = answer_rows(logged_columns, model.keyed_columns)
        classes = model.predicted_classes(outputs).tolist()
        if concluded is None:
            await self._record(inputs, columns, logged, classes, request_id, api)
        elif concluded.any():
            await self._record_concluded(
                inputs, columns, logged, classes, concluded, request_id, api
            )
            classes = [c for c, done in zip(classes, concluded.tolist(), strict=True) if done]
        else:
            classes = []
        for predicted, n in Counter(classes).items():
            self._prediction_counter(predicted).inc(n)
        self._instances_histogram(api).observe(len(inputs))
        complete = len(logged_columns) == len(columns) - 1
        return Answered(columns, model.keyed_columns, logged, complete)

    async def _record_concluded(
        self,
        inputs: ModelInputs,
        columns: Columns,
        logged: list[dict[str, Any]],
        classes: list[int],
        concluded: np.ndarray,
        request_id: str,
        api: str,
    ) -> None:
        """Log only the rows that conclude a case."""
        if concluded.all():  # a request whose rows all conclude (a final consult step)
            await self._record(inputs, columns, logged, classes, request_id, api)
            return
        keep = np.flatnonzero(concluded)
        kept = keep.tolist()
        await self._record(
            ModelInputs(
                inputs.rows[keep], [inputs.context[i] for i in kept] if inputs.context else ()
            ),
            {PREDICTION_ID: columns[PREDICTION_ID][keep]},
            [logged[i] for i in kept],
            [classes[i] for i in kept],
            request_id,
            api,
        )

    async def _record(
        self,
        inputs: ModelInputs,
        columns: Columns,
        logged: list[dict[str, Any]],
        classes: list[int],
        request_id: str,
        api: str,
    ) -> None:
        model = self.model
        now = utcnow()
        records = [
            {
                "id": prediction_id,
                "model": model.name,
                "model_tag": model.tag,
                "request_id": request_id,
                "api": api,
                "created_at": now,
                "inputs": logged_inputs,
                "outputs": outputs,
                "predicted_class": predicted,
            }
            for prediction_id, logged_inputs, outputs, predicted in zip(
                columns[PREDICTION_ID].tolist(),
                model.logged_inputs(inputs),
                logged,
                classes,
                strict=True,
            )
        ]
        await self.log.record_async(records, wait=self.settings.prediction_log_wait)

    async def _infer_batch(self, rows: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        if self.model.predict_in_thread:
            outputs, drift = await asyncio.to_thread(self._predict, rows)
        else:
            outputs, drift = self._predict(rows)
        self.metrics.inference_duration.labels(self.model.name).observe(
            time.perf_counter() - started
        )
        self.metrics.batch_size.labels(self.model.name).observe(len(rows))
        self._update_drift(drift)
        return outputs

    def _predict(self, rows: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Outputs of a batch and its drift inputs (image statistics are not cheap either)."""
        outputs = self.model.predict(rows)
        return outputs, self.model.drift_inputs(rows, outputs)

    def _update_drift(self, drift: tuple[np.ndarray, ...]) -> None:
        """Feed the window and the score histogram now; recompute the PSI gauges at most every
        interval, trailing edge included, so the last batch of a burst is always exported."""
        features, scores, predicted = drift
        if not len(scores):
            return  # nothing concluded (a consult step asking a question): nothing to watch
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

    # -- outcomes --------------------------------------------------------------------------------
    async def handle(
        self, api: str, request_id: str, route: str, work: Callable[[], Awaitable[T]]
    ) -> T | ServiceError:
        """Run one call's `work`: its result, or the refusal to send (an unexpected exception is
        logged by type only and becomes a 500). Every call is timed and counted by outcome, and
        refusals are logged with the route template, never the raw path or a value."""
        started = time.perf_counter()
        try:
            result = await work()
        except (ServiceError, DatabaseBusy) as exc:
            # A busy database (the log's group commit, a feedback write) is retryable: 503.
            error = database_busy(exc) if isinstance(exc, DatabaseBusy) else exc
            elapsed = self._observe(api, error.error, started)
            self.refused(error, request_id, route, elapsed)
            return error
        except Exception as exc:  # never leak internals; the type alone is logged
            log.error(
                "unhandled error",
                extra={"request_id": request_id, "route": route, "error": type(exc).__name__},
            )
            self._observe(api, "internal_error", started)
            return ServiceError(500, "internal_error", "unexpected server error")
        elapsed = self._observe(api, "ok", started)
        if self.settings.access_log:
            log.info(
                "request served",
                extra={
                    "request_id": request_id,
                    "route": route,
                    "api": api,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )
        return result

    def _observe(self, api: str, outcome: str, started: float) -> float:
        elapsed = time.perf_counter() - started
        self.request_timer(api, outcome).observe(elapsed)
        return elapsed

    def refused(self, error: ServiceError, request_id: str, route: str, elapsed: float) -> None:
        """Count and log a refusal: field names and reasons only, never a patient's value."""
        self.metrics.rejected.labels(self.model.name, error.error).inc()
        log.info(
            "request rejected",
            extra={
                "request_id": request_id,
                "model_tag": self.model.tag,
                "route": route,
                "status": error.status,
                "reason": error.error,
                "latency_ms": round(elapsed * 1000, 3),
            },
        )

    @functools.cache  # noqa: B019 - one plane per worker, lives as long as the process
    def request_timer(self, api: str, outcome: str) -> Any:
        """The latency histogram child of one (api, outcome) pair (label lookup cached)."""
        return self.metrics.request_duration.labels(self.model.name, api, outcome)

    @functools.cache  # noqa: B019
    def _prediction_counter(self, predicted: int) -> Any:
        return self.metrics.predictions.labels(self.model.name, str(predicted))

    @functools.cached_property
    def _score_histogram(self) -> Any:
        return self.metrics.prediction_score.labels(self.model.name)

    @functools.cache  # noqa: B019
    def _instances_histogram(self, api: str) -> Any:
        return self.metrics.instances_per_request.labels(self.model.name, api)


def _prediction_ids(count: int, concluded: np.ndarray | None) -> np.ndarray:
    """A new id per row, or per concluded row (the others: None, nothing is logged for them)."""
    if concluded is None:
        return np.array(new_ids(count), dtype=object)
    ids = np.full(count, None, dtype=object)
    ids[concluded] = new_ids(int(concluded.sum()))
    return ids


def _request_schema(model: ServedModel, max_instances: int) -> type[BaseModel]:
    """The `/predict` body: `{<instances_key>: [instance, ...]}` with 1..max instances."""
    return create_model(
        f"{model.name}_predict_request",
        __config__=ConfigDict(extra="forbid", strict=True),
        **{
            model.instances_key: (
                list[model.instance_schema],  # type: ignore[name-defined]
                Field(..., min_length=1, max_length=max_instances),
            )
        },
    )
