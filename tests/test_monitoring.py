"""Drift and latency metrics of the running heart service, scraped by a real Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import HEART_DRIFT_WINDOW
from tests.heart_samples import dataset_patients, shifted
from tests.servers import PrometheusServer, ServiceProcess, prometheus_server

PSI_THRESHOLD = 0.2  # documented in the README; the chart's alert uses the same value
SHIFTED_FEATURES = ("age", "chol", "trtbps", "thalachh")


@pytest.fixture(scope="module")
def prometheus(
    heart_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    with prometheus_server(workdir, [f"127.0.0.1:{heart_service.port}"]) as server:
        server.wait_for_series('up{job="medserve"} == 1')  # scraping before traffic starts
        yield server


def _send(service: ServiceProcess, patients: list[dict], per_request: int = 5) -> None:
    with httpx.Client(base_url=service.url, headers=service.auth_headers, timeout=30) as client:
        for start in range(0, len(patients), per_request):
            chunk = patients[start : start + per_request]
            assert client.post("/predict", json={"patients": chunk}).status_code == 200


def _gauges(service: ServiceProcess, name: str) -> dict[str, float]:
    """Series of one gauge family from /metrics, keyed by their label text."""
    values = {}
    for line in httpx.get(f"{service.url}/metrics").text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            values[labels] = float(value)
    return values


def _wait_for_full_window(service: ServiceProcess, timeout_s: float = 10) -> None:
    """PSI gauges are recomputed at most every DRIFT_EXPORT_INTERVAL_S, trailing edge included:
    the last batch of a burst shows up shortly after its answer, not with it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        samples = _gauges(service, "medserve_drift_window_samples")
        if list(samples.values()) == [float(HEART_DRIFT_WINDOW)]:
            return
        time.sleep(0.1)
    raise AssertionError(f"drift window never filled: {samples}")


def _feature_psi(service: ServiceProcess) -> dict[str, float]:
    _wait_for_full_window(service)
    return {
        labels.split('feature="')[1].split('"')[0]: v
        for labels, v in _gauges(service, "medserve_feature_psi").items()
    }


def test_in_distribution_traffic_stays_below_the_drift_threshold(
    heart_service: ServiceProcess, prometheus: PrometheusServer
) -> None:
    _send(heart_service, dataset_patients() * 2)
    psi = _feature_psi(heart_service)
    assert len(psi) == 13
    assert max(psi.values()) < PSI_THRESHOLD, psi


def test_shifted_traffic_crosses_the_drift_threshold(
    heart_service: ServiceProcess, prometheus: PrometheusServer
) -> None:
    _send(heart_service, [shifted(p) for p in dataset_patients()] * 2)
    psi = _feature_psi(heart_service)
    for feature in SHIFTED_FEATURES:
        assert psi[feature] > PSI_THRESHOLD, (feature, psi)
    assert psi["sex"] < PSI_THRESHOLD  # unshifted features stay calm
    (threshold,) = _gauges(heart_service, "medserve_drift_psi_threshold").values()
    assert threshold == PSI_THRESHOLD
    (prediction_psi,) = _gauges(heart_service, "medserve_prediction_psi").values()
    assert prediction_psi > PSI_THRESHOLD


def test_prometheus_scrapes_drift_and_latency(
    heart_service: ServiceProcess, prometheus: PrometheusServer
) -> None:
    drift = prometheus.wait_for_series(
        f'max(medserve_feature_psi{{model="heart_risk", feature="age"}}) > {PSI_THRESHOLD}'
    )
    assert float(drift[0]["value"][1]) > PSI_THRESHOLD
    _send(heart_service, dataset_patients()[:100], per_request=1)
    latency = prometheus.wait_for_series(
        "histogram_quantile(0.99, sum by (le) "
        '(rate(medserve_request_duration_seconds_bucket{model="heart_risk"}[1m]))) > 0'
    )
    p99 = float(latency[0]["value"][1])
    assert 0 < p99 < 10
    batch = prometheus.wait_for_series('medserve_batch_size_count{model="heart_risk"}')
    assert float(batch[0]["value"][1]) > 0
    # Requests are counted by API and outcome only: no series carries a request path.
    assert not prometheus.query('{__name__=~"bentoml_service_request.*"}')
