"""The lung CT pattern model as served: decoded slice in, class probabilities and flags out."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from medserve.ct.gradcam import GradCam, overlay_png
from medserve.ct.imaging import AIR_MAX_HU, LUNG_DENSITY_MAX_HU, Window, model_input
from medserve.ct.runtime import (
    ExecutionPlan,
    InferenceRunner,
    keras_model,
    open_runner,
    plan_execution,
)
from medserve.ct.schema import CtPrediction, CtSlice
from medserve.ct.settings import CtSettings, get_ct_settings
from medserve.drift import ReferenceProfile
from medserve.serving.batching import BatchLimits
from medserve.serving.model import Columns, ModelInputs, ServedModel, StoredModel
from medserve.serving.tensors import TensorSpec
from medserve.settings import Settings, get_settings

MODEL_NAME = "ct_pattern"
# Image-level drift features: a new scanner, reconstruction kernel or window shows here first.
DRIFT_FEATURES = ("mean_intensity", "intensity_std", "lung_density_share")
# Batch cap when MEDSERVE_CT_MAX_BATCH_SIZE is 0: small inputs gain from a few slices per call
# (per-batch costs in the service), large ones lose (memory bandwidth): bench/ct_serving.py.
SMALL_INPUT_SIDE = 256
SMALL_INPUT_BATCH = 4
OOD_WARNING = "lung field {fraction:.0%} of the body (< {minimum:.0%}): not a lung slice?"
LOW_CONFIDENCE_WARNING = "top probability {confidence:.2f} < {minimum:.2f}"


def drift_features(images: np.ndarray, window: Window) -> np.ndarray:
    """[n, len(DRIFT_FEATURES)] per-slice summaries of model inputs ([n, s, s, 1] windowed)."""
    flat = images.reshape(len(images), -1)
    lung_low, lung_high = window.apply(np.array([AIR_MAX_HU, LUNG_DENSITY_MAX_HU]))
    lung = (flat > lung_low) & (flat <= lung_high)
    return np.column_stack([flat.mean(axis=1), flat.std(axis=1), lung.mean(axis=1)])


def batch_cap(settings: CtSettings, image_size: int) -> int:
    """Slices per model call: as set, else by the model's input size."""
    if settings.max_batch_size:
        return settings.max_batch_size
    return SMALL_INPUT_BATCH if image_size <= SMALL_INPUT_SIDE else 1


class CtPatternModel(ServedModel):
    """The stored winner of the four backbones, run by ONNX Runtime (or Keras)."""

    name = MODEL_NAME
    instance_schema = CtSlice
    answer_schema = CtPrediction
    instances_key = "instances"
    # Decoding (validation: JPEG 2000 slices take tens of milliseconds), resizing, the model and
    # the drift statistics all run in threads: pydicom's decoders, NumPy, Pillow and ONNX
    # Runtime release the GIL, and the event loop keeps accepting requests meanwhile.
    decodes_files = True
    predict_in_thread = True
    v2_inputs = (TensorSpec(name="image", datatype="BYTES", shape=[-1]),)
    v2_outputs = (
        TensorSpec(name="class", datatype="BYTES", shape=[-1], column="predicted_class"),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, -1]),
        TensorSpec(name="out_of_distribution", datatype="BOOL", shape=[-1]),
        TensorSpec(name="lung_field_fraction", datatype="FP32", shape=[-1]),
        TensorSpec(name="prediction_id", datatype="BYTES", shape=[-1]),
    )

    def __init__(
        self,
        tag: str,
        runner: InferenceRunner,
        reference: ReferenceProfile,
        classes: Sequence[str],
        image_size: int,
        folder: Path,
        settings: CtSettings,
        plan: ExecutionPlan,
    ) -> None:
        self.tag = tag
        self.plan = plan
        self.runner = runner
        self.reference = reference
        self.classes = tuple(classes)
        self.keyed_columns = {"probabilities": self.classes}
        self.image_size = image_size
        self.folder = folder
        self.settings = settings
        self.window = Window(settings.window_center, settings.window_width)
        self._gradcam_lock = threading.Lock()
        self._gradcam_instance: GradCam | None = None

    @classmethod
    def from_store(cls, stored: StoredModel) -> CtPatternModel:
        card = stored.card()
        settings = get_ct_settings()
        platform = get_settings()
        plan = plan_execution(settings, platform.workers, platform.cores)
        return cls(
            tag=stored.tag,
            runner=open_runner(stored.folder, settings, plan),
            plan=plan,
            reference=stored.reference,
            classes=card["classes"],
            image_size=int(card["image_size"]),
            folder=stored.folder,
            settings=settings,
        )

    def batch_limits(self, settings: Settings) -> BatchLimits:
        cap = min(settings.max_batch_size, batch_cap(self.settings, self.image_size))
        return BatchLimits(cap, self.plan.concurrent_batches)

    def preprocess(self, instances: Sequence[BaseModel]) -> ModelInputs:
        """Resize every decoded slice (decoding refused what the model must not read)."""
        slices = [(i.image, i.include_identifiers) for i in instances]  # type: ignore[attr-defined]
        rows = np.stack([model_input(decoded.windowed, self.image_size) for decoded, _ in slices])
        return ModelInputs(rows, context=slices)

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """`image` [n] BYTES: each element one file (base64 text is accepted too)."""
        return [{"image": bytes(item)} for item in tensors["image"].reshape(-1)]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.runner.predict(rows)

    def predicted_classes(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.argmax(axis=1)

    def postprocess(self, outputs: np.ndarray, inputs: ModelInputs) -> Columns:
        slices = [decoded for decoded, _ in inputs.context]
        fractions = np.array([s.lung_field_fraction for s in slices], dtype=np.float64)
        confidence = outputs.max(axis=1).astype(np.float64)
        ood = fractions < self.settings.min_lung_fraction
        low = confidence < self.settings.min_confidence
        return {
            "predicted_class": np.array(self.classes, dtype=object)[outputs.argmax(axis=1)],
            "probabilities": outputs.astype(np.float64),
            "confidence": confidence,
            "low_confidence": low,
            "out_of_distribution": ood,
            "lung_field_fraction": fractions,
            "warnings": _objects(
                self._warnings(*flags)
                for flags in zip(fractions, confidence, ood, low, strict=True)
            ),
            "input_format": np.array([s.source_format for s in slices], dtype=object),
            "model_tag": np.full(len(slices), self.tag, dtype=object),
            "identifiers": _objects(
                dict(decoded.identifiers) if wanted else None for decoded, wanted in inputs.context
            ),
        }

    def _warnings(
        self, fraction: float, confidence: float, ood: bool, low_confidence: bool
    ) -> list[str]:
        warnings = []
        if ood:
            minimum = self.settings.min_lung_fraction
            warnings.append(OOD_WARNING.format(fraction=fraction, minimum=minimum))
        if low_confidence:
            minimum = self.settings.min_confidence
            warnings.append(LOW_CONFIDENCE_WARNING.format(confidence=confidence, minimum=minimum))
        return warnings

    def logged_inputs(self, inputs: ModelInputs) -> list[dict[str, Any]]:
        """A fingerprint of each file, never its pixels or identifiers."""
        logged = []
        for decoded, _ in inputs.context:
            rows, columns = decoded.windowed.shape
            logged.append(
                {
                    "sha256": decoded.sha256,
                    "format": decoded.source_format,
                    "rows": rows,
                    "columns": columns,
                    "lung_field_fraction": round(decoded.lung_field_fraction, 4),
                }
            )
        return logged

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        last = outputs.shape[1] - 1
        return drift_features(rows, self.window), outputs[:, last], outputs.argmax(1) == last

    def saliency_png(
        self, windowed: np.ndarray, image: np.ndarray, target_class: str | None
    ) -> tuple[bytes, str]:
        """Grad-CAM overlay for `target_class` (default: the predicted one), and that class."""
        gradcam = self._gradcam()
        probabilities = self.runner.predict(image[np.newaxis])[0]
        predicted = self.classes[int(probabilities.argmax())]
        target = self.classes.index(target_class or predicted)
        return overlay_png(windowed, gradcam.heatmap(image, target)), predicted

    def _gradcam(self) -> GradCam:
        """Loaded on first use: only saliency needs TensorFlow's gradients (and its memory)."""
        with self._gradcam_lock:
            if self._gradcam_instance is None:
                self._gradcam_instance = GradCam(keras_model(self.folder))
            return self._gradcam_instance

    def allowed(self, field: str) -> str | None:
        return "a DICOM CT slice (base64 in JSON), or a lung-windowed grayscale PNG/JPEG"


def _objects(values: Iterable[Any]) -> np.ndarray:
    """An object column (lists and dicts kept whole, not spread into dimensions)."""
    items = list(values)
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column
