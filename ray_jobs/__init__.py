"""Ray entrypoints (training, anonymisation); the same modules run locally and on KubeRay.

`medserve.ray_runtime` is imported first: it turns Ray's `uv run` hook off before any entrypoint
imports `ray`.
"""

import medserve.ray_runtime  # noqa: F401
