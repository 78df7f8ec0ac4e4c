"""Heart-attack risk service: coronary artery disease probability from 13 attributes.

Serve locally with `medserve up` or `bentoml serve bentos.heart_risk:HeartRisk`.
"""

from __future__ import annotations

import bentoml

from medserve.heart.form import FORM_ROUTES
from medserve.heart.model import MODEL_NAME, HeartRiskModel
from medserve.serving.path_guard import PathGuard
from medserve.serving.service import MedserveService, bentoml_config, http_api
from medserve.settings import get_settings

http = http_api(FORM_ROUTES)


@bentoml.asgi_app(http.app, path="/")
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings()))
class HeartRisk(MedserveService):
    """The heart model behind the shared adapters (JSON, form, OIP v2 REST and gRPC)."""

    model_class = HeartRiskModel
    http = http


HeartRisk.add_asgi_middleware(PathGuard)  # paths BentoML cannot route, in the shared error shape
