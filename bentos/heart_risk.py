"""Heart-attack risk service: coronary artery disease probability from 13 attributes.

Serve locally with `medserve up` or `bentoml serve bentos.heart_risk:HeartRisk`.
"""

from __future__ import annotations

import gc

import bentoml

from medserve.heart.form import FORM_ROUTES
from medserve.heart.model import MODEL_NAME, HeartRiskModel
from medserve.prediction_log import PredictionLog
from medserve.serving.gateway import Gateway
from medserve.serving.model_server import InferencePipeline
from medserve.serving.service_config import ModelSource, bentoml_config
from medserve.settings import get_settings

gateway = Gateway(extra_routes=FORM_ROUTES)


@bentoml.asgi_app(gateway.app, path="/")
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings()))
class HeartRisk:
    """Loads the pinned model once per worker and binds it to the shared gateway."""

    def __init__(self) -> None:
        settings = get_settings()
        tag = ModelSource.from_env(MODEL_NAME).resolve(settings)
        self.model = HeartRiskModel.load(tag)
        self.pipeline = InferencePipeline(
            self.model, settings, PredictionLog(settings.resolved_database_url)
        )
        gateway.attach(self.pipeline)
        # The model and its imports are long-lived: keep them out of every full GC pass.
        gc.freeze()
