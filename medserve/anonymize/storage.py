"""Where exams come from and go to: an S3 prefix or a local folder, behind one small interface.

Listing is paginated and streamed (a bucket of millions of keys is never held in memory); S3
requests retry with backoff (botocore's adaptive mode); local writes are atomic (write, rename) so a
crash never leaves half a file that a re-run would mistake for a finished one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medserve.object_store import S3Location, is_s3, s3_client
from medserve.settings import Settings


@dataclass(frozen=True)
class StoredObject:
    """A listed object: key relative to the store's root, and size."""

    key: str
    size: int


class ExamStore(Protocol):
    """The operations the pipeline needs from an input or output location."""

    def list(self, suffix: str = "") -> Iterator[StoredObject]: ...
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
) -> ExamStore:
    """The store behind `uri`: `s3://bucket/prefix` or a local folder."""
    if is_s3(uri):
        client = s3_client(settings, max_attempts, read_timeout_seconds)
        return S3Store(S3Location.parse(uri), client, page_size)
    return LocalStore(Path(uri))
