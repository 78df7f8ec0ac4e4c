"""The platform's services: one entry per model, the one list the CLI and tests agree on.

The Helm chart's `services` list must name the same services and ports (a test compares them).
"""

from __future__ import annotations

from pydantic import BaseModel


class ServiceEntry(BaseModel):
    """How one model is served locally (pods use the same ports)."""

    model: str
    target: str  # `bentoml serve` target
    http_port: int
    grpc_port: int
    pages: tuple[str, ...] = ()  # browser pages besides the APIs
    # Stored models served beside the service's own (`ServedModel.companion_models`).
    companions: tuple[str, ...] = ()

    @property
    def models(self) -> tuple[str, ...]:
        """Every stored model the service needs before it can start."""
        return (self.model, *self.companions)


SERVICES: dict[str, ServiceEntry] = {
    entry.model: entry
    for entry in (
        ServiceEntry(
            model="heart_risk",
            target="bentos.heart_risk:HeartRisk",
            http_port=3000,
            grpc_port=8001,
            pages=("/ui",),
        ),
        ServiceEntry(
            model="ecg_anomaly",
            target="bentos.ecg_anomaly:EcgAnomaly",
            http_port=3001,
            grpc_port=8002,
            pages=("/review",),
        ),
        ServiceEntry(
            model="ct_pattern",
            target="bentos.ct_pattern:CtPattern",
            http_port=3002,
            grpc_port=8003,
        ),
        ServiceEntry(
            model="respiratory_triage",
            target="bentos.respiratory_triage:RespiratoryTriage",
            http_port=3003,
            grpc_port=8004,
            pages=("/triage",),
            companions=("respiratory_rules",),
        ),
    )
}
