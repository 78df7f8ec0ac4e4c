"""What the anonymiser writes beside each exam: the exam record, the quarantine entry, the run
manifest. None of them holds an input key or a value read from an exam, only the key's SHA-256."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from medserve.anonymize.errors import RejectionCode

ANONYMIZER_VERSION = "2"  # 2: keep-only by layout profile, independent verifier


def utc_now() -> datetime:
    return datetime.now(UTC)


def key_digest(key: str) -> str:
    """SHA-256 of an input key: keys may contain a patient's name, so only this is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Verification(BaseModel):
    """The fail-closed checks run on a finished output; failure codes never contain values."""

    passed: bool
    checks: list[str]
    failures: list[str] = Field(default_factory=list)
    layout: str | None = Field(
        default=None, description="The profile the output itself matched (None: none did)."
    )


class StageSeconds(BaseModel):
    """Wall time per stage of one exam (single-threaded, so also its CPU time)."""

    open: float = 0.0
    page_one: float = 0.0
    render: float = 0.0
    encode: float = 0.0
    build: float = 0.0
    verify: float = 0.0
    zip: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.model_dump().values())


class InputRecord(BaseModel):
    """What every record says of its input: key hash, size, when, which anonymiser version."""

    ulid: str
    input_key_sha256: str
    anonymizer_version: str = ANONYMIZER_VERSION
    created_at: AwareDatetime = Field(default_factory=utc_now)
    original_size_bytes: int


class ExamRecord(InputRecord):
    """One anonymised exam, stored as JSON beside its ZIP."""

    status: Literal["anonymized"] = "anonymized"
    pdf_size_bytes: int = Field(description="The anonymised PDF before zipping.")
    output_size_bytes: int = Field(description="The ZIP.")
    compression_ratio: float = Field(description="Anonymised PDF bytes / ZIP bytes.")
    output_to_input_ratio: float = Field(description="ZIP bytes / original PDF bytes.")
    dpi: int
    colour_mode: str
    jpeg_quality: int
    page_count: int
    layout: str = Field(description="The layout profile the exam was anonymised by.")
    identifiers_removed: int = Field(description="Recogniser hits removed inside kept zones.")
    ocr_verified: bool = Field(description="Whether the verifier OCR'd this output.")
    seconds: StageSeconds
    verification: Verification


class QuarantineRecord(InputRecord):
    """An exam that did not reach the output, and why; its input stays where it was."""

    status: Literal["quarantined"] = "quarantined"
    reason: RejectionCode
    detail: str
