"""The clinicians' review page: recent beats, one beat's plot, and the confirm form.

Server-rendered HTML with inline SVG (no JavaScript, nothing from a CDN). A confirmation is
stored through the shared feedback API of the prediction log (label 1 = anomalous), which is
where `ray_jobs/train.py ecg_anomaly --with-feedback` reads labelled beats from.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from html import escape
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from medserve.auth.roles import Role
from medserve.ecg.beats import beat_from_log
from medserve.ecg.model import EcgAnomalyModel
from medserve.ecg.settings import get_ecg_settings
from medserve.prediction_log import PredictionRecord, UnknownPrediction
from medserve.serving.contract import HTML, Body, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.http_api import HttpRoute, read_form
from medserve.serving.http_security import CSRF_FIELD, csrf_input, identity_of, touched

API = "review"
FLAGS = {"all": None, "anomalous": 1, "normal": 0}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
VERDICT_PT = {True: "Anômalo", False: "Normal"}

PAGE = """<!doctype html>
<html lang="pt-BR"><head><meta charset="utf-8">
<title>medserve · Revisão de batimentos de ECG</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #ddd;padding:.3rem}}
.anomalous{{color:#c62828;font-weight:600}} .normal{{color:#2e7d32}}
form.filters{{display:flex;gap:1rem;align-items:end;margin:1rem 0}}
label{{display:flex;flex-direction:column}} .confirmed{{background:#e8f5e9;padding:.5rem}}
</style></head><body>
<p><a href="/review">Batimentos recentes</a> · modelo <code>{model_tag}</code></p>
{body}
</body></html>"""


def beat_plot_svg(original: np.ndarray, reconstruction: np.ndarray) -> str:
    """Original beat, reconstruction and the absolute error between them, as inline SVG."""
    x_original, x_reconstruction = np.asarray(original), np.asarray(reconstruction)
    error = np.abs(x_original - x_reconstruction)
    width, height, pad = 720, 320, 36
    low = float(min(x_original.min(), x_reconstruction.min(), 0.0))
    high = float(max(x_original.max(), x_reconstruction.max(), error.max()))
    span = high - low or 1.0

    def xy(values: np.ndarray) -> list[tuple[float, float]]:
        xs = pad + np.arange(len(values)) * (width - 2 * pad) / (len(values) - 1)
        ys = height - pad - (values - low) * (height - 2 * pad) / span
        return list(zip(xs.tolist(), ys.tolist(), strict=True))

    def polyline(values: np.ndarray, element_id: str, colour: str) -> str:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy(values))
        return (
            f'<polyline id="{element_id}" points="{points}" fill="none" '
            f'stroke="{colour}" stroke-width="2"/>'
        )

    zero = xy(np.zeros(len(error)))
    area = xy(error) + zero[::-1]
    error_path = " ".join(f"{x:.1f},{y:.1f}" for x, y in area)
    y_zero = zero[0][1]
    legend = "".join(
        f'<text x="{pad + 190 * i}" y="18" fill="{colour}">■ {escape(name)}</text>'
        for i, (name, colour) in enumerate(
            [("original", "#1565c0"), ("reconstrução", "#c62828"), ("erro absoluto", "#f9a825")]
        )
    )
    return (
        f'<svg id="beat-plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="batimento, reconstrução e erro">{legend}'
        f'<line x1="{pad}" y1="{y_zero:.1f}" x2="{width - pad}" y2="{y_zero:.1f}" stroke="#999"/>'
        f'<text x="2" y="{pad}" font-size="11">{high:.2f}</text>'
        f'<text x="2" y="{height - pad}" font-size="11">{low:.2f}</text>'
        f'<polygon id="error-area" points="{error_path}" fill="#f9a825" fill-opacity=".45"/>'
        f"{polyline(x_original, 'original', '#1565c0')}"
        f"{polyline(x_reconstruction, 'reconstruction', '#c62828')}</svg>"
    )


def _page(plane: DataPlane, body: str, status: int = 200) -> HTMLResponse:
    tag = escape(plane.model.tag)
    return HTMLResponse(PAGE.format(model_tag=tag, body=body), status_code=status)


def _day(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(), tzinfo=UTC)
    except ValueError:
        raise ServiceError(422, "validation_error", "dates are YYYY-MM-DD", field=name) from None


def _row(record: PredictionRecord, confirmed: dict | None) -> str:
    anomalous = bool(record.predicted_class)
    review = "—" if confirmed is None else f"confirmado: {VERDICT_PT[bool(confirmed.get('label'))]}"
    return (
        f'<tr data-id="{record.id}"><td>{record.created_at:%Y-%m-%d %H:%M:%S}</td>'
        f'<td><a href="/review/{record.id}">{record.id}</a></td>'
        f"<td>{record.outputs.get('mae', float('nan')):.4f}</td>"
        f'<td class="{"anomalous" if anomalous else "normal"}">{VERDICT_PT[anomalous]}</td>'
        f"<td>{escape(review)}</td></tr>"
    )


async def list_beats(request: Request, plane: DataPlane, request_id: str) -> Response:
    flag = request.query_params.get("flag", "all")
    if flag not in FLAGS:
        raise ServiceError(422, "validation_error", f"flag is one of {list(FLAGS)}", field="flag")
    since_text = request.query_params.get("since", "")
    until_text = request.query_params.get("until", "")
    since, until = _day(since_text, "since"), _day(until_text, "until")
    records = await plane.log.run(
        plane.log.recent,
        plane.model.name,
        limit=get_ecg_settings().review_page_size,
        predicted_class=FLAGS[flag],
        since=since,
        until=None if until is None else until + timedelta(days=1),  # inclusive day
    )
    touched(request, [r.id for r in records])
    confirmed = await plane.log.run(plane.log.feedback_for, [r.id for r in records])
    options = "".join(
        f'<option value="{key}"{" selected" if key == flag else ""}>{key}</option>' for key in FLAGS
    )
    rows = "".join(_row(r, confirmed.get(r.id)) for r in records)
    body = (
        "<h1>Revisão de batimentos de ECG</h1>"
        '<form class="filters" method="get" action="/review">'
        f'<label>Veredito <select name="flag" id="flag">{options}</select></label>'
        f'<label>De <input type="date" name="since" id="since" value="{escape(since_text)}">'
        "</label>"
        f'<label>Até <input type="date" name="until" id="until" value="{escape(until_text)}">'
        '</label><button type="submit" id="filter">Filtrar</button></form>'
        '<table id="beats"><thead><tr><th>Horário (UTC)</th><th>Predição</th><th>MAE</th>'
        f"<th>Veredito do modelo</th><th>Revisão</th></tr></thead><tbody>{rows}</tbody></table>"
        + ("" if records else '<p id="empty">Nenhum batimento.</p>')
    )
    return _page(plane, body)


async def _record_of(plane: DataPlane, prediction_id: str) -> PredictionRecord:
    record = await plane.log.run(plane.log.get, prediction_id)
    if record is None or record.model != plane.model.name:
        raise ServiceError(404, "unknown_prediction", "no such prediction id")
    return record


@functools.lru_cache(maxsize=4)
def _stored_model(tag: str) -> EcgAnomalyModel:
    return EcgAnomalyModel.load(tag)


def _reconstruction(plane: DataPlane, record: PredictionRecord, beat: np.ndarray) -> np.ndarray:
    """The reconstruction the model that scored the beat answered: logs keep only the beat, so
    it is recomputed, with that model's stored weights if it is no longer the served one."""
    if "reconstruction" in record.outputs:  # logs written before the beat-only layout
        return np.asarray(record.outputs["reconstruction"])
    model = plane.model
    if record.model_tag != model.tag:
        model = _stored_model(record.model_tag)
    assert isinstance(model, EcgAnomalyModel)
    return model.reconstruct(beat)


async def show_beat(request: Request, plane: DataPlane, request_id: str) -> Response:
    record = await _record_of(plane, request.path_params["prediction_id"])
    outputs = record.outputs
    anomalous = bool(outputs["anomalous"])
    beat = beat_from_log(record.inputs)
    confirmed = await plane.log.run(plane.log.feedback_of, record.id)
    checked = anomalous if confirmed is None else bool(confirmed.get("label"))
    notice = ""
    if confirmed is not None:
        notice = (
            f'<p class="confirmed" id="confirmation">Confirmado como '
            f"<strong>{VERDICT_PT[bool(confirmed.get('label'))]}</strong>.</p>"
        )
    body = (
        f"<h1>Batimento <code>{record.id}</code></h1>"
        f"<p>{record.created_at:%Y-%m-%d %H:%M:%S} UTC · modelo <code>"
        f"{escape(record.model_tag)}</code></p>"
        f'<h2 id="verdict" class="{"anomalous" if anomalous else "normal"}">'
        f"Veredito do modelo: {VERDICT_PT[anomalous]}</h2>"
        f'<p>MAE <strong id="mae">{outputs["mae"]:.4f}</strong> · limiar '
        f'<span id="threshold">{outputs["threshold"]:.4f}</span></p>'
        f"{beat_plot_svg(beat, _reconstruction(plane, record, beat))}{notice}"
        f'<form method="post" action="/review/{record.id}" id="confirm-form">{csrf_input(request)}'
        f'<label><span><input type="checkbox" name="anomalous" id="anomalous"'
        f"{' checked' if checked else ''}> anômalo</span></label>"
        '<label>Revisor(a) <input name="reviewer" id="reviewer" maxlength="128"></label>'
        '<button type="submit" id="confirm">Confirmar</button></form>'
    )
    return _page(plane, body)


async def confirm_beat(request: Request, plane: DataPlane, request_id: str) -> Response:
    prediction_id = request.path_params["prediction_id"]
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in FORM_TYPES:
        # Without this, a JSON body would read as an unchecked box: a silent "normal" label.
        raise ServiceError(415, "unsupported_media_type", "send the review form (urlencoded)")
    form = await read_form(request, plane.settings)
    label = 1 if form.get("anomalous") == "on" else 0
    reviewer = str(form.get("reviewer", "")).strip()[:128] or None  # as in POST /feedback
    try:
        await plane.log.run(
            plane.log.add_feedback,
            plane.model.name,
            prediction_id,
            {"label": label},
            reviewer,
            confirmed_by=identity_of(request).subject,
        )
    except UnknownPrediction:
        raise ServiceError(404, "unknown_prediction", "no such prediction id") from None
    return RedirectResponse(f"/review/{prediction_id}", status_code=303)


class ReviewFilters(BaseModel):
    """The filters of `GET /review` as `list_beats` reads them (for the API contract)."""

    flag: Literal["all", "anomalous", "normal"] = "all"
    # The filter form sends an empty date when none is chosen: that is no filter.
    since: date | Literal[""] | None = Field(default=None, description="First day (UTC).")
    until: date | Literal[""] | None = Field(default=None, description="Last day (UTC, inclusive).")


CONFIRM_FIELDS = {
    "type": "object",
    "properties": {
        "anomalous": {"type": "string", "description": "`on` = anomalous; absent = normal."},
        "reviewer": {"type": "string", "description": "Free-text name, cut to 128 characters."},
        CSRF_FIELD: {"type": "string", "description": "Needed with the session cookie."},
    },
}
_PAGE = Body({"type": "string"}, (HTML,))
REVIEW_ROUTES = (
    HttpRoute(
        "/review",
        list_beats,
        API,
        Role.REVIEW,
        page=True,
        doc=RouteDoc(
            "Recent scored beats (HTML, audited)",
            query=ReviewFilters,
            answers={"200": _PAGE},
            tag="pages",
        ),
    ),
    HttpRoute(
        "/review/{prediction_id}",
        show_beat,
        API,
        Role.REVIEW,
        page=True,
        doc=RouteDoc(
            "One beat: plot, verdict, confirm form (HTML, audited)",
            answers={"200": _PAGE},
            tag="pages",
        ),
    ),
    HttpRoute(
        "/review/{prediction_id}",
        confirm_beat,
        API,
        Role.REVIEW,
        ("POST",),
        page=True,
        doc=RouteDoc(
            "Confirm a beat's label (feedback); redirects to the beat's page",
            body=Body(CONFIRM_FIELDS, FORM_TYPES),
            answers={"303": None},  # to the beat's page, no body
            tag="pages",
        ),
    ),
)
