"""ECG beat anomaly service: autoencoder reconstruction error per beat, strips, review page.

Serve locally with `medserve up` (all services) or `medserve serve ecg_anomaly`.
"""

from __future__ import annotations

import bentoml

from medserve.ecg.model import MODEL_NAME, EcgAnomalyModel
from medserve.ecg.review import REVIEW_ROUTES
from medserve.ecg.strip_api import STRIP_ROUTES
from medserve.serving.path_guard import PathGuard
from medserve.serving.service import MedserveService, bentoml_config, http_api
from medserve.settings import get_settings

http = http_api([*STRIP_ROUTES, *REVIEW_ROUTES])


@bentoml.asgi_app(http.app, path="/")
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings()))
class EcgAnomaly(MedserveService):
    """The ECG autoencoder behind the shared adapters (JSON, strips, review, OIP v2 REST + gRPC)."""

    model_class = EcgAnomalyModel
    http = http


EcgAnomaly.add_asgi_middleware(PathGuard)  # paths BentoML cannot route, in the shared error shape
