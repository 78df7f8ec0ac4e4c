"""`POST /strip`: a raw single-lead strip -> R peaks, beats, per-beat scores, a summary.

Beats cut from the strip go through the same batching, prediction log and metrics as beats
posted to `/predict` (api `http_strip`), so every scored beat can be reviewed.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from medserve.auth.roles import Role
from medserve.ecg.schema import (
    BeatScore,
    StripBeat,
    StripRequest,
    StripResponse,
    StripSummary,
)
from medserve.ecg.settings import get_ecg_settings
from medserve.ecg.signal import SegmentedStrip, StripError, check_strip, segment_beats
from medserve.serving.contract import Body, RouteDoc
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError
from medserve.serving.http_api import HttpRoute, read_json_body
from medserve.serving.model import ModelInputs

API = "http_strip"


def _segment(strip: StripRequest) -> SegmentedStrip:
    settings = get_ecg_settings()
    signal = np.asarray(strip.values, dtype=np.float64)
    rate = strip.sampling_rate_hz
    check_strip(signal, rate, settings.strip_min_seconds, settings.strip_max_seconds)
    return segment_beats(signal, rate)


async def score_strip(request: Request, plane: DataPlane, request_id: str) -> Response:
    body = await read_json_body(request, plane.settings.max_body_bytes)
    strip: StripRequest = plane.parse_json(StripRequest, body)
    try:
        # FFT filtering of a long strip takes milliseconds: keep it off the event loop.
        segmented = await asyncio.to_thread(_segment, strip)
    except StripError as exc:
        raise ServiceError(422, exc.code, str(exc), field="values") from None
    plane.admit(len(segmented.beats))
    # Cut by our own segmenter from a validated strip: finite by construction. Not re-validated,
    # because filtering may push a sample of a legal strip just past the +-100 bound of a beat.
    inputs = ModelInputs(np.asarray(segmented.beats, dtype=np.float32))
    answered = await plane.infer(inputs, request_id, API)
    scores = [BeatScore.model_validate(row) for row in answered.rows()]
    flagged = sum(score.anomalous for score in scores)
    rate = strip.sampling_rate_hz
    response = StripResponse(
        model=plane.model.name,
        model_tag=plane.model.tag,
        request_id=request_id,
        threshold=scores[0].threshold,
        summary=StripSummary(
            duration_seconds=len(strip.values) / rate,
            beat_count=len(scores),
            heart_rate_bpm=segmented.heart_rate_bpm,
            anomalous_beats=flagged,
            anomalous_share=flagged / len(scores),
        ),
        beats=[
            StripBeat(
                prediction_id=score.prediction_id,
                r_peak_index=int(peak),
                r_peak_seconds=float(peak) / rate,
                anomalous=score.anomalous,
                mae=score.mae,
                reconstruction=score.reconstruction if strip.include_reconstructions else None,
            )
            for score, peak in zip(scores, segmented.r_peaks, strict=True)
        ],
    )
    return Response(response.model_dump_json(exclude_none=True), media_type="application/json")


STRIP_ROUTES = (
    HttpRoute(
        "/strip",
        score_strip,
        API,
        Role.PREDICT,
        ("POST",),
        doc=RouteDoc(
            "Segment a raw single-lead strip and score every beat",
            body=Body(StripRequest),
            answers={"200": Body(StripResponse)},
            tag="predict",
        ),
    ),
)
