"""Roles, identities, and what a role may do: the one table every transport checks.

HTTP routes name their role on their `HttpRoute`; gRPC methods are listed here. The README's
"Access control" table is rendered from both (`access_table`) and compared by a test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    PREDICT = "predict"  # JSON APIs, strips, images, saliency, OIP v2 infer and metadata
    REVIEW = "review"  # review pages, confirming a label (POST /feedback)
    READ_LOG = "read_log"  # GET /predictions*
    ADMIN = "admin"  # future model promotion; for now it reads everything


# Roles a role implies. Admin reads the log (and nothing else yet): it never predicts or
# labels, so a label always names a reviewer.
IMPLIED: dict[Role, frozenset[Role]] = {Role.ADMIN: frozenset({Role.READ_LOG})}

# Why a role exists, for the README table and error messages.
ROLE_PURPOSE: dict[Role, str] = {
    Role.PREDICT: "call the models (JSON, form, OIP v2 REST/gRPC inference and metadata)",
    Role.REVIEW: "open review pages and confirm labels",
    Role.READ_LOG: "read logged predictions (patient inputs)",
    Role.ADMIN: "read everything; model promotion later",
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the token's `sub` (or the proxy's user), roles, and how it was proven.

    `ambient` is true for credentials a browser attaches on its own (the session cookie, the
    proxy's headers): state-changing calls made with them need the CSRF checks."""

    subject: str
    roles: frozenset[Role]
    via: str
    credential_digest: str = ""
    ambient: bool = False
    expires_at: float = 0.0  # epoch seconds; 0 = no expiry known (proxy, off)

    def grants(self, role: Role) -> Role | None:
        """The role of this identity that allows `role` (itself or one implying it), or None."""
        if role in self.roles:
            return role
        return next((held for held in sorted(self.roles) if role in IMPLIED.get(held, ())), None)


def roles_from(values: Iterable[str], prefix: str = "") -> frozenset[Role]:
    """medserve's roles among an IdP's role (or group) names; others are ignored."""
    known = {role.value for role in Role}
    found = set()
    for value in values:
        name = value.strip()
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :]
        if name in known:
            found.add(Role(name))
    return frozenset(found)


GRPC_SERVICE = "inference.GRPCInferenceService"
# gRPC methods callable without a token: the protocol's liveness/readiness, gRPC health and
# reflection (service descriptions only; grpcurl needs them).
GRPC_OPEN_PREFIXES = (
    f"/{GRPC_SERVICE}/ServerLive",
    f"/{GRPC_SERVICE}/ServerReady",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
)
# Every other method of the inference service needs `predict` (unknown ones too: fail closed).
_PREDICT_METHODS = ("ModelInfer", "ModelStreamInfer", "ModelMetadata", "ModelReady")
GRPC_METHOD_ROLES: dict[str, Role] = {
    f"/{GRPC_SERVICE}/{method}": Role.PREDICT for method in (*_PREDICT_METHODS, "ServerMetadata")
}


def grpc_role(method: str) -> Role | None:
    """The role a gRPC method needs; None for the open ones."""
    if method.startswith(GRPC_OPEN_PREFIXES):
        return None
    return GRPC_METHOD_ROLES.get(method, Role.PREDICT)
