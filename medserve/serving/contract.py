"""What a route declares about itself for the API contract (`openapi.py` renders it).

Kept apart from `http_api.py` (which only carries a `RouteDoc` on each `HttpRoute`) and from
`openapi.py` (which reads routes), so route modules can declare their contract without importing
the generator. Schemas are the pydantic models that validate the requests, a JSON Schema where a
body is not parsed by pydantic (form posts, files), or a `ModelPart` for what depends on the
model a service runs (its `/predict` body and answer), resolved per service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
BINARY_SCHEMA: Mapping[str, Any] = {"type": "string", "format": "binary"}


class ModelPart(StrEnum):
    """Schemas that depend on the served model (its instance and answer schemas)."""

    PREDICT_REQUEST = "predict_request"  # `{<instances_key>: [instance, ...]}`
    PREDICT_ANSWER = "predict_answer"  # `{model, model_tag, request_id, predictions: [...]}`
    MODEL_NAME = "model_name"  # a path parameter naming the served model
    MODEL_VERSION = "model_version"  # ... and its version


SchemaSource = type[BaseModel] | ModelPart | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Body:
    """A request or answer body: the schema of its content and the media types it comes in."""

    schema: SchemaSource
    media_types: tuple[str, ...] = (JSON,)
    many: bool = False  # a JSON array of `schema`
    description: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)  # answer header -> description
    example: Any = None


@dataclass(frozen=True, slots=True)
class Link:
    """An OpenAPI link from this route's 2xx answer to another operation (stateful fuzzing)."""

    name: str
    operation_id: str
    parameters: Mapping[str, str]  # parameter -> runtime expression (`$response.body#/...`)


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """A route's contract: summary, query model, request body and its non-error answers (by
    status; 4xx and 5xx answers are the shared error shape unless listed here)."""

    summary: str = ""
    description: str = ""
    query: type[BaseModel] | None = None
    blank_query_is_absent: bool = False  # `?since=` is taken as no `since` (HTML forms send it)
    path: Mapping[str, ModelPart] = field(default_factory=dict)  # path parameter -> its values
    body: Body | None = None
    answers: Mapping[str, Body | None] = field(default_factory=dict)  # None: no body
    links: tuple[Link, ...] = ()
    tag: str = ""


NO_DOC = RouteDoc()
