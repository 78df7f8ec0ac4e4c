"""The anonymisation run's metrics: pushed to a real Pushgateway, scraped by a real Prometheus,
equal to the run manifest, free of patient data, and enough for every panel of the dashboard."""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from medserve.anonymize.metrics import JOB, OUTCOMES, REASONS, RunMetrics, output_group
from medserve.anonymize.pipeline import RunManifest, run
from medserve.anonymize.settings import AnonymizerSettings, PipelineSettings
from tests.anonymize_checks import plain, planted_values
from tests.conftest import RayHead
from tests.servers import (
    LOOPBACK,
    PrometheusServer,
    PushgatewayServer,
    free_port,
    prometheus_server,
    pushgateway_server,
)
from tests.test_anonymize_pipeline import (
    Corpus,
    assert_no_secrets,
    manifest_of,
    ray_job,
    run_cli,
)

DASHBOARD = Path(__file__).parent.parent / "charts" / "medserve" / "dashboards" / "anonymize.json"
FAMILIES = {
    "medserve_anonymize_exams_total",
    "medserve_anonymize_quarantined_total",
    "medserve_anonymize_listed_exams",
    "medserve_anonymize_last_push_timestamp_seconds",
    "medserve_anonymize_run_finished",
}
# What a Grafana server would put in place of its variables when it sends the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
PUSH_INTERVAL_SECONDS = 0.3


@dataclass
class Monitoring:
    pushgateway: PushgatewayServer
    prometheus: PrometheusServer


@dataclass
class PoolRun:
    manifest: RunManifest
    output: Path
    group: str
    started: float
    ended: float


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Three exams under patient-named keys plus every kind of bad input (9 quarantined)."""
    return Corpus(tmp_path_factory.mktemp("metrics-corpus"), count=3, seed=610)


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    """A Pushgateway and a Prometheus scraping it every second as a ServiceMonitor would."""
    workdir = tmp_path_factory.mktemp("metrics-monitoring")
    with (
        pushgateway_server(workdir / "pushgateway") as gateway,
        prometheus_server(
            workdir / "prometheus", [gateway.target], job="pushgateway", honor_labels=True
        ) as prometheus,
    ):
        prometheus.wait_for_series('up{job="pushgateway"} == 1', timeout_s=30)
        yield Monitoring(gateway, prometheus)


@pytest.fixture(scope="module")
def pool_run(
    corpus: Corpus, monitoring: Monitoring, tmp_path_factory: pytest.TempPathFactory
) -> PoolRun:
    """The real pipeline (process pool, two workers) pushing every 0.3 s, scraped while it runs."""
    output = tmp_path_factory.mktemp("metrics-pool") / "out"
    started = time.time()
    manifest = run(
        str(corpus.root / "in"),
        str(output),
        engine="processpool",
        anonymizer=AnonymizerSettings(dpi=300, ocr_sample=0.0),  # as the pipeline tests
        pipeline=PipelineSettings(
            workers=2,
            files_per_block=2,
            pushgateway_url=monitoring.pushgateway.url,
            push_interval_seconds=PUSH_INTERVAL_SECONDS,
        ),
        progress=False,
    )
    group = output_group(str(output))
    # Prometheus has the final push once it has scraped run_finished == 1.
    monitoring.prometheus.wait_for_series(
        f'medserve_anonymize_run_finished{{job="{JOB}", output="{group}"}} == 1', timeout_s=30
    )
    return PoolRun(manifest, output, group, started, time.time())


def pushed(text: str, group: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{family sample name: [(labels without job/output/instance, value)]} of one push group."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.pop("job", None) != JOB or labels.pop("output", None) != group:
                continue
            labels.pop("instance", None)
            found.setdefault(sample.name, []).append((labels, sample.value))
    return found


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples}


def assert_matches_manifest(
    series: dict[str, list[tuple[dict[str, str], float]]], manifest: RunManifest
) -> None:
    """The pushed numbers are exactly the manifest's: outcomes, reasons, listed, finished."""
    assert set(series) >= FAMILIES, FAMILIES - set(series)
    outcomes = by_label(series["medserve_anonymize_exams_total"], "outcome")
    assert outcomes == {
        "anonymized": manifest.anonymized,
        "quarantined": manifest.quarantined,
        "skipped": manifest.skipped,
        "failed": manifest.failed,
    }
    reasons = by_label(series["medserve_anonymize_quarantined_total"], "reason")
    assert set(reasons) == set(REASONS)  # every code exported, so dashboards see zeros too
    assert {r: n for r, n in reasons.items() if n} == manifest.quarantine_reasons
    assert series["medserve_anonymize_listed_exams"] == [({}, manifest.listed)]
    assert series["medserve_anonymize_run_finished"] == [({}, 1.0)]


# --------------------------------------------------------------------------- the pushed series


def test_pushed_series_equal_the_run_manifest(
    pool_run: PoolRun, monitoring: Monitoring, corpus: Corpus
) -> None:
    manifest = pool_run.manifest
    assert manifest.complete
    assert (manifest.anonymized, manifest.quarantined) == (len(corpus.exams), len(corpus.bad))
    text = monitoring.pushgateway.metrics_text()
    series = pushed(text, pool_run.group)
    assert_matches_manifest(series, manifest)
    # Exactly the five families, without prometheus_client's `_created` companions.
    ours = {name for name in series if name.startswith("medserve_")}
    assert ours == FAMILIES
    ((_, last_push),) = series["medserve_anonymize_last_push_timestamp_seconds"]
    assert pool_run.started <= last_push <= pool_run.ended
    groups = [g["labels"] for g in monitoring.pushgateway.groups()]
    assert {"job": JOB, "output": pool_run.group} in groups
    assert re.fullmatch(r"[0-9a-f]{12}", pool_run.group)


def test_prometheus_scrapes_the_gateway_and_saw_the_run_in_progress(
    pool_run: PoolRun, monitoring: Monitoring
) -> None:
    prometheus, group, manifest = monitoring.prometheus, pool_run.group, pool_run.manifest
    selector = f'job="{JOB}", output="{group}"'
    # honor_labels kept the pushed job label (the scrape job is called "pushgateway").
    scraped = prometheus.query(f"medserve_anonymize_exams_total{{{selector}}}")
    assert {s["metric"]["outcome"]: float(s["value"][1]) for s in scraped} == {
        "anonymized": manifest.anonymized,
        "quarantined": manifest.quarantined,
        "skipped": manifest.skipped,
        "failed": manifest.failed,
    }
    # Pushes during the run, not only at its end: Prometheus saw it running and half done.
    since = f"{math.ceil(time.time() - pool_run.started) + 5}s"
    finished = f"medserve_anonymize_run_finished{{{selector}}}"
    (running,) = prometheus.query(f"min_over_time({finished}[{since}])")
    assert float(running["value"][1]) == 0.0
    done = f"sum(medserve_anonymize_exams_total{{{selector}}})"
    (least,) = prometheus.query(f"min_over_time(({done})[{since}:1s])")
    assert float(least["value"][1]) < manifest.listed


def test_pushed_metrics_hold_no_file_names_or_patient_data(
    pool_run: PoolRun, monitoring: Monitoring, corpus: Corpus
) -> None:
    text = plain(monitoring.pushgateway.metrics_text())
    assert pool_run.group in text  # the text searched is the one holding our series
    forbidden = {str(corpus.root), str(pool_run.output)}
    for key in corpus.keys:
        forbidden |= {key, Path(key).name, Path(key).stem}
    for exam in corpus.exams.values():
        forbidden |= set(planted_values(exam))
    # A reason code may equal a file stem ("empty"): codes are the allowed label values.
    forbidden -= set(REASONS)
    found = sorted(i for i, value in enumerate(sorted(forbidden)) if plain(value) in text)
    assert found == [], f"file names or planted identifiers (#{found}) in the pushed metrics"


# --------------------------------------------------------------------------- the dashboard


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target) for panel in dashboard["panels"] for target in panel["targets"]
    ]


def grafana_substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    expr = expr.replace("$output", ".*")  # the "All" value of the output variable
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["schemaVersion"], dashboard["uid"]) == (39, "medserve-anonymize")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["output"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in ("by outcome", "Quarantine share", "Quarantine reasons", "Progress", "last push"):
        assert any(wanted in title for title in titles), wanted
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            names = set(re.findall(r"medserve_anonymize_\w+", target["expr"]))
            assert names and names <= FAMILIES, (panel["title"], names - FAMILIES)
            assert f'job="{JOB}"' in target["expr"]


def test_every_dashboard_panel_returns_data(pool_run: PoolRun, monitoring: Monitoring) -> None:
    targets = dashboard_targets()
    assert len(targets) >= 5
    for title, target in targets:
        result = monitoring.prometheus.query(grafana_substituted(target["expr"]))
        values = [float(series["value"][1]) for series in result]
        assert any(math.isfinite(v) for v in values), f"panel {title!r}: no data ({result})"
    by_title = dict(targets)
    rate = next(t for title, t in by_title.items() if "by outcome" in title)
    per_outcome = {
        s["metric"]["outcome"]: float(s["value"][1])
        for s in monitoring.prometheus.query(grafana_substituted(rate["expr"]))
    }
    assert set(per_outcome) == set(OUTCOMES)
    assert per_outcome["anonymized"] > 0 and per_outcome["quarantined"] > 0  # the run, scraped
    progress = next(t for title, t in by_title.items() if title.startswith("Progress"))
    shares = {
        s["metric"]["output"]: float(s["value"][1])
        for s in monitoring.prometheus.query(grafana_substituted(progress["expr"]))
    }
    assert shares[pool_run.group] == 1.0


# --------------------------------------------------------------------------- failures and Ray


def test_unreachable_pushgateway_does_not_fail_the_run(corpus: Corpus, tmp_path: Path) -> None:
    dead = f"http://{LOOPBACK}:{free_port()}"  # nothing listens there
    result = run_cli(
        [sys.executable, "-m", "medserve.cli", "anonymize", str(corpus.root / "in"),
         str(tmp_path / "out"), "--engine", "processpool"],
        {"MEDSERVE_ANON_PUSHGATEWAY_URL": dead, "MEDSERVE_ANON_PUSH_INTERVAL_SECONDS": "0.1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(corpus.keys)} listed: {len(corpus.exams)} anonymised" in result.stderr
    failures = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and "metrics push failed" in line
    ]
    assert len(failures) == 1, result.stderr[-3000:]  # logged once, however many pushes failed
    assert failures[0]["level"] == "warning" and failures[0]["job"] == JOB
    assert failures[0]["error"] in {"URLError", "ConnectionRefusedError"}
    assert dead not in failures[0].values()
    assert_no_secrets(result.stdout + result.stderr, corpus)


def test_a_gateway_that_never_answers_does_not_slow_the_run() -> None:
    """Counting outcomes never waits for a push; leaving waits one push timeout at most."""
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind((LOOPBACK, 0))
        silent.listen(16)
        url = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        metrics = RunMetrics(
            url, "s3://b/out", listed=500, interval_seconds=0.01, timeout_seconds=1
        )
        with metrics:
            start = time.monotonic()
            for index in range(500):
                metrics.observe("quarantined" if index % 5 else "anonymized", "corrupt")
                time.sleep(0.001)
            counting = time.monotonic() - start
            leaving = time.monotonic()
        left_after = time.monotonic() - leaving
    assert counting < 0.5 + 500 * 0.001 * 2, counting
    assert left_after < 1.5, left_after
    assert metrics.pushes == 0 and metrics.failed_pushes >= 1


def test_ray_run_pushes_its_own_group_beside_another_output(
    corpus: Corpus,
    pool_run: PoolRun,
    monitoring: Monitoring,
    ray_head: RayHead,
    tmp_path: Path,
) -> None:
    # One exam and two bad inputs: Ray's start-up, not the exams, is what this run costs.
    small = tmp_path / "in"
    exam_key = next(iter(corpus.exams))
    for key in [exam_key, *sorted(corpus.bad)[:2]]:
        (small / key).parent.mkdir(parents=True, exist_ok=True)
        (small / key).write_bytes((corpus.root / "in" / key).read_bytes())
    output = tmp_path / "ray-out"
    env = {**ray_head.env(), "MEDSERVE_ANON_PUSHGATEWAY_URL": monitoring.pushgateway.url}
    result = ray_job(str(small), str(output), env)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = RunManifest.model_validate(manifest_of(result))
    assert (manifest.engine, manifest.anonymized, manifest.quarantined) == ("ray", 1, 2)
    group = output_group(str(output))
    assert group != pool_run.group
    text = monitoring.pushgateway.metrics_text()
    assert_matches_manifest(pushed(text, group), manifest)
    assert_matches_manifest(pushed(text, pool_run.group), pool_run.manifest)  # not overwritten
    monitoring.prometheus.wait_for_series(
        f'medserve_anonymize_run_finished{{job="{JOB}", output="{group}"}} == 1', timeout_s=30
    )
