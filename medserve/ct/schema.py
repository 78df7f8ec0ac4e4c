"""Request and answer schemas of the lung CT service."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from medserve.ct.imaging import DecodedSlice, ImageRejected, Window, decode_slice
from medserve.ct.settings import get_ct_settings


def decode_image(value: Any) -> DecodedSlice:
    """Bytes (v2 BYTES tensors, the raw route) or base64 text (JSON) -> a decoded slice.

    Decoding happens during validation, so a file the model cannot read is refused with its
    reason before it reaches a batch.
    """
    if isinstance(value, DecodedSlice):
        return value
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ValueError("expected the file's bytes (base64 text in JSON)")
    settings = get_ct_settings()
    data = _unwrap_base64(value)
    try:
        return decode_slice(
            data,
            Window(settings.window_center, settings.window_width),
            settings.max_image_bytes,
            (settings.min_image_side, settings.max_image_side),
        )
    except ImageRejected as exc:
        raise ValueError(exc.detail) from None


def _unwrap_base64(value: bytes) -> bytes:
    """JSON carries files as base64 text; a real file never parses as base64 *and* keeps its
    magic bytes, so anything that decodes is taken as the decoded file."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value


DecodedImage = Annotated[
    DecodedSlice,
    PlainValidator(decode_image),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "A DICOM CT slice (Part 10 file), or a lung-windowed grayscale "
            "PNG/JPEG, base64-encoded.",
        }
    ),
]


class CtSlice(BaseModel):
    """One slice to classify."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    image: DecodedImage
    include_identifiers: bool = Field(
        default=False,
        description="Echo the DICOM identifiers read (Study/Series/SOP Instance UID, "
        "accession and instance number) in the answer; off by default.",
    )


class CtPrediction(BaseModel):
    """The answer for one slice."""

    prediction_id: str
    predicted_class: str = Field(description="`nsip` or `uip` (the model's class names).")
    probabilities: dict[str, float]
    confidence: float = Field(description="The top class's probability.")
    low_confidence: bool = Field(description="Confidence below the service's threshold.")
    out_of_distribution: bool = Field(
        description="The slice does not look like the lung slices the model was trained on."
    )
    lung_field_fraction: float = Field(description="Share of the body at lung density.")
    warnings: list[str] = Field(default_factory=list, description="Why it was flagged.")
    input_format: str
    model_tag: str
    identifiers: dict[str, str] | None = None
