"""Schemathesis against a live service's `/openapi.json`: every operation, positive and negative
data, then stateful runs along the document's links; failures are collected, not raised, so a run
reports every broken operation and exactly how many cases it sent (the test and `bench/fuzz.py`
share this driver).

Checks: no 5xx; the status, content type, headers and body of every answer as the document says;
negative data (values outside the schema) refused with a 4xx.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def negative_data_refused(ctx: Any, response: Any, case: Case) -> bool | None:
    """Schemathesis's `negative_data_rejection`, with 413 counted as a refusal too: a body or
    batch over its limit is refused before it is read in full (the list of instances is not
    validated past the limit)."""
    if response.status_code == 413:
        return True
    return negative_data_rejection(ctx, response, case)  # type: ignore[no-any-return]


NEGATIVE_CHECKS = [*CHECKS, negative_data_refused]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class FuzzReport:
    """What one service's fuzz run sent and what broke."""

    service: str
    operations: int = 0
    cases: int = 0
    stateful_steps: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # "<mode> <operation>" -> first one
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _settings(max_examples: int, **extra: Any) -> hypothesis.settings:
    # No shrinking and no example database: bounded time, the same cases every run.
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        **extra,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for sub in getattr(exc, "exceptions", ()):
        text += f" | {type(sub).__name__}: {str(sub).strip()[:400]}"
    return text[:1200]


def _caller(
    report: FuzzReport,
    url: str,
    headers: Mapping[str, str],
    session: requests.Session,
    label: str,
    checks: list[Any],
) -> Callable[[Case], Any]:
    def call(case: Case) -> Any:
        report.cases += 1
        try:
            response = case.call(base_url=url, session=session, headers=dict(headers), timeout=60)
        except requests.RequestException as exc:  # a dropped connection is a failure too
            report.failures.setdefault(label, f"request failed: {exc}")
            raise
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=checks, headers=dict(headers))
        except (AssertionError, BaseExceptionGroup) as exc:
            report.failures.setdefault(
                label, f"{case.method} {case.formatted_path}: {_describe(exc)}"
            )
        return response

    return call


def _returning_none(call: Callable[[Case], Any]) -> Callable[[Case], None]:
    def test(case: Case) -> None:
        call(case)

    return test


def fuzz_service(
    service: str,
    url: str,
    headers: Mapping[str, str],
    max_examples: int,
    stateful_examples: int = 0,
) -> FuzzReport:
    """Fuzz every operation of the service at `url` (`max_examples` per operation and mode),
    then `stateful_examples` scenarios along the links; `headers` carry the bearer token."""
    started = time.monotonic()
    report = FuzzReport(service)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=30)
    session = requests.Session()
    session.trust_env = False  # never through an HTTP(S)_PROXY
    operations = [result.ok() for result in schema.get_all_operations()]
    report.operations = len(operations)
    for operation in operations:
        for mode in MODES:
            label = f"{mode.value} {operation.label}"
            checks = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS
            call = _caller(report, url, headers, session, label, checks)
            strategy = operation.as_strategy(generation_mode=mode)
            run = hypothesis.given(strategy)(_settings(max_examples)(_returning_none(call)))
            # An operation with nothing to negate (`GET /metrics`) has no negative cases.
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                run()
    if stateful_examples:
        _stateful(schema, report, url, headers, session, stateful_examples)
    report.seconds = time.monotonic() - started
    return report


def _stateful(
    schema: Any,
    report: FuzzReport,
    url: str,
    headers: Mapping[str, str],
    session: requests.Session,
    examples: int,
) -> None:
    """Scenarios that follow the links (a prediction's id into its record and review page)."""
    call = _caller(report, url, headers, session, "stateful", CHECKS)
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def step(self, input: Any) -> Any:
            report.stateful_steps += 1
            return super().step(input)

        def call(self, case: Case, **kwargs: Any) -> Any:
            return call(case)

        def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
            return None  # validated in `call`

    Machine.run(settings=_settings(examples, stateful_step_count=6))
