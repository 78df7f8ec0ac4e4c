"""BentoML's request timeout (`traffic.timeout`), without the timer it leaves behind.

BentoML 1.4.39's `TimeoutMiddleware` arms `loop.call_later(timeout, ...)` for every request and
never cancels it, and runs each request in a task of its own. With the default 60 s timeout a
worker answering 2,000 requests/s holds ~120,000 live timer handles, futures and bound methods;
they survive into the oldest GC generation, and every full collection then walks them all:
100-200 ms stalls about once a second under load here, which was the heart service's p99 tail
(found with `bench/latency_timeline.py` and a `gc.callbacks` probe).

`RequestTimeout` keeps the contract (504 when no response has started within the timeout) with
`asyncio.timeout`, whose handle is cancelled as soon as the response starts or the request ends,
and no extra task. `install()` puts it where BentoML's app factory looks the class up.
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestTimeout:
    """ASGI middleware: 504 if `app` has not started its response after `timeout` seconds."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False
        try:
            async with asyncio.timeout(self.timeout) as deadline:

                async def send_and_disarm(message: Message) -> None:
                    nonlocal started
                    if not started:
                        started = True
                        deadline.reschedule(None)  # it bounds the time to the first byte
                    await send(message)

                await self.app(scope, receive, send_and_disarm)
        except TimeoutError:
            if started:
                raise
            await self._timed_out(scope, receive, send)

    async def _timed_out(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"error": f"Not able to process the request in {self.timeout} seconds"},
            status_code=504,
        )
        await response(scope, receive, send)


def install() -> None:
    """Make BentoML build its apps with `RequestTimeout` (it imports the class from this module
    attribute when it assembles a service's middleware, after the service module is loaded)."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[misc, assignment]
