"""The anonymisation run's Prometheus metrics, pushed to a Pushgateway.

A run is a batch job that ends, so nothing could scrape it reliably: the driver (the loop in
`pipeline.run`, the only place outcomes arrive, whatever the engine) pushes its whole state to a
Pushgateway, which Prometheus scrapes with `honor_labels: true`. Pushes happen on a background
thread, at most every `push_interval_seconds` while exams finish and once at the end, so a slow or
dead gateway never slows or breaks the run; a failed push is logged once and the run goes on.

Grouping key: `job="medserve_anonymize"` plus `output=<first 12 hex digits of the SHA-256 of the
output URI>`. Each push replaces its group (HTTP PUT), so without the `output` label two pipelines
running at once would overwrite each other's series; a re-run into the same output replaces the
previous run's numbers, which is what a dashboard of "the latest run per output" wants. The digest
keeps the label short and bounded, and keeps folder paths (which may name a person) out of
Prometheus. Label values are outcome and quarantine reason codes only, never keys or exam text.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, get_args

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from medserve.anonymize.errors import RejectionCode
from medserve.logs import get_logger
from medserve.object_store import is_s3

JOB: Final = "medserve_anonymize"
OUTCOMES: Final = ("anonymized", "quarantined", "skipped", "failed")
REASONS: Final[tuple[str, ...]] = get_args(RejectionCode)
# A reason outside the known codes is counted here rather than exported as a label value.
OTHER_REASON: Final = "other"

_log = get_logger("anonymize.metrics")


def output_group(output_uri: str) -> str:
    """The `output` grouping label of a run: a short SHA-256 prefix of its normalised output."""
    normalised = output_uri if is_s3(output_uri) else str(Path(output_uri).resolve())
    return hashlib.sha256(normalised.rstrip("/").encode("utf-8")).hexdigest()[:12]


class _RunState(Collector):
    """The run's numbers as the five metric families, read at each push under the run's lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self.reasons: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        self.listed = 0
        self.finished = False
        self.last_push = 0.0

    def collect(self) -> Iterator[Metric]:
        # Custom families instead of prometheus_client.Counter: no `_created` series, and every
        # outcome and reason exists from the first push, so rate() and dashboards see zeros.
        with self.lock:
            exams = CounterMetricFamily(
                "medserve_anonymize_exams",
                "Exams that ended in this run, by outcome.",
                labels=["outcome"],
            )
            for outcome, count in self.outcomes.items():
                exams.add_metric([outcome], count)
            quarantined = CounterMetricFamily(
                "medserve_anonymize_quarantined",
                "Exams quarantined in this run, by reason code.",
                labels=["reason"],
            )
            for reason, count in self.reasons.items():
                quarantined.add_metric([reason], count)
            gauges = [
                GaugeMetricFamily(
                    "medserve_anonymize_listed_exams",
                    "Exams listed under the input at the start of the run.",
                    value=self.listed,
                ),
                GaugeMetricFamily(
                    "medserve_anonymize_last_push_timestamp_seconds",
                    "Unix time of this push.",
                    value=self.last_push,
                ),
                GaugeMetricFamily(
                    "medserve_anonymize_run_finished",
                    "0 while the run goes on, 1 once it has ended.",
                    value=float(self.finished),
                ),
            ]
        yield from [exams, quarantined, *gauges]


class RunMetrics:
    """Pushes one run's metrics; with `gateway_url` None every method does nothing.

    Use as a context manager around the loop over outcomes: entering pushes the start state
    (listed, all zero), `observe` counts each outcome, leaving pushes the final state with
    `run_finished` 1 (0 if the loop raised: the run did not finish).
    """

    def __init__(
        self,
        gateway_url: str | None,
        output_uri: str,
        *,
        listed: int,
        interval_seconds: float = 15.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.gateway_url = gateway_url
        self.grouping_key = {"output": output_group(output_uri)}
        self.interval_seconds = interval_seconds
        self.timeout_seconds = timeout_seconds
        self.registry = CollectorRegistry()
        self._state = _RunState()
        self._state.listed = listed
        self.registry.register(self._state)
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure_logged = False
        self.pushes = 0
        self.failed_pushes = 0

    def __enter__(self) -> RunMetrics:
        if self.gateway_url is not None:
            self._thread = threading.Thread(
                target=self._push_periodically, name="anonymize-metrics", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(finished=exc_type is None)

    def observe(self, status: str, reason: str | None = None) -> None:
        """Count one exam's outcome (and its quarantine reason code)."""
        with self._state.lock:
            self._state.outcomes[status] += 1
            if status == "quarantined":
                self._state.reasons[reason if reason in REASONS else OTHER_REASON] += 1
        self._changed.set()

    def close(self, finished: bool = True) -> None:
        """Stop the periodic pushes and push the final state; waits at most `timeout_seconds`."""
        if self._thread is None:
            return
        with self._state.lock:
            self._state.finished = finished
        self._stop.set()
        self._changed.set()  # wakes the thread if it waits for news
        # The thread makes the final push. A gateway that accepts but never answers holds it for
        # one timeout at most; past that the run ends anyway and the daemon thread is dropped.
        self._thread.join(timeout=self.timeout_seconds)
        self._thread = None

    def _push_periodically(self) -> None:
        self._push()
        while True:
            self._changed.wait()
            if self._stop.wait(self.interval_seconds):
                break
            self._changed.clear()
            self._push()
        self._push()

    def _push(self) -> None:
        """One PUT of the whole state (only ever called from the push thread)."""
        assert self.gateway_url is not None
        with self._state.lock:
            self._state.last_push = time.time()
        try:
            push_to_gateway(
                self.gateway_url,
                job=JOB,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=self.timeout_seconds,
            )
        except Exception as error:  # metrics must never break a run
            self.failed_pushes += 1
            if not self._failure_logged:
                self._failure_logged = True
                _log.warning(
                    "metrics push failed; the run goes on, later failures are not logged",
                    extra={
                        "error": type(error).__name__,
                        "job": JOB,
                        "output": self.grouping_key["output"],
                    },
                )
        else:
            self.pushes += 1
