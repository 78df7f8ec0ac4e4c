"""Prometheus metrics of every service (documented in the README's metrics table).

`prometheus_client` is imported lazily: BentoML sets `PROMETHEUS_MULTIPROC_DIR` in each worker
after the service module is imported, and the client picks its multiprocess mode at import.

The services export only these families: BentoML's own per-request middleware is switched off
(`service.bentoml_config`), because it labels series with the raw request path (a path can name
a patient) and cost a tenth of a small request's CPU; `medserve_request_duration_seconds` is the
request metric, labelled by API and outcome, never by path.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Fine around the small scores of reconstruction models (ECG MAE ~0.01-0.1) and coarse up to 1
# for probabilities, so one family serves every model.
SCORE_BUCKETS = (
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.06,
    0.08,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
)


class ServiceMetrics:
    """The metric families; every series carries a `model` label."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            # livemax: with several workers, export the worst (largest) value of the live ones.
            return Gauge(name, doc, labels, multiprocess_mode="livemax")

        self.request_duration = Histogram(
            "medserve_request_duration_seconds",
            "Time from request received to answer sent, per model, API (http_json, v2_rest, "
            "grpc, grpc_stream, form, ...) and outcome.",
            ["model", "api", "outcome"],
            buckets=LATENCY_BUCKETS,
        )
        self.inference_duration = Histogram(
            "medserve_inference_duration_seconds",
            "Model compute time of one adaptive batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "medserve_batch_size",
            "Rows per adaptive batch handed to the model.",
            ["model"],
            buckets=BATCH_BUCKETS,
        )
        self.instances_per_request = Histogram(
            "medserve_instances_per_request",
            "Instances (patients, beats, ...) per accepted request, per model and API.",
            ["model", "api"],
            buckets=BATCH_BUCKETS,
        )
        self.prediction_score = Histogram(
            "medserve_prediction_score",
            "The model's score per instance (heart: P(CAD); ECG: reconstruction MAE).",
            ["model"],
            buckets=SCORE_BUCKETS,
        )
        self.rejected = Counter(
            "medserve_rejected_requests_total",
            "Requests refused before inference, by reason (validation, overloaded, ...).",
            ["model", "reason"],
        )
        self.predictions = Counter(
            "medserve_predictions_total", "Predictions made, by predicted class.", ["model", "cls"]
        )
        self.feature_psi = gauge(
            "medserve_feature_psi",
            "PSI of a feature over the recent window against the training reference.",
            ["model", "feature"],
        )
        self.prediction_psi = gauge(
            "medserve_prediction_psi",
            "PSI of the predicted score over the recent window against training.",
            ["model"],
        )
        self.positive_rate = gauge(
            "medserve_positive_rate",
            "Share of positive predictions over the recent window.",
            ["model"],
        )
        self.reference_positive_rate = gauge(
            "medserve_reference_positive_rate",
            "Share of positives in the training data.",
            ["model"],
        )
        self.drift_psi_threshold = gauge(
            "medserve_drift_psi_threshold",
            "PSI above which a feature counts as drifted (alert rules compare against it).",
            ["model"],
        )
        self.drift_window_samples = gauge(
            "medserve_drift_window_samples",
            "Rows currently in the drift window.",
            ["model"],
        )
        self.model_info = gauge(
            "medserve_model_info", "The model tag a service runs (value 1).", ["model", "tag"]
        )


@lru_cache
def service_metrics() -> ServiceMetrics:
    """The process-wide metric families (created on first use, inside the worker)."""
    return ServiceMetrics()


def exposition() -> tuple[bytes, str]:
    """The text Prometheus scrapes: every worker's series (BentoML points
    `PROMETHEUS_MULTIPROC_DIR` at the folder all its workers write), or this process's."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry, folder)
    return generate_latest(registry), CONTENT_TYPE_LATEST
