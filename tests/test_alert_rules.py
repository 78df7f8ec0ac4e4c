"""The chart's PrometheusRule: `promtool check rules` for the default and production values,
`promtool test rules` with tests/promtool/*.yaml (every alert fires and stays quiet for a near
miss), annotations and runbooks, and the rule selectors cross-checked against the code."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from medserve.anonymize.metrics import RunMetrics
from medserve.catalogue import SERVICES
from medserve.serving.metrics import LATENCY_BUCKETS
from tests.chart_render import (
    CHART,
    PRODUCTION_VALUES,
    RELEASE,
    ROOT,
    helm,
    of_kind,
    render,
    values_args,
)

PROMTOOL = Path("/usr/bin/promtool")
PROMTOOL_TESTS = Path(__file__).parent / "promtool"
RULES_FILE = "medserve-rules.yaml"  # the name tests/promtool/*.yaml load
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SEVERITIES = {"critical", "warning"}
# The production values are the lead's; they are checked as soon as they exist.
VALUES = {"default": ()} | (
    {"production": (PRODUCTION_VALUES,)} if PRODUCTION_VALUES.exists() else {}
)


def rule_groups(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """spec.groups of every rendered PrometheusRule."""
    rules = of_kind(documents, "PrometheusRule")
    assert rules, "the chart renders no PrometheusRule"
    return [group for rule in rules.values() for group in rule["spec"]["groups"]]


def write_rule_file(documents: list[dict[str, Any]], path: Path) -> Path:
    """The rendered groups as a plain Prometheus rule file."""
    path.write_text(yaml.safe_dump({"groups": rule_groups(documents)}, sort_keys=False))
    return path


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture(scope="module")
def default_documents() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def default_groups(default_documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rule_groups(default_documents)


@pytest.mark.parametrize("values", sorted(VALUES))
def test_rendered_rules_pass_promtool_check(values: str, tmp_path: Path) -> None:
    rule_file = write_rule_file(render(VALUES[values]), tmp_path / RULES_FILE)
    result = promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass(default_documents: list[dict[str, Any]], tmp_path: Path) -> None:
    write_rule_file(default_documents, tmp_path / RULES_FILE)
    test_files = sorted(PROMTOOL_TESTS.glob("*.yaml"))
    assert len(test_files) >= 5
    for test_file in test_files:
        shutil.copy(test_file, tmp_path / test_file.name)
    result = promtool("test", "rules", *(f.name for f in test_files), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(test_files), result.stdout


def promtool_cases() -> list[tuple[str, str, bool]]:
    """(test file, alert name, fires?) of every alert_rule_test in tests/promtool."""
    cases = []
    for test_file in sorted(PROMTOOL_TESTS.glob("*.yaml")):
        spec = yaml.safe_load(test_file.read_text())
        assert spec["rule_files"] == [RULES_FILE], test_file
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((test_file.name, case["alertname"], bool(case.get("exp_alerts"))))
    return cases


def test_every_alert_has_a_firing_and_a_quiet_promtool_case(
    default_groups: list[dict[str, Any]],
) -> None:
    names = {rule["alert"] for rule in alerts(default_groups)}
    cases = promtool_cases()
    firing = {name for _, name, fires in cases if fires}
    quiet = {name for _, name, fires in cases if not fires}
    assert names - firing == set(), "alerts without a promtool case where they fire"
    assert names - quiet == set(), "alerts without a near-miss promtool case"
    # A misspelt alertname would make an `exp_alerts: []` case pass vacuously.
    assert {name for _, name, _ in cases} <= names


def test_every_alert_has_severity_annotations_and_a_runbook_section(
    default_groups: list[dict[str, Any]],
) -> None:
    anchors = {
        line.removeprefix("## ").strip().lower()
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in alerts(default_groups):
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        base, anchor = annotations["runbook_url"].split("#")
        assert base == "https://github.com/medserve/medserve/blob/main/docs/runbooks.md"
        assert anchor == name.lower(), name
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"
    per_service = [r for r in alerts(default_groups) if "anonymize" not in r["alert"].lower()]
    assert {r["labels"]["model"] for r in per_service} == set(SERVICES)


def test_alert_knobs_and_extra_labels_come_from_the_values(tmp_path: Path) -> None:
    values = tmp_path / "knobs.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "settings": {"driftMinSamples": 250},
                "monitoring": {
                    "prometheusRule": {
                        "driftFor": "45m",
                        "errorRateThreshold": 0.02,
                        "alertLabels": {"team": "clinical-ml"},
                        "anonymize": {"selector": 'exported_job="medserve_anonymize"'},
                    }
                },
            }
        )
    )
    groups = rule_groups(render([values]))
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rule in alerts(groups):
        by_name.setdefault(rule["alert"], []).append(rule)
        assert rule["labels"]["team"] == "clinical-ml"
    for rule in by_name["MedserveFeatureDrift"]:
        assert rule["for"] == "45m"
        assert ">= 250" in rule["expr"]
    for rule in by_name["MedserveHighErrorRate"]:
        assert rule["expr"].rstrip().endswith("> 0.02")
    for rule in by_name["MedserveAnonymizeStalled"]:
        assert 'exported_job="medserve_anonymize"' in rule["expr"]
    disabled = render(set_values=("monitoring.prometheusRule.enabled=false",))
    assert of_kind(disabled, "PrometheusRule") == {}


def test_triage_alert_is_rendered_for_the_listed_services_with_their_knobs(tmp_path: Path) -> None:
    triage = [r for r in alerts(rule_groups(render())) if r["alert"].startswith("MedserveTriage")]
    assert [r["labels"]["model"] for r in triage] == ["respiratory_triage"]
    values = tmp_path / "triage.yaml"
    knobs = {"unknownAnswerShareThreshold": 0.4, "minAnswers": 50, "window": "2h", "for": "1h"}
    values.write_text(yaml.safe_dump({"monitoring": {"prometheusRule": {"triage": knobs}}}))
    (rule,) = [r for r in alerts(rule_groups(render([values]))) if "Triage" in r["alert"]]
    assert rule["for"] == "1h" and ") > 0.4\n" in rule["expr"]
    assert rule["expr"].rstrip().endswith(">= 50") and "[2h]" in rule["expr"]
    assert "[1h]" not in rule["expr"]
    values.write_text(
        yaml.safe_dump({"monitoring": {"prometheusRule": {"triage": {"services": []}}}})
    )
    off = render([values])
    assert not [r for r in alerts(rule_groups(off)) if "Triage" in r["alert"]]


def slo_bounds(groups: list[dict[str, Any]]) -> dict[str, str]:
    """The latency SLO's bucket bound per model, from the recording rules' static labels."""
    return {
        rule["labels"]["model"]: rule["labels"]["slo_seconds"]
        for group in groups
        for rule in group["rules"]
        if rule.get("record", "").startswith("medserve:request_latency_slo_miss:")
    }


def values_with_slo(path: Path, seconds: dict[str, float]) -> Path:
    """A values file giving services their own `latencySloSeconds` (helm --set would replace
    the whole list)."""
    services = yaml.safe_load((CHART / "values.yaml").read_text())["services"]
    for entry in services:
        if entry["name"] in seconds:
            entry["latencySloSeconds"] = seconds[entry["name"]]
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def test_latency_slo_is_per_service_and_must_be_a_histogram_bucket(tmp_path: Path) -> None:
    groups = rule_groups(render([values_with_slo(tmp_path / "ct.yaml", {"ct_pattern": 2.5})]))
    assert slo_bounds(groups) == {model: "1" for model in SERVICES} | {"ct_pattern": "2.5"}
    ct_rules = [
        rule["expr"] for group in groups for rule in group["rules"]
        if rule.get("labels", {}).get("model") == "ct_pattern" and "record" in rule
    ]  # fmt: skip
    assert len(ct_rules) == 7  # 5m 30m 1h 2h 6h 1d 3d
    assert all('le="2.5"' in expr for expr in ct_rules)
    # Every bound the services export is accepted (one per service and render).
    models = tuple(SERVICES)
    for start in range(0, len(LATENCY_BUCKETS), len(models)):
        bounds = dict(zip(models, LATENCY_BUCKETS[start : start + len(models)], strict=False))
        values = values_with_slo(tmp_path / f"bounds-{start}.yaml", bounds)
        rendered = slo_bounds(rule_groups(render([values])))
        assert {model: float(rendered[model]) for model in bounds} == bounds
    # A bound between buckets cannot be computed from the histogram: the schema refuses it, and
    # so does the template when the schema is skipped.
    values = values_with_slo(tmp_path / "between.yaml", {"heart_risk": 0.3})
    args = ("template", RELEASE, str(CHART), *values_args((values,)))
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert "/services/0/latencySloSeconds" in result.stderr
    result = helm(*args, "--skip-schema-validation", check=False)
    assert result.returncode != 0
    assert "latencySloSeconds of heart_risk is 0.3" in result.stderr


def test_schema_allows_exactly_the_latency_bucket_bounds() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["definitions"]["latencyBucket"]["enum"] == list(LATENCY_BUCKETS)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    found[target.id] = node.value.value
    return found


INFERENCE_CALLS = frozenset({"predict_instances", "infer", "_infer"})


def _call_name(node: ast.Call) -> str:
    return str(getattr(node.func, "id", getattr(node.func, "attr", "")))


def _forwarders(trees: list[ast.Module]) -> set[str]:
    """Functions that pass an `api` parameter of their own on as the last argument of an
    inference call (the triage's `consult_step`), found to a fixed point."""
    calls = set(INFERENCE_CALLS)
    while True:
        found = set(calls)
        for tree in trees:
            for function in ast.walk(tree):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                parameters = {a.arg for a in function.args.args}
                for node in ast.walk(function):
                    if isinstance(node, ast.Call) and _call_name(node) in calls and node.args:
                        last = node.args[-1]
                        if isinstance(last, ast.Name) and last.id in parameters:
                            found.add(function.name)
        if found == calls:
            return calls
        calls = found


def code_facts() -> tuple[set[str], set[str], set[str]]:
    """From the serving code: (5xx error codes, 4xx error codes, APIs that run inference).

    Error codes are the `error` of every `ServiceError(status, "code", ...)`; APIs the last
    argument of every `predict_instances(...)` / `infer(...)` / `_infer(...)` call, or of a
    function passing it on (`_forwarders`), that is a literal or a module constant (the others
    pass their caller's API on).
    """
    server, client, apis = set(), set(), set()
    trees = [ast.parse(path.read_text()) for path in sorted((ROOT / "medserve").rglob("*.py"))]
    inference_calls = _forwarders(trees)
    for tree in trees:
        constants = _string_constants(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            args = node.args
            if name == "ServiceError" and len(args) >= 2:
                status, code = args[0], args[1]
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    (server if status.value >= 500 else client).add(code.value)
            if name in inference_calls and args:
                last = args[-1]
                if isinstance(last, ast.Constant) and isinstance(last.value, str):
                    apis.add(last.value)
                elif isinstance(last, ast.Name) and last.id in constants:
                    apis.add(constants[last.id])
    return server, client, apis


def _matcher(expr: str, label: str) -> set[str]:
    (values,) = set(re.findall(label + r'=~"([^"]+)"', expr))
    return set(values.split("|"))


def test_error_rate_counts_exactly_the_server_errors_of_the_code(
    default_groups: list[dict[str, Any]],
) -> None:
    server, client, _ = code_facts()
    assert {"internal_error", "overloaded", "not_ready"} <= server
    assert "validation_error" in client and "malformed_json" in client
    for rule in alerts(default_groups):
        if rule["alert"] == "MedserveHighErrorRate":
            assert _matcher(rule["expr"], "outcome") == server
            assert not _matcher(rule["expr"], "outcome") & client


def test_latency_slo_covers_every_inference_api_of_the_code(
    default_groups: list[dict[str, Any]],
) -> None:
    _, _, apis = code_facts()
    inference = {"http_json", "grpc", "grpc_stream", "v2_rest", "http_strip", "http_image", "form"}
    inference |= {"http_consult", "triage_page"}  # through consult_step (a forwarder)
    assert inference <= apis
    records = [
        rule["expr"] for group in default_groups for rule in group["rules"] if "record" in rule
    ]
    assert len(records) == 7 * len(SERVICES)
    for expr in records:
        assert _matcher(expr, "api") == apis
        assert 'outcome="ok"' in expr


def test_anonymisation_alerts_use_the_series_the_pipeline_pushes(
    default_groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    exposition = generate_latest(RunMetrics(None, str(tmp_path), listed=3).registry).decode()
    pushed = {
        line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line[:1] != "#"
    }
    outcomes = set(re.findall(r'medserve_anonymize_exams_total\{outcome="(\w+)"', exposition))
    used = set()
    for rule in alerts(default_groups):
        if rule["alert"].startswith("MedserveAnonymize"):
            used |= set(re.findall(r"(medserve_anonymize_\w+)\{", rule["expr"]))
            for matched in re.findall(r'outcome=~?"([^"]+)"', rule["expr"]):
                assert set(matched.split("|")) <= outcomes - {"skipped"}, matched
    assert used == {
        "medserve_anonymize_exams_total",
        "medserve_anonymize_last_push_timestamp_seconds",
        "medserve_anonymize_run_finished",
    }
    assert used <= pushed
