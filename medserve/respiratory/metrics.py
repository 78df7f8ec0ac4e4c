"""The triage service's own metric families, beside the shared ones (`serving/metrics.py`).

Counted at the step that ends a consult, so a consult of twelve steps is one consult here; the
shared families count the steps (requests) and refusals. The diagnosis mix's drift against the
KB's priors is the shared `medserve_feature_psi{feature="diagnosis"}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

QUESTION_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40)


class TriageMetrics:
    """The families, and their label children cached: a step is counted on every call, and
    `labels()` costs more than the increment."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.steps: Any = Counter(
            "medserve_triage_steps",
            "Consult steps answered, by strategy and status (`question`: the consult goes on; "
            "`diagnosis`: it ended). Refused steps are in medserve_rejected_total.",
            ["model", "strategy", "status"],
        )
        self.questions: Any = Histogram(
            "medserve_triage_questions_per_consult",
            "Answers a consult took to reach its diagnoses (chief complaint included).",
            ["model", "strategy"],
            buckets=QUESTION_BUCKETS,
        )
        self.answers: Any = Counter(
            "medserve_triage_answers",
            "Answers of ended consults: `unknown` (não sei) or `known`; their ratio is the "
            "don't-know rate.",
            ["model", "answer"],
        )

        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, family: str, *labels: str) -> Any:
        key = (family, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = getattr(self, family).labels(*labels)
        return found


@lru_cache
def triage_metrics() -> TriageMetrics:
    """Created on first use, inside the worker (multiprocess mode; see serving/metrics.py)."""
    return TriageMetrics()
