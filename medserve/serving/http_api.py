"""The HTTP adapter: a Starlette app over the worker's data plane, mounted into BentoML.

Shared routes: `POST /predict` (native JSON), `POST /feedback`, `GET /predictions`,
`GET /predictions/{id}`, `GET /model`; models add their own (`HttpRoute`: the heart form, ECG
strips and review pages, CT image bodies) and the OIP REST routes come from `oip_rest.py`.
Every handler gets the plane and the request id; every refusal leaves in the one error shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route, Router

from medserve import model_store
from medserve.auth.roles import Identity, Role
from medserve.prediction_log import PredictionRecord, UnknownPrediction
from medserve.serving.contract import NO_DOC, Body, Link, ModelPart, RouteDoc
from medserve.serving.dataplane import DataPlane, valid_request_id
from medserve.serving.errors import ServiceError, field_errors, validation_error
from medserve.serving.http_security import (
    AUDITED_ROLES,
    CSRF_FIELD,
    STATE_CHANGING,
    TOKEN_PARAM,
    HttpAccess,
    identity_of,
    protect_headers,
    touched,
)
from medserve.serving.metrics import exposition
from medserve.settings import Settings

JSON_TYPES = ("application/json",)
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REQUEST_ID_HEADER = "x-request-id"
API_PREDICT = "http_json"

Handler = Callable[[Request, DataPlane, str], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """One route: its handler, the `api` label its calls are counted under, and the role a
    caller needs (None only for `probe` routes).

    `oip` routes put "<code>: <message>" in `error` (the protocol's message field). `probe`
    routes (health, metrics) answer anyone, even before the model is loaded, uncounted: their
    handler gets the plane or None. `page` routes are HTML for browsers: they also accept the
    session cookie, and their form posts need the CSRF checks (http_security.py). `doc` is
    the route's API contract (`contract.py`, rendered at `/openapi.json` by `openapi.py`)."""

    path: str
    handler: Handler
    api: str
    role: Role | None
    methods: tuple[str, ...] = ("GET",)
    oip: bool = False
    probe: bool = False
    page: bool = False
    doc: RouteDoc = NO_DOC

    def __post_init__(self) -> None:
        if (self.role is None) != self.probe:
            raise ValueError(f"{self.path}: probes have no role, every other route has one")


class FeedbackRequest(BaseModel):
    """A clinician-confirmed outcome for one logged prediction."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prediction_id: str = Field(min_length=26, max_length=26)
    label: int | Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The confirmed outcome: a class index (heart, ECG: 0 or 1) or, for triage, "
        "the confirmed disease id or ICD-10 code."
    )
    reviewer: str | None = Field(default=None, max_length=128)


class PredictionQuery(BaseModel):
    """Filters of `GET /predictions` (and of review pages listing recent predictions)."""

    model_config = ConfigDict(extra="forbid")

    predicted_class: int | None = Field(default=None, ge=0, le=1000)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(default=50, ge=1, le=500)


class HttpApi:
    """The Starlette app of one service; bound to the worker's data plane once it is loaded."""

    def __init__(self, routes: Sequence[HttpRoute]) -> None:
        self.routes = tuple(routes)
        self.plane: DataPlane | None = None
        self.access: HttpAccess | None = None
        served: list[BaseRoute] = [
            Route(r.path, self._endpoint(r), methods=list(r.methods)) for r in routes
        ]
        self._served_routes = served
        # Last: BentoML mounts this app passively (only paths it matches reach it), so unknown
        # paths get the shared error shape only through an explicit catch-all.
        catch_all = Route("/{path:path}", self._not_served, methods=list(ALL_METHODS))
        # A bare router, not a second Starlette app: BentoML's app around it already has the
        # error and exception middleware, and every endpoint here answers its own errors.
        self.app = Router(routes=[*served, catch_all])

    def attach(self, plane: DataPlane, access: HttpAccess) -> None:
        """Bind the worker's data plane and access checks; until then every route but the
        probes answers 503 `not_ready`."""
        self.plane = plane
        self.access = access

    def _endpoint(self, route: HttpRoute) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            request_id = request_id_of(request)
            plane, access = self.plane, self.access
            result: Response | ServiceError
            if route.probe:
                result = await route.handler(request, plane, request_id)  # type: ignore[arg-type]
            elif plane is None or access is None:
                result = not_ready()
            else:
                result = await plane.handle(
                    route.api,
                    request_id,
                    route.path,
                    lambda: self._guarded(route, request, plane, access, request_id),
                )
            response = (
                error_response(result, request_id, oip=route.oip)
                if isinstance(result, ServiceError)
                else result
            )
            response.headers[REQUEST_ID_HEADER] = request_id
            return response if route.probe else protect_headers(response)

        return endpoint

    async def _guarded(
        self,
        route: HttpRoute,
        request: Request,
        plane: DataPlane,
        access: HttpAccess,
        request_id: str,
    ) -> Response:
        """The route's checked call; calls of patient-data routes are audited, refusals and
        failures included."""
        status, outcome = 500, "internal_error"
        try:
            # (Starlette's own refusal, `request.form()` on a malformed body, only happens in
            # `read_form`, which answers it as a 400 `invalid_form`.)
            response = await self._checked_call(route, request, plane, access, request_id)
            status, outcome = response.status_code, "ok"
            return response
        except ServiceError as exc:
            status, outcome = exc.status, exc.error
            raise
        finally:
            if route.role in AUDITED_ROLES:
                model = plane.model.name
                await access.record(request, route.path, model, status, outcome, request_id)

    async def _checked_call(
        self,
        route: HttpRoute,
        request: Request,
        plane: DataPlane,
        access: HttpAccess,
        request_id: str,
    ) -> Response:
        """The handler behind the host, identity, role and browser-post checks (what was proven
        so far is kept on `request.state` for the audit entry)."""
        assert route.role is not None
        access.check_host(request)
        if route.page and request.method == "GET" and TOKEN_PARAM in request.query_params:
            return await access.start_session(request)
        identity = request.state.identity = await access.identify(request, page=route.page)
        request.state.role_used = access.authenticator.authorise(identity, route.role)
        if request.method in STATE_CHANGING:
            await self._check_browser_post(route, request, plane, access, identity)
        if route.page:
            request.state.csrf_token = access.csrf_token(identity)
        return await route.handler(request, plane, request_id)

    @staticmethod
    async def _check_browser_post(
        route: HttpRoute, request: Request, plane: DataPlane, access: HttpAccess, identity: Identity
    ) -> None:
        """A state-changing call made with credentials the browser attaches by itself (cookie,
        proxy session) must come from this service's origin; a page's form post must also carry
        the identity's CSRF token. A caller sending its own bearer cannot be forged by a
        third-party page, so it needs neither."""
        if not identity.ambient:
            return
        access.check_origin(request)
        if route.page:
            form = await read_form(request, plane.settings)
            access.check_csrf(form.get(CSRF_FIELD), identity)

    async def _not_served(self, request: Request) -> Response:
        """Unknown paths (404) and wrong methods (405) answer in the shared error shape too.

        The detail names the method only: a raw path can carry a patient's name."""
        known_path = any(
            route.matches(request.scope)[0] == Match.PARTIAL for route in self._served_routes
        )
        status, error = (405, "method_not_allowed") if known_path else (404, "not_found")
        detail = f"no route here answers {request.method} for this path"
        return error_response(ServiceError(status, error, detail), request_id_of(request))


def error_response(error: ServiceError, request_id: str, oip: bool = False) -> Response:
    """The JSON error response (pydantic serialises any odd value safely)."""
    body = error.body(request_id, oip=oip).model_dump_json()
    return Response(
        body, status_code=error.status, media_type="application/json", headers=error.headers
    )


def not_ready() -> ServiceError:
    return ServiceError(503, "not_ready", "the model is still loading")


# -- request plumbing ----------------------------------------------------------------------------
def request_id_of(request: Request) -> str:
    """The caller's `X-Request-ID` if well-formed, else a new ULID."""
    return valid_request_id(request.headers.get(REQUEST_ID_HEADER))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes, declared or actual.

    Read chunk by chunk so a chunked upload (no Content-Length) is refused as soon as it passes
    the limit, not after it has been buffered whole; the body is then kept on the request, where
    Starlette's `body()` and `form()` find it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise client_closed() from None
    body = b"".join(chunks)
    request._body = body  # Starlette's own cache: body() and form() reuse it
    return body


def body_too_large(limit: int) -> ServiceError:
    return ServiceError(413, "body_too_large", f"body exceeds {limit} bytes")


def client_closed() -> ServiceError:
    """The client went away before its body arrived: a client outcome (nginx's 499), so SREs'
    server-error rate and the `unhandled error` log stay about the server. Nobody reads the
    answer."""
    return ServiceError(499, "client_closed_request", "the client closed the connection")


async def read_form(request: Request, settings: Settings) -> FormData:
    """A form post (URL-encoded or multipart without files) under the body and field-count
    limits; a malformed one (or one of too many fields) is a 400 `invalid_form` in the shared
    shape, not Starlette's plain-text 400."""
    limit = settings.max_body_bytes
    await read_body(request, limit)
    try:
        fields = settings.max_form_fields
        return await request.form(max_files=0, max_fields=fields, max_part_size=limit)
    except (MultiPartException, HTTPException) as exc:
        detail = getattr(exc, "message", None) or getattr(exc, "detail", "malformed form")
        raise ServiceError(400, "invalid_form", f"unreadable form: {detail}") from None


async def read_json_body(request: Request, limit: int, declared: bool = False) -> bytes:
    """The raw body of a JSON request, with the size and media-type checks applied. With
    `declared`, a missing Content-Type is refused too: a browser's no-cors `fetch` can post
    without one (or as text/plain) but never as application/json, so state-changing JSON routes
    cannot be written to cross-site."""
    default = "" if declared else "application/json"
    media_type = request.headers.get("content-type", default).split(";")[0]
    if media_type.strip().lower() not in JSON_TYPES:
        raise ServiceError(415, "unsupported_media_type", "send application/json")
    return await read_body(request, limit)


def parse_query(request: Request) -> PredictionQuery:
    """`PredictionQuery` from the query string; bad values are a 422 naming the parameter."""
    params = {key: value for key, value in request.query_params.items() if value != ""}
    try:
        return PredictionQuery.model_validate(params)
    except ValidationError as exc:
        raise validation_error(field_errors(exc, lambda _: None)) from None


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON answer serialised by pydantic-core (Rust): the hot paths' encoder."""
    return Response(to_json(payload), status_code=status, media_type="application/json")


def predictions_payload(plane: DataPlane, request_id: str, rows: list[dict[str, Any]]) -> Any:
    """The `/predict` answer shape every model shares."""
    model = plane.model
    return {
        "model": model.name,
        "model_tag": model.tag,
        "request_id": request_id,
        "predictions": rows,
    }


# -- shared routes -------------------------------------------------------------------------------
async def _predict(request: Request, plane: DataPlane, request_id: str) -> Response:
    body = await read_json_body(request, plane.settings.max_body_bytes)
    instances = await plane.predict_request_instances(body)
    answered = await plane.predict_instances(instances, request_id, API_PREDICT)
    return json_response(predictions_payload(plane, request_id, answered.rows()))


async def _feedback(request: Request, plane: DataPlane, request_id: str) -> Response:
    body = await read_json_body(request, plane.settings.max_body_bytes, declared=True)
    feedback: FeedbackRequest = plane.parse_json(FeedbackRequest, body)
    touched(request, [feedback.prediction_id])
    try:
        label = plane.model.feedback_label(feedback.label)
    except ValueError as exc:
        raise ServiceError(422, "invalid_label", str(exc), field="label") from None
    try:
        await plane.log.run(
            plane.log.add_feedback,
            plane.model.name,
            feedback.prediction_id,
            {"label": label},
            feedback.reviewer,
            confirmed_by=identity_of(request).subject,
        )
    except UnknownPrediction:
        raise ServiceError(
            404, "unknown_prediction", "no such prediction id", field="prediction_id"
        ) from None
    return JSONResponse({"prediction_id": feedback.prediction_id, "request_id": request_id})


async def _list_predictions(request: Request, plane: DataPlane, request_id: str) -> Response:
    query = parse_query(request)
    records = await plane.log.run(plane.log.recent, plane.model.name, **query.model_dump())
    touched(request, [record.id for record in records])
    body = "[" + ",".join(record.model_dump_json() for record in records) + "]"
    return Response(body, media_type="application/json")


async def _get_prediction(request: Request, plane: DataPlane, request_id: str) -> Response:
    record = await plane.log.run(plane.log.get, request.path_params["prediction_id"])
    # Only the service of the model that made a prediction shows it.
    if record is None or record.model != plane.model.name:
        raise ServiceError(404, "unknown_prediction", "no such prediction id")
    return Response(record.model_dump_json(), media_type="application/json")


async def _model_info(request: Request, plane: DataPlane, request_id: str) -> Response:
    model = plane.model
    card = model_store.load_card(model.tag)
    return JSONResponse(
        {
            "model": model.name,
            "model_tag": model.tag,
            "metrics": card.get("metrics", {}),
            "input_schema": model.instance_schema.model_json_schema(),
        }
    )


async def _metrics(request: Request, plane: DataPlane | None, request_id: str) -> Response:
    text, media_type = await asyncio.to_thread(exposition)  # reads every worker's files
    return Response(text, media_type=media_type)


class FeedbackAnswer(BaseModel):
    """`POST /feedback`'s answer."""

    prediction_id: str
    request_id: str


class ModelCard(BaseModel):
    """`GET /model`'s answer."""

    model: str
    model_tag: str
    metrics: dict[str, Any]
    input_schema: dict[str, Any] = Field(description="JSON Schema of one `/predict` instance.")


# Stateful fuzzing and generated clients follow a prediction id from an answer to its record.
_TO_RECORD = (
    Link(
        "GetPrediction",
        "get_predictions_prediction_id",
        {"prediction_id": "$response.body#/predictions/0/prediction_id"},
    ),
    Link(
        "ReviewBeat",
        "get_review_prediction_id",
        {"prediction_id": "$response.body#/predictions/0/prediction_id"},
    ),
)
_LOG = "prediction log"
SHARED_ROUTES = (
    HttpRoute(
        "/metrics",
        _metrics,
        "metrics",
        None,
        probe=True,
        doc=RouteDoc(
            "Prometheus metrics (no patient values)",
            answers={"200": Body({"type": "string"}, ("text/plain",))},
            tag="probes",
        ),
    ),
    HttpRoute(
        "/predict",
        _predict,
        API_PREDICT,
        Role.PREDICT,
        ("POST",),
        doc=RouteDoc(
            "Predict for a list of instances (JSON)",
            body=Body(ModelPart.PREDICT_REQUEST),
            answers={"200": Body(ModelPart.PREDICT_ANSWER)},
            links=_TO_RECORD,
            tag="predict",
        ),
    ),
    HttpRoute(
        "/feedback",
        _feedback,
        "feedback",
        Role.REVIEW,
        ("POST",),
        doc=RouteDoc(
            "Attach the confirmed outcome to a logged prediction",
            "The body must be declared `application/json` (a cross-site form cannot send it).",
            body=Body(FeedbackRequest),
            answers={"200": Body(FeedbackAnswer)},
            tag=_LOG,
        ),
    ),
    HttpRoute(
        "/predictions",
        _list_predictions,
        "read",
        Role.READ_LOG,
        doc=RouteDoc(
            "Recent logged predictions of this service's model (audited)",
            query=PredictionQuery,
            blank_query_is_absent=True,
            answers={"200": Body(PredictionRecord, many=True)},
            tag=_LOG,
        ),
    ),
    HttpRoute(
        "/predictions/{prediction_id}",
        _get_prediction,
        "read",
        Role.READ_LOG,
        doc=RouteDoc(
            "One logged prediction: inputs, outputs, tag, time (audited)",
            answers={"200": Body(PredictionRecord)},
            tag=_LOG,
        ),
    ),
    HttpRoute(
        "/model",
        _model_info,
        "read",
        Role.PREDICT,
        doc=RouteDoc(
            "The served model: tag, metrics, instance schema",
            answers={"200": Body(ModelCard)},
            tag="predict",
        ),
    ),
)
