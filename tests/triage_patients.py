"""One simulated patient the triage tests and its benchmark walk consults with: influenza as the
KB describes it. "Yes" to its symptoms, "no" to every other symptom, factors unknown."""

from __future__ import annotations

from typing import Any

FLU = frozenset({"febre", "mialgia", "tosse", "cefaleia", "fadiga", "calafrios"})


def answer_for(question: dict[str, Any]) -> str:
    """The influenza patient's answer to a question as the API returns it (`id`, `kind`)."""
    if question["kind"] == "factor":
        return "unknown"
    return "yes" if question["id"] in FLU else "no"
