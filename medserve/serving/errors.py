"""The one error shape of every 4xx/5xx answer, and the conversion of validation errors to it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from medserve.database.busy import DatabaseBusy

MAX_ECHO_CHARS = 80


class FieldError(BaseModel):
    """One rejected value: where, what was sent, and what is allowed."""

    field: str
    value: Any = None
    message: str


class ErrorBody(BaseModel):
    """`{"error", "detail", "field", "request_id", "errors"}` on every error response."""

    error: str
    detail: str
    field: str | None = None
    request_id: str
    errors: list[FieldError] = []


class ServiceError(Exception):
    """An error with an HTTP status and a stable machine-readable `error` code."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.errors = errors or []
        self.headers = headers or {}  # e.g. WWW-Authenticate on a 401

    def body(self, request_id: str, oip: bool = False) -> ErrorBody:
        """The error body. With `oip`, `error` is "<code>: <detail>": the Open Inference
        Protocol defines `error` as the human-readable message (its clients print it), and the
        code stays its first word."""
        return ErrorBody(
            error=f"{self.error}: {self.detail}" if oip else self.error,
            detail=self.detail,
            field=self.field,
            request_id=request_id,
            errors=self.errors,
        )


def _echo(value: Any) -> Any:
    """The offending value as sent, shortened if it is large (the client's own data)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "..."


def field_errors(
    exc: ValidationError, allowed: Callable[[str], str | None], prefix: str = ""
) -> list[FieldError]:
    """Pydantic errors -> `FieldError`s whose message names the allowed values of the field."""
    result = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        hint = allowed(loc[-1]) if loc else None
        message = err["msg"].removeprefix("Value error, ")
        if hint and err["type"] != "extra_forbidden" and "allowed" not in message:
            message = f"{message}; allowed: {hint}"
        result.append(FieldError(field=path, value=_echo(err.get("input")), message=message))
    return result


def validation_error(errors: list[FieldError]) -> ServiceError:
    """A 422 naming the first offending field (all of them in `errors`)."""
    first = errors[0]
    return ServiceError(
        422,
        "validation_error",
        f"{len(errors)} invalid value(s); first: {first.field}: {first.message}",
        field=first.field,
        errors=errors,
    )


def database_busy(busy: DatabaseBusy) -> ServiceError:
    """The retryable answer of a call the database could not serve in time."""
    return ServiceError(
        503,
        "database_busy",
        "the database is busy; retry later",
        headers={"Retry-After": str(busy.retry_after_s)},
    )
