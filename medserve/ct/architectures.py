"""The four backbones of the source system, each with a 2-class head, as one flat Keras graph.

Every model takes the windowed slice ([size, size, 1], values in [0, 1]) and carries its own
ImageNet preprocessing as layers, so serving, ONNX export and Grad-CAM never need to know which
backbone won. The graph is flat (the backbone is built on our tensor, not nested as one layer)
so Grad-CAM can read the last feature map, which always feeds the layer `FEATURES_LAYER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medserve.ct.layer_names import FEATURES_LAYER, INPUT_NAME, OUTPUT_LAYER

ArchitectureName = Literal["mobilenet_v2", "vgg16", "resnet50", "efficientnet_b0"]
# Keras' "caffe" preprocessing (VGG16, ResNet50): BGR channel means on a 0-255 scale.
CAFFE_MEANS = (103.939, 116.779, 123.68)
MOBILENET_WEIGHT_SIZES = (96, 128, 160, 192, 224)
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Architecture:
    """How to build one backbone and where Keras would fetch its ImageNet weights."""

    name: ArchitectureName
    keras_class: str
    preprocessing: Literal["tf", "caffe", "torch_255"]

    def weights_file(self, size: int, alpha: float) -> str:
        """File name of Keras' published no-top ImageNet weights for this input."""
        if self.name == "mobilenet_v2":
            rows = size if size in MOBILENET_WEIGHT_SIZES else 224
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"
        return {
            "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "efficientnet_b0": "efficientnetb0_notop.h5",
        }[self.name]


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("mobilenet_v2", "MobileNetV2", "tf"),
        Architecture("vgg16", "VGG16", "caffe"),
        Architecture("resnet50", "ResNet50", "caffe"),
        # EfficientNet normalises inside the model: it only wants 0-255 inputs.
        Architecture("efficientnet_b0", "EfficientNetB0", "torch_255"),
    )
}


class WeightsNotFound(FileNotFoundError):
    """ImageNet weights were asked for but no local file holds them (no download here)."""


def imagenet_weights(arch: Architecture, size: int, alpha: float, folder: Path | None) -> Path:
    """The local ImageNet weights file of `arch`, or `WeightsNotFound` saying where to put it."""
    name = arch.weights_file(size, alpha)
    candidates = [folder / name] if folder else []
    candidates.append(Path.home() / ".keras" / "models" / name)
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in candidates)
    subfolder = "mobilenet_v2/" if arch.name == "mobilenet_v2" else ""
    raise WeightsNotFound(
        f"weights='imagenet' for {arch.keras_class}: no local file {where}. This platform does "
        f"not download weights; fetch {KERAS_WEIGHTS_URL}{subfolder}{name} where the internet is "
        "reachable, copy it to MEDSERVE_CT_TRAIN_IMAGENET_WEIGHTS_DIR, or train with weights=none"
    )


def _preprocessing(kind: str, x: Any) -> Any:
    import keras

    if kind == "tf":
        return keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)
    if kind == "caffe":
        # One Rescaling with a per-channel offset, not a Normalization layer: tf2onnx turns the
        # latter's captured mean/variance into graph inputs the ONNX model then demands.
        offset = -np.asarray(CAFFE_MEANS, dtype=np.float32)
        return keras.layers.Rescaling(255.0, offset=offset, name="caffe_means")(x)
    return keras.layers.Rescaling(255.0, name="to_0_255")(x)


def build_classifier(
    name: str,
    size: int,
    n_classes: int,
    weights: Path | None = None,
    alpha: float = 1.0,
    l2: float = 1e-3,
    bn_momentum: float | None = 0.9,
) -> Any:
    """A compiled-ready Keras model: windowed slice -> class probabilities.

    `weights` is a local ImageNet weights file (see `imagenet_weights`) or None (from scratch).
    `bn_momentum` lowers BatchNormalization momentum: with few steps from scratch the default
    0.99 leaves moving statistics near their initial values and the model answers one class.
    """
    import keras

    arch = ARCHITECTURES[name]
    inputs = keras.Input((size, size, 1), name=INPUT_NAME)
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = _preprocessing(arch.preprocessing, x)
    options: dict[str, Any] = {"alpha": alpha} if name == "mobilenet_v2" else {}
    backbone = getattr(keras.applications, arch.keras_class)(
        include_top=False,
        weights=str(weights) if weights else None,
        input_tensor=x,
        input_shape=(size, size, 3),
        **options,
    )
    pooled = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(backbone.output)
    outputs = keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(l2),
        name=OUTPUT_LAYER,
    )(pooled)
    model = keras.Model(inputs, outputs, name=f"ct_{name}")
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return model
