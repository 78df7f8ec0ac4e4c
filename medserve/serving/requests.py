"""Request plumbing shared by every HTTP route: request ids and bounded body reads."""

from __future__ import annotations

import re

from starlette.requests import Request

from medserve.prediction_log import new_id
from medserve.serving.errors import ServiceError

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def valid_request_id(given: str | None) -> str:
    """`given` if it is a well-formed id (1-64 of [A-Za-z0-9._:-]), else a new ULID.

    Every transport passes client-chosen ids through here: they are logged and stored, so free
    text (which could carry a patient's name) must never get through.
    """
    return given if given and _VALID_REQUEST_ID.match(given) else new_id()


def request_id_of(request: Request) -> str:
    """The caller's `X-Request-ID` if well-formed, else a new ULID."""
    return valid_request_id(request.headers.get(REQUEST_ID_HEADER))


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes, declared or actual."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, "body_too_large", f"body exceeds {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise ServiceError(413, "body_too_large", f"body exceeds {limit} bytes")
    return body
