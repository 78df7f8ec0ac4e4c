"""The clinician-facing HTML form of the heart service: 13 labelled fields, answer + pie chart.

Plain server-rendered HTML (no JavaScript, nothing from a CDN), Portuguese labels with the English
field names, and every code shown with its verified clinical meaning.
"""

from __future__ import annotations

import math
from html import escape

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from medserve.auth.roles import Role
from medserve.heart.codes import CLASS_LABELS, FEATURES, FeatureSpec
from medserve.heart.schema import HeartPatient, HeartPrediction
from medserve.serving.contract import FORM, HTML, Body, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.http_api import HttpRoute, read_form
from medserve.serving.http_security import CSRF_FIELD, csrf_input

RESULT_TEXT_PT = {
    CLASS_LABELS[0]: "Sem doença arterial coronariana provável",
    CLASS_LABELS[1]: "Doença arterial coronariana provável",
}
COLOURS = {CLASS_LABELS[0]: "#2e7d32", CLASS_LABELS[1]: "#c62828"}

PAGE = """<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8">
<title>medserve · Risco de doença arterial coronariana</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
form{{display:grid;grid-template-columns:repeat(auto-fill,minmax(18rem,1fr));gap:.8rem 1.5rem}}
label{{display:flex;flex-direction:column;font-weight:600}}
label small{{font-weight:400;color:#555}}
.err{{color:#b00020;font-weight:400}} .result{{display:flex;gap:2rem;align-items:center}}
button{{grid-column:1/-1;padding:.6rem;font-size:1rem}}
</style></head><body>
<h1>Risco de doença arterial coronariana</h1>
<p>Modelo <code>{model_tag}</code>. Classe 1 = doença arterial coronariana (estreitamento &gt; 50 %
de um vaso principal na angiografia).</p>
{result}
<form method="post" action="/ui" novalidate>
{csrf}
{fields}
<button type="submit" id="submit">Calcular risco</button>
</form></body></html>"""


def _input(spec: FeatureSpec, value: str, error: str | None) -> str:
    name = escape(spec.name)
    if spec.codes:
        options = [
            f'<option value="{code}"{" selected" if value == str(code) else ""}>'
            f"{code} — {escape(meaning)}</option>"
            for code, meaning in spec.codes.items()
        ]
        if spec.missing_codes:
            selected = " selected" if value == "" else ""
            options.insert(0, f'<option value=""{selected}>não informado (missing)</option>')
        control = f'<select name="{name}" id="{name}">{"".join(options)}</select>'
    else:
        control = (
            f'<input type="number" step="any" name="{name}" id="{name}" '
            f'min="{spec.minimum:g}" max="{spec.maximum:g}" value="{escape(value)}">'
        )
    hint = f"{escape(spec.description)} · {escape(spec.allowed_text())}"
    err = f'<span class="err" id="{name}-error">{escape(error)}</span>' if error else ""
    return (
        f'<label for="{name}">{escape(spec.label_pt)} <small>({name})</small>'
        f"{control}<small>{hint}</small>{err}</label>"
    )


def _pie(prediction: HeartPrediction) -> str:
    """An inline SVG pie of the two class probabilities."""
    p = prediction.probabilities[CLASS_LABELS[1]]
    r, c = 60, 70
    if p <= 0.0 or p >= 1.0:
        colour = COLOURS[CLASS_LABELS[1] if p >= 1.0 else CLASS_LABELS[0]]
        slices = f'<circle cx="{c}" cy="{c}" r="{r}" fill="{colour}"/>'
    else:
        angle = 2 * math.pi * p
        x, y = c + r * math.sin(angle), c - r * math.cos(angle)
        large = 1 if p > 0.5 else 0
        slices = (
            f'<circle cx="{c}" cy="{c}" r="{r}" fill="{COLOURS[CLASS_LABELS[0]]}"/>'
            f'<path d="M{c},{c} L{c},{c - r} A{r},{r} 0 {large},1 {x:.2f},{y:.2f} Z" '
            f'fill="{COLOURS[CLASS_LABELS[1]]}"/>'
        )
    return (
        f'<svg id="chart" width="140" height="140" viewBox="0 0 140 140" role="img" '
        f'aria-label="probabilidades">{slices}</svg>'
    )


def _result(prediction: HeartPrediction) -> str:
    label = prediction.label
    rows = "".join(
        f'<li><span style="color:{COLOURS[name]}">■</span> {escape(RESULT_TEXT_PT[name])}: '
        f'<strong data-class="{name}">{100 * p:.1f} %</strong></li>'
        for name, p in prediction.probabilities.items()
    )
    return (
        f'<section class="result">{_pie(prediction)}<div>'
        f'<h2 id="verdict" data-class="{prediction.predicted_class}">'
        f"{escape(RESULT_TEXT_PT[label])} (classe {prediction.predicted_class})</h2>"
        f'<ul id="probabilities">{rows}</ul>'
        f'<p><small>Predição <code id="prediction-id">{prediction.prediction_id}</code>'
        f"</small></p></div></section>"
    )


def _page(
    request: Request,
    plane: DataPlane,
    values: dict[str, str],
    errors: dict[str, str],
    result: str,
) -> str:
    fields = "\n".join(_input(s, values.get(s.name, ""), errors.get(s.name)) for s in FEATURES)
    return PAGE.format(
        model_tag=escape(plane.model.tag), result=result, fields=fields, csrf=csrf_input(request)
    )


def _coerce(spec: FeatureSpec, raw: str) -> int | float | str | None:
    """Form text -> the JSON-like value the schema validates (bad text stays text -> 422)."""
    text = raw.strip().replace(",", ".")
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    if (spec.integer or spec.codes) and number.is_integer():
        return int(number)
    return number


async def show_form(request: Request, plane: DataPlane, request_id: str) -> Response:
    return HTMLResponse(_page(request, plane, {}, {}, ""))


async def submit_form(request: Request, plane: DataPlane, request_id: str) -> Response:
    form = await read_form(request, plane.settings)
    values = {s.name: str(form.get(s.name, "")) for s in FEATURES}
    candidate = {s.name: _coerce(s, values[s.name]) for s in FEATURES}
    try:
        patient = HeartPatient.model_validate(candidate)
    except ValidationError as exc:
        errors = {e.field: e.message for e in plane.field_errors(exc)}
        banner = '<p class="err" id="form-errors">Corrija os campos destacados.</p>'
        return HTMLResponse(_page(request, plane, values, errors, banner), status_code=422)
    answered = await plane.predict_instances([patient], request_id, API)
    (prediction,) = (HeartPrediction.model_validate(row) for row in answered.rows())
    return HTMLResponse(_page(request, plane, values, {}, _result(prediction)))


API = "form"
# What the form posts: each field as typed (coerced and validated like a JSON patient; a bad
# value re-shows the form with its error), plus the CSRF token of browser sessions.
FORM_FIELDS = {
    "type": "object",
    "properties": {
        **{spec.name: {"type": "string", "description": spec.description} for spec in FEATURES},
        CSRF_FIELD: {"type": "string", "description": "Needed with the session cookie."},
    },
}
_PAGE = Body({"type": "string"}, (HTML,))
FORM_ROUTES = (
    HttpRoute(
        "/ui",
        show_form,
        API,
        Role.PREDICT,
        ("GET",),
        page=True,
        doc=RouteDoc("The heart-risk form (HTML)", answers={"200": _PAGE}, tag="pages"),
    ),
    HttpRoute(
        "/ui",
        submit_form,
        API,
        Role.PREDICT,
        ("POST",),
        page=True,
        doc=RouteDoc(
            "Submit the form: the answer page, or the form with each field's error (422)",
            body=Body(FORM_FIELDS, (FORM,)),
            answers={"200": _PAGE, "422": _PAGE},
            tag="pages",
        ),
    ),
)
