"""Test-only S3 call recorder, loaded by every Python process started with this folder on
PYTHONPATH (Python imports `sitecustomize` at start-up): with MEDSERVE_TEST_S3_CALL_LOG set, each
S3 API call any boto3 client of the process makes (the code's own clients, s3transfer's multipart
parts, process-pool workers) is appended to that file as one JSON line: the operation name, the
bucket, key and prefix it named, and the HTTP status it ended with. It uses boto3's documented
event hooks on the default session (`before-parameter-build`, `after-call`) and changes nothing.
tests/test_k8s_iam.py checks the IAM policies against these records.
"""

from __future__ import annotations

import json
import os
from typing import Any

_LOG = os.environ.get("MEDSERVE_TEST_S3_CALL_LOG")
_KEY = "medserve_s3_call"


def _note_params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    context[_KEY] = {
        "operation": model.name,
        "bucket": params.get("Bucket"),
        "key": params.get("Key"),
        "prefix": params.get("Prefix"),
    }


def _write(http_response: Any, context: dict[str, Any], **_: Any) -> None:
    call = context.get(_KEY)
    if call is None or _LOG is None:
        return
    line = json.dumps({**call, "status": http_response.status_code, "pid": os.getpid()}) + "\n"
    # One short O_APPEND write per call: lines from concurrent processes never interleave.
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if _LOG:
    import boto3

    boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events
    events.register("before-parameter-build.s3", _note_params)
    events.register("after-call.s3", _write)
