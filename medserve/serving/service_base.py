"""The base class of every BentoML service in `bentos/`: load once, bind, serve gRPC too."""

from __future__ import annotations

import gc
from typing import ClassVar

import bentoml
import grpc

from medserve.prediction_log import PredictionLog
from medserve.serving.gateway import Gateway
from medserve.serving.grpc_server import start_grpc_server
from medserve.serving.model_server import InferencePipeline, ServedModel
from medserve.serving.service_config import ModelSource
from medserve.settings import get_settings


class MedserveService:
    """Subclasses name their `model_class` and `gateway`; everything else is shared.

    Per worker: resolve the pinned model (importing it from S3 if configured), load it once,
    bind it to the gateway (HTTP routes), and start the gRPC server on the worker's loop.
    """

    model_class: ClassVar[type[ServedModel]]
    gateway: ClassVar[Gateway]

    def __init__(self) -> None:
        settings = get_settings()
        tag = ModelSource.from_env(self.model_class.name).resolve(settings)
        self.model = self.model_class.load(tag)
        self.pipeline = InferencePipeline(
            self.model, settings, PredictionLog(settings.resolved_database_url)
        )
        self.gateway.attach(self.pipeline)
        self.grpc_server: grpc.aio.Server | None = None
        # The model and its imports are long-lived: keep them out of every full GC pass.
        gc.freeze()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        """Serve OIP v2 gRPC from this worker (all workers share the port)."""
        settings = get_settings()
        if settings.grpc_enabled:
            self.grpc_server = await start_grpc_server(self.gateway, settings)

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
