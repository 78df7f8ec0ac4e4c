"""Heart-attack risk service: coronary artery disease probability from 13 attributes.

Serve locally with `medserve up` or `bentoml serve bentos.heart_risk:HeartRisk`.
"""

from __future__ import annotations

import bentoml

from medserve.heart.form import FORM_ROUTES
from medserve.heart.model import MODEL_NAME, HeartRiskModel
from medserve.serving.gateway import Gateway
from medserve.serving.service_base import MedserveService
from medserve.serving.service_config import bentoml_config
from medserve.settings import get_settings

gateway = Gateway(extra_routes=FORM_ROUTES)


@bentoml.asgi_app(gateway.app, path="/")
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings()))
class HeartRisk(MedserveService):
    """The heart model behind the shared gateway (JSON, form, OIP v2 REST and gRPC)."""

    model_class = HeartRiskModel
    gateway = gateway
