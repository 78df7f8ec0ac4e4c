"""How the CT model's forward pass runs: ONNX Runtime (default) or Keras.

Training exports the winning Keras model to ONNX and refuses to store it unless the two agree
within 1e-3 in probability on the test slices; serving runs the ONNX file, which is much faster
on CPU than Keras here (bench/ct_serving.py) and does not load TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medserve.ct.layer_names import INPUT_NAME
from medserve.ct.settings import CtSettings

KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17


class InferenceRunner(Protocol):
    """A loaded forward pass: [n, size, size, 1] windowed slices -> [n, classes] float32."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...


def keras_model(folder: Path) -> Any:
    """The stored Keras model (imports TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras.models.load_model(folder / KERAS_FILE, compile=False)


class KerasRunner:
    """The reference: Keras' compiled `predict_on_batch` (an eager `model(x)` call is ~10x
    slower per image here; `predict` adds a data-loop per call)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(images), dtype=np.float32)


class OnnxRunner:
    """An ONNX Runtime session with all graph optimisations."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(images, dtype=np.float32)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """How one worker spends its cores: batches in flight x threads per ONNX Runtime call."""

    concurrent_batches: int
    threads_per_batch: int


def plan_execution(settings: CtSettings, workers: int, cores: int) -> ExecutionPlan:
    """Unset values (0) share the pod's `cores` (`Settings.cores`) out among the workers, one batch
    per core: concurrent 1-thread calls on one session outrun one multi-thread call (whose
    spinning pool also takes CPU from decoding), and one worker balances load better than
    several (bench/ct_serving.py, docs/ct.md). Keras runs one batch at a time."""
    cores = max(1, cores // workers)
    if settings.runtime == "keras":
        return ExecutionPlan(1, settings.intra_op_threads or cores)
    concurrent = settings.concurrent_batches or cores
    return ExecutionPlan(concurrent, settings.intra_op_threads or max(1, cores // concurrent))


def open_runner(folder: Path, settings: CtSettings, plan: ExecutionPlan) -> InferenceRunner:
    """The runner the settings ask for, over a stored model's folder."""
    if settings.runtime == "onnx":
        return OnnxRunner(folder / ONNX_FILE, plan.threads_per_batch)
    return KerasRunner(keras_model(folder))


def export_onnx(model: Any, path: Path, size: int) -> None:
    """Write the Keras model as ONNX with a dynamic batch dimension.

    The traced graph is frozen first: Keras 3 keeps constants such as a Normalization layer's
    mean and variance (EfficientNet has one) as captured tensors, which tf2onnx would otherwise
    turn into extra graph inputs that no caller can feed.
    """
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    signature = (tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def forward(image: Any) -> Any:
        return model(image, training=False)

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[tensor.name for tensor in frozen.inputs],
        output_names=[tensor.name for tensor in frozen.outputs],
        opset=ONNX_OPSET,
        output_path=str(path),
    )


def onnx_gap(model: Any, path: Path, images: np.ndarray) -> float:
    """Largest probability difference between Keras and the ONNX file on `images`."""
    reference = KerasRunner(model).predict(images)
    return float(np.max(np.abs(OnnxRunner(path).predict(images) - reference)))
