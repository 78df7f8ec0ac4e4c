"""The HTTP surface every service shares, mounted into its BentoML service as an ASGI app.

Routes: `POST /predict` (native JSON, adaptive batching), `POST /feedback`,
`GET /predictions/{id}`, `GET /model`, plus routes a model adds (e.g. the heart form).
Every error leaves as the one JSON shape of `errors.ErrorBody`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from medserve import model_store
from medserve.logs import get_logger
from medserve.prediction_log import UnknownPrediction
from medserve.serving.errors import ServiceError, field_errors, validation_error
from medserve.serving.model_server import InferencePipeline
from medserve.serving.requests import REQUEST_ID_HEADER, read_body, request_id_of
from medserve.serving.v2 import V2Protocol
from medserve.serving.v2_rest import v2_routes

log = get_logger("gateway")
JSON_TYPES = ("application/json",)
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Handler = Callable[[Request, "Gateway", str], Awaitable[Response]]


class ExtraRoute(BaseModel):
    """A model-specific route (e.g. the heart form) served with the shared error handling."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str
    handler: Handler
    methods: list[str]
    transport: str


class FeedbackRequest(BaseModel):
    """A clinician-confirmed outcome for one logged prediction."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prediction_id: str = Field(min_length=26, max_length=26)
    label: int = Field(ge=0, le=1, description="The confirmed class.")
    reviewer: str | None = Field(default=None, max_length=128)


class PredictionQuery(BaseModel):
    """Filters of `GET /predictions` (and of review pages listing recent predictions)."""

    model_config = ConfigDict(extra="forbid")

    predicted_class: int | None = Field(default=None, ge=0, le=1000)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=50, ge=1, le=500)


class PredictResponse(BaseModel):
    model: str
    model_tag: str
    request_id: str
    predictions: list[Any]


class Gateway:
    """A Starlette app bound, once per worker, to that worker's `InferencePipeline`."""

    def __init__(self, extra_routes: Sequence[ExtraRoute] = ()) -> None:
        self.pipeline: InferencePipeline | None = None
        self.v2 = V2Protocol(self)
        self._request_schema: type[BaseModel] | None = None
        routes: list[BaseRoute] = [
            Route("/predict", self.wrap(_predict, "http_json"), methods=["POST"]),
            Route("/feedback", self.wrap(_feedback, "feedback"), methods=["POST"]),
            Route("/predictions", self.wrap(_list_predictions, "read")),
            Route("/predictions/{prediction_id}", self.wrap(_get_prediction, "read")),
            Route("/model", self.wrap(_model_info, "read")),
        ]
        routes += v2_routes(self)
        routes += [
            Route(r.path, self.wrap(r.handler, r.transport), methods=r.methods)
            for r in extra_routes
        ]
        # Last: BentoML mounts this app passively (only paths it matches reach it), so unknown
        # paths get the shared error shape only through an explicit catch-all.
        served = list(routes)
        routes.append(Route("/{path:path}", self._not_served, methods=list(ALL_METHODS)))
        self._served_routes = served
        self.app = Starlette(routes=routes)

    async def _not_served(self, request: Request) -> Response:
        """Unknown paths (404) and wrong methods (405) answer in the shared error shape too."""
        known_path = any(
            route.matches(request.scope)[0] == Match.PARTIAL for route in self._served_routes
        )
        status, error = (405, "method_not_allowed") if known_path else (404, "not_found")
        detail = f"{request.method} {request.url.path} is not served here"
        return ServiceError(status, error, detail).response(request_id_of(request))

    def attach(self, pipeline: InferencePipeline) -> None:
        """Bind the worker's pipeline; until then every route answers 503."""
        self.pipeline = pipeline
        model = pipeline.model
        max_items = pipeline.settings.max_instances_per_request
        self._request_schema = create_model(
            f"{model.name}_predict_request",
            __config__=ConfigDict(extra="forbid", strict=True),
            **{
                model.instances_key: (
                    list[model.instance_schema],  # type: ignore[name-defined]
                    Field(..., min_length=1, max_length=max_items),
                )
            },
        )

    @property
    def request_schema(self) -> type[BaseModel]:
        """The `/predict` body schema of the attached model."""
        if self._request_schema is None:
            raise ServiceError(503, "not_ready", "the model is still loading")
        return self._request_schema

    @property
    def ready_pipeline(self) -> InferencePipeline:
        if self.pipeline is None:
            raise ServiceError(503, "not_ready", "the model is still loading")
        return self.pipeline

    def wrap(
        self, handler: Handler, transport: str, oip: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            request_id = request_id_of(request)
            try:
                response = await handler(request, self, request_id)
                outcome = "ok"
            except ServiceError as exc:
                response = exc.response(request_id, oip=oip)
                outcome = exc.error
                self.count_reject(exc.error)
            except Exception as exc:  # never leak internals; the type alone is logged
                log.error(
                    "unhandled error", extra={"request_id": request_id, "error": type(exc).__name__}
                )
                error = ServiceError(500, "internal_error", "unexpected server error")
                response = error.response(request_id, oip=oip)
                outcome = "internal_error"
            response.headers[REQUEST_ID_HEADER] = request_id
            self._observe(request, transport, outcome, response.status_code, started, request_id)
            return response

        return endpoint

    def count_reject(self, reason: str) -> None:
        """Count a refused request by reason (every transport reports here)."""
        if self.pipeline is not None:
            self.pipeline.metrics.rejected.labels(self.pipeline.model.name, reason).inc()

    def _observe(
        self,
        request: Request,
        transport: str,
        outcome: str,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        elapsed = time.perf_counter() - started
        if self.pipeline is None:
            return
        model = self.pipeline.model
        self.pipeline.request_timer(transport, outcome).observe(elapsed)
        if status >= 400:
            # Field names and reasons only: values of a patient never reach the log.
            log.info(
                "request rejected",
                extra={
                    "request_id": request_id,
                    "model_tag": model.tag,
                    "route": request.url.path,
                    "status": status,
                    "reason": outcome,
                    "latency_ms": round(elapsed * 1000, 3),
                },
            )

    async def read_json_body(self, request: Request) -> bytes:
        """The raw body of a JSON request, with the size and media-type checks applied."""
        settings = self.ready_pipeline.settings
        media_type = request.headers.get("content-type", "application/json").split(";")[0]
        if media_type.strip().lower() not in JSON_TYPES:
            raise ServiceError(415, "unsupported_media_type", "send application/json")
        return await read_body(request, settings.max_body_bytes)

    def parse_query(self, request: Request) -> PredictionQuery:
        """`PredictionQuery` from the query string; bad values are a 422 naming the parameter."""
        params = {key: value for key, value in request.query_params.items() if value != ""}
        try:
            return PredictionQuery.model_validate(params)
        except ValidationError as exc:
            raise validation_error(field_errors(exc, lambda _: None)) from None

    def parse(self, schema: type[BaseModel], body: bytes, prefix: str = "") -> BaseModel:
        """Validate a JSON body; malformed JSON is a 400, bad values a 422, too many a 413."""
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            raise self.to_service_error(exc, prefix) from None

    def to_service_error(self, exc: ValidationError, prefix: str = "") -> ServiceError:
        if "json_invalid" in {err["type"] for err in exc.errors()}:
            return ServiceError(400, "malformed_json", "the body is not valid JSON")
        pipeline = self.ready_pipeline
        # Too many instances, not an instance that is too long (an ECG beat of 141 samples).
        if any(
            err["type"] == "too_long" and tuple(err["loc"]) == (pipeline.model.instances_key,)
            for err in exc.errors()
        ):
            limit = pipeline.settings.max_instances_per_request
            return ServiceError(
                413,
                "batch_too_large",
                f"at most {limit} instances per request",
                field=pipeline.model.instances_key,
            )
        return validation_error(field_errors(exc, pipeline.model.allowed, prefix))

    async def predict_instances(
        self, instances: Sequence[BaseModel], request_id: str, transport: str
    ) -> list[BaseModel]:
        """Entry of every transport into the shared inference path."""
        return await self.ready_pipeline.infer(instances, request_id, transport)


async def _predict(request: Request, gateway: Gateway, request_id: str) -> Response:
    pipeline = gateway.ready_pipeline
    body = await gateway.read_json_body(request)
    parsed = gateway.parse(gateway.request_schema, body)
    instances = getattr(parsed, pipeline.model.instances_key)
    answers = await gateway.predict_instances(instances, request_id, "http_json")
    payload = PredictResponse(
        model=pipeline.model.name,
        model_tag=pipeline.model.tag,
        request_id=request_id,
        predictions=[a.model_dump(by_alias=True) for a in answers],
    )
    return Response(payload.model_dump_json(), media_type="application/json")


async def _feedback(request: Request, gateway: Gateway, request_id: str) -> Response:
    pipeline = gateway.ready_pipeline
    feedback = gateway.parse(FeedbackRequest, await gateway.read_json_body(request))
    assert isinstance(feedback, FeedbackRequest)
    try:
        outcome = {"label": feedback.label}
        pipeline.log.add_feedback(
            pipeline.model.name, feedback.prediction_id, outcome, feedback.reviewer
        )
    except UnknownPrediction:
        raise ServiceError(
            404, "unknown_prediction", "no such prediction id", field="prediction_id"
        ) from None
    return JSONResponse({"prediction_id": feedback.prediction_id, "request_id": request_id})


async def _list_predictions(request: Request, gateway: Gateway, request_id: str) -> Response:
    query = gateway.parse_query(request)
    pipeline = gateway.ready_pipeline
    records = pipeline.log.recent(pipeline.model.name, **query.model_dump())
    body = "[" + ",".join(record.model_dump_json() for record in records) + "]"
    return Response(body, media_type="application/json")


async def _get_prediction(request: Request, gateway: Gateway, request_id: str) -> Response:
    record = gateway.ready_pipeline.log.get(request.path_params["prediction_id"])
    if record is None:
        raise ServiceError(404, "unknown_prediction", "no such prediction id")
    return Response(record.model_dump_json(), media_type="application/json")


async def _model_info(request: Request, gateway: Gateway, request_id: str) -> Response:
    model = gateway.ready_pipeline.model
    card = model_store.load_card(model.tag)
    body = {
        "model": model.name,
        "model_tag": model.tag,
        "metrics": card.get("metrics", {}),
        "input_schema": model.instance_schema.model_json_schema(),
    }
    return JSONResponse(body)
