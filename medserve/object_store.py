"""Where model files and data objects live: `s3://bucket/key` URIs or local paths.

Two surfaces over the same client (endpoint and region from settings, credentials from the
standard AWS chain, which is IRSA inside Kubernetes): `upload_file` / `download_file` for single
files (model archives), and `open_store` for a prefix of many objects (the anonymisation
pipeline): listing is paginated and streamed, so a bucket of millions of keys is never held in
memory; S3 requests retry with backoff; local writes are atomic (write, rename), so a crash never
leaves half a file that a re-run would mistake for a finished one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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


@dataclass(frozen=True)
class StoredObject:
    """A listed object: key relative to the store's root, and size."""

    key: str
    size: int


class ObjectStore(Protocol):
    """A prefix of objects, S3 or local: what batch pipelines read from and write to."""

    def list(self, suffix: str = "") -> Iterator[StoredObject]: ...
    def reachable(self) -> bool: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None: ...
    def delete(self, key: str) -> None: ...


class LocalStore:
    """A folder standing in for a bucket prefix (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self, suffix: str = "") -> Iterator[StoredObject]:
        if not self.root.is_dir():
            return
        # os.walk streams directory by directory; sorted for a stable order across re-runs.
        for directory, subdirectories, files in os.walk(self.root):
            subdirectories.sort()
            for name in sorted(files):
                if name.endswith(suffix) and not name.startswith("."):
                    path = Path(directory) / name
                    yield StoredObject(path.relative_to(self.root).as_posix(), path.stat().st_size)

    def reachable(self) -> bool:
        return self.root.is_dir()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Atomic: written to a temporary file in the same folder, then renamed into place.

        A folder has no object metadata; the exam record beside each ZIP carries the same fields.
        """
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def __str__(self) -> str:
        return str(self.root)


class S3Store:
    """An `s3://bucket/prefix` location, through boto3 (credentials from the standard chain)."""

    def __init__(self, location: S3Location, client: Any, page_size: int = 1000) -> None:
        self.location = location
        self.client = client
        self.page_size = page_size

    def _key(self, key: str) -> str:
        return self.location.child(key).key

    def list(self, suffix: str = "") -> Iterator[StoredObject]:
        prefix = f"{self.location.key}/" if self.location.key else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.location.bucket,
            Prefix=prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"][len(prefix) :]
                if key.endswith(suffix) and key:
                    yield StoredObject(key, int(item["Size"]))

    def reachable(self) -> bool:
        """The bucket exists and these credentials may list this prefix.

        A prefixed list rather than HeadBucket: HeadBucket carries no prefix, so a policy
        allowing it would have to allow listing every key of the bucket (k8s/iam/).
        """
        from botocore.exceptions import ClientError

        prefix = f"{self.location.key}/" if self.location.key else ""
        try:
            self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=prefix, MaxKeys=1)
        except ClientError:
            return False
        return True

    def read(self, key: str) -> bytes:
        answer = self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))
        return answer["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def write(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        # put_object keeps S3 user metadata (pyarrow's output streams drop it).
        self.client.put_object(
            Bucket=self.location.bucket, Key=self._key(key), Body=data, Metadata=metadata or {}
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.location.bucket, Key=self._key(key))

    def __str__(self) -> str:
        return str(self.location)


def open_store(
    uri: str,
    settings: Settings,
    *,
    max_attempts: int = 10,
    read_timeout_seconds: float = 30,
    page_size: int = 1000,
) -> ObjectStore:
    """The store behind `uri`: `s3://bucket/prefix` or a local folder."""
    if is_s3(uri):
        client = s3_client(settings, max_attempts, read_timeout_seconds)
        return S3Store(S3Location.parse(uri), client, page_size)
    return LocalStore(Path(uri))
