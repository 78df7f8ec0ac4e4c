"""What a model provides to be served: load, preprocess, predict, postprocess, drift inputs.

A `ServedModel` knows nothing of HTTP, gRPC or the prediction log (that is the data plane's
work, `dataplane.py`). Its answers are *columns*: one array per answer field, one row per
instance, so the JSON answers, the Open Inference Protocol tensors (`TensorSpec.column_tensor`)
and the logged outputs are all read off the same arrays.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel

from medserve import model_store
from medserve.drift import ReferenceProfile
from medserve.serving.batching import BatchLimits
from medserve.serving.tensors import TensorSpec
from medserve.settings import Settings

Columns = dict[str, np.ndarray]
PREDICTION_ID = "prediction_id"


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A model in the store, resolved once: its full tag, files and drift reference."""

    tag: str
    folder: Path
    reference: ReferenceProfile

    @classmethod
    def open(cls, tag: str) -> StoredModel:
        """`name:latest` or `name:version` -> the stored model (raises BentoML's NotFound)."""
        full_tag = model_store.resolve_tag(tag)
        folder = model_store.model_folder(full_tag)
        reference = ReferenceProfile.model_validate_json(
            (folder / model_store.REFERENCE_FILE).read_text()
        )
        return cls(tag=full_tag, folder=folder, reference=reference)

    def card(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / model_store.CARD_FILE).read_text()))


@dataclass(slots=True)
class ModelInputs:
    """One request's instances as the model reads them: `rows` (first axis = instances) and,
    where answers need more than the rows, one `context` object per instance."""

    rows: np.ndarray
    context: Sequence[Any] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.rows)


class ServedModel(ABC):
    """A loaded model as the serving layer sees it."""

    name: ClassVar[str]
    instance_schema: ClassVar[type[BaseModel]]  # one instance of the JSON API
    answer_schema: ClassVar[type[BaseModel]]  # one answer of the JSON API (docs, tests)
    instances_key: ClassVar[str] = "instances"  # JSON key of the instance list in /predict
    v2_inputs: ClassVar[tuple[TensorSpec, ...]]  # Open Inference Protocol v2 tensors
    v2_outputs: ClassVar[tuple[TensorSpec, ...]]
    # Answer columns of shape [n, k] that the JSON answer shows as {key: value}.
    keyed_columns: Mapping[str, Sequence[str]] = {}
    # Answer columns the prediction log leaves out (recomputable from the logged input).
    unlogged_columns: ClassVar[frozenset[str]] = frozenset()
    # Heavy models (TensorFlow, ONNX Runtime) release the GIL while they compute: predicting in a
    # thread keeps the event loop accepting and decoding the next requests meanwhile.
    predict_in_thread: ClassVar[bool] = False
    # Adaptive batching pays off when a batch costs less than its rows one by one (a matrix
    # product, a network). A model that loops over its rows in Python (the triage's consult
    # steps) gains nothing from it and would pay the dispatcher's per-call cost: it says False.
    batched: ClassVar[bool] = True
    # Models whose instances are files (images): validating them decodes them, which takes
    # milliseconds, so validation and preprocessing run in a thread too.
    decodes_files: ClassVar[bool] = False
    # Other stored models this one serves beside its own (the triage KB serves the climate
    # rules): each pinned by `MEDSERVE_<NAME>_MODEL_TAG` like the main one.
    companion_models: ClassVar[tuple[str, ...]] = ()
    tag: str
    reference: ReferenceProfile

    @classmethod
    def load(cls, tag: str, companions: Mapping[str, str] | None = None) -> Self:
        """Load a stored model by tag (`name:latest` works), with its companions' tags."""
        model = cls.from_store(StoredModel.open(tag))
        if cls.companion_models:
            given = companions or {}
            model.use_companions(
                {
                    name: StoredModel.open(given.get(name, f"{name}:latest"))
                    for name in cls.companion_models
                }
            )
        return model

    def use_companions(self, stored: Mapping[str, StoredModel]) -> None:
        """Take the companion models (called once after `from_store`, when there are any)."""
        raise NotImplementedError(f"{self.name} declares companion models it does not take")

    @classmethod
    @abstractmethod
    def from_store(cls, stored: StoredModel) -> Self:
        """Build the served model from its stored files."""

    @abstractmethod
    def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        """Validated JSON instances -> the model's input rows."""

    @abstractmethod
    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """v2 input tensors -> unvalidated JSON-like instances (`instance_schema` judges them)."""

    def trusted_inputs(self, tensors: Mapping[str, np.ndarray]) -> ModelInputs | None:
        """The rows of v2 tensors whose every value passes the model's rules, checked on whole
        arrays; None sends the request through per-instance validation instead, which names the
        offending field. Only speed depends on this: it must never accept what the schema would
        refuse, and may refuse (None) what the schema would accept."""
        return None

    @abstractmethod
    def predict(self, rows: np.ndarray) -> np.ndarray:
        """One batch of rows -> one output row per input row (e.g. class probabilities)."""

    @abstractmethod
    def postprocess(self, outputs: np.ndarray, inputs: ModelInputs) -> Columns:
        """Outputs of one request's rows -> answer columns (JSON field name -> [n, ...])."""

    @abstractmethod
    def predicted_classes(self, outputs: np.ndarray) -> np.ndarray:
        """The predicted class of each output row (logged in an indexed column, counted)."""

    def concluded(self, outputs: np.ndarray) -> np.ndarray | None:
        """Which output rows conclude a case (a boolean mask); None: every row does. Only they
        get a prediction id, a prediction-log row and a count: a triage consult's intermediate
        questions are steps of a case, its final diagnoses the one prediction."""
        return None

    def feedback_label(self, label: int | str) -> int | str:
        """A confirmed label as stored, or ValueError naming the allowed labels. Classifiers
        confirm a class index (0 or 1 here); other models override (triage: a disease id)."""
        if isinstance(label, bool) or label not in (0, 1):
            raise ValueError("the confirmed class: 0 or 1")
        return label

    @abstractmethod
    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        """(features in reference order, score, predicted positive) for the drift monitor."""

    @abstractmethod
    def logged_inputs(self, inputs: ModelInputs) -> list[dict[str, Any]]:
        """What the prediction log keeps of each instance."""

    @abstractmethod
    def allowed(self, field: str) -> str | None:
        """Allowed values of an input field, for 422 messages."""

    def batch_limits(self, settings: Settings) -> BatchLimits:
        """The platform's batch size and one batch at a time, unless a model knows better."""
        return BatchLimits(settings.max_batch_size)

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]


def answer_rows(columns: Columns, keyed: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Answer columns -> one JSON-ready dict per instance ([n, k] keyed columns become dicts)."""
    names = list(columns)
    lists = []
    for name in names:
        values = columns[name].tolist()
        keys = keyed.get(name)
        if keys is not None:
            values = [dict(zip(keys, row, strict=True)) for row in values]
        lists.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]
