"""The lung CT pattern model as served: decoded slice in, class probabilities and flags out."""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from medserve import model_store
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
from medserve.serving.model_server import ServedModel
from medserve.serving.v2 import TensorSpec
from medserve.settings import Settings, get_settings

MODEL_NAME = "ct_pattern"
# Image-level drift features: a new scanner, reconstruction kernel or window shows here first.
DRIFT_FEATURES = ("mean_intensity", "intensity_std", "lung_density_share")
# Batch cap when MEDSERVE_CT_MAX_BATCH_SIZE is 0: small inputs gain from a few slices per call
# (per-batch costs in the service), large ones lose (memory bandwidth): bench/ct_serving.py.
SMALL_INPUT_SIDE = 256
SMALL_INPUT_BATCH = 4
EXAMPLE_FILE = Path(__file__).with_name("example_slice.dcm")
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
    instances_key = "instances"
    predict_in_thread = True
    # A 128-px synthetic NSIP slice (DICOM), base64 as a JSON client sends it.
    example: ClassVar[dict[str, str]] = {
        "image": base64.b64encode(EXAMPLE_FILE.read_bytes()).decode()
    }
    v2_inputs = (TensorSpec(name="image", datatype="BYTES", shape=[-1]),)
    v2_outputs = (
        TensorSpec(name="class", datatype="BYTES", shape=[-1]),
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
        self.image_size = image_size
        self.folder = folder
        self.settings = settings
        self.window = Window(settings.window_center, settings.window_width)
        self._gradcam_lock = threading.Lock()
        self._gradcam_instance: GradCam | None = None

    @classmethod
    def load(cls, tag: str) -> CtPatternModel:
        full_tag = model_store.resolve_tag(tag)
        folder = model_store.model_folder(full_tag)
        card = model_store.load_card(full_tag)
        settings = get_ct_settings()
        platform = get_settings()
        plan = plan_execution(settings, platform.workers, platform.cores)
        return cls(
            tag=full_tag,
            runner=open_runner(folder, settings, plan),
            plan=plan,
            reference=model_store.load_reference(full_tag),
            classes=card["classes"],
            image_size=int(card["image_size"]),
            folder=folder,
            settings=settings,
        )

    def batch_limits(self, settings: Settings) -> BatchLimits:
        cap = min(settings.max_batch_size, batch_cap(self.settings, self.image_size))
        return BatchLimits(cap, self.plan.concurrent_batches)

    def preprocess(self, instances: Sequence[BaseModel]) -> np.ndarray:
        slices = [instance.image for instance in instances]  # type: ignore[attr-defined]
        return np.stack([model_input(s.windowed, self.image_size) for s in slices])

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.runner.predict(rows)

    def postprocess(
        self, output: np.ndarray, prediction_id: str, instance: BaseModel
    ) -> CtPrediction:
        assert isinstance(instance, CtSlice)
        decoded = instance.image
        confidence = float(output.max())
        warnings = []
        out_of_distribution = decoded.lung_field_fraction < self.settings.min_lung_fraction
        if out_of_distribution:
            warnings.append(
                OOD_WARNING.format(
                    fraction=decoded.lung_field_fraction, minimum=self.settings.min_lung_fraction
                )
            )
        low_confidence = confidence < self.settings.min_confidence
        if low_confidence:
            warnings.append(
                LOW_CONFIDENCE_WARNING.format(
                    confidence=confidence, minimum=self.settings.min_confidence
                )
            )
        return CtPrediction(
            prediction_id=prediction_id,
            predicted_class=self.classes[int(output.argmax())],
            probabilities={c: float(p) for c, p in zip(self.classes, output, strict=True)},
            confidence=confidence,
            low_confidence=low_confidence,
            out_of_distribution=out_of_distribution,
            lung_field_fraction=decoded.lung_field_fraction,
            warnings=warnings,
            input_format=decoded.source_format,
            model_tag=self.tag,
            identifiers=dict(decoded.identifiers) if instance.include_identifiers else None,
        )

    def logged_inputs(self, instance: BaseModel) -> dict[str, Any]:
        """A fingerprint of the file, never its pixels or identifiers."""
        decoded = instance.image  # type: ignore[attr-defined]
        rows, columns = decoded.windowed.shape
        return {
            "sha256": decoded.sha256,
            "format": decoded.source_format,
            "rows": rows,
            "columns": columns,
            "lung_field_fraction": round(decoded.lung_field_fraction, 4),
        }

    def drift_inputs(self, rows: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, ...]:
        last = outputs.shape[1] - 1
        return drift_features(rows, self.window), outputs[:, last], outputs.argmax(1) == last

    def instances_from_tensors(self, tensors: Mapping[str, np.ndarray]) -> list[Any]:
        """`image` [n] BYTES: each element one file (base64 text is accepted too)."""
        return [{"image": bytes(item)} for item in tensors["image"].reshape(-1)]

    @classmethod
    def tensors_from_instances(cls, instances: Sequence[Any]) -> dict[str, np.ndarray]:
        files = [base64.b64decode(i["image"]) if isinstance(i, dict) else i for i in instances]
        return {"image": np.array(files, dtype=object)}

    def tensors_from_answers(self, answers: Sequence[BaseModel]) -> dict[str, np.ndarray]:
        predictions = [CtPrediction.model_validate(a) for a in answers]
        return {
            "class": np.array([p.predicted_class.encode() for p in predictions], dtype=object),
            "probabilities": np.array(
                [[p.probabilities[c] for c in self.classes] for p in predictions],
                dtype=np.float32,
            ),
            "out_of_distribution": np.array(
                [p.out_of_distribution for p in predictions], dtype=np.bool_
            ),
            "lung_field_fraction": np.array(
                [p.lung_field_fraction for p in predictions], dtype=np.float32
            ),
            "prediction_id": np.array(
                [p.prediction_id.encode() for p in predictions], dtype=object
            ),
        }

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
