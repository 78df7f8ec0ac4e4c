"""Paths no route can match still get the shared error shape.

BentoML mounts a service's app at `/` with Starlette's `Mount`, whose pattern (`.*`, no DOTALL)
does not match a path holding a newline (`%0A`): such a request never reaches the gateway's
catch-all and BentoML answered it with its own plain-text 404. Schemathesis found it. This ASGI
middleware answers those paths itself, before any routing, as the catch-all would.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from medserve.prediction_log import new_id
from medserve.serving.errors import ServiceError


class PathGuard:
    """404 in the shared error shape for paths with a line break (no route matches them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\n" in scope["path"]:
            body = ServiceError(404, "not_found", "no route here answers this path").body(new_id())
            payload = body.model_dump_json().encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await self.app(scope, receive, send)
