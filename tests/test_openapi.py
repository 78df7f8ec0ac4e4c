"""The API contract, in process: every route each service serves is in its OpenAPI 3.1 document
with its methods and role, the document is valid OpenAPI 3.1, and the README's example requests
validate against it. (The live `/openapi.json`, `/docs` in Chromium and schemathesis are in
`test_fuzz.py`.)"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from medserve.catalogue import SERVICES
from medserve.serving.http_api import HttpApi
from medserve.serving.model import ServedModel
from medserve.serving.openapi import document, operation_id, page

README = Path(__file__).resolve().parents[1] / "README.md"
MAX_INSTANCES = 100


def service_parts(model: str) -> tuple[HttpApi, type[ServedModel]]:
    """The gateway app and model class of a service, as its bento module builds them."""
    module_name, class_name = SERVICES[model].target.split(":")
    module = importlib.import_module(module_name)
    service = getattr(module, class_name)
    return module.http, service.inner.model_class


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    docs = {}
    for model in SERVICES:
        http, model_class = service_parts(model)
        docs[model] = document(http.routes, model_class, f"{model}:v1", MAX_INSTANCES)
    return docs


@pytest.mark.parametrize("model", list(SERVICES))
def test_every_served_route_and_method_is_documented_with_its_role(
    model: str, documents: dict[str, dict[str, Any]]
) -> None:
    http, _ = service_parts(model)
    doc = documents[model]
    served = {(route.path, method.lower()) for route in http.routes for method in route.methods}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert documented == served
    for route in http.routes:
        for method in route.methods:
            op = doc["paths"][route.path][method.lower()]
            assert op["operationId"] == operation_id(method, route.path)
            if route.role is None:
                assert op["security"] == []
            else:
                assert op["x-medserve-role"] == route.role.value
                assert {"bearerAuth": [route.role.value]} in op["security"]
                assert "401" in op["responses"] and "403" in op["responses"]
    # The gateway's Starlette routes (what actually answers) are the same set.
    starlette = {(r.path, m.lower()) for r in http._served_routes for m in r.methods or ()}
    assert served <= starlette
    assert {"/openapi.json", "/docs"} <= {path for path, _ in served}


@pytest.mark.parametrize("model", list(SERVICES))
def test_document_is_valid_openapi_3_1(model: str, documents: dict[str, dict[str, Any]]) -> None:
    doc = documents[model]
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, nothing left unrendered
    assert "@@" not in json.dumps(doc)


def test_the_validator_is_not_a_rubber_stamp(documents: dict[str, dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(documents["heart_risk"]))
    broken["paths"]["/predict"]["post"]["parameters"][0]["in"] = "body"  # Swagger 2, not 3.1
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_predict_body_is_the_models_schema_with_the_instance_limit(
    documents: dict[str, dict[str, Any]],
) -> None:
    doc = documents["heart_risk"]
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    request = resolve(doc, body["schema"])
    patients = request["properties"]["patients"]
    assert (patients["minItems"], patients["maxItems"]) == (1, MAX_INSTANCES)
    assert request["additionalProperties"] is False
    patient = resolve(doc, patients["items"])
    assert len(patient["required"]) == 13 and patient["properties"]["age"]["maximum"] == 120
    answer = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    item = resolve(doc, resolve(doc, answer["schema"])["properties"]["predictions"]["items"])
    assert "class" in item["properties"]  # the serialised alias, as answered


def test_oip_paths_name_the_served_model(documents: dict[str, dict[str, Any]]) -> None:
    op = documents["ecg_anomaly"]["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]
    params = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "path"}
    assert params["model"]["enum"] == ["ecg_anomaly"]
    assert params["version"]["enum"] == ["v1"]


def test_page_lists_every_operation_with_its_role(documents: dict[str, dict[str, Any]]) -> None:
    doc = documents["ecg_anomaly"]
    html = page(doc)
    for item in doc["paths"].values():
        for op in item.values():
            assert f'id="{op["operationId"]}"' in html
    assert "role: <strong>review</strong>" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html


# -- the README's examples -----------------------------------------------------------------------
def readme_curls() -> list[list[str]]:
    """Every `curl` command in the README's shell blocks, continuation lines joined."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), re.S)
    commands = []
    for block in blocks:
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            pending += line + "\n"
            try:  # a quoted JSON body may span lines: read on until the quotes close
                argv = shlex.split(pending, comments=True)
            except ValueError:
                continue
            if argv[:1] == ["curl"]:
                commands.append(argv)
            pending = ""
    return commands


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def matching_operation(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"{[^}]+}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method in item:
            return dict(item[method])
    raise AssertionError(f"{method.upper()} {path} is not in the document")


def parse_curl(argv: list[str]) -> tuple[str, str, str | None, str | None]:
    """(url, method, JSON body, content type) of a curl command line."""
    url, body, content_type, method = "", None, None, None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-d", "--data", "--data-binary"):
            body = next(args)
        elif arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.strip()
        elif arg in ("-X", "--request"):
            method = next(args)
        elif arg.startswith("http"):
            url = arg
    return url, (method or ("POST" if body is not None else "GET")).lower(), body, content_type


def test_readme_examples_validate_against_the_documents(
    documents: dict[str, dict[str, Any]],
) -> None:
    ports = {entry.http_port: model for model, entry in SERVICES.items()}
    curls = readme_curls()
    assert len(curls) >= 3
    for argv in curls:
        url, method, body, content_type = parse_curl(argv)
        parts = urlsplit(url)
        doc = documents[ports[parts.port]]  # type: ignore[index]
        op = matching_operation(doc, parts.path, method)
        for name in re.findall(r"([^&=?]+)=", parts.query):
            assert name in {p["name"] for p in op.get("parameters", [])}, (url, name)
        if body is None:
            continue
        content = op["requestBody"]["content"]
        media_type = content_type or "application/x-www-form-urlencoded"  # curl's default
        if body.startswith("@"):  # a file: its media type must be one the route takes
            assert media_type in content, (url, media_type)
            assert (README.parent / body[1:]).is_file()
            continue
        # curl -d without a content type sends form encoding; the JSON routes take it as JSON
        # (only declared-JSON routes such as /feedback refuse it), so validate it as JSON.
        schema = content.get(media_type, content.get("application/json"))["schema"]
        root = {**schema, "components": doc["components"]}
        jsonschema.Draft202012Validator(root).validate(json.loads(body))


def test_readme_check_catches_an_invalid_example(documents: dict[str, dict[str, Any]]) -> None:
    op = matching_operation(documents["heart_risk"], "/predict", "post")
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    root = {**schema, "components": documents["heart_risk"]["components"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(root).validate({"patients": [{"age": 63}]})
