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
]


class ExamRejected(Exception):
    """An exam that cannot be anonymised safely; `detail` never contains its content."""

    def __init__(self, code: RejectionCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code: RejectionCode = code
        self.detail = detail
