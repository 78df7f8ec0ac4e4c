"""MLServer custom runtime serving the compiled heart model (`scorer.json`, a `LinearScorer`).

It runs inside MLServer's own venv, so it imports only MLServer, NumPy and
`medserve.heart.scorer` (NumPy + pydantic); `mlserver start` needs the repository root on
PYTHONPATH (`bench.mlserver_peer.serve_mlserver(..., pythonpath=REPO_ROOT)` sets it).

model-settings.json: ``"implementation": "bench.mlserver_scorer_runtime.LinearScorerRuntime"``,
``"parameters": {"uri": "<model folder>/scorer.json"}``. A request carries one FP64 input of
shape [n, 13]; the answer has one FP64 output "predict_proba" of shape [n, 2], as the sklearn
runtime returns it for the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from medserve.heart.scorer import LinearScorer

N_FEATURES = 13
OUTPUT = "predict_proba"


class LinearScorerRuntime(MLModel):
    """`LinearScorer.predict_proba` of the first input tensor, as output "predict_proba"."""

    async def load(self) -> bool:
        # get_model_uri resolves a relative uri against the model-settings.json folder.
        path = Path(await get_model_uri(self.settings))
        self._scorer = LinearScorer.model_validate_json(path.read_text())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        unknown = [o.name for o in payload.outputs or [] if o.name != OUTPUT]
        if unknown:
            raise InferenceError(f"only the {OUTPUT!r} output exists, asked for {unknown}")
        if not payload.inputs:
            raise InferenceError("the request has no input")
        rows = np.asarray(NumpyCodec.decode_input(payload.inputs[0]), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != N_FEATURES:
            raise InferenceError(f"need shape [n, {N_FEATURES}], got {list(rows.shape)}")
        proba = self._scorer.predict_proba(rows)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(OUTPUT, proba)],
        )
