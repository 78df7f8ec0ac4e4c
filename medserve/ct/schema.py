"""Request and answer schemas of the lung CT service."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from medserve.ct.imaging import DecodedSlice, Window, decode_slice
from medserve.ct.settings import get_ct_settings


def image_bytes(value: Any) -> bytes:
    """The file of one slice: bytes (v2 BYTES tensors, the raw route) or base64 text (JSON).

    Only the size is checked here: decoding is the model's preprocessing, which the data plane
    runs off the event loop, and a file it cannot read is refused there with its reason.
    """
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ValueError("expected the file's bytes (base64 text in JSON)")
    data = _unwrap_base64(value)
    if not data:
        raise ValueError("the file is empty")
    limit = get_ct_settings().max_image_bytes
    if len(data) > limit:
        raise ValueError(f"the file exceeds {limit} bytes")
    return data


def decode(data: bytes) -> DecodedSlice:
    """A slice file -> windowed pixels and facts, with the service's window and limits."""
    settings = get_ct_settings()
    return decode_slice(
        data,
        Window(settings.window_center, settings.window_width),
        settings.max_image_bytes,
        (settings.min_image_side, settings.max_image_side),
    )


def _unwrap_base64(value: bytes) -> bytes:
    """JSON carries files as base64 text; a real file never parses as base64 *and* keeps its
    magic bytes, so anything that decodes is taken as the decoded file."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value


ImageFile = Annotated[
    bytes,
    PlainValidator(image_bytes),
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

    model_config = ConfigDict(extra="forbid")

    image: ImageFile
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
