"""Routes that take the slice file itself as the body (no base64, no JSON):

- `POST /predict/image[?identifiers=true]`: DICOM/PNG/JPEG bytes -> the `/predict` answer shape.
- `POST /saliency[?class=uip]`: the same bytes -> a Grad-CAM overlay PNG.

Decoding runs in a thread (JPEG 2000 slices take tens of milliseconds) and keeps the HTTP
status of the refusal: 413 too large, 415 not DICOM/PNG/JPEG, 422 not a CT slice.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from medserve.auth.roles import Role
from medserve.ct.imaging import DecodedSlice, ImageRejected, Window, decode_slice, model_input
from medserve.ct.model import CtPatternModel
from medserve.ct.schema import CtSlice
from medserve.ct.settings import get_ct_settings
from medserve.serving.contract import BINARY_SCHEMA, Body, ModelPart, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError, field_errors, validation_error
from medserve.serving.http_api import HttpRoute, json_response, predictions_payload, read_body

PREDICT_API = "http_image"
SALIENCY_API = "http_saliency"


class ImageQuery(BaseModel):
    """Query parameters of the image routes."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    identifiers: bool = False
    target_class: str | None = Field(default=None, alias="class")


def _query(request: Request) -> ImageQuery:
    try:
        return ImageQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(field_errors(exc, lambda _: None)) from None


async def _decoded_body(request: Request) -> DecodedSlice:
    """The body decoded in a thread, keeping the HTTP status of the refusal."""
    settings = get_ct_settings()
    body = await read_body(request, settings.max_image_bytes)
    if not body:
        raise ServiceError(400, "empty_body", "send the slice file as the request body")
    window = Window(settings.window_center, settings.window_width)
    sides = (settings.min_image_side, settings.max_image_side)
    try:
        return await asyncio.to_thread(decode_slice, body, window, settings.max_image_bytes, sides)
    except ImageRejected as exc:
        raise ServiceError(exc.status, exc.code, exc.detail, field="image") from None


def _ct_model(plane: DataPlane) -> CtPatternModel:
    model = plane.model
    assert isinstance(model, CtPatternModel)
    return model


async def predict_image(request: Request, plane: DataPlane, request_id: str) -> Response:
    query = _query(request)
    decoded = await _decoded_body(request)
    instance = CtSlice(image=decoded, include_identifiers=query.identifiers)
    answered = await plane.predict_instances([instance], request_id, PREDICT_API)
    return json_response(predictions_payload(plane, request_id, answered.rows()))


async def saliency(request: Request, plane: DataPlane, request_id: str) -> Response:
    query = _query(request)
    model = _ct_model(plane)
    if not model.settings.saliency:
        raise ServiceError(404, "saliency_disabled", "saliency is off (MEDSERVE_CT_SALIENCY)")
    if query.target_class is not None and query.target_class not in model.classes:
        raise ServiceError(
            422,
            "validation_error",
            f"unknown class {query.target_class!r}; allowed: {', '.join(model.classes)}",
            field="class",
        )
    decoded = await _decoded_body(request)
    image = model_input(decoded.windowed, model.image_size)
    png, predicted = await asyncio.to_thread(
        model.saliency_png, decoded.windowed, image, query.target_class
    )
    headers = {"x-predicted-class": predicted, "cache-control": "no-store"}
    return Response(png, media_type="image/png", headers=headers)


# The file itself is the body; the media type is not read (the bytes say what they are).
IMAGE_TYPES = ("application/dicom", "image/png", "image/jpeg", "application/octet-stream")
_SLICE = Body(BINARY_SCHEMA, IMAGE_TYPES, "A DICOM CT slice, or a lung-windowed PNG/JPEG.")
IMAGE_ROUTES = (
    HttpRoute(
        "/predict/image",
        predict_image,
        PREDICT_API,
        Role.PREDICT,
        ("POST",),
        doc=RouteDoc(
            "Classify one slice sent as the file itself",
            query=ImageQuery,
            body=_SLICE,
            answers={"200": Body(ModelPart.PREDICT_ANSWER)},
            tag="predict",
        ),
    ),
    HttpRoute(
        "/saliency",
        saliency,
        SALIENCY_API,
        Role.PREDICT,
        ("POST",),
        doc=RouteDoc(
            "Grad-CAM overlay (PNG) of one slice",
            query=ImageQuery,
            body=_SLICE,
            answers={
                "200": Body(
                    BINARY_SCHEMA,
                    ("image/png",),
                    headers={"x-predicted-class": "The class the model predicted."},
                )
            },
            tag="predict",
        ),
    ),
)
