"""The triage web page: one question per step, the hypotheses beside it, the diagnoses at the end.

Server-rendered Portuguese HTML, no JavaScript, nothing from a CDN. Stateless like the API: the
answers so far travel in the form as hidden fields (`answer` = `<question>=<value>`), so any
replica answers any step; each post runs one step through the data plane (`api` `triage_page`),
and the step that ends the consult is logged like any other.
"""

from __future__ import annotations

from html import escape
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from medserve.auth.roles import Role
from medserve.respiratory.consult import Answer
from medserve.respiratory.consult_api import consult_step
from medserve.respiratory.kb import KnowledgeBase
from medserve.respiratory.schema import MAX_ANSWERS, ConsultRequest
from medserve.serving.contract import FORM, HTML, Body, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.http_api import HttpRoute, read_form
from medserve.serving.http_security import CSRF_FIELD, csrf_input

API = "triage_page"
ANSWER_FIELD = "answer"  # a past answer, `<question>=<value>` (repeated)
NEXT_FIELD = "next"  # the answer to the question on screen, `<question>=<value>`
STRATEGY_FIELD = "strategy"
SYMPTOM_LABELS = {"yes": "Sim", "no": "Não", "unknown": "Não sei"}
EFFECT_PT = {"supports": "a favor", "against": "contra", "excluded": "exclui"}
# The API's 422 codes (consult.ErrorCode), as the page says them.
ERROR_PT = {
    "unknown_question": "pergunta desconhecida",
    "duplicated_answer": "pergunta respondida duas vezes",
    "contradictory_answer": "respostas contraditórias para a mesma pergunta",
    "answer_not_allowed": "resposta fora das opções",
    "first_symptom_unknown": "nenhuma doença da base tem esse sintoma",
    "chief_complaint_missing": "informe primeiro o sintoma principal",
}
STRATEGY_PT = {"info_gain": "ganho de informação", "source": "ciclo do sistema de origem"}

PAGE = """<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8">
<title>medserve · Triagem respiratória</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}}
main{{display:grid;grid-template-columns:2fr 1fr;gap:2rem}}
.choices{{display:flex;flex-wrap:wrap;gap:.5rem}} .choices button{{padding:.5rem 1rem}}
aside{{background:#f5f5f5;padding:.5rem 1rem}} .err{{color:#b00020}}
.supports{{color:#2e7d32}} .against{{color:#b26a00}} .excluded{{color:#b00020}}
ol.diagnoses li{{margin-bottom:1rem}} .note{{color:#555;font-size:.9rem}}
</style></head><body>
<h1>Triagem de doenças respiratórias</h1>
<p class="note">Apoio à triagem, não é diagnóstico. Base de conhecimento <code>{kb_version}</code>
({review}) · estratégia: {strategy} · modelo <code>{model_tag}</code>.</p>
{body}
</body></html>"""


def _pair(question: str, value: str) -> str:
    return escape(f"{question}={value}")


def _hidden(request: Request, answers: list[Answer], strategy: str) -> str:
    past = "".join(
        f'<input type="hidden" name="{ANSWER_FIELD}" value="{_pair(a.question, a.answer)}">'
        for a in answers
    )
    return (
        f"{csrf_input(request)}{past}"
        f'<input type="hidden" name="{STRATEGY_FIELD}" value="{escape(strategy)}">'
    )


def _titles(kb: KnowledgeBase, ids: list[str]) -> str:
    items = "".join(f"<li>{escape(kb.disease(d).title)}</li>" for d in ids)
    return f"<ul>{items}</ul>"


def _question_section(result: dict[str, Any], hidden: str) -> str:
    question = result["question"]
    qid = question["id"]
    labels = question["answer_labels"]
    buttons = "".join(
        f'<button type="submit" name="{NEXT_FIELD}" value="{_pair(qid, value)}" '
        f'id="answer-{escape(value)}">{escape(labels.get(value, SYMPTOM_LABELS.get(value, value)))}'
        "</button>"
        for value in question["allowed_answers"]
    )
    return (
        f'<section><h2 id="question" data-question="{escape(qid)}">{escape(question["text"])}</h2>'
        f'<form method="post" action="/triage">{hidden}<div class="choices">{buttons}</div>'
        "</form></section>"
    )


def _evidence(why: list[dict[str, Any]]) -> str:
    items = "".join(
        f'<li class="{e["effect"]}">{escape(e["question"])}: {escape(e["answer"])} '
        f"({EFFECT_PT[e['effect']]}; base: {escape(e['kb_probability'] or 'não listado')})</li>"
        for e in why
    )
    return f"<ul>{items}</ul>" if items else ""


def _diagnoses_section(kb: KnowledgeBase, result: dict[str, Any], prediction_id: str) -> str:
    items = []
    for d in result["diagnoses"]:
        climate = f'<p class="climate">{escape(d["climate"])}</p>' if d.get("climate") else ""
        items.append(
            f'<li data-disease="{escape(d["disease"])}"><strong>{escape(d["title"])}</strong> '
            f"(CID-10 {escape(d['icd10'])}) · pontuação {d['score']:.2f}"
            f"{_evidence(d['why'])}{climate}</li>"
        )
    return (
        '<section><h2 id="result">Hipóteses diagnósticas</h2>'
        f'<ol class="diagnoses">{"".join(items)}</ol>'
        f'<p class="note">Consulta registrada como <code id="prediction-id">{prediction_id}'
        '</code>. <a href="/triage">Nova consulta</a></p></section>'
    )


def _aside(kb: KnowledgeBase, result: dict[str, Any]) -> str:
    excluded = [e["disease"] for e in result["excluded"]]
    gone = f"<h3>Excluídas</h3>{_titles(kb, excluded)}" if excluded else ""
    return (
        f'<aside id="focus"><h3>Hipóteses em foco</h3>{_titles(kb, result["focus"])}{gone}</aside>'
    )


def _render(plane: DataPlane, body: str, strategy: str, status: int = 200) -> HTMLResponse:
    kb: KnowledgeBase = plane.model.kb  # type: ignore[attr-defined]
    page = PAGE.format(
        kb_version=escape(kb.version),
        review="revisão: " + escape(kb.review_status),
        strategy=escape(STRATEGY_PT.get(strategy, strategy)),
        model_tag=escape(plane.model.tag),
        body=body,
    )
    return HTMLResponse(page, status_code=status)


async def _step_page(
    request: Request, plane: DataPlane, consult: ConsultRequest, request_id: str
) -> Response:
    kb: KnowledgeBase = plane.model.kb  # type: ignore[attr-defined]
    result = await consult_step(plane, consult, request_id, API)
    strategy = result["strategy"]
    if result["question"] is not None:
        main = _question_section(result, _hidden(request, consult.answers, strategy))
    else:
        main = _diagnoses_section(kb, result, result["prediction_id"])
    return _render(plane, f"<main>{main}{_aside(kb, result)}</main>", strategy)


async def show_page(request: Request, plane: DataPlane, request_id: str) -> Response:
    strategy = request.query_params.get(STRATEGY_FIELD) or None
    try:
        consult = ConsultRequest.model_validate({"answers": [], "strategy": strategy})
    except ValidationError:
        raise ServiceError(422, "invalid_strategy", "strategy: info_gain or source") from None
    return await _step_page(request, plane, consult, request_id)


def _answers(form: Any) -> list[dict[str, str]]:
    pairs = [*form.getlist(ANSWER_FIELD), form.get(NEXT_FIELD) or ""]
    answers = []
    for pair in pairs:
        if not isinstance(pair, str) or not pair:
            continue
        question, _, value = pair.partition("=")
        answers.append({"question": question, "answer": value})
    if len(answers) > MAX_ANSWERS:
        raise ServiceError(413, "too_many_answers", f"at most {MAX_ANSWERS} answers")
    return answers


async def submit_page(request: Request, plane: DataPlane, request_id: str) -> Response:
    form = await read_form(request, plane.settings)
    strategy = form.get(STRATEGY_FIELD) or None
    candidate = {"answers": _answers(form), "strategy": strategy}
    try:
        consult = ConsultRequest.model_validate(candidate)
        return await _step_page(request, plane, consult, request_id)
    except ValidationError:
        message = "resposta inválida"
    except ServiceError as exc:
        if exc.status != 422:
            raise
        message = ERROR_PT.get(exc.error, exc.detail)
    body = (
        f'<p class="err" id="error">Não foi possível continuar: {escape(message)}.</p>'
        '<p><a href="/triage">Recomeçar a consulta</a></p>'
    )
    return _render(plane, body, str(strategy or ""), status=422)


_PAGE = Body({"type": "string"}, (HTML,))
FORM_FIELDS = {
    "type": "object",
    "properties": {
        ANSWER_FIELD: {
            "type": "array",
            "items": {"type": "string"},
            "description": "The answers so far, each `<question>=<value>`.",
        },
        NEXT_FIELD: {"type": "string", "description": "The answer to the question shown."},
        STRATEGY_FIELD: {
            "type": "string",
            "enum": ["info_gain", "source", ""],
            "description": "Empty (what the page's hidden field holds by default): the default.",
        },
        CSRF_FIELD: {"type": "string", "description": "Needed with the session cookie."},
    },
}
PAGE_ROUTES = (
    HttpRoute(
        "/triage",
        show_page,
        API,
        Role.PREDICT,
        ("GET",),
        page=True,
        doc=RouteDoc(
            "The triage page: the first question (HTML)", answers={"200": _PAGE}, tag="pages"
        ),
    ),
    HttpRoute(
        "/triage",
        submit_page,
        API,
        Role.PREDICT,
        ("POST",),
        page=True,
        doc=RouteDoc(
            "Answer the question shown: the next question or the diagnoses (HTML); a refused "
            "answer list is a 422 page",
            body=Body(FORM_FIELDS, (FORM,)),
            answers={"200": _PAGE, "422": _PAGE},
            tag="pages",
        ),
    ),
)
