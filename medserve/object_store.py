"""Where model files and data objects live: `s3://bucket/key` URIs or local paths.

One small surface (`upload_file`, `download_file`) so the model store and, later, the anonymisation
pipeline reach S3-compatible stores the same way (endpoint and region from settings, credentials
from the standard AWS chain, which is IRSA inside Kubernetes).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medserve.settings import Settings, get_settings


@dataclass(frozen=True)
class S3Location:
    """A parsed `s3://bucket/key` URI."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"S3 URI has no bucket: {uri!r}")
        return cls(bucket=bucket, key=key.strip("/"))

    def child(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def s3_client(
    settings: Settings | None = None, max_attempts: int = 8, read_timeout_seconds: float = 60
) -> Any:
    """A boto3 S3 client for the configured endpoint, retrying with backoff (adaptive mode)."""
    import boto3  # imported here: services that never touch S3 skip its start-up cost
    from botocore.config import Config

    settings = settings or get_settings()
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            retries={"max_attempts": max_attempts, "mode": "adaptive"},
            s3={"addressing_style": "path"},
            connect_timeout=min(10, read_timeout_seconds),
            read_timeout=read_timeout_seconds,
        ),
    )


def upload_file(source: Path, uri: str, settings: Settings | None = None) -> str:
    """Copy a local file to an s3:// URI or a local path; returns where it went."""
    if is_s3(uri):
        location = S3Location.parse(uri)
        s3_client(settings).upload_file(str(source), location.bucket, location.key)
        return str(location)
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target)


def download_file(uri: str, target: Path, settings: Settings | None = None) -> Path:
    """Copy an s3:// object or a local file to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_s3(uri):
        location = S3Location.parse(uri)
        s3_client(settings).download_file(location.bucket, location.key, str(target))
    else:
        shutil.copyfile(Path(uri), target)
    return target
