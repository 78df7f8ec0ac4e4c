"""Grad-CAM saliency: which regions of a slice drove the prediction, as a PNG overlay.

Computed from the class *logit* (not the softmax probability, whose gradient vanishes once the
model is confident) with respect to the last feature map, the input of `FEATURES_LAYER`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from medserve.ct.layer_names import FEATURES_LAYER, OUTPUT_LAYER

OVERLAY_OPACITY = 0.45
# A perceptual dark-blue -> red -> yellow ramp (anchors of a "hot"-like map), no matplotlib.
RAMP = np.array(
    [[0, 0, 64], [32, 0, 160], [200, 0, 120], [255, 80, 0], [255, 220, 0], [255, 255, 200]],
    dtype=np.float32,
)


class GradCam:
    """Heat maps from a Keras classifier built by `architectures.build_classifier`."""

    def __init__(self, model: Any) -> None:
        import keras

        features = model.get_layer(FEATURES_LAYER).input
        self._features = keras.Model(model.inputs, features)
        head = model.get_layer(OUTPUT_LAYER)
        self._kernel, self._bias = head.kernel, head.bias

    def heatmap(self, image: np.ndarray, class_index: int) -> np.ndarray:
        """[size, size, 1] model input -> [h, w] map in [0, 1] at the feature map's resolution."""
        import tensorflow as tf

        batch = tf.convert_to_tensor(image[np.newaxis], dtype=tf.float32)
        with tf.GradientTape() as tape:
            feature_map = self._features(batch, training=False)
            tape.watch(feature_map)
            pooled = tf.reduce_mean(feature_map, axis=(1, 2))
            logit = (tf.matmul(pooled, self._kernel) + self._bias)[:, class_index]
        gradients = tape.gradient(logit, feature_map)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        signed = tf.reduce_sum(weights * feature_map, axis=-1)[0].numpy()
        cam = np.maximum(signed, 0)
        if cam.max() <= 0:
            # No region speaks *for* the class (weak or undertrained models): show where the
            # evidence is strongest either way rather than a blank map.
            cam = np.abs(signed)
        # Min-max scaled (as pytorch-grad-cam's `scale_cam_image`): the weakest region is 0 and
        # stays uncoloured, even on a coarse feature map (2x2 at 64 px) where every cell is warm.
        cam = cam - cam.min()
        peak = float(cam.max())
        return cam / peak if peak > 0 else cam


def overlay_png(windowed: np.ndarray, heatmap: np.ndarray) -> bytes:
    """The windowed slice in gray with the heat map blended over it, as PNG bytes."""
    height, width = windowed.shape
    heat = Image.fromarray(heatmap.astype(np.float32)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    levels = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    colours = _ramp(levels)
    gray = np.repeat((np.clip(windowed, 0, 1) * 255)[..., np.newaxis], 3, axis=2)
    # Cold regions stay mostly the slice itself; hot ones take the colour.
    alpha = (OVERLAY_OPACITY * levels)[..., np.newaxis]
    blended = (1 - alpha) * gray + alpha * colours
    buffer = io.BytesIO()
    Image.fromarray(blended.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _ramp(levels: np.ndarray) -> np.ndarray:
    positions = levels * (len(RAMP) - 1)
    low = np.floor(positions).astype(int).clip(0, len(RAMP) - 2)
    fraction = (positions - low)[..., np.newaxis]
    return RAMP[low] * (1 - fraction) + RAMP[low + 1] * fraction
