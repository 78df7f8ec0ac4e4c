"""The triage service's wire shapes: one consult step in, the next question or the diagnoses out.

The consult is stateless: the client sends the whole answer list each step, so any replica can
answer any step and nothing about a patient is held between calls.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from medserve.respiratory.climate.rules import IcdRules
from medserve.respiratory.consult import Answer, ConsultResult
from medserve.respiratory.settings import StrategyName

# 1 chief complaint + every symptom + every factor is ~32 today; room for a larger KB, and a
# bound so a request cannot make a step arbitrarily long.
MAX_ANSWERS = 128


class ConsultRequest(BaseModel):
    """The answers so far (empty: ask for the first question) and, optionally, the strategy."""

    model_config = ConfigDict(extra="forbid")

    answers: list[Answer] = Field(default_factory=list, max_length=MAX_ANSWERS)
    strategy: StrategyName | None = Field(
        default=None,
        description="`info_gain` (the default: fewer questions, measured) or `source` (the "
        "source system's hypothesis-test cycle).",
    )


class ConsultAnswer(BaseModel):
    """One answered instance of `/predict` and of the v2 `consult` tensor."""

    prediction_id: str | None = Field(
        description="Set on the final answer only: the consult's one prediction-log row, the id "
        "a clinician confirms the real diagnosis with (`POST /feedback`)."
    )
    consult: ConsultResult


class ConsultResponse(ConsultResult):
    """`POST /consult`: the step's result, its prediction id when final, the request id."""

    prediction_id: str | None
    request_id: str
    model_tag: str


class RulesAnswer(BaseModel):
    """`GET /rules/{icd}`: the mined rules of one ICD-10 code and where they came from."""

    rules_tag: str
    data_source: str = Field(description="`synthetic` or `datasus+inmet`.")
    data_sha256: str
    months: int
    rules: IcdRules
    text: list[str] = Field(description="The rules as Portuguese sentences.")
    insight: str | None
