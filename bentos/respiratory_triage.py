"""Respiratory triage service: the KB's consult, one stateless step per call, and its page.

Serve locally with `medserve up` (all services) or `medserve serve respiratory_triage`.
"""

from __future__ import annotations

import bentoml

from medserve.respiratory.consult_api import CONSULT_ROUTES
from medserve.respiratory.model import MODEL_NAME, TriageModel
from medserve.respiratory.page import PAGE_ROUTES
from medserve.serving.path_guard import PathGuard
from medserve.serving.service import MedserveService, bentoml_config, http_api
from medserve.settings import get_settings

http = http_api([*CONSULT_ROUTES, *PAGE_ROUTES])


@bentoml.asgi_app(http.app, path="/")
# A consult step is a hot path like `/predict`: untraced.
@bentoml.service(name=MODEL_NAME, **bentoml_config(get_settings(), hot_paths=("/consult",)))
class RespiratoryTriage(MedserveService):
    """The triage KB behind the shared adapters (consult JSON, page, OIP v2 REST + gRPC)."""

    model_class = TriageModel
    http = http


RespiratoryTriage.add_asgi_middleware(PathGuard)  # paths BentoML cannot route, shared error shape
