"""The API contract of a service: an OpenAPI 3.1 document at `/openapi.json`, a page at `/docs`.

Generated from the routes a service serves (`HttpRoute.doc`, `contract.py`) and the pydantic
models that validate its requests (the model's instance schema inside the `/predict` body built
by the data plane, `FeedbackRequest`, `PredictionQuery`, the OIP `InferRequest`, ...), so the
document cannot drift from what the code accepts. Both routes are public like `/metrics`: the
contract holds schemas and role names, never a patient value; they answer once the model is
loaded (it names the model's own schemas). `/docs` is server-rendered HTML with no script and
nothing from a CDN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from html import escape
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, create_model
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from medserve.auth.roles import ROLE_PURPOSE
from medserve.serving.contract import HTML, JSON, Body, ModelPart, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.dataplane import _request_schema as predict_request_schema
from medserve.serving.errors import ErrorBody
from medserve.serving.http_api import REQUEST_ID_HEADER, HttpRoute, error_response, not_ready
from medserve.serving.http_security import SESSION_COOKIE, TOKEN_PARAM
from medserve.serving.model import ServedModel

OPENAPI_VERSION = "3.1.0"
DOC_PATH = "/openapi.json"
PAGE_PATH = "/docs"
COMPONENTS = "#/components/schemas/"
BEARER, COOKIE = "bearerAuth", "sessionCookie"
_TIME = "An RFC 3339 time with its offset (`2026-12-07T09:00:00Z`), or Unix seconds."
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
# The page has no script: inline styles only, nothing fetched.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ERROR_STATUSES = {
    "400": "Bad request: malformed JSON or tensor, a `Host` not served (`bad_host`), ...",
    "401": "No or invalid credentials (`WWW-Authenticate: Bearer`).",
    "403": "The identity lacks the route's role, or a forged browser post (`csrf_failed`).",
    "404": "Unknown path, prediction or model.",
    "405": "The path does not answer this method.",
    "413": "Body, image or batch over its limit.",
    "415": "Wrong media type.",
    "422": "A value out of its rules: `errors` names each field, value and the allowed values.",
}


class Timeout(BaseModel):
    """The answer when no response started within the server's timeout (504)."""

    error: str


class PredictAnswerBase(BaseModel):
    model: str
    model_tag: str
    request_id: str


def operation_id(method: str, path: str) -> str:
    """`POST /predictions/{prediction_id}` -> `post_predictions_prediction_id`."""
    words = re.findall(r"[A-Za-z0-9]+", path)
    return "_".join([method.lower(), *words]) if words else method.lower()


def predict_answer_schema(model: type[ServedModel]) -> type[BaseModel]:
    """The `/predict` answer: the model's answer schema per instance."""
    return create_model(
        f"{model.name}_predict_answer",
        __base__=PredictAnswerBase,
        predictions=(list[model.answer_schema], ...),  # type: ignore[name-defined]
    )


class _Schemas:
    """Collects the pydantic models a document references and renders them once, as components
    (validation mode for what clients send, serialization mode for what they get)."""

    def __init__(self, model: type[ServedModel], version: str, max_instances: int) -> None:
        self.values = {ModelPart.MODEL_NAME: model.name, ModelPart.MODEL_VERSION: version}
        self.parts: dict[ModelPart, type[BaseModel]] = {
            ModelPart.PREDICT_REQUEST: predict_request_schema(model, max_instances),  # type: ignore[arg-type]
            ModelPart.PREDICT_ANSWER: predict_answer_schema(model),
        }
        self.used: dict[tuple[type[BaseModel], JsonSchemaMode], str] = {}

    def ref(self, source: type[BaseModel] | ModelPart, mode: JsonSchemaMode) -> dict[str, str]:
        """A placeholder reference: pydantic names the components only once it sees every model
        together (two models of one name, or one model in both modes, get distinct names)."""
        model = self.parts[source] if isinstance(source, ModelPart) else source
        key = (model, mode)
        placeholder = f"@@{len(self.used)}@@"
        return {"$ref": self.used.setdefault(key, placeholder)}

    def of(self, body: Body, mode: JsonSchemaMode) -> dict[str, Any]:
        source = body.schema
        schema = (
            dict(source) if isinstance(source, Mapping) else self.ref(source, mode)  # type: ignore[arg-type]
        )
        return {"type": "array", "items": schema} if body.many else schema

    def render(self, document: dict[str, Any]) -> dict[str, Any]:
        """Replace the placeholders by component references; returns the components."""
        keys = list(self.used)
        refs, defs = models_json_schema(keys, ref_template=COMPONENTS + "{model}")
        text = json.dumps(document)
        for key in keys:
            text = text.replace(f'"{self.used[key]}"', json.dumps(refs[key]["$ref"]))
        document.clear()
        document.update(json.loads(text))
        return dict(defs.get("$defs", {}))


def _path_parameters(path: str, doc: RouteDoc, schemas: _Schemas) -> list[dict[str, Any]]:
    """Path parameters are strings; those naming the served model list its name (or version):
    anything else is a 404, so positive fuzzing needs the one value that gets past it."""
    params = []
    for name in _PATH_PARAM.findall(path):
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        part = doc.path.get(name)
        if part is not None:
            schema["enum"] = [schemas.values[part]]
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _query_parameters(query: type[BaseModel] | None, blank_is_absent: bool) -> list[dict[str, Any]]:
    """Query parameters from the model that validates them (`null` dropped: a query string
    cannot send it, an absent parameter is the null; with `blank_is_absent` an empty value is
    allowed too, and means the same)."""
    if query is None:
        return []
    schema = query.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        variants = [v for v in prop.pop("anyOf", []) if v.get("type") != "null"]
        if len(variants) == 1:
            prop |= variants[0]
        elif variants:
            prop["anyOf"] = variants
        if prop.get("default", "") is None:
            del prop["default"]
        if prop.get("format") == "date-time":
            # pydantic also reads a number as Unix seconds (UTC).
            prop = {"anyOf": [prop, {"type": "number"}], "description": _TIME}
        if blank_is_absent:
            prop = {"anyOf": [prop, {"type": "string", "maxLength": 0}]}
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def _content(body: Body, schemas: _Schemas, mode: JsonSchemaMode) -> dict[str, Any]:
    content: dict[str, Any] = {}
    for media_type in body.media_types:
        entry: dict[str, Any] = {"schema": schemas.of(body, mode)}
        if body.example is not None and media_type == JSON:
            entry["example"] = body.example
        content[media_type] = entry
    return content


def _error(description: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": COMPONENTS + "ErrorBody"}}},
    }
    if headers:
        answer["headers"] = dict(headers)
    return answer


def _responses(route: HttpRoute, method: str, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, body in route.doc.answers.items():
        phrase = HTTPStatus(int(status)).phrase
        answer: dict[str, Any] = {"description": (body.description if body else "") or phrase}
        if status.startswith("3"):
            answer["headers"] = {"Location": {"schema": {"type": "string"}}}
        if body is not None:
            answer["content"] = _content(body, schemas, "serialization")
            if body.headers:
                answer["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in body.headers.items()
                }
        responses[status] = answer
    if route.probe:
        return responses
    if route.page and method == "GET":
        responses["303"] = {
            "description": "`?token=` exchanged for the session cookie; redirect without it.",
            "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
        }
    www = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer realm"}}
    for status, text in ERROR_STATUSES.items():
        responses.setdefault(status, _error(text, www if status == "401" else None))
    responses.setdefault("503", _error("The model is loading (`not_ready`) or shedding load."))
    responses.setdefault(
        "504",
        {
            "description": "No answer started within the server's timeout.",
            "content": {JSON: {"schema": {"$ref": COMPONENTS + "Timeout"}}},
        },
    )
    return responses


def _operation(route: HttpRoute, method: str, schemas: _Schemas, ids: set[str]) -> dict[str, Any]:
    doc: RouteDoc = route.doc
    op: dict[str, Any] = {
        "operationId": operation_id(method, route.path),
        "summary": doc.summary or route.path,
        "tags": [doc.tag or "other"],
    }
    if doc.description:
        op["description"] = doc.description
    query = _query_parameters(doc.query, doc.blank_query_is_absent)
    params = _path_parameters(route.path, doc, schemas) + query
    if route.page and method == "GET":
        params.append(
            {
                "name": TOKEN_PARAM,
                "in": "query",
                "required": False,
                "description": "A JWT to exchange for the session cookie (answered with a 303).",
                "schema": {"type": "string"},
            }
        )
    if not route.probe:
        params.append(
            {
                "name": REQUEST_ID_HEADER,
                "in": "header",
                "required": False,
                "description": "Your id for the call (1-64 of `[A-Za-z0-9._:-]`), else a ULID.",
                "schema": {"type": "string"},
            }
        )
    if params:
        op["parameters"] = params
    if doc.body is not None and method != "GET":
        op["requestBody"] = {"required": True, "content": _content(doc.body, schemas, "validation")}
    op["responses"] = _responses(route, method, schemas)
    links = {
        link.name: {"operationId": link.operation_id, "parameters": dict(link.parameters)}
        for link in doc.links
        if link.operation_id in ids
    }
    if links:
        ok = next(status for status in op["responses"] if status.startswith("2"))
        op["responses"][ok]["links"] = links
    if route.probe:
        op["security"] = []
    else:
        assert route.role is not None
        role = route.role.value
        # OpenAPI 3.1: non-OAuth schemes may list the role names an operation needs.
        op["security"] = [{BEARER: [role]}] + ([{COOKIE: [role]}] if route.page else [])
        op["x-medserve-role"] = role
    return op


def document(
    routes: Sequence[HttpRoute], model: type[ServedModel], tag: str, max_instances: int
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a service serving `routes` for `model` (its stored `tag`;
    `max_instances` per `/predict` body, as the service's settings say)."""
    version = tag.partition(":")[2] or tag
    schemas = _Schemas(model, version, max_instances)
    ids = {operation_id(m, r.path) for r in routes for m in r.methods}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in route.methods:
            operation = _operation(route, method, schemas, ids)
            paths.setdefault(route.path, {})[method.lower()] = operation
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"medserve {model.name}",
            "version": version,
            "description": (
                f"{(model.__doc__ or '').strip().splitlines()[0]} "
                "Every 4xx/5xx answer is the shared error shape (`ErrorBody`)."
            ),
        },
        "paths": paths,
    }
    components = schemas.render(doc)
    for extra in (ErrorBody, Timeout):
        components.update(_component(extra))
    doc["components"] = {
        "schemas": dict(sorted(components.items())),
        "securitySchemes": {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "Roles: "
                + "; ".join(f"`{role.value}` {purpose}" for role, purpose in ROLE_PURPOSE.items()),
            },
            COOKIE: {
                "type": "apiKey",
                "in": "cookie",
                "name": SESSION_COOKIE,
                "description": "Pages only: set by opening a page with `?token=<JWT>`.",
            },
        },
    }
    return doc


def _component(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=COMPONENTS + "{model}")
    defs = schema.pop("$defs", {})
    return {**defs, model.__name__: schema}


# -- the page ------------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · API</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem}}
.op{{border:1px solid #ccc;border-radius:.4rem;margin:1rem 0;padding:.5rem 1rem}}
.method{{font-weight:700;text-transform:uppercase;display:inline-block;min-width:4rem}}
pre{{background:#f6f8fa;padding:.5rem;overflow:auto;max-height:24rem}}
table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #ddd;padding:.2rem .5rem}}
</style></head><body>
<h1>{title} <small>{version}</small></h1>
<p>{description}</p>
<p>Machine-readable: <a href="{doc_path}">{doc_path}</a> (OpenAPI {openapi}).
Send <code>Authorization: Bearer &lt;JWT&gt;</code>; each operation names the role it needs.</p>
{operations}
<h2 id="schemas">Schemas</h2>
{schemas}
</body></html>"""


def _pretty(value: Any) -> str:
    text = escape(json.dumps(value, indent=2))
    return re.sub(
        r"&quot;#/components/schemas/([^&]+)&quot;",
        r'<a href="#schema-\1">&quot;#/components/schemas/\1&quot;</a>',
        text,
    )


def _operation_html(path: str, method: str, op: Mapping[str, Any]) -> str:
    role = op.get("x-medserve-role", "none (open)")
    parts = [
        f'<section class="op" id="{escape(op["operationId"])}">'
        f'<h3><span class="method">{method}</span> <code>{escape(path)}</code></h3>'
        f"<p>{escape(op['summary'])} · role: <strong>{escape(role)}</strong></p>"
    ]
    if "description" in op:
        parts.append(f"<p>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        rows = "".join(
            f"<tr><td><code>{escape(p['name'])}</code></td><td>{p['in']}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td>"
            f"<td><code>{escape(json.dumps(p['schema']))}</code></td></tr>"
            for p in params
        )
        parts.append(
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr>"
            f"{rows}</table>"
        )
    body = op.get("requestBody")
    if body:
        for media_type, entry in body["content"].items():
            parts.append(f"<p>Request body <code>{escape(media_type)}</code>:</p>")
            parts.append(f"<pre>{_pretty(entry['schema'])}</pre>")
            if "example" in entry:
                parts.append(f"<p>Example:</p><pre>{_pretty(entry['example'])}</pre>")
    answers = "".join(
        f"<li><code>{status}</code> {escape(answer['description'])}"
        + "".join(
            f" <code>{escape(media_type)}</code> {_pretty(entry['schema'])}"
            for media_type, entry in answer.get("content", {}).items()
        )
        + "</li>"
        for status, answer in op["responses"].items()
    )
    parts.append(f"<ul>{answers}</ul></section>")
    return "".join(parts)


def _operations_html(doc: Mapping[str, Any]) -> Iterator[str]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield _operation_html(path, method, op)


def page(doc: Mapping[str, Any]) -> str:
    """The human page of a document: every operation, its role, parameters, bodies, answers
    and examples, then every schema (references are links)."""
    schemas = "".join(
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3><pre>{_pretty(schema)}</pre>'
        for name, schema in doc["components"]["schemas"].items()
    )
    info = doc["info"]
    return PAGE.format(
        title=escape(info["title"]),
        version=escape(info["version"]),
        description=escape(info["description"]),
        doc_path=DOC_PATH,
        openapi=doc["openapi"],
        operations="\n".join(_operations_html(doc)),
        schemas=schemas,
    )


# -- the routes ----------------------------------------------------------------------------------
def with_contract(routes: Sequence[HttpRoute]) -> list[HttpRoute]:
    """`routes` plus `/openapi.json` and `/docs`, which describe all of them (themselves too)."""
    served: list[HttpRoute] = []
    rendered: dict[str, tuple[bytes, str]] = {}  # model tag -> (JSON, page): made once

    def of(plane: DataPlane) -> tuple[bytes, str]:
        model = plane.model
        if model.tag not in rendered:
            doc = document(served, type(model), model.tag, plane.settings.max_instances_per_request)
            rendered[model.tag] = (json.dumps(doc).encode(), page(doc))
        return rendered[model.tag]

    async def openapi_json(request: Request, plane: DataPlane | None, request_id: str) -> Response:
        if plane is None:
            return error_response(not_ready(), request_id)
        return Response(of(plane)[0], media_type=JSON)

    async def docs(request: Request, plane: DataPlane | None, request_id: str) -> Response:
        if plane is None:
            return error_response(not_ready(), request_id)
        return HTMLResponse(of(plane)[1], headers=PAGE_HEADERS)

    not_loaded = {"503": Body(ErrorBody, description="The model is still loading.")}
    served.extend(
        [
            *routes,
            HttpRoute(
                DOC_PATH,
                openapi_json,  # type: ignore[arg-type]
                "contract",
                None,
                probe=True,
                doc=RouteDoc(
                    "This OpenAPI 3.1 document",
                    answers={"200": Body({"type": "object"}), **not_loaded},
                    tag="contract",
                ),
            ),
            HttpRoute(
                PAGE_PATH,
                docs,  # type: ignore[arg-type]
                "contract",
                None,
                probe=True,
                doc=RouteDoc(
                    "This document as a page",
                    answers={"200": Body({"type": "string"}, (HTML,)), **not_loaded},
                    tag="contract",
                ),
            ),
        ]
    )
    return served
