"""Why an exam goes to quarantine instead of the output."""

from __future__ import annotations

from typing import Literal

RejectionCode = Literal[
    "empty",
    "too_large",
    "not_pdf",
    "corrupt",
    "encrypted",
    "wrong_page_count",
    "unknown_layout",
    "verification_failed",
    "anonymizer_error",
    # The per-exam budget (settings.py): checked before the work it bounds.
    "page_too_large",
    "image_too_large",
    "stream_too_large",
    "exam_timeout",
    # The exam's own process died (killed for memory by the kernel, or a crash inside MuPDF).
    "exam_crashed",
    # The pipeline worker holding the exam died more often than `worker_retries` allows.
    "worker_died",
]


class ExamRejected(Exception):
    """An exam that cannot be anonymised safely; `detail` never contains its content."""

    def __init__(self, code: RejectionCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: RejectionCode = code
        self.detail = detail
