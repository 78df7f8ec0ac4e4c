"""Lung CT pattern service (UIP vs NSIP): DICOM/PNG slices in, class + flags + saliency out.

Serve locally with `medserve up` (all services) or `medserve serve ct_pattern`.
"""

from __future__ import annotations

import bentoml

from medserve.ct.image_api import IMAGE_ROUTES
from medserve.ct.model import MODEL_NAME, CtPatternModel
from medserve.serving.path_guard import PathGuard
from medserve.serving.service import MedserveService, bentoml_config, http_api
from medserve.settings import get_settings

http = http_api(IMAGE_ROUTES)


@bentoml.asgi_app(http.app, path="/")
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings()))
class CtPattern(MedserveService):
    """The CT classifier behind the shared adapters (JSON, image bodies, OIP v2 REST + gRPC)."""

    model_class = CtPatternModel
    http = http


CtPattern.add_asgi_middleware(PathGuard)  # paths BentoML cannot route, in the shared error shape
