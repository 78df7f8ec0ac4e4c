"""The BentoML binding every service in `bentos/` shares: its configuration, which model it
runs, and the base class that loads the model once per worker, builds the data plane and starts
the gRPC adapter beside the HTTP one.

The knobs that took a small model from ~250 to ~2,500 req/s here (DESIGN.md): no OpenTelemetry
middleware work on the hot paths, no access log on them, more than one worker.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import bentoml
import grpc
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from medserve import model_store
from medserve.audit import AuditTrail
from medserve.auth.authenticator import Authenticator
from medserve.auth.settings import get_auth_settings
from medserve.prediction_log import PredictionLog
from medserve.serving.dataplane import DataPlane
from medserve.serving.http_api import SHARED_ROUTES, HttpApi, HttpRoute
from medserve.serving.http_security import HttpAccess
from medserve.serving.model import ServedModel
from medserve.serving.oip_grpc import start_grpc_server
from medserve.serving.oip_rest import OIP_REST_ROUTES
from medserve.serving.openapi import with_contract
from medserve.serving.request_timeout import install as install_request_timeout
from medserve.settings import Settings, get_settings

install_request_timeout()

# Paths served by the shared HTTP app that must stay cheap.
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

    def tag_to_load(self, settings: Settings) -> str:
        """The tag to load, importing the model from `model_uri` first when set."""
        if self.model_uri:
            imported = model_store.import_model(self.model_uri, settings)
            if self.model_tag.endswith(":latest") or self.model_tag == imported:
                return imported
        return self.model_tag


def bentoml_config(settings: Settings, hot_paths: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments of `@bentoml.service` for a medserve service; `hot_paths`: the
    service's own hot routes beside the shared HOT_PATHS (OpenTelemetry's middleware cost
    ~0.25 ms of CPU per traced call here, even with sampling off)."""
    return {
        "workers": settings.workers,
        "traffic": {"timeout": 60},
        "http": {"port": settings.http_port},
        # BentoML's access log prints the raw path, which can name a patient: the data plane
        # logs calls itself, by route template (`MEDSERVE_ACCESS_LOG`).
        "logging": {"access": {"enabled": False}},
        # Our own /metrics serves the medserve families (metrics.py says why BentoML's are off).
        "metrics": {"enabled": False},
        "tracing": {"excluded_urls": ",".join([*HOT_PATHS, *hot_paths])},
    }


def http_api(model_routes: Sequence[HttpRoute] = ()) -> HttpApi:
    """A service's HTTP app: the shared routes, OIP v2 REST, then the model's own routes."""
    return HttpApi(with_contract([*SHARED_ROUTES, *OIP_REST_ROUTES, *model_routes]))


class MedserveService:
    """Subclasses name their `model_class` and `http` app; everything else is shared.

    Per worker: resolve the pinned model (importing it from S3 if configured), load it once,
    build the data plane, bind it to the HTTP app and start the gRPC server on the worker's loop.
    """

    model_class: ClassVar[type[ServedModel]]
    http: ClassVar[HttpApi]

    def __init__(self) -> None:
        settings = get_settings()
        # NumPy's BLAS would start a thread per core in every worker: with several workers on a
        # pod's cores they fight (batched ECG matrix products slowed tenfold under load here).
        threadpool_limits(max(1, settings.cores // settings.workers), user_api="blas")
        model_class = self.model_class
        tag = ModelSource.from_env(model_class.name).tag_to_load(settings)
        companions = {
            name: ModelSource.from_env(name).tag_to_load(settings)
            for name in model_class.companion_models
        }
        self.plane = DataPlane(
            model_class.load(tag, companions),
            settings,
            PredictionLog(settings.resolved_database_url),
        )
        auth_settings = get_auth_settings()
        self.authenticator = Authenticator(auth_settings)
        audit = AuditTrail(self.plane.log.engine)
        self.http.attach(self.plane, HttpAccess(self.authenticator, audit, auth_settings))
        self.grpc_server: grpc.aio.Server | None = None
        # The model and its imports are long-lived: keep them out of every full GC pass.
        gc.freeze()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """Serve OIP v2 gRPC from this worker (all workers share the port)."""
        settings = get_settings()
        if settings.grpc_enabled:
            self.grpc_server = await start_grpc_server(self.plane, settings, self.authenticator)

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
