"""BentoML service configuration shared by every service in `bentos/`, from typed settings.

The knobs that took a small model from ~250 to ~2,500 req/s here (DESIGN.md): no OpenTelemetry
middleware work on the hot paths, no access log on them, more than one worker.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel

from medserve import model_store
from medserve.settings import Settings

# Paths served by the shared gateway that must stay cheap.
HOT_PATHS = ("/predict", "/v2", "/metrics", "/readyz", "/livez", "/healthz")


class ModelSource(BaseModel):
    """Which model a service runs: `MEDSERVE_<MODEL>_MODEL_TAG`, optional `..._MODEL_URI`.

    With a URI (s3://... or a path to a `.bentomodel` archive) the model is imported into the
    local store at start-up, which is how pods get their model; the tag then names it.
    """

    model_tag: str
    model_uri: str | None = None

    @classmethod
    def from_env(cls, name: str) -> ModelSource:
        prefix = f"MEDSERVE_{name.upper()}_"
        return cls(
            model_tag=os.environ.get(f"{prefix}MODEL_TAG", f"{name}:latest"),
            model_uri=os.environ.get(f"{prefix}MODEL_URI") or None,
        )

    def resolve(self, settings: Settings) -> str:
        """The full tag to load, importing the model from `model_uri` first when set."""
        if self.model_uri:
            imported = model_store.import_model(self.model_uri, settings)
            if self.model_tag.endswith(":latest") or self.model_tag == imported:
                return imported
        return model_store.resolve_tag(self.model_tag)


def bentoml_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `@bentoml.service` for a medserve service."""
    return {
        "workers": settings.workers,
        "traffic": {"timeout": 60},
        "http": {"port": settings.http_port},
        "logging": {"access": {"enabled": settings.access_log}},
        "tracing": {"excluded_urls": ",".join(HOT_PATHS)},
    }
