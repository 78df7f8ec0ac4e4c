"""Names every stored CT graph carries, whichever backbone won: the contract between the
training code that builds the graph (`architectures.py`) and the serving code that reads it
(ONNX export signature, Grad-CAM). Kept apart so serving needs none of the model builders."""

from __future__ import annotations

INPUT_NAME = "image"
FEATURES_LAYER = "features_pool"  # its input is the last feature map (Grad-CAM's target)
OUTPUT_LAYER = "probabilities"
