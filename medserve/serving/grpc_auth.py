"""Access control for the gRPC adapter: a server interceptor reading `authorization` metadata.

Every method but the protocol's liveness/readiness, gRPC health and reflection needs a bearer
token with the method's role (`auth.roles.grpc_role`): `UNAUTHENTICATED` without or with a bad
token, `PERMISSION_DENIED` without the role. The check runs once per call (once per stream for
`ModelStreamInfer`), before any message is read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from medserve.auth.authenticator import Authenticator, Credentials, bearer_of
from medserve.auth.roles import grpc_role
from medserve.prediction_log import new_id
from medserve.serving.dataplane import DataPlane
from medserve.serving.errors import ServiceError

AUTH_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, plane: DataPlane) -> None:
        self.authenticator = authenticator
        self.plane = plane

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        role = grpc_role(details.method)
        if role is None or handler is None:
            return handler
        started = time.perf_counter()
        authorization = next(
            (value for key, value in details.invocation_metadata or () if key == "authorization"),
            None,
        )
        try:
            credentials = Credentials(bearer=bearer_of(authorization))
            identity = await self.authenticator.identify(credentials)
            self.authenticator.authorise(identity, role)
        except ServiceError as exc:
            elapsed = time.perf_counter() - started
            self.plane.refused(exc, new_id(), details.method, elapsed)
            return _refusal(handler, AUTH_CODES[exc.status], f"{exc.error}: {exc.detail}")
        return handler


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts with `code`."""

    async def abort(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)
