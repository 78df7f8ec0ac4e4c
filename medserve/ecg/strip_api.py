"""`POST /strip`: a raw single-lead strip -> R peaks, beats, per-beat scores, a summary.

Beats cut from the strip go through the same batching, prediction log and metrics as beats
posted to `/predict` (transport `http_strip`), so every scored beat can be reviewed.
"""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from medserve.ecg.schema import (
    BeatScore,
    EcgBeat,
    StripBeat,
    StripRequest,
    StripResponse,
    StripSummary,
)
from medserve.ecg.settings import get_ecg_settings
from medserve.ecg.signal import SegmentedStrip, StripError, check_strip, segment_beats
from medserve.serving.errors import ServiceError
from medserve.serving.gateway import ExtraRoute, Gateway

TRANSPORT = "http_strip"


def _segment(strip: StripRequest) -> SegmentedStrip:
    settings = get_ecg_settings()
    signal = np.asarray(strip.values, dtype=np.float64)
    rate = strip.sampling_rate_hz
    check_strip(signal, rate, settings.strip_min_seconds, settings.strip_max_seconds)
    return segment_beats(signal, rate)


async def score_strip(request: Request, gateway: Gateway, request_id: str) -> Response:
    pipeline = gateway.ready_pipeline
    strip = gateway.parse(StripRequest, await gateway.read_json_body(request))
    assert isinstance(strip, StripRequest)
    try:
        # FFT filtering of a long strip takes milliseconds: keep it off the event loop.
        segmented = await asyncio.to_thread(_segment, strip)
    except StripError as exc:
        raise ServiceError(422, exc.code, str(exc), field="values") from None
    limit = pipeline.settings.max_instances_per_request
    if len(segmented.beats) > limit:
        raise ServiceError(413, "batch_too_large", f"the strip holds more than {limit} beats")
    # Cut by our own segmenter from a validated strip: finite by construction. Not re-validated,
    # because filtering may push a sample of a legal strip just past the +-100 bound of a beat.
    beats = [EcgBeat.model_construct(row) for row in segmented.beats.tolist()]
    answers = await gateway.predict_instances(beats, request_id, TRANSPORT)
    scores = [BeatScore.model_validate(a) for a in answers]
    flagged = sum(score.anomalous for score in scores)
    rate = strip.sampling_rate_hz
    response = StripResponse(
        model=pipeline.model.name,
        model_tag=pipeline.model.tag,
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


STRIP_ROUTES = [
    ExtraRoute(path="/strip", handler=score_strip, methods=["POST"], transport=TRANSPORT)
]
