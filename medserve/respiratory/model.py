"""The respiratory triage as a served model: the knowledge base in, one consult step per row.

A row is one consult's checked answers; "predicting" runs a step of the chosen strategy. Only
the step that ends a consult concludes a case (`concluded`): it alone gets a prediction id, a
prediction-log row (answers in, ranked diagnoses out) and a count, so the log and the feedback
loop see consults, not steps. The KB comes from the model store, pinned by tag, with its
SHA-256 checked against the one it was published with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from medserve.respiratory.climate.rules import MODEL_NAME as RULES_MODEL
from medserve.respiratory.climate.rules import ClimateRules
from medserve.respiratory.consult import (
    UNKNOWN,
    ConsultError,
    Facts,
    StepResult,
    read_answers,
    step,
)
from medserve.respiratory.kb import KnowledgeBase, load_kb
from medserve.respiratory.metrics import triage_metrics
from medserve.respiratory.schema import ConsultAnswer, ConsultRequest
from medserve.respiratory.settings import StrategyName, TriageSettings, get_triage_settings
from medserve.serving.errors import ServiceError
from medserve.serving.model import Columns, ModelInputs, ServedModel, StoredModel
from medserve.serving.tensors import TensorSpec

MODEL_NAME = "respiratory_triage"
KB_FILE = "respiratory-kb.yaml"
NO_DIAGNOSIS = -1  # predicted class of a step that asks a question
# The KB's relevant factors the climate rules read (their values: the rules' classes, months).
TEMPERATURE_FACTOR = "temperatura"
MONTH_FACTOR = "mes"


# The drift inputs of steps that ended no consult (read only: the data plane skips them).
_NO_DRIFT = (np.empty((0, 1)), np.empty(0), np.empty(0, dtype=bool))


@dataclass(frozen=True, slots=True)
class ConsultRow:
    """One consult as the model reads it: the checked answers and the strategy to run."""

    request: ConsultRequest
    facts: Facts | None  # None: no answer yet (ask the chief complaint)
    strategy: StrategyName


class TriageModel(ServedModel):
    """Respiratory triage: one consult step per instance, from a knowledge base pinned by tag."""

    name = MODEL_NAME
    instance_schema = ConsultRequest
    answer_schema = ConsultAnswer
    instances_key = "consults"
    v2_inputs = (TensorSpec(name="consult", datatype="BYTES", shape=[-1]),)
    v2_outputs = (
        TensorSpec(name="consult", datatype="BYTES", shape=[-1]),
        TensorSpec(name="prediction_id", datatype="BYTES", shape=[-1]),
    )
    batched = False  # a step is Python per consult: a batch would only add the dispatcher
    # The climate-occurrence rules (`respiratory_rules`, a Ray job's output) explain diagnoses.
    companion_models = (RULES_MODEL,)
    rules: ClimateRules
    rules_tag: str

    def __init__(self, tag: str, kb: KnowledgeBase, stored: StoredModel) -> None:
        self.tag = tag
        self.kb = kb
        self.reference = stored.reference
        self.settings: TriageSettings = get_triage_settings()
        self._disease_index = {d.id: i for i, d in enumerate(kb.diseases)}

    @classmethod
    def from_store(cls, stored: StoredModel) -> TriageModel:
        kb = load_kb(stored.folder / KB_FILE)
        published = stored.card().get("kb_sha256")
        if kb.sha256 != published:
            raise RuntimeError(
                f"{stored.tag}: the stored KB file's SHA-256 {kb.sha256[:12]} is not the "
                f"published {str(published)[:12]}; the store was altered, publish it again"
            )
        return cls(stored.tag, kb, stored)

    def use_companions(self, stored: Mapping[str, StoredModel]) -> None:
        rules = stored[RULES_MODEL]
        self.rules = ClimateRules.from_folder(rules.folder)
        self.rules_tag = rules.tag
        self._insights: dict[tuple[str, str | None, str | None], str | None] = {}

    # -- requests --------------------------------------------------------------------------------
    def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        rows = np.empty(len(instances), dtype=object)
        for i, request in enumerate(instances):
            assert isinstance(request, ConsultRequest)
            rows[i] = self._row(request)
        return ModelInputs(rows)

    def _row(self, request: ConsultRequest) -> ConsultRow:
        try:
            facts = read_answers(self.kb, request.answers)
        except ConsultError as exc:
            # Known question ids are the KB's vocabulary; an unknown id and the answer given
            # are the client's text, never echoed (they could carry a patient's data).
            known = exc.question in self.kb.question_ids
            where = f" (question '{exc.question}')" if known else ""
            raise ServiceError(422, exc.code, f"{exc}{where}", field="answers") from None
        return ConsultRow(request, facts, request.strategy or self.settings.default_strategy)

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """`consult` [n] BYTES, each a consult request as JSON (what `POST /consult` takes)."""
        instances: list[Any] = []
        for item in tensors["consult"].reshape(-1).tolist():
            try:
                instances.append(json.loads(item))
            except (UnicodeDecodeError, ValueError):
                instances.append("not JSON")  # refused by the schema, naming the element
        return instances

    def allowed(self, field: str) -> str | None:
        return {"strategy": "source, info_gain"}.get(field)

    def feedback_label(self, label: int | str) -> int | str:
        """The confirmed disease: its KB id or ICD-10 code -> the KB id."""
        by_icd = {d.icd10: d.id for d in self.kb.diseases}
        if isinstance(label, str) and label in self._disease_index:
            return label
        if isinstance(label, str) and label in by_icd:
            return by_icd[label]
        raise ValueError("the confirmed disease: a disease id or ICD-10 code of the KB")

    # -- steps -----------------------------------------------------------------------------------
    def predict(self, rows: np.ndarray) -> np.ndarray:
        results = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows.tolist()):
            result = step(self.kb, row.facts, row.strategy, self.settings)
            if result["question"] is None and row.facts is not None:
                self._explain_climate(result, row.facts)
            results[i] = result
        return results

    def _explain_climate(self, result: StepResult, facts: Facts) -> None:
        """Each diagnosis gets what the mined rules say of its ICD code this month."""
        temperature = facts.factors.get(TEMPERATURE_FACTOR)
        month = facts.factors.get(MONTH_FACTOR)
        for diagnosis in result["diagnoses"]:
            diagnosis["climate"] = self._insight(diagnosis["icd10"], temperature, month)

    def _insight(self, icd: str, temperature: str | None, month: str | None) -> str | None:
        # A few hundred (code, class, month) triples at most, each a fixed sentence of the rules.
        key = (icd, temperature, month)
        if key not in self._insights:
            self._insights[key] = self.rules.insight(icd, temperature, month)
        return self._insights[key]

    def concluded(self, outputs: np.ndarray) -> np.ndarray:
        return np.array([result["question"] is None for result in outputs.tolist()], dtype=bool)

    def predicted_classes(self, outputs: np.ndarray) -> np.ndarray:
        """The top diagnosis's index in the KB (alphabetical), or -1 for a question."""
        return np.array([self._top(result) for result in outputs.tolist()], dtype=np.int64)

    def _top(self, result: StepResult) -> int:
        if result["question"] is not None or not result["diagnoses"]:
            return NO_DIAGNOSIS
        return self._disease_index[result["diagnoses"][0]["disease"]]

    def postprocess(self, outputs: np.ndarray, inputs: ModelInputs) -> Columns:
        consults = np.empty(len(outputs), dtype=object)
        for i, (result, row) in enumerate(zip(outputs.tolist(), inputs.rows.tolist(), strict=True)):
            self._count(result, row)
            consults[i] = result  # already the `ConsultResult` JSON (consult.py)
        return {"consult": consults}

    def _count(self, result: StepResult, row: ConsultRow) -> None:
        metrics = triage_metrics()
        metrics.child("steps", self.name, row.strategy, result["status"]).inc()
        if result["question"] is not None:
            return
        answers = row.request.answers
        metrics.child("questions", self.name, row.strategy).observe(len(answers))
        unknown = sum(answer.answer == UNKNOWN for answer in answers)
        if unknown:
            metrics.child("answers", self.name, "unknown").inc(unknown)
        metrics.child("answers", self.name, "known").inc(len(answers) - unknown)

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """(top diagnosis index, top score, confident) of the steps that ended a consult."""
        ended = [r for r in outputs.tolist() if r["question"] is None and r["diagnoses"]]
        if not ended:  # most steps ask a question
            return _NO_DRIFT
        top = np.array([[float(self._top(r))] for r in ended], dtype=np.float64).reshape(-1, 1)
        scores = np.array([r["diagnoses"][0]["score"] for r in ended], dtype=np.float64)
        return top, scores, scores >= self.settings.stop_probability

    def logged_inputs(self, inputs: ModelInputs) -> list[dict[str, Any]]:
        return [
            {
                # `Answer.model_dump()`, without a pydantic call per answer.
                "answers": [
                    {"question": a.question, "answer": a.answer} for a in row.request.answers
                ],
                "strategy": row.strategy,
            }
            for row in inputs.rows.tolist()
        ]
