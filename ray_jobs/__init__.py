"""Ray entrypoints (training, anonymisation); the same modules run locally and on KubeRay.

Ray's `uv run` hook would rebuild the whole environment for every job from the working directory
(tens of seconds); our workers already run this interpreter and its locked venv. Ray reads the
flag when it is first imported, hence here, before any entrypoint imports `ray`.
"""

import os

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
