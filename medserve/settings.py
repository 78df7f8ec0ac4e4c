"""Typed platform settings, read from `MEDSERVE_*` environment variables.

Every knob of the platform lives here so that operators find them in one place and the Helm chart
can set them as env vars. Defaults are the embedded, single-machine ones.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Platform-wide settings; each field maps to `MEDSERVE_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="MEDSERVE_", extra="ignore")

    home: Path = Field(
        default=REPO_ROOT / "var",
        description="Root of local state: prediction-log SQLite file, caches, local 'S3' folders.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log; default is a SQLite file under `home`.",
    )
    database_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Longest a request waits on the database (a held lock, a slow statement): "
        "SQLite's busy timeout, PostgreSQL's lock and statement timeouts, and the handlers' "
        "wait. Past it the call answers 503 `database_busy` (retryable).",
    )
    database_threads: int = Field(
        default=4, ge=1, le=64, description="Threads per worker running handlers' database calls."
    )
    prediction_log_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="`medserve db prune` deletes predictions (and their feedback) older than "
        "this many days; unset keeps everything (prune then refuses to run).",
    )
    prediction_log_prune_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Predictions deleted per prune transaction."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (SeaweedFS, MinIO)."
    )
    s3_region: str = "us-east-1"

    # Serving
    http_host: str = Field(
        default="127.0.0.1", description="Bind address; pods set 0.0.0.0 (the chart does)."
    )
    http_port: int = 3000
    grpc_enabled: bool = Field(default=True, description="Serve OIP v2 over gRPC too.")
    grpc_host: str = Field(default="127.0.0.1", description="gRPC bind address (pods: 0.0.0.0).")
    grpc_port: int = Field(default=8001, description="gRPC port, shared by all workers.")
    grpc_max_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=4 * 1024 * 1024, description="Images need more than 4 MiB."
    )
    grpc_stream_max_in_flight: int = Field(
        default=256,
        ge=1,
        description="Requests of one ModelStreamInfer stream in the data plane at once; beyond "
        "it the stream is not read, so HTTP/2 flow control pushes back on the client.",
    )
    grpc_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of the gRPC server; with `grpc_tls_key_file` the "
        "gRPC port serves TLS only (no plaintext). The chart mounts it from `grpc.tls.secretName`.",
    )
    grpc_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of `grpc_tls_cert_file`."
    )
    grpc_tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle of client certificates: when set, gRPC clients must present "
        "a certificate it signed (mutual TLS). Only with the server's certificate and key.",
    )
    ray_local_start_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries to start a local Ray (RAY_ADDRESS unset or `local`): Ray gives its "
        "raylet a fixed 30 s to register, which a busy 2-core node can miss.",
    )
    port_offset: int = Field(
        default=0,
        ge=0,
        le=50_000,
        description="Added to every catalogue port (HTTP and gRPC) by `medserve up`, `serve` and "
        "`doctor`: a second platform beside the first.",
    )
    ready_timeout_s: float = Field(
        default=300,
        gt=0,
        description="How long `medserve up` and `serve` wait for a started service to be ready.",
    )
    workers: int = Field(default=1, ge=1, description="BentoML worker processes per service.")
    cpu_limit: int = Field(
        default=0,
        ge=0,
        description="Cores this process may use; 0 = its CPU affinity. In a pod the affinity "
        "shows the whole node, so the chart sets this from the container's CPU limit.",
    )
    access_log: bool = Field(
        default=False,
        description="One log line per served call (request id, route template, api, latency); "
        "never the raw path, which can carry a patient's name. Costly on hot paths.",
    )
    max_batch_size: int = Field(default=64, ge=1)
    max_latency_ms: int = Field(
        default=2000, ge=1, description="Adaptive batching: queue budget before a request is shed."
    )
    max_instances_per_request: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body of the JSON, v2 REST and form routes, chunked uploads "
        "included (refused with 413 as soon as they pass it).",
    )
    max_form_fields: int = Field(
        default=200,
        ge=10,
        description="Fields of one page form post (the pages have a few dozen at most).",
    )
    prediction_log_wait: bool = Field(
        default=True,
        description="Answer only after the prediction is committed to the log (group commit).",
    )

    # Drift monitoring
    drift_window: int = Field(default=500, ge=10, description="Recent rows per worker for PSI.")
    drift_min_samples: int = Field(
        default=100, ge=1, description="Rows needed in the window before PSI is exported."
    )
    drift_psi_threshold: float = Field(
        default=0.2, description="PSI above which a feature counts as drifted (alerts, docs)."
    )

    @model_validator(mode="after")
    def _grpc_tls_complete(self) -> Settings:
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError(
                "MEDSERVE_GRPC_TLS_CERT_FILE and MEDSERVE_GRPC_TLS_KEY_FILE go together: "
                "set both or neither"
            )
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError(
                "MEDSERVE_GRPC_TLS_CLIENT_CA_FILE (mutual TLS) needs the server's "
                "MEDSERVE_GRPC_TLS_CERT_FILE and MEDSERVE_GRPC_TLS_KEY_FILE"
            )
        return self

    @property
    def cores(self) -> int:
        """Cores to size thread pools by: the CPU affinity, capped by `cpu_limit` when set."""
        affinity = len(os.sched_getaffinity(0))
        return min(affinity, self.cpu_limit) if self.cpu_limit else affinity

    @property
    def logs_dir(self) -> Path:
        """Where `medserve up` sends the services' and the trainings' output."""
        return self.home / "logs"

    @property
    def resolved_database_url(self) -> str:
        """The prediction-log URL, defaulting to a SQLite file under `home`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'prediction_log.sqlite3'}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build `Settings(...)` directly)."""
    return Settings()


def use_local_bentoml_home(settings: Settings | None = None) -> Path:
    """Point BentoML's model store at `<home>/bentoml` unless BENTOML_HOME is set already.

    Must run before `bentoml` is imported (BentoML reads the variable at import time).
    """
    settings = settings or get_settings()
    home = os.environ.setdefault("BENTOML_HOME", str(settings.home / "bentoml"))
    return Path(home)
