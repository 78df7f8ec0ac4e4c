"""`POST /consult`: one stateless triage step over HTTP JSON.

The step goes through the data plane like any prediction (validation -> 422, batching, the
prediction log for the step that ends the consult, metrics), so `/predict`, OIP v2 (the `consult`
BYTES tensor) and this route answer the same.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from medserve.auth.roles import Role
from medserve.respiratory.climate.rules import IcdRules
from medserve.respiratory.schema import ConsultRequest, ConsultResponse, RulesAnswer
from medserve.serving.contract import Body, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.http_api import HttpRoute, json_response, read_json_body

API = "http_consult"


async def consult_step(
    plane: DataPlane, request: ConsultRequest, request_id: str, api: str
) -> dict:
    """One step through the data plane -> the `ConsultResponse` fields (JSON-ready)."""
    answered = await plane.predict_instances([request], request_id, api)
    (row,) = answered.rows()
    return {
        **row["consult"],
        "prediction_id": row["prediction_id"],
        "request_id": request_id,
        "model_tag": plane.model.tag,
    }


async def post_consult(request: Request, plane: DataPlane, request_id: str) -> Response:
    body = await read_json_body(request, plane.settings.max_body_bytes)
    consult: ConsultRequest = plane.parse_json(ConsultRequest, body)
    return json_response(await consult_step(plane, consult, request_id, API))


async def get_rules(request: Request, plane: DataPlane, request_id: str) -> Response:
    model = plane.model
    icd = request.path_params["icd"]
    rules: IcdRules | None = model.rules.rules_for(icd)  # type: ignore[attr-defined]
    if rules is None:
        # The code is the client's text: not echoed.
        raise ServiceError(404, "unknown_icd", "no climate rules for this ICD-10 code", field="icd")
    climate = model.rules  # type: ignore[attr-defined]
    answer = RulesAnswer(
        rules_tag=model.rules_tag,  # type: ignore[attr-defined]
        data_source=climate.data_source,
        data_sha256=climate.data_sha256,
        months=climate.months,
        rules=rules,
        text=rules.rule_lines(),
        insight=climate.insight(rules.icd),
    )
    return Response(answer.model_dump_json(), media_type="application/json")


CONSULT_ROUTES = (
    HttpRoute(
        "/consult",
        post_consult,
        API,
        Role.PREDICT,
        ("POST",),
        doc=RouteDoc(
            "One triage step: the answers so far in, the next question or the ranked diagnoses out",
            "Stateless: send every answer given so far (an empty list asks the first question). "
            "Unknown question ids, duplicated or contradictory answers, answers outside the "
            "allowed values and a chief complaint no disease has are refused with a 422.",
            body=Body(ConsultRequest),
            answers={"200": Body(ConsultResponse)},
            tag="predict",
        ),
    ),
    HttpRoute(
        "/rules/{icd}",
        get_rules,
        "rules",
        Role.PREDICT,
        doc=RouteDoc(
            "The climate-occurrence rules mined for one ICD-10 code (the KB's or its category)",
            "Monthly case counts -> the month's temperature class, every fold's error, the "
            "decision tree beside them, and the data's source and SHA-256 (synthetic unless "
            "DATASUS/INMET exports were given to the `respiratory_rules` job).",
            answers={"200": Body(RulesAnswer)},
            tag="predict",
        ),
    ),
)
